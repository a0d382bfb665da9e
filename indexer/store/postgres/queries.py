"""Read-only queries over one PostgreSQL index version, shared by readers and writers.

:class:`PgQueries` is one part of :class:`indexer.store.postgres.PgStore`; it needs
``engine``, ``url`` (for masking) and ``dim()`` from the store.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
from sqlalchemy import Connection, Engine, func, select

from indexer.store.postgres.schema import images, translated_errors, vectors
from indexer.store.records import STATUS_ERROR, STATUS_OK, Record


def decode_rows(rows: Sequence, dim: int | None) -> tuple[np.ndarray, np.ndarray]:
    """(ids, (n, D) float32) of ``(image_id, vector)`` rows."""
    ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
    if not rows:
        return ids, np.zeros((0, dim or 0), np.float32)
    return ids, np.stack([np.asarray(r[1], dtype=np.float32) for r in rows])


def vector_pages(
    conn: Connection, lo: int | None = None, hi: int | None = None, size: int = 4096
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(ids, (n, D) float32) of vectors with ``lo < gen <= hi``, by id (keyset pages)."""
    last = -1
    while True:
        q = select(vectors.c.image_id, vectors.c.vector).where(vectors.c.image_id > last)
        if lo is not None:
            q = q.where(vectors.c.gen > lo)
        if hi is not None:
            q = q.where(vectors.c.gen <= hi)
        rows = conn.execute(q.order_by(vectors.c.image_id).limit(size)).all()
        if not rows:
            return
        ids, vecs = decode_rows(rows, None)
        yield ids, vecs
        last = int(ids[-1])


class PgQueries:
    """Lookups by id, path and filters; counts and error listings."""

    engine: Engine
    url: str

    @contextmanager
    def _connect(self) -> Iterator[Connection]:
        with translated_errors(self.url), self.engine.connect() as conn:
            yield conn

    @contextmanager
    def _begin(self) -> Iterator[Connection]:
        with translated_errors(self.url), self.engine.begin() as conn:
            yield conn

    def iter_vectors(self, size: int = 20_000) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        with self._connect() as conn:
            yield from vector_pages(conn, size=size)

    def vectors(
        self, ids: Sequence[int], conn: Connection | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(ids found, their vectors (n, d)), in the order of ``ids``."""
        if conn is None:
            with self._connect() as c:
                return self.vectors(ids, c)
        want = [int(i) for i in ids]
        q = select(vectors.c.image_id, vectors.c.vector).where(vectors.c.image_id.in_(want))
        found = {r[0]: r[1] for r in conn.execute(q)} if want else {}
        rows = [(i, found[i]) for i in want if i in found]
        return decode_rows(rows, self.dim())  # type: ignore[attr-defined] - IndexStore.dim

    def records(self, ids: Sequence[int]) -> dict[int, Record]:
        want = [int(i) for i in ids]
        if not want:
            return {}
        with self._connect() as conn:
            rows = conn.execute(select(images).where(images.c.id.in_(want)))
            return {row.id: Record.from_row(row) for row in rows}

    def record_by_path(self, path: str | os.PathLike) -> Record | None:
        key = os.fsencode(os.path.abspath(path))
        with self._connect() as conn:
            row = conn.execute(select(images).where(images.c.path == key)).first()
            return Record.from_row(row) if row is not None else None

    def rows_for_scan(self) -> list[tuple]:
        c = images.c
        with self._connect() as conn:
            q = select(c.id, c.path, c.size, c.mtime_ns, c.status, c.content_hash)
            return [tuple(r) for r in conn.execute(q)]

    def hashes_with_vectors(self) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {}
        q = select(images.c.content_hash, images.c.id).join(
            vectors, vectors.c.image_id == images.c.id
        )
        with self._connect() as conn:
            for h, i in conn.execute(q.order_by(images.c.id)):
                if h:
                    out.setdefault(h, []).append(i)
        return out

    def content_hashes(self) -> set[str]:
        q = select(images.c.content_hash).where(images.c.content_hash.is_not(None)).distinct()
        with self._connect() as conn:
            return set(conn.execute(q).scalars())

    def filter_ids(
        self, folder: str | None = None, since: str | None = None, until: str | None = None
    ) -> np.ndarray:
        q = select(images.c.id).where(images.c.status == STATUS_OK)
        if folder:
            prefix = os.fsencode(os.path.abspath(folder).rstrip(os.sep) + os.sep)
            q = q.where(func.substring(images.c.path, 1, len(prefix)) == prefix)
        if since:
            q = q.where(images.c.taken_at >= since)
        if until:
            q = q.where(images.c.taken_at <= until)
        with self._connect() as conn:
            return np.asarray(conn.execute(q.order_by(images.c.id)).scalars().all(), np.int64)

    def counts(self) -> dict[str, int]:
        with self._connect() as conn:
            by_status = dict(conn.execute(
                select(images.c.status, func.count()).group_by(images.c.status)).all())  # fmt: skip
            n = conn.execute(select(func.count()).select_from(vectors)).scalar() or 0
        return {"images": sum(by_status.values()), "ok": by_status.get(STATUS_OK, 0),
                "errors": by_status.get(STATUS_ERROR, 0), "vectors": int(n)}  # fmt: skip

    def errors(self, limit: int | None = None) -> list[Record]:
        q = select(images).where(images.c.status == STATUS_ERROR).order_by(images.c.path)
        if limit is not None:
            q = q.limit(limit)
        with self._connect() as conn:
            return [Record.from_row(r) for r in conn.execute(q)]

    def roots(self) -> dict[str, int]:
        q = select(images.c.root, func.count()).where(images.c.status == STATUS_OK)
        with self._connect() as conn:
            return {os.fsdecode(r): n for r, n in conn.execute(q.group_by(images.c.root))}
