"""Issue 15 at a million photos: duplicates, index size, tag re-scoring, status, no-op index.

    .venv/bin/python -m bench.bench_scale --baseline /work/main            # 1M (~30 min)
    .venv/bin/python -m bench.bench_scale --baseline /work/main --real 2000 --total 20000

The library is :func:`bench.library_1m.library` written by the ``--baseline`` checkout's code
(its schema); this checkout's variant is a copy of it migrated by this code (the migration is
timed), so both hold the same rows. Every command runs as a subprocess (``/usr/bin/time``:
wall seconds and peak resident memory), ``--repeats`` times interleaved, median reported:

* ``status``: ``clipsearch status --json``, wall; and ``Library.open`` + ``status()`` alone
  (in a process that has already imported everything: what the index costs, not the imports);
* no-op ``clipsearch index`` over every file (real files + placeholders, all unchanged);
* ``clipsearch tag --all`` (every tag re-scored over every vector);
* ``clipsearch duplicates`` (this code only at 1M; the baseline's exact search is quadratic:
  timed in process on a subset and scaled by N^2), and the recall of the true pairs: exact
  pairs among the real files, pairs of the planted near-duplicates, and exact pairs of a random
  sample of rows against all rows;
* bytes on disk per photo (SQLite + FAISS; thumbnails aside), by table;
* the float16 vectors' ranking fidelity against float32 (recall@10 of exact search, score error).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

from .library_1m import REPO, bench_env, compile_tree, library

BASE, HEAD = "baseline", "this code"


def timed(cmd: list[str], tree: Path, stdin: str | None = None) -> tuple[float, float, str]:
    """(wall s, peak RSS MB, stdout) of ``cmd`` run by ``tree``'s code."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as tf:
        full = ["/usr/bin/time", "-f", "%e %M", "-o", tf.name, "nice", "-n", "10", *cmd]
        out = subprocess.run(full, capture_output=True, text=True, env=bench_env(tree), cwd=tree,
                             input=stdin)  # fmt: skip
        if out.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed: {out.stderr.strip()[-3000:]}")
        wall, rss = tf.read().split()[-2:]
    return float(wall), int(rss) / 1024, out.stdout


def cli(config: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "indexer.cli", "--config", str(config), *args]


STATUS_WORK = """
import sys, time, json
from indexer.config import load_config
from indexer.library import Library
import indexer.store.sqlite, indexer.store.vectors.index  # imports paid before timing
cfg = load_config(sys.argv[1])
t = time.perf_counter()
with Library.open(cfg) as lib:
    doc = lib.status()
print(json.dumps({"s": time.perf_counter() - t, "vectors": doc["vectors"]}))
"""


def head_copy(config: Path) -> tuple[Path, float]:
    """A copy of the baseline's library index opened (migrated) by this code: (config, s)."""
    cfg = yaml.safe_load(config.read_text())
    dest = config.parent.with_name(config.parent.name + "-head")
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir()
    shutil.copytree(cfg["index"]["dir"], dest / "index", symlinks=True)
    cfg["index"]["dir"] = str(dest / "index")  # the same roots: the same files
    new = dest / "config.yaml"
    new.write_text(yaml.safe_dump(cfg))
    version = (dest / "index" / "CURRENT").read_text().strip()
    code = ("import sys; from indexer.store import open_store; "
            "open_store(sys.argv[1], writer=True).close()")  # fmt: skip
    wall, _rss, _ = timed([sys.executable, "-c", code, str(dest / "index" / version)], REPO)
    return new, wall


def disk(config: Path) -> dict:
    """Bytes on disk per photo: SQLite (by table) and FAISS, thumbnails aside."""
    index_dir = Path(yaml.safe_load(config.read_text())["index"]["dir"])
    vdir = index_dir / (index_dir / "CURRENT").read_text().strip()
    con = sqlite3.connect(f"file:{vdir / 'index.sqlite'}?mode=ro", uri=True)
    n = con.execute("SELECT COUNT(*) FROM images").fetchone()[0]
    tables = dict(con.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name").fetchall())
    version = con.execute("SELECT version FROM schema_version").fetchone()[0]
    con.close()
    sqlite_b = sum(p.stat().st_size for p in vdir.glob("index.sqlite*"))
    faiss_b = (vdir / "vectors.faiss").stat().st_size
    return {"photos": n, "schema": version, "sqlite_per_photo": sqlite_b / n,
            "faiss_per_photo": faiss_b / n, "total_per_photo": (sqlite_b + faiss_b) / n,
            "vectors_table_per_photo": tables.get("vectors", 0) / n,
            "tags_per_photo": sum(v for k, v in tables.items() if "tags" in k) / n}  # fmt: skip


def load_vectors(config: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ids, float16 vectors, is-real mask) of a library, read with this code's store."""
    from indexer.config import load_config
    from indexer.library import Library
    from indexer.tags.service import all_vectors

    cfg = load_config(config)
    with Library.open(cfg) as lib:
        ids, vecs = all_vectors(lib.store)
        real_root = os.fsdecode(cfg.roots[0])
        real = lib.store.filter_ids(folder=real_root)
    return ids, vecs.astype(np.float16), np.isin(ids, real)


def recall(config: Path, threshold: float, sample: int) -> dict:
    """The approximate pairs (in process, timed) against exact ones (see the docstring)."""
    from indexer.tags.pairs import approximate_pairs, exact_pairs

    ids, x, real = load_vectors(config)
    t = time.perf_counter()
    found = approximate_pairs(x, threshold)
    ann_s = time.perf_counter() - t
    n = len(x)
    got = set((found[:, 0] * n + found[:, 1]).tolist())
    out: dict = {"vectors": n, "ann_s_in_process": ann_s, "pairs_found": len(found)}
    # exact pairs among the real files
    ridx = np.flatnonzero(real)
    if len(ridx) > 1:
        t = time.perf_counter()
        rp = exact_pairs(x[ridx], threshold)
        out["exact_real_s"] = time.perf_counter() - t
        keys = ridx[rp[:, 0]] * n + ridx[rp[:, 1]]
        out["real_pairs"] = len(keys)
        out["real_recall"] = float(np.mean([k in got for k in keys.tolist()])) if len(keys) else None
    # exact pairs of a random sample of rows against all rows
    rng = np.random.default_rng(0)
    pick = np.sort(rng.choice(n, min(sample, n), replace=False))
    q = x[pick].astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    keys = []
    for start in range(0, n, 65_536):
        part = x[start : start + 65_536].astype(np.float32)
        part /= np.linalg.norm(part, axis=1, keepdims=True)
        qi, j = np.nonzero(q @ part.T >= np.float32(threshold))
        j = j + start
        i = pick[qi]
        keep = i != j
        keys += (np.minimum(i, j)[keep] * n + np.maximum(i, j)[keep]).tolist()
    keys = sorted(set(keys))
    out["sample_rows"], out["sample_pairs"] = len(pick), len(keys)
    out["sample_recall"] = float(np.mean([k in got for k in keys])) if keys else None
    # the baseline's exact search on a subset, scaled by N^2
    sub = min(n, 50_000)
    t = time.perf_counter()
    exact_pairs(x[:sub], threshold)
    out["exact_subset"] = sub
    out["exact_extrapolated_s"] = (time.perf_counter() - t) * (n / sub) ** 2
    return out


def fidelity(config: Path, n_db: int = 100_000, n_q: int = 1000, k: int = 10) -> dict:
    """float16 storage against float32: recall@k of exact search and the score error, on
    the baseline library's float32 vectors (library images as queries, self excluded)."""
    index_dir = Path(yaml.safe_load(config.read_text())["index"]["dir"])
    vdir = index_dir / (index_dir / "CURRENT").read_text().strip()
    con = sqlite3.connect(f"file:{vdir / 'index.sqlite'}?mode=ro", uri=True)
    (dim,) = con.execute("SELECT value FROM meta WHERE key = 'embed_dim'").fetchone()
    rows = con.execute("SELECT vector FROM vectors ORDER BY image_id LIMIT ?", (n_db,)).fetchall()
    con.close()
    blob = b"".join(r[0] for r in rows)
    if len(blob) != len(rows) * int(dim) * 4:
        return {"skipped": "the baseline library's vectors are not float32"}
    f32 = np.frombuffer(blob, dtype="<f4").reshape(len(rows), -1)
    f16 = f32.astype(np.float16).astype(np.float32)
    f16 /= np.linalg.norm(f16, axis=1, keepdims=True)
    rng = np.random.default_rng(1)
    qi = rng.choice(len(f32), n_q, replace=False)
    s32, s16 = f32[qi] @ f32.T, f32[qi] @ f16.T
    s32[np.arange(n_q), qi] = s16[np.arange(n_q), qi] = -np.inf
    top32 = np.argpartition(-s32, k, axis=1)[:, :k]
    top16 = np.argpartition(-s16, k, axis=1)[:, :k]
    hits = [len(set(a) & set(b)) for a, b in zip(top32.tolist(), top16.tolist())]
    err = np.abs(s32 - s16)[np.isfinite(s32)]
    return {"db": len(f32), "queries": n_q, f"recall@{k}": float(np.mean(hits) / k),
            "score_err_max": float(err.max()), "score_err_mean": float(err.mean())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--baseline", required=True, help="checkout of the code before (e.g. main)")
    ap.add_argument("--real", type=int, default=100_000)
    ap.add_argument("--total", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sample", type=int, default=2000, help="rows of the exact recall sample")
    ap.add_argument("--skip", default="", help="comma-separated steps to skip: "
                    "status,noop,tag,duplicates,recall,fidelity")  # fmt: skip
    ap.add_argument("--json", help="write the results to this file")
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    base_tree = Path(args.baseline).resolve()
    for tree in (base_tree, REPO):
        compile_tree(tree)
    base_cfg = library(args.real, args.total, base_tree)
    res: dict = {"build": json.loads((base_cfg.parent / "build.json").read_text())}
    res["disk_" + BASE] = disk(base_cfg)
    head_cfg, res["migration_s"] = head_copy(base_cfg)
    variants = {BASE: (base_tree, base_cfg), HEAD: (REPO, head_cfg)}
    runs: dict = {}

    def add(step: str, variant: str, value: dict) -> None:
        runs.setdefault(step, {}).setdefault(variant, []).append(value)

    for tree, cfg in variants.values():  # warm the model caches (export, prompts): untimed
        timed(cli(cfg, "index", "--json", "--no-progress"), tree)
        timed(cli(cfg, "tag", "--json", "--no-progress"), tree)
    for _ in range(args.repeats):
        for name, (tree, cfg) in variants.items():
            if "status" not in skip:
                wall, rss, _ = timed(cli(cfg, "status", "--json"), tree)
                _w, _r, work = timed([sys.executable, "-c", STATUS_WORK, str(cfg)], tree)
                add("status", name, {"wall": wall, "rss": rss, "work": json.loads(work)["s"]})
            if "noop" not in skip:
                wall, rss, out = timed(cli(cfg, "index", "--json", "--no-progress"), tree)
                rep = json.loads(out)
                assert rep["unchanged"] == rep["scanned"], rep
                add("noop", name, {"wall": wall, "rss": rss, "run": rep["seconds"],
                                   "files": rep["scanned"]})  # fmt: skip
            if "tag" not in skip:
                wall, rss, out = timed(cli(cfg, "tag", "--all", "--json", "--no-progress"), tree)
                rep = json.loads(out)
                add("tag", name, {"wall": wall, "rss": rss, "run": rep["seconds"],
                                  "rows": rep["rows"], "vectors": rep["rescored"] + rep["pending"]})
            if "duplicates" not in skip and name == HEAD:
                wall, rss, out = timed(cli(cfg, "duplicates", "--json"), tree)
                add("duplicates", name, {"wall": wall, "rss": rss, "groups": json.loads(out)["count"]})
    res["disk_" + HEAD] = disk(head_cfg)
    if "recall" not in skip:
        res["recall"] = recall(head_cfg, 0.95, args.sample)
    if "fidelity" not in skip:
        res["fidelity"] = fidelity(base_cfg)
    res["runs"] = runs
    res["medians"] = {
        step: {v: {k: statistics.median([r[k] for r in rs]) for k in rs[0]} for v, rs in by.items()}
        for step, by in runs.items()
    }
    print(json.dumps(res, indent=2, default=str))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2, default=str))


if __name__ == "__main__":
    main()
