"""The store's own errors: what callers of any backend catch (driver errors never leak out)."""

from __future__ import annotations


class StoreError(RuntimeError):
    """A storage operation failed; backends translate their driver's errors into this."""


class StoreUnavailableError(StoreError):
    """The database cannot be read or written right now (locked, gone, I/O error).

    A reader that meets it right after a reindex swapped versions retries on the new one.
    """


class SchemaError(StoreError):
    """The database's schema is newer than this program, or needs a migration a reader can't do."""


class ModelMismatchError(StoreError):
    """The index was built with another model than the one configured."""


class IndexMissingError(FileNotFoundError):
    """There is no index to read yet."""


class IndexBusyError(RuntimeError):
    """Another process holds the writer lock of this index."""
