"""The SQLite + FAISS backend of :class:`indexer.store.IndexStore`.

``schema`` (tables, migrations, PRAGMAs, driver-error translation), ``queries`` (reads),
``tags`` (tag rows), ``store`` (:class:`SqliteStore`: writes, FAISS sync, vector search).
"""

from indexer.store.sqlite.store import SqliteStore

__all__ = ["SqliteStore"]
