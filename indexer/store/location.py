"""Where a library's index lives: its versions, its writer lock and how to open a version.

:class:`StoreLocation` is what :class:`indexer.library.Library` holds: ``versions`` (which
version is active; ``reindex`` builds the next one beside it and switches), ``writer_lock``
(who may write) and :meth:`StoreLocation.open` (an :class:`~indexer.store.base.IndexStore` on
one version). :class:`DirectoryLocation` is the SQLite default (``CURRENT`` file, ``v<n>``
folders, an ``flock``); the PostgreSQL one is in :mod:`indexer.store.postgres.location`.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Protocol

from indexer.store.base import IndexStore
from indexer.store.lock import WriterLock
from indexer.store.versions import IndexVersions


class Versions(Protocol):
    """The active version's name and the version names (see :class:`IndexVersions`)."""

    def current(self) -> str | None: ...
    def set_current(self, name: str) -> None: ...
    def signature(self) -> tuple | None: ...
    def next_name(self, current: str | None) -> str: ...
    def remove(self, name: str) -> None: ...
    def remove_stale(self) -> None: ...


class StoreLock(Protocol):
    """A writer's lock: held from :meth:`acquire` (raises ``IndexBusyError``) to release."""

    def acquire(self) -> StoreLock: ...
    def release(self) -> None: ...
    @property
    def held(self) -> bool: ...
    def exclusive(self) -> AbstractContextManager[bool]:
        """True inside while no other writer holds the index (the holder may clean up)."""


class StoreLocation(abc.ABC):
    """One library's index: versions, writer lock, stores."""

    versions: Versions
    #: True when writers on other machines may share it (then shared leftovers, e.g.
    #: thumbnails no row refers to, are cleaned only while no other writer runs).
    shared: bool = False

    @abc.abstractmethod
    def open(self, name: str, writer: bool = False, kind: str = "auto") -> IndexStore:
        """The store of version ``name`` (writers create it)."""

    @abc.abstractmethod
    def writer_lock(self, roots: Sequence[Path]) -> StoreLock:
        """The lock a writer indexing ``roots`` holds while it is open."""

    def describe(self) -> str:
        """Where it is, for messages (never with a password)."""
        return type(self).__name__

    def close(self) -> None:  # noqa: B027 - optional: locations without connections
        """Release what the location holds (connections)."""


class _FileLock(WriterLock):
    """The SQLite writer lock: one writer per index, so it is always exclusive."""

    @contextmanager
    def exclusive(self) -> Iterator[bool]:
        yield self.held


class DirectoryLocation(StoreLocation):
    """SQLite + FAISS versions in ``index.dir`` (``CURRENT``, ``v<n>/``, ``writer.lock``)."""

    def __init__(self, index_dir: Path):
        self.dir = Path(index_dir)
        self.versions = IndexVersions(self.dir)

    def open(self, name: str, writer: bool = False, kind: str = "auto") -> IndexStore:
        if not writer:  # plain sqlite3 for what queries read (no SQLAlchemy import)
            from indexer.store.sqlite.reader import SqliteReader

            return SqliteReader(self.versions.path(name), kind=kind)
        from indexer.store.sqlite.store import SqliteStore

        return SqliteStore(self.versions.path(name), writer=True, kind=kind)

    def writer_lock(self, roots: Sequence[Path]) -> StoreLock:
        return _FileLock(self.dir)

    def describe(self) -> str:
        return str(self.dir)
