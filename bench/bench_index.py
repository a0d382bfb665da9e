"""Indexing throughput, end to end: `clipsearch index` vs the seed recipe, same files and weights.

    .venv/bin/python -m bench.bench_index                  # random ViT-B/32, 12 MP + web-size
    .venv/bin/python -m bench.bench_index --weights ViT-B-32.pt --large 200
    .venv/bin/python -m bench.bench_index --baseline ../old-checkout   # before vs after

For each dataset (12 MP JPEGs made by upscaling coco-mini, and coco-mini as is) it builds a
fresh index with each configuration variant through the real CLI (a subprocess, as a user
runs it), runs the seed recipe on the same files, and reports images/s, the ratio to the seed
recipe, and the fidelity of the stored vectors (cosine to the seed recipe's fp32 embeddings).
Every variant and the seed recipe run ``--repeats`` times (3), interleaved, so a slow spell
of a noisy machine hits them alike; the table gives the median and each run.

``--baseline DIR`` adds a variant "default @ baseline": the default config indexed by the code of
another checkout (``PYTHONPATH=DIR``), interleaved with the others, so a change is measured
against the code before it in one run.

Model caches go to a fresh folder (``CLIPSEARCH_CACHE_DIR``), so the one-time costs of a first
run on a machine (the int8 ONNX export, encoding the tag vocabulary's prompts) are measured by
a first `clipsearch index` of 8 photos and reported apart from the throughput runs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

from .datasets import CACHE, benchmark_weights, coco_photos, make_large_jpegs
from .seed_recipe import seed_recipe

REPO = Path(__file__).resolve().parent.parent
VARIANTS = {
    # name -> config overrides (model.* and index.*)
    "exact fp32": {
        "model": {"precision": "fp32"},
        "index": {"jpeg_draft": False, "fast_resize": False},
    },
    "default": {},
}


def write_config(work: Path, root: Path, weights: Path, overrides: dict) -> Path:
    cfg = {
        "model": {"weights": str(weights)},
        "library": {"roots": [str(root)]},
        "index": {"dir": str(work / "index")},
    }
    for section, values in overrides.items():
        cfg.setdefault(section, {}).update(values)
    path = work / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


ENV = dict(os.environ)  # CLIPSEARCH_CACHE_DIR is set in main()
BASELINE = "default @ baseline"
TREES: dict[str, Path] = {}  # variant -> checkout whose code runs it (main() adds the baseline)


def run_index(config: Path, tree: Path | None = None) -> dict:
    cmd = [sys.executable, "-m", "indexer.cli", "--config", str(config), "index", "--json",
           "--no-progress"]  # fmt: skip
    env = dict(ENV, PYTHONPATH=str(tree or REPO))
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tree or REPO)
    if out.returncode != 0:
        raise SystemExit(f"clipsearch index failed: {out.stderr.strip()}")
    return json.loads(out.stdout)


def stored_vectors(config: Path, paths: list[Path]) -> np.ndarray:
    """Vectors of ``paths`` from the index just built, in the same order.

    Read from the SQLite file directly, so an index written by another checkout's code
    (``--baseline``) is read the same way."""
    import sqlite3

    index_dir = Path(yaml.safe_load(config.read_text())["index"]["dir"])
    version = (index_dir / "CURRENT").read_text().strip()
    con = sqlite3.connect(index_dir / version / "index.sqlite")
    try:
        (dim,) = con.execute("SELECT value FROM meta WHERE key = 'embed_dim'").fetchone()
        vecs = []
        for p in paths:
            (blob,) = con.execute(
                "SELECT v.vector FROM images i JOIN vectors v ON v.image_id = i.id "
                "WHERE i.path = ?", (os.fsencode(os.path.abspath(p)),),
            ).fetchone()  # fmt: skip
            # float16 since schema 6, float32 before (a --baseline checkout may be older)
            dtype = "<f2" if len(blob) == 2 * int(dim) else "<f4"
            vecs.append(np.frombuffer(blob, dtype=dtype).astype(np.float32))
    finally:
        con.close()
    return np.stack(vecs)


def bench_dataset(
    name: str, files: list[Path], weights: Path, seed_n: int, repeats: int
) -> list[dict]:
    """Each variant (and the seed recipe) ``repeats`` times, interleaved: median images/s."""
    root = files[0].parent
    seed_files = files[:seed_n]
    rates: dict[str, list[float]] = {"seed recipe": []}
    counts, cosines = {"seed recipe": len(seed_files)}, {}
    for _ in range(repeats):
        seed_s, seed_vecs = seed_recipe(weights, seed_files)
        rates["seed recipe"].append(len(seed_files) / seed_s)
        variants = dict(VARIANTS, **({BASELINE: VARIANTS["default"]} if TREES else {}))
        for variant, overrides in variants.items():
            with tempfile.TemporaryDirectory() as tmp:
                config = write_config(Path(tmp), root, weights, overrides)
                report = run_index(config, TREES.get(variant))
                ours = stored_vectors(config, seed_files)
            rates.setdefault(variant, []).append(report["encoded"] / report["seconds"])
            counts[variant] = report["encoded"]
            cosines[variant] = (ours * seed_vecs.numpy()).sum(axis=1)
    seed_rate = statistics.median(rates["seed recipe"])
    rows = []
    for variant, r in rates.items():
        cos = cosines.get(variant, np.ones(1))
        rows.append({"dataset": name, "variant": variant, "images": counts[variant],
                     "images_per_s": statistics.median(r), "runs": [round(x, 1) for x in r],
                     "ratio": statistics.median(r) / seed_rate, "cos_min": float(cos.min()),
                     "cos_median": float(statistics.median(cos))})  # fmt: skip
    return rows


def first_run(files: list[Path], weights: Path, tree: Path | None = None) -> float:
    """Wall seconds of the first `clipsearch index` on this machine (cold model caches)."""
    with tempfile.TemporaryDirectory() as tmp:
        lib = Path(tmp) / "photos"
        lib.mkdir()
        for f in files[:8]:
            shutil.copy(f, lib / f.name)
        config = write_config(Path(tmp), lib, weights, {})
        start = time.perf_counter()
        run_index(config, tree)
        return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--weights", help="checkpoint (default: a random ViT-B/32)")
    ap.add_argument("--large", type=int, default=120, help="number of 12 MP JPEGs")
    ap.add_argument("--web", type=int, default=239, help="number of coco-mini photos")
    ap.add_argument("--seed-n", type=int, default=60, help="images the seed recipe encodes")
    ap.add_argument("--repeats", type=int, default=3, help="runs per variant (median reported)")
    ap.add_argument("--json", help="write the rows to this file")
    ap.add_argument("--baseline", help="another checkout: adds its default config as a variant")
    args = ap.parse_args()
    if args.baseline:
        TREES[BASELINE] = Path(args.baseline).resolve()
    weights = benchmark_weights(args.weights)
    cache = tempfile.mkdtemp(prefix="bench-model-cache-")
    ENV["CLIPSEARCH_CACHE_DIR"] = cache
    rows = []
    cold_s = first_run(coco_photos(8), weights)
    if TREES:  # the baseline's own caches (its export may differ) are warmed too, untimed
        first_run(coco_photos(8), weights, TREES[BASELINE])
    if args.large:
        large = make_large_jpegs(CACHE / "large-12mp", args.large)
        rows += bench_dataset(
            "12 MP JPEG", large, weights, min(args.seed_n, len(large)), args.repeats
        )
    if args.web:
        web_dir = CACHE / "web"
        web_dir.mkdir(parents=True, exist_ok=True)
        for src in coco_photos(args.web):
            dst = web_dir / src.name
            if not dst.exists():
                os.link(src, dst) if os.stat(src).st_dev == os.stat(
                    web_dir
                ).st_dev else dst.write_bytes(src.read_bytes())
        web = sorted(web_dir.glob("*.jpg"))
        rows += bench_dataset(
            "web size (coco-mini)", web, weights, min(args.seed_n, len(web)), args.repeats
        )
    shutil.rmtree(cache, ignore_errors=True)
    print(f"checkpoint: {weights}; {os.cpu_count()} CPUs")
    print(f"first run on this machine (8 photos, cold model caches: int8 ONNX export and tag "
          f"prompts): {cold_s:.1f} s wall")  # fmt: skip
    print("| dataset | variant | images | images/s (median) | runs | x seed recipe "
          "| cosine min / median vs seed |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        runs = ", ".join(f"{x:.1f}" for x in r["runs"])
        print(f"| {r['dataset']} | {r['variant']} | {r['images']} | {r['images_per_s']:.1f} | "
              f"{runs} | {r['ratio']:.2f} | {r['cos_min']:.5f} / {r['cos_median']:.5f} |")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps({"first_run_s": cold_s, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
