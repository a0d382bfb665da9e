"""Storage: the :class:`IndexStore` interface (``base``) and its SQLite + FAISS backend.

Job packages (ingest, search, tags, watch) and the UI see only what is exported here; the
backend's SQLAlchemy engine, schema and vector file stay inside ``indexer.store.sqlite`` and
``indexer.store.vectors``. May import: ``indexer.types``, ``indexer.config`` and third-party
libraries; never the job packages above it.
"""

from __future__ import annotations

from pathlib import Path

from indexer.store.base import IndexStore, TagList, TagWriter
from indexer.store.errors import (
    IndexBusyError,
    IndexMissingError,
    ModelMismatchError,
    SchemaError,
    StoreError,
    StoreUnavailableError,
)
from indexer.store.records import (
    STATUS_ERROR,
    STATUS_OK,
    Album,
    Changes,
    Concept,
    Record,
    TagView,
    VectorState,
)

__all__ = [
    "STATUS_ERROR", "STATUS_OK", "Album", "Changes", "Concept", "IndexBusyError", "IndexMissingError", "IndexStore",
    "ModelMismatchError", "Record", "SchemaError", "StoreError", "StoreUnavailableError",
    "TagList", "TagView", "TagWriter", "VectorState", "open_store", "set_search_threads",
]  # fmt: skip


def set_search_threads(n: int) -> None:
    """Threads the vector search may use in this process (FAISS's OpenMP team)."""
    from indexer.store.vectors.index import set_threads

    set_threads(n)


def map_vector_files(enabled: bool) -> None:
    """Whether readers of this process memory-map the vector index file (the default: a
    one-shot query process loads any size in milliseconds) or read it into memory (better
    for a long-lived reader such as the UI: a flat scan measured ~1.6x faster in anonymous
    memory, which the kernel backs with huge pages, than in the mapped page cache)."""
    from indexer.store.sqlite import store

    store.MAP_VECTOR_FILES = bool(enabled)


def open_store(path: Path, writer: bool = False, kind: str = "auto") -> IndexStore:
    """Open the index version in ``path`` (writers create it; ``kind``: the vector index's)."""
    from indexer.store.sqlite import SqliteStore

    return SqliteStore(path, writer=writer, kind=kind)
