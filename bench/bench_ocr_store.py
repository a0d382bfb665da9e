"""``text:`` lookups at library scale: SQLite's FTS5 trigram index and PostgreSQL's pg_trgm GIN
index against a plain ``LIKE`` scan of the same compact column.

    .venv/bin/python -m bench.bench_ocr_store [--rows 100000] [--queries 200]

Every image gets a vector and a text of 3-12 random words (a quarter of them no text, as
photos without words); queries are 7-letter substrings of stored words (found) and random
7-letter strings (not found). Reported: p50/p95 latency of ``store.search_text`` per backend,
with its index and with the index left out (SQLite: the ``LIKE`` fallback; PostgreSQL: the
GIN index dropped).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from indexer.store import Changes, ImageText, open_store
from indexer.types import ModelIdentity

DIM = 16
LETTERS = list("abcdefghijkmnopqrstuvwxyz")


def _texts(rng: np.random.Generator, n: int) -> list[str]:
    def word() -> str:
        return "".join(rng.choice(LETTERS, int(rng.integers(5, 10))))

    return ["" if rng.random() < 0.25 else " ".join(word() for _ in range(int(rng.integers(3, 13))))
            for _ in range(n)]  # fmt: skip


def _load(store, texts: list[str], rng: np.random.Generator) -> float:
    t0 = time.perf_counter()
    store.bind_model(ModelIdentity("rand", "b" * 64, DIM, "{}"))
    for lo in range(0, len(texts), 20_000):
        vecs = rng.standard_normal((min(20_000, len(texts) - lo), DIM)).astype(np.float32)
        ups = [{"path": f"/p/{lo + i}.jpg".encode(), "root": b"/p", "status": "ok", "vector": v}
               for i, v in enumerate(vecs)]  # fmt: skip
        ids = store.apply(Changes(ups, [], [], []))
        gen = store.generation()
        store.put_texts([ImageText(ids[f"/p/{lo + i}.jpg".encode()], texts[lo + i], "rapidocr")
                         for i in range(len(vecs))], gen)  # fmt: skip
    return time.perf_counter() - t0


def _time(store, queries: list[str]) -> tuple[float, float, int]:
    ms = []
    hits = 0
    for q in queries:
        t0 = time.perf_counter()
        hits += len(store.search_text(q, limit=1000))
        ms.append((time.perf_counter() - t0) * 1000)
    ms.sort()
    return statistics.median(ms), ms[int(len(ms) * 0.95)], hits


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=200)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    texts = _texts(rng, args.rows)
    words = [w for t in texts for w in t.split()]
    queries = [str(w[:7]) for w in rng.choice(words, args.queries // 2)]
    queries += ["".join(rng.choice(LETTERS, 7)) for _ in range(args.queries - len(queries))]
    from indexer.store.sqlite import ocr as sqlite_ocr
    from tests.pg import PgServer

    print(f"{args.rows} images, {sum(bool(t) for t in texts)} with text; {len(queries)} queries")
    print("| backend | lookup | p50 ms | p95 ms | results |\n|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(Path(tmp) / "v1", writer=True)
        load = _load(store, texts, rng)
        p50, p95, n = _time(store, queries)
        print(f"| SQLite (load {load:.0f} s) | FTS5 trigram | {p50:.2f} | {p95:.2f} | {n} |")
        sqlite_ocr._TRIGRAM = 10**6  # every phrase takes the LIKE scan
        p50, p95, n = _time(store, queries)
        print(f"| SQLite | LIKE scan | {p50:.2f} | {p95:.2f} | {n} |")
        store.close()
        server = PgServer(Path(tempfile.mkdtemp(prefix="clipsearch-bench-pg-"))).start()
        try:
            store = open_store(server.create_database("bench"), writer=True)
            load = _load(store, texts, rng)
            from sqlalchemy import text

            with store.engine.begin() as conn:
                conn.execute(text("ANALYZE ocr_text"))
            p50, p95, n = _time(store, queries)
            print(f"| PostgreSQL (load {load:.0f} s) | pg_trgm GIN | {p50:.2f} | {p95:.2f} | {n} |")
            with store.engine.begin() as conn:
                conn.execute(text("DROP INDEX ix_ocr_text_trgm"))
            p50, p95, n = _time(store, queries)
            print(f"| PostgreSQL | LIKE scan | {p50:.2f} | {p95:.2f} | {n} |")
            store.close()
        finally:
            server.stop()


if __name__ == "__main__":
    main()
