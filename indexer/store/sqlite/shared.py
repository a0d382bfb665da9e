"""The reads both SQLite stores answer alike: :class:`SqlReads`, over the plain SQL of
:mod:`~indexer.store.sqlite.reads` and the shared FAISS mirror and frame search.

The full store (SQLAlchemy, :mod:`~indexer.store.sqlite.store`) and the light reader of query
processes (:mod:`~indexer.store.sqlite.reader`, standard ``sqlite3``) each provide ``_sql()``:
a context giving one connection's :data:`~indexer.store.sqlite.reads.Sql` runner. No
SQLAlchemy here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from pathlib import Path

import numpy as np

from indexer.store.records import OCR_ERROR, Record, VectorState
from indexer.store.sqlite import reads
from indexer.store.sqlite.frame_search import FrameCache
from indexer.store.sqlite.mirror import FaissMirror
from indexer.store.sqlite.reads import Sql


class SqlReads:
    """Metadata, records, counts, the FAISS index kept current and its search, frames.

    Needs from the store: ``_sql()`` (a context giving an :data:`Sql` runner), ``dim()``
    (:class:`~indexer.store.base.IndexStore`'s), ``db_path``, ``mirror``, ``_frame_cache``.
    """

    db_path: Path
    mirror: FaissMirror
    _frame_cache: FrameCache
    _sql: Callable[[], AbstractContextManager[Sql]]
    dim: Callable[[], int | None]

    def meta(self) -> dict[str, str]:
        with self._sql() as sql:
            return reads.meta(sql)

    def generation(self) -> int:
        with self._sql() as sql:
            return reads.meta_int(sql, "generation")

    @property
    def index(self):  # noqa: ANN201 - VectorIndex | None (tools and tests look at it)
        return self.mirror.index

    @property
    def index_gen(self) -> int:
        return self.mirror.gen

    def refresh(self) -> bool:
        """Bring the in-memory FAISS index up to the SQLite generation; True if it changed."""
        with self._sql() as sql:
            return self.mirror.refresh(sql, self.dim)

    def vector_state(self) -> VectorState:
        return self.mirror.state()

    def vector_summary(self) -> VectorState:
        with self._sql() as sql:
            return self.mirror.summary(sql, self.refresh)

    def search_vectors(
        self, query: np.ndarray, k: int, allowed_ids: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        return self.mirror.search(query, k, allowed_ids)

    def sample_vectors(self, n: int) -> np.ndarray:
        return self.mirror.sample(n, self.dim())

    def search_frames(
        self, query: np.ndarray, k: int, allowed_ids: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        with self._sql() as sql:
            matrix = self._frame_cache.matrix(sql)
        return matrix.search(query, k, allowed_ids)

    def records(self, ids: Sequence[int]) -> dict[int, Record]:
        """Image records by id (missing ids are left out)."""
        with self._sql() as sql:
            return reads.records(sql, ids)

    def counts(self) -> dict[str, int]:
        with self._sql() as sql:
            return reads.counts(sql)

    def errors(self, limit: int | None = None) -> list[Record]:
        with self._sql() as sql:
            return reads.errors(sql, limit)

    def roots(self) -> dict[str, int]:
        with self._sql() as sql:
            return reads.roots(sql)

    def frame_counts(self) -> dict[str, int]:
        with self._sql() as sql:
            return reads.frame_counts(sql)

    def ocr_counts(self) -> dict[str, int]:
        with self._sql() as sql:
            return reads.ocr_counts(sql, OCR_ERROR)

    def last_modified(self) -> float | None:
        return reads.last_modified(self.db_path)
