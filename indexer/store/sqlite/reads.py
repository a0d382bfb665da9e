"""The reads a query or ``status`` makes, in plain SQL, and the vector blobs' format.

Both the SQLAlchemy store (:mod:`indexer.store.sqlite.store`) and the light reader a query
process opens (:mod:`indexer.store.sqlite.reader`, stdlib ``sqlite3`` only: importing
SQLAlchemy costs a cold query ~0.2 s) run these through a :data:`Sql` callable, so the SQL
is written once. Nothing here imports SQLAlchemy.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np

from indexer.store.errors import SchemaError
from indexer.store.records import STATUS_ERROR, STATUS_OK, Record

SCHEMA_VERSION = 8
# Stored vectors (schema 6): little-endian float16, one copy of each vector (FAISS holds the
# searchable one). A 512-d float32 blob (2 KB) took a 4 KB page of its own; float16 fits three
# to a page, and its error (<= 2.5e-4 per cosine) is far below the FAISS index's own at scale
# (bench/bench_scale.py measures the ranking fidelity against float32).
VECTOR_DTYPE = "<f2"
CHUNK = 500  # SQLite host parameters per IN (...) query
FRAMES_GEN_KEY = "frames_gen"

#: runs one statement (``?`` parameters) and returns its rows as tuples
Sql = Callable[[str, Sequence], list]

_RECORD_COLUMNS = ("id, path, root, size, mtime_ns, content_hash, width, height, taken_at, "
                   "camera, status, error, indexed_at, duration_ms")  # fmt: skip


def check_version(version: int, writer: bool, current: int | None = None) -> bool:
    """True if ``version`` is the ``current`` schema (default :data:`SCHEMA_VERSION`); False
    if a writer may migrate it; raises :class:`SchemaError` if it is newer, or older for a
    reader."""
    current = SCHEMA_VERSION if current is None else current
    if version > current:
        raise SchemaError(f"the index was written by a newer clipsearch (schema {version} > "
                          f"{current}); upgrade clipsearch")  # fmt: skip
    if version < current and not writer:
        raise SchemaError(f"the index uses schema {version}; run `clipsearch index` to migrate "
                          f"it to {current}")  # fmt: skip
    return version == current


def chunks(seq: Sequence, n: int = CHUNK) -> Iterable[Sequence]:
    """``seq`` in slices of at most ``n`` items."""
    for i in range(0, len(seq), n):
        yield seq[i : i + n]


def encode_vector(vec: np.ndarray) -> bytes:
    """The stored blob of one vector (:data:`VECTOR_DTYPE`)."""
    return np.ascontiguousarray(vec, dtype=VECTOR_DTYPE).tobytes()


def decode_rows(rows: Sequence) -> tuple[np.ndarray, np.ndarray]:
    """(ids, (n, D) float32 unit rows) of ``(image_id, vector blob)`` rows (the stored float16
    rounding moves norms by ~1e-4: renormalised, so scores are cosines to float32 precision)."""
    ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
    vecs = np.frombuffer(b"".join(r[1] for r in rows), dtype=VECTOR_DTYPE).reshape(len(rows), -1)
    vecs = vecs.astype(np.float32)
    vecs /= np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
    return ids, vecs


def meta(sql: Sql) -> dict[str, str]:
    return {k: v for k, v in sql("SELECT key, value FROM meta", ())}


def meta_int(sql: Sql, key: str) -> int:
    """An integer meta key (0 when absent), e.g. ``generation``."""
    rows = sql("SELECT value FROM meta WHERE key = ?", (key,))
    return int(rows[0][0]) if rows and rows[0][0] is not None else 0


def vector_count(sql: Sql) -> int:
    """Rows of ``vectors`` (a trigger-kept counter: no scan)."""
    rows = sql("SELECT n FROM counters WHERE name = 'vectors'", ())
    return int(rows[0][0] or 0) if rows else 0


def _record(row: Sequence) -> Record:
    return Record(row[0], os.fsdecode(row[1]), os.fsdecode(row[2]), *row[3:])


def records(sql: Sql, ids: Sequence[int]) -> dict[int, Record]:
    """Image records by id (missing ids are left out)."""
    out: dict[int, Record] = {}
    for part in chunks([int(i) for i in ids]):
        marks = ",".join("?" * len(part))
        for row in sql(f"SELECT {_RECORD_COLUMNS} FROM images WHERE id IN ({marks})", part):
            out[row[0]] = _record(row)
    return out


def errors(sql: Sql, limit: int | None = None) -> list[Record]:
    tail = f" LIMIT {int(limit)}" if limit is not None else ""
    rows = sql(f"SELECT {_RECORD_COLUMNS} FROM images WHERE status = ? ORDER BY path{tail}",
               (STATUS_ERROR,))  # fmt: skip
    return [_record(r) for r in rows]


def counts(sql: Sql) -> dict[str, int]:
    """From the trigger-kept counters (schema 6): no scan of the image or vector rows."""
    rows = sql("SELECT status, SUM(n) FROM image_counts GROUP BY status", ())
    by_status = {s: int(n) for s, n in rows}
    return {"images": sum(by_status.values()), "ok": by_status.get(STATUS_OK, 0),
            "errors": by_status.get(STATUS_ERROR, 0), "vectors": vector_count(sql)}  # fmt: skip


def roots(sql: Sql) -> dict[str, int]:
    """Indexed image count per root (from the counters: no scan)."""
    rows = sql("SELECT root, n FROM image_counts WHERE status = ? AND n > 0", (STATUS_OK,))
    return {os.fsdecode(r): int(n) for r, n in rows}


def frame_counts(sql: Sql) -> dict[str, int]:
    videos, frames = sql("SELECT COUNT(DISTINCT image_id), COUNT(*) FROM frames", ())[0]
    return {"videos": int(videos), "frames": int(frames)}


def frame_rows(sql: Sql) -> list:
    """(image_id, t_ms, vector blob) of every stored frame, by image and time."""
    return sql("SELECT image_id, t_ms, vector FROM frames ORDER BY image_id, t_ms", ())


def ocr_counts(sql: Sql, error_status: str) -> dict[str, int]:
    read, with_text, errs = sql(
        "SELECT COUNT(*), COALESCE(SUM(compact != ''), 0), COALESCE(SUM(status = ?), 0) "
        "FROM ocr_text", (error_status,))[0]  # fmt: skip
    return {"read": int(read), "with_text": int(with_text), "errors": int(errs),
            "pending": max(0, vector_count(sql) - int(read))}  # fmt: skip


def last_modified(db_path: Path) -> float | None:
    """The newest mtime of the SQLite file and its write-ahead log."""
    times = []
    for p in (db_path, db_path.with_name(db_path.name + "-wal")):
        try:
            times.append(os.stat(p).st_mtime)
        except OSError:
            pass
    return max(times) if times else None
