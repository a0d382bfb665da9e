"""The ``flat16`` index against ``flat`` on the same stored vectors: ranking fidelity, speed, size.

    .venv/bin/python -m bench.bench_flat16                 # the 100k query library
    .venv/bin/python -m bench.bench_flat16 --size 20000

SQLite stores every vector as float16; ``flat`` searches their float32 decoding (renormalised),
``flat16`` the float16 codes themselves (what "auto" picks below 200k since issue 15). On the
library's stored vectors (bench/query_library.py: synthetic clustered rows, the random
ViT-B/32's dimension), ``--queries`` stored vectors search both indexes (each one's own hit
left out): recall@k of ``flat16`` against ``flat``'s exact top k, the largest and mean
difference of a pair's score on the two, one-thread search p50 per query and the file sizes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from .datasets import benchmark_weights
from .query_library import query_library


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--size", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=500)
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--weights")
    args = ap.parse_args()
    from indexer.config import load_config
    from indexer.library import Library
    from indexer.store.vectors.index import VectorIndex, set_threads
    from indexer.tags.service import all_vectors

    set_threads(1)
    with Library.open(load_config(query_library(args.size, benchmark_weights(args.weights)))) as lib:
        ids, x = all_vectors(lib.store)  # the float32 decoding of the stored float16
    rng = np.random.default_rng(0)
    q = x[rng.choice(len(x), args.queries, replace=False)]
    out: dict = {"vectors": len(x), "dim": x.shape[1], "queries": args.queries, "k": args.k}
    found, indexes = {}, {}
    for kind in ("flat", "flat16"):
        index = indexes[kind] = VectorIndex.build(ids, x, kind=kind)
        times, rows = [], []
        for row in q:
            t = time.perf_counter()
            rows.append(index.search(row, args.k + 1))
            times.append(time.perf_counter() - t)
        found[kind] = (np.concatenate([r[0][:, 1:] for r in rows]),
                       np.concatenate([r[1][:, 1:] for r in rows]))  # fmt: skip
        with tempfile.TemporaryDirectory() as tmp:
            index.save(Path(tmp) / "v.faiss", 1)
            size = (Path(tmp) / "v.faiss").stat().st_size
        out[kind] = {"search_ms_p50": 1000 * statistics.median(times), "file_mb": size / 1e6}
    (s32, i32), (_, i16) = found["flat"], found["flat16"]
    hits = [len(set(a) & set(b)) for a, b in zip(i32.tolist(), i16.tolist())]
    out[f"recall@{args.k}"] = float(np.mean(hits) / args.k)
    out["top1_same"] = float(np.mean(i32[:, 0] == i16[:, 0]))
    # the same (query, photo) pairs scored on each: flat's top k against the float16 codes
    codes = indexes["flat16"].get_vectors(i32.reshape(-1)).reshape(len(q), args.k, -1)
    err = np.abs(s32 - np.einsum("qd,qkd->qk", q, codes))
    out["score_diff_max"], out["score_diff_mean"] = float(err.max()), float(err.mean())
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
