"""Query latency at library scale: text -> top-20 with metadata, in a warm process.

    .venv/bin/python -m bench.bench_query                        # 100k and 1M, random ViT-B/32
    .venv/bin/python -m bench.bench_query --sizes 100000 --weights ViT-B-32.pt

The index holds synthetic vectors with realistic structure: clustered data (one Gaussian
cluster per ~500 images around random centres, noise giving within-cluster cosines of about
0.75, like photos of one event), bulk-loaded into a real index (SQLite rows + vectors), after
which the store's own start-up repair builds FAISS (exact below 200k, IVF-SQ8 above). Queries
run through ``Library.search`` with the real text encoder, in a separate process whose
resident memory is reported. Recall@20 of the index against exact search is measured on
held-out vectors from the same distribution.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

from .datasets import CACHE, benchmark_weights

REPO = Path(__file__).resolve().parent.parent
QUERIES = [
    "kids on a beach at sunset", "a dog catching a frisbee", "snowy mountains", "birthday cake",
    "a red car in the rain", "people dancing at a wedding", "a cat asleep on a sofa",
    "city skyline at night", "a plate of pasta", "hiking in a forest", "an old church",
    "a baby laughing", "fireworks over a river", "a boat on a lake", "a receipt",
]  # fmt: skip


def clustered(n: int, dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    k = max(1, n // 500)
    centres = rng.standard_normal((k, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    out = np.empty((n, dim), np.float32)
    step = 100_000
    for lo in range(0, n, step):
        m = min(step, n - lo)
        x = centres[rng.integers(0, k, m)] + rng.standard_normal((m, dim)).astype(np.float32) * (
            0.6 / np.sqrt(dim)
        )
        out[lo : lo + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def write_config(work: Path, weights: Path) -> Path:
    (work / "lib").mkdir(parents=True, exist_ok=True)
    cfg = {"model": {"weights": str(weights)}, "library": {"roots": [str(work / "lib")]},
           "index": {"dir": str(work / "index")}}  # fmt: skip
    path = work / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def build(config: Path, vectors: np.ndarray) -> float:
    """Bulk-load rows and vectors into a real index, then let the store build FAISS."""
    from indexer import Library, load_config
    from indexer.store.sqlite.schema import VECTOR_DTYPE

    cfg = load_config(config)
    root = os.fsencode(cfg.roots[0])
    start = time.perf_counter()
    with Library.open(cfg, writer=True) as lib:
        lib.store.bind_model(lib.encoder().identity)
        if lib.encoder().identity.embed_dim != vectors.shape[1]:
            raise SystemExit("vector dimension does not match the model")
        with lib.store.engine.begin() as conn:
            step = 50_000
            for lo in range(0, len(vectors), step):
                rows = [
                    (i + 1, root + b"/%08d.jpg" % i, root, 100_000, 1, f"{i:064x}", 640, 480,
                     f"20{10 + i % 15}-0{1 + i % 9}-1{i % 10}T12:00:00", None, "ok", None, 0.0)
                    for i in range(lo, min(lo + step, len(vectors)))
                ]  # fmt: skip
                conn.exec_driver_sql(
                    "INSERT INTO images (id, path, root, size, mtime_ns, content_hash, width, "
                    "height, taken_at, camera, status, error, indexed_at) "
                    "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    rows,
                )
                conn.exec_driver_sql(
                    "INSERT INTO vectors (image_id, gen, vector) VALUES (?, 1, ?)",
                    [
                        (i + 1, vectors[i].astype(VECTOR_DTYPE).tobytes())
                        for i in range(lo, lo + len(rows))
                    ],
                )
            conn.exec_driver_sql(
                "INSERT INTO meta(key, value) VALUES ('generation', '1') "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value"
            )
    with Library.open(cfg, writer=True) as lib:  # start-up repair builds and saves FAISS
        kind = lib.store.index.kind
    print(f"  built {len(vectors)} vectors ({kind}) in {time.perf_counter() - start:.0f} s")
    return time.perf_counter() - start


def measure(config: Path, n_queries: int, held_out: np.ndarray, truth: np.ndarray) -> dict:
    """In this (fresh) process: warm text->top-20 latency, recall@20, resident memory."""
    from indexer import Library, load_config

    with Library.open(load_config(config)) as lib:
        lib.search(QUERIES[0], k=20)  # load the model and the index
        times = []
        for i in range(n_queries):
            text = f"{QUERIES[i % len(QUERIES)]} {i}"  # unique: the text cache never hits
            start = time.perf_counter()
            res = lib.search(text, k=20)
            times.append(time.perf_counter() - start)
            assert len(res.hits) == 20 and res.hits[0].path
        index = lib.store.index
        _, found = index.search(held_out, 20)
        recall = float(np.mean([len(set(f) & set(t)) / 20 for f, t in zip(found, truth)]))
        status = Path("/proc/self/status").read_text()
        rss = int(next(line for line in status.splitlines() if line.startswith("VmRSS")).split()[1])
        times.sort()
        return {"kind": index.kind, "p50_ms": 1000 * statistics.median(times),
                "p90_ms": 1000 * times[int(0.9 * len(times))], "recall_at_20": recall,
                "rss_mb": rss / 1024}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sizes", default="100000,1000000")
    ap.add_argument("--weights", help="checkpoint (default: a random ViT-B/32)")
    ap.add_argument("--queries", type=int, default=50)
    ap.add_argument("--json")
    ap.add_argument("--measure", nargs=2, metavar=("CONFIG", "NPZ"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure:  # the child process
        data = np.load(args.measure[1])
        print(json.dumps(measure(Path(args.measure[0]), args.queries, data["q"], data["t"])))
        return
    weights = benchmark_weights(args.weights)
    CACHE.mkdir(exist_ok=True)
    import faiss

    import clipmodel

    dim = clipmodel.infer_config(
        __import__("torch").load(weights, map_location="cpu", weights_only=True)
    ).embed_dim
    rows = []
    for n in [int(s) for s in args.sizes.split(",")]:
        print(f"{n} images:")
        vectors = clustered(n + 200, dim, seed=n)
        base, held_out = vectors[:n], vectors[n:]
        flat = faiss.IndexFlatIP(dim)
        flat.add(base)
        truth = flat.search(held_out, 20)[1] + 1  # image ids are row + 1
        del flat
        with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
            config = write_config(Path(tmp), weights)
            build_s = build(config, base)
            del base, vectors
            npz = Path(tmp) / "q.npz"
            np.savez(npz, q=held_out, t=truth)
            cmd = [sys.executable, "-m", "bench.bench_query", "--queries", str(args.queries),
                   "--measure", str(config), str(npz)]  # fmt: skip
            out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
            if out.returncode:
                raise SystemExit(out.stderr)
            row = {
                "images": n,
                "build_s": build_s,
                **json.loads(out.stdout.strip().splitlines()[-1]),
            }
        rows.append(row)
        print(f"  {row}")
    print("| images | index | p50 ms | p90 ms | recall@20 | resident MB |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['images']:,} | {r['kind']} | {r['p50_ms']:.1f} | {r['p90_ms']:.1f} | "
              f"{r['recall_at_20']:.3f} | {r['rss_mb']:.0f} |")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
