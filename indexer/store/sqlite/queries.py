"""Read-only queries over the SQLite database, shared by readers and writers.

:class:`StoreQueries` is one part of :class:`indexer.store.sqlite.SqliteStore`; it needs
``engine`` (an SQLAlchemy engine) and ``dim()`` from the store.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
from sqlalchemy import Connection, Engine, func, select

from indexer.store.records import STATUS_OK, Record
from indexer.store.sqlite.reads import Sql, chunks, decode_rows, encode_vector  # noqa: F401 - re-exported
from indexer.store.sqlite.schema import ImageRow, VectorRow, translated_errors

_IMAGES = ImageRow.__table__


def driver(conn: Connection) -> Sql:
    """The :data:`~indexer.store.sqlite.reads.Sql` runner of an SQLAlchemy connection."""
    return lambda sql, params: conn.exec_driver_sql(sql, tuple(params)).all()


def vector_pages(
    conn: Connection, lo: int | None = None, hi: int | None = None, size: int = 4096
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(ids, (n, D) float32) of stored vectors with ``lo < gen <= hi``, by id (keyset pages,
    so no cursor stays open while the caller writes)."""
    where = ["image_id > ?"]
    if lo is not None:
        where.append(f"gen > {int(lo)}")
    if hi is not None:
        where.append(f"gen <= {int(hi)}")
    sql = (f"SELECT image_id, vector FROM vectors WHERE {' AND '.join(where)} "
           "ORDER BY image_id LIMIT ?")  # fmt: skip
    last = -1
    while True:  # driver-level rows: the ORM's row objects cost more than the decoding
        rows = conn.exec_driver_sql(sql, (last, int(size))).all()
        if not rows:
            return
        ids, vecs = decode_rows(rows)
        yield ids, vecs
        last = int(ids[-1])


class StoreQueries:
    """Lookups by id, path and filters; counts and error listings."""

    engine: Engine

    @contextmanager
    def _connect(self) -> Iterator[Connection]:
        with translated_errors(), self.engine.connect() as conn:
            yield conn

    @contextmanager
    def _sql(self) -> Iterator[Sql]:
        """One connection's plain-SQL runner (for :class:`~indexer.store.sqlite.shared.SqlReads`)."""
        with self._connect() as conn:
            yield driver(conn)

    @contextmanager
    def _begin(self) -> Iterator[Connection]:
        with translated_errors(), self.engine.begin() as conn:
            yield conn

    def iter_vectors(self, size: int = 20_000) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Every stored vector as (ids, (n, d) float32) pages, by id."""
        with self._connect() as conn:
            yield from vector_pages(conn, size=size)

    def vectors(
        self, ids: Sequence[int], conn: Connection | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(ids found, their vectors (n, d)) from SQLite, in the order of ``ids``."""
        if conn is None:
            with self._connect() as c:
                return self.vectors(ids, c)
        found: dict[int, bytes] = {}
        for part in chunks(list(ids)):
            q = select(VectorRow.image_id, VectorRow.vector).where(VectorRow.image_id.in_(part))
            found.update((r[0], r[1]) for r in conn.execute(q))
        rows = [(i, found[i]) for i in ids if i in found]
        if not rows:
            return np.zeros(0, np.int64), np.zeros((0, self.dim() or 0), np.float32)
        return decode_rows(rows)

    def record_by_path(self, path: str | os.PathLike) -> Record | None:
        key = os.fsencode(os.path.abspath(path))
        with self._connect() as conn:
            row = conn.execute(select(_IMAGES).where(ImageRow.path == key)).first()
            return Record.from_row(row) if row is not None else None

    def rows_for_scan(self) -> list[tuple]:
        """(id, path bytes, size, mtime_ns, status, content_hash) of every image row."""
        cols = (ImageRow.id, ImageRow.path, ImageRow.size, ImageRow.mtime_ns, ImageRow.status,
                ImageRow.content_hash)  # fmt: skip
        with self._connect() as conn:
            return [tuple(r) for r in conn.execute(select(*cols))]

    def hashes_with_vectors(self) -> dict[str, list[int]]:
        """content hash -> ids of rows that have a vector (for move/duplicate detection)."""
        out: dict[str, list[int]] = {}
        q = select(ImageRow.content_hash, ImageRow.id).join(
            VectorRow, VectorRow.image_id == ImageRow.id
        )
        with self._connect() as conn:
            for h, i in conn.execute(q):
                if h:
                    out.setdefault(h, []).append(i)
        return out

    def content_hashes(self) -> set[str]:
        """Content hashes of all image rows."""
        q = select(ImageRow.content_hash).where(ImageRow.content_hash.is_not(None)).distinct()
        with self._connect() as conn:
            return set(conn.execute(q).scalars())

    def filter_ids(
        self, folder: str | None = None, since: str | None = None, until: str | None = None
    ) -> np.ndarray:
        """Ids of indexed images under ``folder`` and captured within [since, until]."""
        q = select(ImageRow.id).where(ImageRow.status == STATUS_OK)
        if folder:
            prefix = os.fsencode(os.path.abspath(folder).rstrip(os.sep) + os.sep)
            q = q.where(func.substr(ImageRow.path, 1, len(prefix)) == prefix)
        if since:
            q = q.where(ImageRow.taken_at >= since)
        if until:
            q = q.where(ImageRow.taken_at <= until)
        with self._connect() as conn:
            return np.asarray(conn.execute(q).scalars().all(), dtype=np.int64)
