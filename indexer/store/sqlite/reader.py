"""SqliteReader: a read-only index version opened with the standard library's ``sqlite3``.

A query process (``clipsearch search``, ``status``, the UI) reads a handful of things: the
metadata, the FAISS index brought up to the SQLite generation, the records of the hits, video
frames, counts. Those are answered here in plain SQL (:mod:`indexer.store.sqlite.reads`, the
same statements the full store runs), so a cold query never imports SQLAlchemy (~0.2 s and
~30 MB of a ~0.5 s budget, issue 15). Every other method of the interface goes to a full
:class:`~indexer.store.sqlite.store.SqliteStore` opened on first use, so the reader keeps the
whole :class:`~indexer.store.base.IndexStore` contract.
"""

from __future__ import annotations

import abc
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from indexer.store.base import IndexStore
from indexer.store.errors import IndexMissingError, StoreError, StoreUnavailableError
from indexer.store.sqlite import reads
from indexer.store.sqlite.frame_search import FrameCache
from indexer.store.sqlite.mirror import FaissMirror
from indexer.store.sqlite.reads import Sql
from indexer.store.sqlite.shared import SqlReads

DB_NAME = "index.sqlite"
FAISS_NAME = "vectors.faiss"


class SqliteReader(SqlReads, IndexStore):
    """One SQLite + FAISS version directory, for reading (see the module docstring)."""

    writer = False

    def __init__(self, path: Path, kind: str = "auto"):
        self.path = Path(path)
        self.kind = kind
        self.db_path = self.path / DB_NAME
        self.faiss_path = self.path / FAISS_NAME
        if not self.db_path.exists():
            raise IndexMissingError(f"no index in {self.path}; run `clipsearch index` first")
        self._uri = self.db_path.resolve().as_uri() + "?mode=rw"  # never creates the file
        self.mirror = FaissMirror(self.faiss_path, writer=False, kind=kind)
        self._frame_cache = FrameCache()
        self._full_store: IndexStore | None = None
        self._full_lock = threading.Lock()
        with self._sql() as sql:
            found = sql("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                        ("schema_version",))  # fmt: skip
            version = sql("SELECT version FROM schema_version", ()) if found else []
        reads.check_version(int(version[0][0] or 0) if version else 0, writer=False)

    @contextmanager
    def _sql(self) -> Iterator[Sql]:
        """A connection for one read (as the full store's, one per call: thread-safe)."""
        try:
            conn = sqlite3.connect(self._uri, uri=True, timeout=30, check_same_thread=False)
        except sqlite3.Error as exc:
            raise StoreUnavailableError(f"{self.db_path}: {exc}") from exc
        try:
            yield lambda q, params: conn.execute(q, tuple(params)).fetchall()
        except sqlite3.OperationalError as exc:  # locked, disk I/O, file gone
            raise StoreUnavailableError(str(exc)) from exc
        except sqlite3.DatabaseError as exc:
            raise StoreError(str(exc)) from exc
        finally:
            conn.close()

    def full(self) -> IndexStore:
        """The full (SQLAlchemy) store on the same version, opened on first use."""
        with self._full_lock:
            if self._full_store is None:
                from indexer.store.sqlite.store import SqliteStore

                self._full_store = SqliteStore(self.path, writer=False, kind=self.kind)
            return self._full_store

    def __getattr__(self, name: str) -> object:
        # what the full store has beyond the interface (its engine, ...): tools and tests
        if name.startswith("__") or name in ("_full_store", "_full_lock"):
            raise AttributeError(name)
        return getattr(self.full(), name)

    # ----------------------------------------------------------------- no writing here
    def save(self, force: bool = False, interval: float | None = None) -> bool:
        return False  # readers never save the FAISS file

    def close(self) -> None:
        with self._full_lock:
            if self._full_store is not None:
                self._full_store.close()
                self._full_store = None


def _delegate(name: str):  # noqa: ANN202
    def method(self: SqliteReader, *args: object, **kwargs: object) -> object:
        return getattr(self.full(), name)(*args, **kwargs)

    method.__name__ = method.__qualname__ = name
    method.__doc__ = f"The full store's :meth:`~indexer.store.base.IndexStore.{name}`."
    return method


for _name in sorted(SqliteReader.__abstractmethods__):  # the rest of the interface
    setattr(SqliteReader, _name, _delegate(_name))
abc.update_abstractmethods(SqliteReader)
