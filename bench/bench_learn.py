"""Personal concepts at library scale: fitting on a 100k library, applying to 1M vectors.

    .venv/bin/python -m bench.bench_learn                      # 100k store, 1M scoring
    .venv/bin/python -m bench.bench_learn --size 20000 --apply 200000 --runs 3

A real index (SQLite rows + vectors, FAISS built by the store's start-up repair) holds
clustered synthetic unit vectors (``bench.bench_query.clustered``, 512-d like ViT-B/32).
Measured, median of ``--runs``:

* fit: ``ConceptService`` fitting a concept on 5 examples of one cluster (library sample as
  negatives, logistic regression, cross-validated threshold) -- what ``concept teach`` does
  before writing;
* teach end to end on the store: fit + store the concept + score every stored vector and
  write its tag rows in one transaction;
* apply to ``--apply`` vectors: every concept (``--concepts``) scored over the vectors in
  chunks (``indexer.learn.apply.concept_rows``: one matrix product per chunk) -- the compute
  of applying concepts, without SQLite reads;
* ``--store-apply N``: the same end to end on a store of N vectors: ``--concepts`` concepts,
  each fitted on 5 vectors of another cluster, are stored with no rows and applied to every
  stored vector (``apply.apply_pending``: the vectors read from SQLite page by page, scored,
  their tag rows written, one transaction) -- what follows a migration or an interrupted
  teach.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from .bench_query import clustered

DIM = 512


def build_store(path: Path, vectors: np.ndarray):  # noqa: ANN201 - an IndexStore
    from indexer.store import open_store
    from indexer.store.sqlite.schema import VECTOR_DTYPE
    from indexer.types import ModelIdentity

    store = open_store(path, writer=True)
    store.bind_model(ModelIdentity("bench", "b" * 64, DIM, ""))
    root = b"/bench"
    with store.engine.begin() as conn:  # bulk load, as bench_query does
        step = 50_000
        for lo in range(0, len(vectors), step):
            ids = range(lo, min(lo + step, len(vectors)))
            conn.exec_driver_sql(
                "INSERT INTO images (id, path, root, size, mtime_ns, content_hash, width, height,"
                " taken_at, camera, status, error, indexed_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                [(i + 1, root + b"/%08d.jpg" % i, root, 1, 1, f"{i:064x}", 1, 1, None, None, "ok",
                  None, 0.0) for i in ids],
            )  # fmt: skip
            conn.exec_driver_sql("INSERT INTO vectors (image_id, gen, vector) VALUES (?, 1, ?)",
                                 [(i + 1, vectors[i].astype(VECTOR_DTYPE).tobytes())
                                  for i in ids])  # fmt: skip
        conn.exec_driver_sql("INSERT INTO meta(key, value) VALUES ('generation', '1') "
                             "ON CONFLICT(key) DO UPDATE SET value = excluded.value")  # fmt: skip
    store.close()
    return open_store(path, writer=True)  # the start-up repair builds FAISS


def _store_and_service(tmp: Path, vectors: np.ndarray):  # noqa: ANN202
    """A store of ``vectors`` in ``tmp`` and a ConceptService over it (ids as photo refs)."""
    from indexer.learn.service import ConceptService

    t0 = time.perf_counter()
    store = build_store(tmp / "v1", vectors)
    print(f"store: {len(vectors):,} vectors ({store.index.kind}) built in "
          f"{time.perf_counter() - t0:.0f} s")  # fmt: skip
    svc = ConceptService(lambda: store, lambda: None, lambda s, p: [int(i) for i in p],
                         lambda: set())  # fmt: skip
    return store, svc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=100_000, help="vectors in the store")
    ap.add_argument("--apply", type=int, default=1_000_000, help="vectors concepts are applied to")
    ap.add_argument("--concepts", type=int, default=10, help="concepts applied at once")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--store-apply", type=int, default=0, metavar="N",
                    help="also apply the concepts end to end to a store of N vectors")
    args = ap.parse_args()
    if args.store_apply:
        store_apply(args.store_apply, args.concepts, args.runs)
        return

    from indexer.learn import apply

    vectors = clustered(args.size, DIM, seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        store, svc = _store_and_service(Path(tmp), vectors)
        # examples: 5 vectors of the cluster of vector 0
        sims = vectors @ vectors[0]
        examples = (np.argsort(-sims)[:5] + 1).tolist()
        fits, teaches = [], []
        for _ in range(args.runs):
            t = time.perf_counter()
            svc._fit(store, "bench", examples, [], None)
            fits.append(time.perf_counter() - t)
            t = time.perf_counter()
            svc.teach("bench", examples, replace=True)
            teaches.append(time.perf_counter() - t)
        print(f"fit a concept on a {args.size:,} library: median {statistics.median(fits):.3f} s "
              f"(runs {', '.join(f'{x:.3f}' for x in fits)})")  # fmt: skip
        print(f"teach end to end (fit + score and write rows for {args.size:,} stored vectors): "
              f"median {statistics.median(teaches):.2f} s")  # fmt: skip
        concept = store.concepts()[0]
        store.close()
    rng = np.random.default_rng(1)
    concepts = []
    for i in range(args.concepts):
        w = rng.standard_normal(DIM).astype(np.float32)
        concepts.append(type(concept)(f"c{i}", [], [], w / np.linalg.norm(w) * 10, -2.0, 0.0))
    concepts[0] = concept
    chunk = clustered(min(args.apply, 100_000), DIM, seed=2)  # the same pages, reused
    times = []
    for _ in range(args.runs):
        t = time.perf_counter()
        done = tagged = 0
        while done < args.apply:
            n = min(apply._CHUNK, args.apply - done)
            lo = done % len(chunk)
            part = chunk[lo : lo + n] if lo + n <= len(chunk) else chunk[:n]
            tagged += sum(map(len, apply.concept_rows(part, concepts)))
            done += n
        times.append(time.perf_counter() - t)
    print(f"apply {args.concepts} concepts to {args.apply:,} vectors: median "
          f"{statistics.median(times):.2f} s (runs {', '.join(f'{x:.2f}' for x in times)}; "
          f"{tagged:,} rows)")  # fmt: skip
    print(f"threads: {os.cpu_count()} CPUs")


def store_apply(size: int, n_concepts: int, runs: int) -> None:
    """Every concept applied to every vector of a ``size`` store, end to end."""
    from indexer.learn import apply

    vectors = clustered(size, DIM, seed=3)
    with tempfile.TemporaryDirectory() as tmp:
        store, svc = _store_and_service(Path(tmp), vectors)
        concepts = []
        for i in range(n_concepts):
            sims = vectors @ vectors[(i * 7919) % size]
            examples = (np.argpartition(-sims, 5)[:5] + 1).tolist()
            concepts.append(svc._fit(store, f"c{i}", examples, [], None))
        del vectors
        times, rows = [], 0
        for _ in range(runs):
            with store.tag_transaction() as tx:  # the concepts, stored without rows
                for c in concepts:
                    tx.put_concept(c)
                tx.delete_concept_rows([c.name for c in concepts])
                tx.set_concepts_generation(0)
            t = time.perf_counter()
            rows = apply.apply_pending(store)
            times.append(time.perf_counter() - t)
        print(f"apply {n_concepts} stored concepts to {size:,} stored vectors end to end: "
              f"median {statistics.median(times):.1f} s (runs "
              f"{', '.join(f'{x:.1f}' for x in times)}; {rows:,} rows written)")  # fmt: skip
        store.close()


if __name__ == "__main__":
    main()
