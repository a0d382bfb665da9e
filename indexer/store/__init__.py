"""Storage: the :class:`IndexStore` interface (``base``) and its backends: SQLite + FAISS (the
default, ``indexer.store.sqlite`` and ``indexer.store.vectors``) and PostgreSQL + pgvector
(``indexer.store.postgres``, chosen by a ``postgresql://`` URL).

Job packages (ingest, search, tags, watch) and the UI see only what is exported here; the
backends' SQLAlchemy engines, schemas and vector files stay inside their packages. May import: ``indexer.types``, ``indexer.config`` and third-party
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
from indexer.store.location import DirectoryLocation, StoreLocation, StoreLock
from indexer.store.records import (
    OCR_ERROR,
    OCR_OK,
    STATUS_ERROR,
    STATUS_OK,
    Album,
    Changes,
    Concept,
    ImageText,
    Record,
    TagView,
    TextMatch,
    VectorState,
    compact_text,
)
from indexer.store.urls import mask_url

__all__ = [
    "OCR_ERROR", "OCR_OK", "STATUS_ERROR", "STATUS_OK", "Album", "Changes", "Concept", "ImageText", "IndexBusyError", "IndexMissingError", "IndexStore",
    "ModelMismatchError", "Record", "SchemaError", "StoreError", "StoreLocation", "StoreLock",
    "StoreUnavailableError", "TagList", "TagView", "TagWriter", "TextMatch", "VectorState", "compact_text", "mask_url", "migrate_from_postgres", "migrate_to_postgres", "open_location", "open_store", "set_search_threads",
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
    from indexer.store.sqlite import mirror

    mirror.MAP_VECTOR_FILES = bool(enabled)


def open_store(path: Path | str, writer: bool = False, kind: str = "auto") -> IndexStore:
    """Open the SQLite index version in the folder ``path`` (writers create it; ``kind``: the
    vector index's), or, for a ``postgresql://`` URL, the database's active version (a writer
    of an empty database creates ``v1``). The Library opens stores through
    :func:`open_location`; this is for tools and benchmarks."""
    if isinstance(path, str) and path.startswith(("postgresql:", "postgres:")):
        loc = open_location(Path(), path)
        try:
            name = loc.versions.current()
            if name is None and not writer:
                raise IndexMissingError(f"no index in {loc.describe()}")
            store = loc.open(name or "v1", writer=writer, kind=kind)
            if name is None:
                loc.versions.set_current("v1")
            return store
        finally:
            loc.close()
    from indexer.store.sqlite import SqliteStore

    return SqliteStore(Path(path), writer=writer, kind=kind)


def open_location(index_dir: Path, database: str | None = None) -> StoreLocation:
    """The library's index: PostgreSQL at ``database`` (a ``postgresql://`` URL), else SQLite
    versions in ``index_dir``."""
    if database:
        from indexer.store.postgres import PgLocation

        return PgLocation(database)
    return DirectoryLocation(index_dir)


def migrate_to_postgres(index_dir: Path, url: str, progress=None) -> dict:  # noqa: ANN001
    """Copy the active SQLite version in ``index_dir`` into PostgreSQL (lossless, resumable);
    returns the rows copied per table and the version name."""
    from indexer.store.postgres.transfer import to_postgres

    return to_postgres(index_dir, url, progress)


def migrate_from_postgres(url: str, index_dir: Path, progress=None) -> dict:  # noqa: ANN001
    """Copy PostgreSQL's active version into SQLite in ``index_dir`` (lossless, resumable)."""
    from indexer.store.postgres.transfer import from_postgres

    return from_postgres(url, index_dir, progress)
