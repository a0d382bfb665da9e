"""PostgreSQL schema (SQLAlchemy Core + pgvector), versioning, engines and error translation.

One index version lives in its own PostgreSQL schema (``clipsearch_v1``, ...; see
:mod:`indexer.store.postgres.location`); connections set ``search_path`` to it (then
``public``, where the ``vector`` extension lives), so the tables below are unqualified. The
tables mirror the SQLite backend's (:mod:`indexer.store.sqlite.schema`): paths as bytes
(``bytea``), ids from an identity column (never reused), vectors L2-normalised float32 in a
``vector(d)`` column -- ``d`` is the bound model's, set by :func:`bind_dimension` (the column
is untyped until then); the HNSW index (``vector_cosine_ops``) is built once the table is
large enough to need it (:func:`build_hnsw`).

To change the schema: bump :data:`SCHEMA_VERSION` and add the upgrade to :data:`MIGRATIONS`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from pgvector.sqlalchemy import VECTOR
from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Engine,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    text,
)
from sqlalchemy.exc import DBAPIError, OperationalError

from indexer.store.errors import SchemaError, StoreError, StoreUnavailableError
from indexer.store.urls import mask_secret, mask_url

SCHEMA_VERSION = 3
MIN_PGVECTOR = (0, 8)
HNSW_NAME = "ix_vectors_hnsw"

metadata = MetaData()

schema_version = Table("schema_version", metadata,
                       Column("id", BigInteger, primary_key=True),
                       Column("version", BigInteger, nullable=False))  # fmt: skip
meta = Table("meta", metadata, Column("key", String, primary_key=True),
             Column("value", Text, nullable=False))  # fmt: skip
images = Table(
    "images", metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("path", LargeBinary, nullable=False, unique=True),
    Column("root", LargeBinary, nullable=False),
    Column("size", BigInteger), Column("mtime_ns", BigInteger),
    Column("content_hash", String(64), index=True),
    Column("width", BigInteger), Column("height", BigInteger),
    Column("taken_at", String(19), index=True), Column("camera", String),
    Column("status", String(8), nullable=False, index=True),
    Column("error", Text), Column("indexed_at", Float, nullable=False),
    Column("duration_ms", Integer),  # schema 3: a video's length (None: a photo)
)  # fmt: skip
vectors = Table("vectors", metadata, Column("image_id", BigInteger, primary_key=True),
                Column("gen", BigInteger, nullable=False, index=True),
                Column("vector", VECTOR(), nullable=False))  # fmt: skip
tombstones = Table("tombstones", metadata, Column("image_id", BigInteger, primary_key=True),
                   Column("gen", BigInteger, nullable=False, index=True))  # fmt: skip
tags = Table("tags", metadata, Column("image_id", BigInteger, primary_key=True),
             Column("tag", String, primary_key=True), Column("score", Float, nullable=False))  # fmt: skip
tag_defs = Table("tag_defs", metadata, Column("tag", String, primary_key=True),
                 Column("fingerprint", String(64), nullable=False))  # fmt: skip
concepts = Table(
    "concepts", metadata, Column("name", String, primary_key=True),
    Column("positives", Text, nullable=False), Column("negatives", Text, nullable=False),
    Column("hint", Text), Column("weights", LargeBinary, nullable=False),
    Column("bias", Float, nullable=False), Column("threshold", Float, nullable=False),
    Column("model", String, nullable=False), Column("stats", Text, nullable=False),
    Column("created", Float, nullable=False), Column("updated", Float, nullable=False),
    Column("center", LargeBinary),  # None: fitted on uncentred vectors (see Concept)
)  # fmt: skip
albums = Table("albums", metadata, Column("name", String, primary_key=True),
               Column("spec", Text, nullable=False), Column("created", Float, nullable=False),
               Column("updated", Float, nullable=False))  # fmt: skip
Index("ix_tags_tag", tags.c.tag)
# schema 2: the text recognised in each image (see indexer.store.postgres.ocr)
ocr_text = Table(
    "ocr_text", metadata, Column("image_id", BigInteger, primary_key=True),
    Column("engine", String, nullable=False), Column("status", String(8), nullable=False),
    Column("text", Text, nullable=False), Column("compact", Text, nullable=False),
    Column("error", Text), Column("seconds", Float, nullable=False),
)  # fmt: skip
OCR_TRGM_NAME = "ix_ocr_text_trgm"
# schema 3: the sampled frames of videos (see indexer.store.postgres.frames)
frames = Table("frames", metadata, Column("image_id", BigInteger, primary_key=True),
               Column("t_ms", Integer, primary_key=True),
               Column("gen", BigInteger, nullable=False),
               Column("vector", VECTOR(), nullable=False))  # fmt: skip
_LATER_TABLES = (ocr_text, frames)  # created by migrations 2, 3
VECTOR_TABLES = ("vectors", "frames")  # the tables with a vector(d) column


def _v1(conn: Connection) -> None:
    metadata.create_all(conn, tables=[t for t in metadata.sorted_tables
                                      if t not in _LATER_TABLES])  # fmt: skip
    conn.execute(text("INSERT INTO meta(key, value) VALUES ('generation', '0') "
                      "ON CONFLICT (key) DO NOTHING"))  # fmt: skip


def _v2(conn: Connection) -> None:
    """Schema 2: ``ocr_text``, with a trigram GIN index on ``compact`` where the server has
    ``pg_trgm`` (substring ``LIKE`` through the index; without it the same query scans)."""
    metadata.create_all(conn, tables=[ocr_text])
    try:
        with conn.begin_nested():  # a server without pg_trgm (or the right to add it) scans
            conn.execute(text("CREATE EXTENSION IF NOT EXISTS pg_trgm SCHEMA public"))
            conn.execute(text(f"CREATE INDEX IF NOT EXISTS {OCR_TRGM_NAME} ON ocr_text "
                              "USING gin (compact gin_trgm_ops)"))  # fmt: skip
    except DBAPIError:
        pass


def _v3(conn: Connection) -> None:
    """Schema 3: videos (``images.duration_ms``) and their sampled ``frames``, typed like the
    vectors when the schema is already bound to a model."""
    conn.execute(text("ALTER TABLE images ADD COLUMN IF NOT EXISTS duration_ms integer"))
    metadata.create_all(conn, tables=[frames])
    dim = vector_dimension(conn)
    if dim is not None:
        bind_dimension(conn, dim)


# version -> function upgrading a schema at version-1 to version (1 creates from scratch).
MIGRATIONS: dict[int, Callable[[Connection], None]] = {1: _v1, 2: _v2, 3: _v3}


# ----------------------------------------------------------------- URLs and engines
def driver_url(url: str) -> str:
    """``postgresql://...`` as SQLAlchemy's psycopg 3 URL."""
    return re.sub(r"^postgres(ql)?(\+\w+)?://", "postgresql+psycopg://", url)


def make_engine(url: str, schema: str | None, pool_size: int = 4) -> Engine:
    """An engine whose connections see ``schema`` (then ``public``) first."""
    options = f"-c search_path={schema},public" if schema else "-c search_path=public"
    return create_engine(
        driver_url(url), pool_size=pool_size, max_overflow=8, pool_pre_ping=True,
        connect_args={"options": options, "connect_timeout": 10, "keepalives": 1,
                      "keepalives_idle": 30, "application_name": "clipsearch"},
    )  # fmt: skip


@contextmanager
def translated_errors(url: str = "") -> Iterator[None]:
    """Raise the store's own errors for SQLAlchemy/psycopg ones (passwords masked)."""
    try:
        yield
    except OperationalError as exc:  # server gone, refused, timeouts
        raise StoreUnavailableError(mask_secret(_message(exc), url)) from None
    except DBAPIError as exc:
        raise StoreError(mask_secret(_message(exc), url)) from None


def _message(exc: DBAPIError) -> str:
    return str(exc.orig).strip() if exc.orig is not None else str(exc).splitlines()[0]


# ----------------------------------------------------------------- schema versions
def read_version(conn: Connection) -> int:
    """The schema version of the current search_path's schema (0: no tables yet)."""
    has = conn.execute(text("SELECT to_regclass('schema_version') IS NOT NULL")).scalar()
    if not has:
        return 0
    return int(conn.execute(text("SELECT max(version) FROM schema_version")).scalar() or 0)


def ensure_schema(conn: Connection, schema: str, writer: bool) -> None:
    """Create or migrate the version schema (writers, serialised by a transaction lock), or
    check it is usable (readers)."""
    found = conn.execute(
        text("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
    ).scalar()
    if found is not None and tuple(int(x) for x in found.split(".")[:2]) < MIN_PGVECTOR:
        raise SchemaError(f"the database has pgvector {found}; clipsearch needs >= 0.8 "
                          "(iterative index scans): ALTER EXTENSION vector UPDATE")  # fmt: skip
    if writer:
        conn.execute(text("SELECT pg_advisory_xact_lock(hashtext(:s))"), {"s": schema})
        conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
    version = read_version(conn)
    if version > SCHEMA_VERSION:
        raise SchemaError(f"the index was written by a newer clipsearch (schema {version} > "
                          f"{SCHEMA_VERSION}); upgrade clipsearch")  # fmt: skip
    if version == SCHEMA_VERSION:
        return
    if not writer:
        raise SchemaError(f"the index uses schema {version}; run `clipsearch index` to migrate "
                          f"it to {SCHEMA_VERSION}")  # fmt: skip
    for target in range(version + 1, SCHEMA_VERSION + 1):
        MIGRATIONS[target](conn)
    conn.execute(text("DELETE FROM schema_version"))
    conn.execute(schema_version.insert().values(id=1, version=SCHEMA_VERSION))


def vector_dimension(conn: Connection, table: str = "vectors") -> int | None:
    """The ``vector(d)`` column's d (None: not bound to a model yet)."""
    mod = conn.execute(text(
        "SELECT atttypmod FROM pg_attribute WHERE attrelid = to_regclass(:t) "
        "AND attname = 'vector'"), {"t": table}).scalar()  # fmt: skip
    return int(mod) if mod is not None and mod > 0 else None


def bind_dimension(conn: Connection, dim: int) -> None:
    """Type the vector columns (vectors' and frames') as ``vector(dim)`` (the HNSW index comes
    later: :func:`build_hnsw`)."""
    for table in VECTOR_TABLES:
        if vector_dimension(conn, table) != dim:
            conn.execute(text(f"ALTER TABLE {table} ALTER COLUMN vector TYPE vector({int(dim)})"))


def has_hnsw(conn: Connection) -> bool:
    return bool(conn.execute(text("SELECT to_regclass(:n) IS NOT NULL"), {"n": HNSW_NAME}).scalar())


HNSW_MEMORY_MAX = 4 << 30  # bytes of maintenance_work_mem an HNSW build may ask for
# denser than pgvector's defaults (16, 64): on clustered 1M, recall@20 0.91 -> 1.0
HNSW_M, HNSW_EF_CONSTRUCTION = 32, 128


def build_hnsw(conn: Connection) -> None:
    """Build the HNSW (cosine) index over the stored vectors, at once: much faster than
    growing it insert by insert while the table is small (searched exactly anyway).

    pgvector builds many times faster while the graph fits in ``maintenance_work_mem``, so the
    build asks for the graph's size (vectors plus links, with a margin), from 256 MB up to
    :data:`HNSW_MEMORY_MAX`, never less than the server's own setting."""
    rows, dim = conn.execute(text("SELECT count(*), max(vector_dims(vector)) FROM vectors")).one()
    need = int((rows or 0) * ((dim or 0) * 4 + HNSW_M * 2 * 8 + 64) * 1.3)
    have = int(conn.execute(text("SELECT setting::bigint * 1024 FROM pg_settings "
                                 "WHERE name = 'maintenance_work_mem'")).scalar() or 0)  # fmt: skip
    mem = max(have, min(max(need, 256 << 20), HNSW_MEMORY_MAX))
    conn.execute(text(f"SET LOCAL maintenance_work_mem = '{mem // 1024}kB'"))
    conn.execute(text(f"CREATE INDEX IF NOT EXISTS {HNSW_NAME} ON vectors USING hnsw "
                      f"(vector vector_cosine_ops) WITH (m = {int(HNSW_M)}, "
                      f"ef_construction = {int(HNSW_EF_CONSTRUCTION)})"))  # fmt: skip


# ----------------------------------------------------------------- metadata
def get_meta(conn: Connection) -> dict[str, str]:
    return {k: v for k, v in conn.execute(text("SELECT key, value FROM meta"))}


def set_meta(conn: Connection, **values: object) -> None:
    """Upsert metadata keys (values stored as strings)."""
    for key, value in values.items():
        conn.execute(text("INSERT INTO meta(key, value) VALUES (:k, :v) ON CONFLICT (key) "
                          "DO UPDATE SET value = excluded.value"), {"k": key, "v": str(value)})  # fmt: skip


def get_generation(conn: Connection) -> int:
    value = conn.execute(text("SELECT value FROM meta WHERE key = 'generation'")).scalar()
    return int(value) if value is not None else 0


def next_generation(conn: Connection) -> int:
    """Bump the generation (row-locked until commit: concurrent writers' commits are ordered
    by generation, so readers never see a generation whose predecessor is still running)."""
    return int(conn.execute(text(
        "INSERT INTO meta(key, value) VALUES ('generation', '1') ON CONFLICT (key) DO UPDATE "
        "SET value = (meta.value::bigint + 1)::text RETURNING value")).scalar())  # fmt: skip


__all__ = ["mask_secret", "mask_url"]  # used by the backend's modules
