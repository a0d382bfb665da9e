"""The SQLite + FAISS backend of :class:`indexer.store.IndexStore`.

``schema`` (tables, migrations, PRAGMAs, driver-error translation), ``queries`` (reads),
``tags`` (tag rows), ``store`` (:class:`SqliteStore`: writes, FAISS sync, vector search);
``reads``, ``mirror``, ``frame_search``, ``shared`` (the reads both stores answer alike) and ``reader`` (:class:`SqliteReader`, what a query
process opens) use the standard library's ``sqlite3`` only. Nothing is imported here, so a
reader never loads SQLAlchemy.
"""

from __future__ import annotations

__all__ = ["SqliteReader", "SqliteStore"]


def __getattr__(name: str) -> type:
    if name == "SqliteStore":
        from indexer.store.sqlite.store import SqliteStore

        return SqliteStore
    if name == "SqliteReader":
        from indexer.store.sqlite.reader import SqliteReader

        return SqliteReader
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
