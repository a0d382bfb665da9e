"""Indexing throughput on a local Ray cluster (`clipsearch index --ray`) with 1 and 2 actors,
next to the local engine, same photos and weights:

    .venv/bin/python -m bench.bench_ray                    # random ViT-B/32, coco-mini
    .venv/bin/python -m bench.bench_ray --weights ViT-B-32.pt --repeats 5 --actors 1 2 4

Each run is the real CLI in a fresh process (Ray runs inside a loopback-only network namespace,
``unshare -n``, so the cluster is reachable from this machine only) building a fresh SQLite
index. ``photos/s`` is the run's own figure (encoded / seconds, cluster start and model loads
included); ``marginal photos/s`` leaves the fixed costs out: (N - n) / (t_N - t_n) between a
run of all N photos and one of the first n. Runs are interleaved across variants, the table
gives medians. Needs root (``unshare``) and ``pip install -e '.[ray]'``.
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
from pathlib import Path

import yaml

from .datasets import benchmark_weights, coco_photos

REPO = Path(__file__).resolve().parent.parent
SMALL = 16


def run_index(work: Path, root: Path, weights: Path, actors: int | None, env: dict) -> dict:
    """One fresh `clipsearch index` (``actors`` None: the local engine); its JSON report."""
    shutil.rmtree(work / "index", ignore_errors=True)
    index: dict = {"dir": str(work / "index")}
    if actors:
        index["ray"] = {"actors": actors, "num_cpus": 1}
    cfg = work / "config.yaml"
    cfg.write_text(yaml.safe_dump({"model": {"weights": str(weights)},
                                   "library": {"roots": [str(root)]}, "index": index}))  # fmt: skip
    cmd = [sys.executable, "-m", "indexer.cli", "--config", str(cfg), "index", "--json",
           "--no-progress"] + (["--ray"] if actors else [])  # fmt: skip
    if actors:
        cmd = ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", *cmd]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=900)
    if proc.returncode:
        raise SystemExit(f"index failed: {proc.stderr[-3000:]}")
    return json.loads(proc.stdout)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", help="checkpoint (default: a random ViT-B/32)")
    ap.add_argument("--photos", type=int, default=0, help="how many coco-mini photos (0: all)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--actors", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args(argv)
    weights = benchmark_weights(args.weights)
    photos = coco_photos(args.photos or None)
    tmp = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    full, small = tmp / "full", tmp / "small"
    for dest, files in ((full, photos), (small, photos[:SMALL])):
        dest.mkdir()
        for p in files:
            os.symlink(p, dest / p.name)
    env = dict(os.environ, PYTHONPATH=str(REPO), RAY_USAGE_STATS_ENABLED="0",
               CLIPSEARCH_CACHE_DIR=str(tmp / "cache"))  # fmt: skip
    variants: dict[str, int | None] = {"local": None}
    variants.update({f"ray, {n} actor{'s' * (n > 1)}": n for n in args.actors})
    run_index(tmp, small, weights, None, env)  # one-time costs (ONNX export) before timing
    results: dict[str, dict[str, list[float]]] = {v: {"full": [], "small": [], "rate": []}
                                                  for v in variants}  # fmt: skip
    for r in range(args.repeats):
        for name, actors in variants.items():
            a = run_index(tmp, full, weights, actors, env)
            b = run_index(tmp, small, weights, actors, env)
            res = results[name]
            res["full"].append(a["seconds"])
            res["small"].append(b["seconds"])
            res["rate"].append(a["images_per_second"])
            print(f"[{r + 1}/{args.repeats}] {name}: {a['encoded']} photos {a['seconds']:.1f}s "
                  f"({a['images_per_second']:.1f}/s), {b['encoded']} photos "
                  f"{b['seconds']:.1f}s", file=sys.stderr, flush=True)  # fmt: skip
    n = len(photos)
    print(f"\n{n} coco-mini photos, {os.cpu_count()} CPUs, weights {weights.name}, "
          f"median of {args.repeats}\n")
    print(f"| engine | photos/s | marginal photos/s | seconds ({n}) | seconds ({SMALL}) |")
    print("|---|---|---|---|---|")
    for name, res in results.items():
        t_full, t_small = statistics.median(res["full"]), statistics.median(res["small"])
        marginal = (n - SMALL) / (t_full - t_small) if t_full > t_small else float("nan")
        print(f"| {name} | {statistics.median(res['rate']):.1f} | {marginal:.1f} | "
              f"{t_full:.1f} | {t_small:.1f} |")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
