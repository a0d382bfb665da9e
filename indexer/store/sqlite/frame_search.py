"""The exact in-memory frame search: every stored frame vector in one float32 matrix, reloaded
when the meta key ``frames_gen`` moves (shared by the SQLAlchemy store and the light reader
through a :data:`~indexer.store.sqlite.reads.Sql` callable; no SQLAlchemy here)."""

from __future__ import annotations

import threading

import numpy as np

from indexer.store.sqlite import reads
from indexer.store.sqlite.reads import FRAMES_GEN_KEY, Sql
from indexer.store.vectors.checks import normalize


class FrameMatrix:
    """Every stored frame: image ids, times and unit vectors, searched exactly."""

    def __init__(self, ids: np.ndarray, times: np.ndarray, vecs: np.ndarray, gen: int) -> None:
        self.ids, self.times, self.vecs, self.gen = ids, times, vecs, gen

    def search(
        self, query: np.ndarray, k: int, allowed: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rows = np.arange(len(self.ids))
        if allowed is not None:
            rows = rows[np.isin(self.ids, np.asarray(allowed, dtype=np.int64))]
        if not len(rows) or k < 1:
            return np.empty(0, np.float32), np.empty(0, np.int64), np.empty(0, np.int64)
        q = normalize(np.asarray(query, dtype=np.float32).reshape(1, -1))[0]  # cosines
        scores = self.vecs[rows] @ q
        top = np.argpartition(-scores, k - 1)[:k] if k < len(rows) else np.arange(len(rows))
        top = top[np.argsort(-scores[top], kind="stable")]
        picked = rows[top]
        return scores[top].astype(np.float32), self.ids[picked], self.times[picked]


class FrameCache:
    """The current :class:`FrameMatrix` of one database (thread-safe)."""

    def __init__(self) -> None:
        self._matrix: FrameMatrix | None = None
        self._lock = threading.Lock()

    def matrix(self, sql: Sql) -> FrameMatrix:
        gen = reads.meta_int(sql, FRAMES_GEN_KEY)
        current = self._matrix
        if current is not None and current.gen == gen:
            return current
        rows = reads.frame_rows(sql)
        times = np.fromiter((r[1] for r in rows), dtype=np.int64, count=len(rows))
        if rows:
            ids, vecs = reads.decode_rows([(r[0], r[2]) for r in rows])
        else:
            ids, vecs = np.empty(0, np.int64), np.zeros((0, 1), np.float32)
        with self._lock:
            self._matrix = FrameMatrix(ids, times, vecs, gen)
            return self._matrix
