"""The in-memory FAISS index of one SQLite version, kept at the database's generation.

The FAISS file is saved with the generation it reflects. Bringing the index up to date means
replaying the vectors and tombstones written since (tagged with their generation), or
reloading the file when the tombstones needed were pruned or the database went back in time.
The SQLAlchemy store and the light reader share this through a :data:`~.reads.Sql` callable.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from indexer.store.records import VectorState
from indexer.store.sqlite import reads
from indexer.store.sqlite.reads import Sql
from indexer.store.vectors.file import read_header
from indexer.store.vectors.index import VectorIndex, start_kind
from indexer.store.versions import file_signature

FAISS_FILE_KEY = "faiss_file"  # meta: the signature of the FAISS file last saved
PRUNED_KEY = "tombstones_pruned"  # meta: generation up to which tombstones were deleted
MAP_VECTOR_FILES = True  # readers memory-map the FAISS file (indexer.store.map_vector_files)
_REPLAY_PAGE = 20_000  # vectors read from SQLite at a time when replaying


class FaissMirror:
    """``index`` at generation ``gen``, loaded from ``path`` (file generation ``file_gen``)."""

    def __init__(self, path: Path, writer: bool, kind: str = "auto") -> None:
        self.path = path
        self.writer = writer
        self.start_kind = start_kind(kind)  # of an index started empty
        self.index: VectorIndex | None = None
        self.gen = 0
        self.file_gen = 0  # generation of the FAISS file last loaded
        self.sig: tuple | None = None  # its file signature

    def load(self, sql: Sql, dim: int | None) -> None:
        """Load the FAISS file (or start empty when absent, corrupt or of another dim)."""
        self.sig = file_signature(self.path)
        self.index, self.gen = None, 0
        if self.sig is not None:
            try:
                # readers map the file (no copy, shared page cache); the checksum is skipped
                # while the file is the one the writer last saved (its recorded signature)
                rows = sql("SELECT value FROM meta WHERE key = ?", (FAISS_FILE_KEY,))
                trusted = json.loads(rows[0][0]) if rows else None
                self.index, self.gen = VectorIndex.load(
                    self.path, mmap=MAP_VECTOR_FILES and not self.writer, trusted=trusted
                )
            except (ValueError, OSError, RuntimeError):
                self.index, self.gen = None, 0
        if self.index is not None and dim is not None and self.index.dim != dim:
            self.index, self.gen = None, 0
        if self.index is None and dim is not None:
            self.index = VectorIndex.create(dim, self.start_kind)
        self.file_gen = self.gen

    def replay(self, sql: Sql, upto: int) -> bool:
        """Apply vectors and tombstones with generation in (gen, upto]; True if any."""
        lo = self.gen
        if upto <= lo:  # nothing newer (the vectors have no index on gen: never scan them)
            self.gen = upto
            return False
        gone = [r[0] for r in sql("SELECT image_id FROM tombstones WHERE gen > ? AND gen <= ?",
                                  (lo, upto))]  # fmt: skip
        if gone:
            self.index.remove(np.asarray(gone, dtype=np.int64))
        added, last = 0, -1
        while True:  # keyset pages: bounded memory
            rows = sql("SELECT image_id, vector FROM vectors WHERE image_id > ? AND gen > ? "
                       "AND gen <= ? ORDER BY image_id LIMIT ?", (last, lo, upto, _REPLAY_PAGE))  # fmt: skip
            if not rows:
                break
            self.index.add(*reads.decode_rows(rows))
            added += len(rows)
            if len(rows) < _REPLAY_PAGE:  # the last page: no second scan for a small replay
                break
            last = rows[-1][0]
        self.gen = upto
        return bool(gone or added)

    def refresh(self, sql: Sql, dim: Callable[[], int | None]) -> bool:
        """Bring the index up to the SQLite generation; True if it changed."""
        sql_gen = reads.meta_int(sql, "generation")
        # Replaying generations is enough unless the tombstones we would need were pruned
        # (by a writer's start-up repair) or SQLite went back in time (restored backup):
        # then reload the FAISS file once it has been saved past that point.
        stale = self.gen > sql_gen or (
            self.file_gen < reads.meta_int(sql, PRUNED_KEY)
            and file_signature(self.path) != self.sig
        )
        if self.index is None or (stale and not self.writer):
            self.load(sql, dim())
            if self.index is None:
                return False
            if self.gen > sql_gen:  # FAISS newer than SQLite (restored db): rebuild
                self.index, self.gen = VectorIndex.create(self.index.dim, self.start_kind), 0
        elif self.gen == sql_gen:
            return False
        return self.replay(sql, sql_gen) or True

    # ----------------------------------------------------------------- what both stores read
    def state(self) -> VectorState:
        if self.index is None:
            return VectorState(None, 0, self.gen)
        return VectorState(self.index.kind, len(self.index), self.gen)

    def summary(self, sql: Sql, refresh: Callable[[], object]) -> VectorState:
        """Without loading FAISS when it is not loaded yet: a refresh makes its ids those of
        the SQLite vectors (the store's invariant), so the count is SQLite's (a counter row)
        and the kind the saved file's (its header)."""
        if self.index is None:
            try:
                kind = str(read_header(self.path)["kind"])
            except (OSError, ValueError, KeyError):
                kind = None
            if kind is not None:
                return VectorState(kind, reads.vector_count(sql), reads.meta_int(sql, "generation"))
        refresh()
        return self.state()

    def search(
        self, query: np.ndarray, k: int, allowed_ids: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        if self.index is None:
            return np.full(k, -np.inf, np.float32), np.full(k, -1, np.int64)
        scores, ids = self.index.search(query[None, :], k, allowed_ids=allowed_ids)
        return scores[0], ids[0]

    def sample(self, n: int, dim: int | None) -> np.ndarray:
        if self.index is None:
            return np.zeros((0, dim or 0), np.float32)
        return self.index.sample(n)
