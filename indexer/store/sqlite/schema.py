"""SQLite schema (SQLAlchemy 2.x), schema versioning and migrations.

SQLite is the source of truth: every image has a row in ``images``; every successfully encoded
image has its L2-normalised vector in ``vectors`` (written in the same transaction; float16
since schema 6, see :data:`VECTOR_DTYPE`),
tagged with the ``gen`` (generation) of the commit that wrote it. Removed vectors leave a row in
``tombstones``. The FAISS file is derived from these tables (see :mod:`indexer.store.sqlite.store`).

Paths are stored as the file system's bytes (``os.fsencode``) so undecodable file names survive
the round trip; ``os.fsdecode`` gives back the exact ``str`` Python uses for them.

To change the schema: bump :data:`SCHEMA_VERSION` and add a function to :data:`MIGRATIONS`
keyed by the new version that upgrades a database of the previous version in place.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from sqlalchemy import (
    Connection,
    Engine,
    Float,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    create_engine,
    event,
    inspect,
    select,
    text,
)
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.pool import NullPool

from indexer.store.errors import SchemaError, StoreError, StoreUnavailableError  # noqa: F401
from indexer.store.records import STATUS_ERROR, STATUS_OK  # noqa: F401 - the status column
from indexer.store.sqlite.reads import SCHEMA_VERSION, VECTOR_DTYPE, check_version  # noqa: F401
from indexer.store.sqlite.triggers import _OCR_FTS, _OCR_TRIGGERS, _TRIGGERS

_MIGRATE_PAGE = 20_000  # vectors converted per statement batch by the schema 6 migration


class Base(DeclarativeBase):
    pass


class SchemaVersionRow(Base):
    __tablename__ = "schema_version"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[int] = mapped_column(Integer, nullable=False)


class MetaRow(Base):
    """Index metadata as key/value strings (model, checkpoint sha256, dim, generation, ...)."""

    __tablename__ = "meta"
    key: Mapped[str] = mapped_column(String, primary_key=True)
    value: Mapped[str] = mapped_column(Text, nullable=False)


class ImageRow(Base):
    """One file under a library root, indexed (status ok) or recorded as bad (status error)."""

    __tablename__ = "images"
    __table_args__ = ({"sqlite_autoincrement": True},)  # ids are never reused
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    path: Mapped[bytes] = mapped_column(LargeBinary, unique=True, nullable=False)
    root: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    size: Mapped[int | None] = mapped_column(Integer)
    mtime_ns: Mapped[int | None] = mapped_column(Integer)
    content_hash: Mapped[str | None] = mapped_column(String(64), index=True)
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    taken_at: Mapped[str | None] = mapped_column(String(19), index=True)  # "YYYY-MM-DDTHH:MM:SS"
    camera: Mapped[str | None] = mapped_column(String)
    status: Mapped[str] = mapped_column(String(8), nullable=False)
    error: Mapped[str | None] = mapped_column(Text)
    indexed_at: Mapped[float] = mapped_column(Float, nullable=False)
    duration_ms: Mapped[int | None] = mapped_column(Integer)  # schema 8: videos (None: photo)


class VectorRow(Base):
    __tablename__ = "vectors"
    image_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    gen: Mapped[int] = mapped_column(Integer, nullable=False)
    vector: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)


class FrameRow(Base):
    """One sampled frame of a video (schema 8): its time and vector (``VECTOR_DTYPE``), written
    with the video's own vector (``gen``) and removed with it."""

    __tablename__ = "frames"
    image_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    t_ms: Mapped[int] = mapped_column(Integer, primary_key=True)
    gen: Mapped[int] = mapped_column(Integer, nullable=False)
    vector: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)


class TombstoneRow(Base):
    __tablename__ = "tombstones"
    image_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    gen: Mapped[int] = mapped_column(Integer, nullable=False)


class TagRow(Base):
    """One tag of one image (schema 2): every tag that passes its threshold, uncapped (the
    vocabulary's ``top_n`` is applied when reading). Rows go with the image's vector."""

    __tablename__ = "tags"
    image_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tag: Mapped[str] = mapped_column(String, primary_key=True)
    score: Mapped[float] = mapped_column(Float, nullable=False)


class TagDefRow(Base):
    """The fingerprint of each tag's definition the ``tags`` rows were scored with."""

    __tablename__ = "tag_defs"
    tag: Mapped[str] = mapped_column(String, primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64), nullable=False)


class ConceptRow(Base):
    """A personal concept (schema 3): its examples (image ids, JSON), fitted linear model and
    calibrated threshold. Its tag rows are in ``tags`` (tag = name); the meta key
    ``concepts_gen`` is the generation up to which vectors have been scored by the concepts."""

    __tablename__ = "concepts"
    name: Mapped[str] = mapped_column(String, primary_key=True)
    positives: Mapped[str] = mapped_column(Text, nullable=False)
    negatives: Mapped[str] = mapped_column(Text, nullable=False)
    hint: Mapped[str | None] = mapped_column(Text)
    weights: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    bias: Mapped[float] = mapped_column(Float, nullable=False)
    threshold: Mapped[float] = mapped_column(Float, nullable=False)
    model: Mapped[str] = mapped_column(String, nullable=False)
    stats: Mapped[str] = mapped_column(Text, nullable=False)
    created: Mapped[float] = mapped_column(Float, nullable=False)
    updated: Mapped[float] = mapped_column(Float, nullable=False)
    center: Mapped[bytes | None] = mapped_column(LargeBinary)  # schema 5 (None: uncentred)


class AlbumRow(Base):
    """A smart album (schema 4): a saved search as JSON (see ``indexer.search.albums``)."""

    __tablename__ = "albums"
    name: Mapped[str] = mapped_column(String, primary_key=True)
    spec: Mapped[str] = mapped_column(Text, nullable=False)
    created: Mapped[float] = mapped_column(Float, nullable=False)
    updated: Mapped[float] = mapped_column(Float, nullable=False)


class ImageCountRow(Base):
    """Image rows per (root, status) (schema 6), kept by triggers in every transaction that
    writes ``images``, so ``status`` reads counts without scanning a million rows."""

    __tablename__ = "image_counts"
    root: Mapped[bytes] = mapped_column(LargeBinary, primary_key=True)
    status: Mapped[str] = mapped_column(String(8), primary_key=True)
    n: Mapped[int] = mapped_column(Integer, nullable=False)


class CounterRow(Base):
    """Named counters kept by triggers (schema 6): ``vectors``, the rows of ``vectors``."""

    __tablename__ = "counters"
    name: Mapped[str] = mapped_column(String, primary_key=True)
    n: Mapped[int] = mapped_column(Integer, nullable=False)


class OcrTextRow(Base):
    """The text recognised in one image (schema 7), going with its vector; ``compact``
    (``compact_text(text)``) is indexed by the FTS5 trigram table ``ocr_fts``."""

    __tablename__ = "ocr_text"
    image_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    engine: Mapped[str] = mapped_column(String, nullable=False)
    status: Mapped[str] = mapped_column(String(8), nullable=False)
    text: Mapped[str] = mapped_column(Text, nullable=False)
    compact: Mapped[str] = mapped_column(Text, nullable=False)
    error: Mapped[str | None] = mapped_column(Text)
    seconds: Mapped[float] = mapped_column(Float, nullable=False)


Index("ix_vectors_gen", VectorRow.gen)
Index("ix_tombstones_gen", TombstoneRow.gen)
Index("ix_images_status", ImageRow.status)
Index("ix_tags_tag", TagRow.tag)

_TAG_TABLES = (TagRow.__tablename__, TagDefRow.__tablename__)
_COUNT_TABLES = (ImageCountRow.__table__, CounterRow.__table__)
# added by migrations 2, 3, 4, 6, 7, 8
_LATER_TABLES = (*_TAG_TABLES, ConceptRow.__tablename__, AlbumRow.__tablename__,
                 *(t.name for t in _COUNT_TABLES), OcrTextRow.__tablename__,
                 FrameRow.__tablename__)  # fmt: skip


def _v1(conn: Connection) -> None:
    Base.metadata.create_all(
        conn, tables=[t for t in Base.metadata.sorted_tables if t.name not in _LATER_TABLES]
    )


def _v2(conn: Connection) -> None:
    """Schema 2: the ``tags`` and ``tag_defs`` tables (and the index on ``tags.tag``)."""
    Base.metadata.create_all(
        conn, tables=[t for t in Base.metadata.sorted_tables if t.name in _TAG_TABLES]
    )


def _v3(conn: Connection) -> None:
    """Schema 3: the ``concepts`` table (personal concepts; their rows are tag rows)."""
    Base.metadata.create_all(conn, tables=[ConceptRow.__table__])


def _v4(conn: Connection) -> None:
    """Schema 4: the ``albums`` table (smart albums: saved searches)."""
    Base.metadata.create_all(conn, tables=[AlbumRow.__table__])


def _v5(conn: Connection) -> None:
    """Schema 5: ``concepts.center`` (concepts fitted on centred vectors; old rows stay uncentred)."""
    # _v3 creates the table from today's definition: a database made from scratch has it already
    if "center" not in {c["name"] for c in inspect(conn).get_columns("concepts")}:
        conn.execute(text("ALTER TABLE concepts ADD COLUMN center BLOB"))


def _v6(conn: Connection) -> None:
    """Schema 6: vectors stored as float16 (were float32), converted in pages of rows; the
    counters (``image_counts``, ``counters``), filled once and kept by triggers from then on."""
    Base.metadata.create_all(conn, tables=list(_COUNT_TABLES))
    conn.exec_driver_sql(
        "INSERT INTO image_counts(root, status, n) "
        "SELECT root, status, COUNT(*) FROM images GROUP BY root, status"
    )
    conn.exec_driver_sql("INSERT INTO counters(name, n) SELECT 'vectors', COUNT(*) FROM vectors")
    for name, body in _TRIGGERS.items():
        conn.exec_driver_sql(f"CREATE TRIGGER {name} {body}")
    last = -1
    while True:
        rows = conn.exec_driver_sql(
            "SELECT image_id, vector FROM vectors WHERE image_id > ? ORDER BY image_id LIMIT ?",
            (last, _MIGRATE_PAGE),
        ).all()
        if not rows:
            return
        ids = [r[0] for r in rows]
        vecs = np.frombuffer(b"".join(r[1] for r in rows), dtype="<f4").reshape(len(rows), -1)
        half = np.ascontiguousarray(vecs, dtype=VECTOR_DTYPE)
        conn.exec_driver_sql(
            "UPDATE vectors SET vector = ? WHERE image_id = ?",
            [(half[k].tobytes(), i) for k, i in enumerate(ids)],
        )
        last = ids[-1]


def _v7(conn: Connection) -> None:
    """Schema 7: recognised text (``ocr_text``), its FTS5 index and the triggers keeping it."""
    Base.metadata.create_all(conn, tables=[OcrTextRow.__table__])
    for name, body in [("", _OCR_FTS), *_OCR_TRIGGERS.items()]:
        conn.exec_driver_sql(f"CREATE TRIGGER {name} {body}" if name else body)


def _v8(conn: Connection) -> None:
    """Schema 8: videos (``images.duration_ms``) and their sampled ``frames``."""
    if "duration_ms" not in {c["name"] for c in inspect(conn).get_columns("images")}:
        conn.execute(text("ALTER TABLE images ADD COLUMN duration_ms INTEGER"))
    Base.metadata.create_all(conn, tables=[FrameRow.__table__])


# version -> function upgrading a database at version-1 to version (1 creates from scratch).
MIGRATIONS: dict[int, Callable[[Connection], None]] = {
    1: _v1, 2: _v2, 3: _v3, 4: _v4, 5: _v5, 6: _v6, 7: _v7, 8: _v8,
}  # fmt: skip
# Migrations after which the file is compacted (VACUUM): they shrank every vector row.
_COMPACT_AFTER = {6}


def make_engine(path: Path, writer: bool) -> Engine:
    """An engine on the SQLite file with WAL, a busy timeout and foreign keys configured."""
    engine = create_engine(f"sqlite:///{path}", poolclass=NullPool)

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: sqlite3.Connection, _record) -> None:  # noqa: ANN001
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA busy_timeout=30000")
        if writer:
            cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    return engine


def schema_version(conn: Connection) -> int:
    """The schema version of the database (0: empty database)."""
    if not inspect(conn).has_table(SchemaVersionRow.__tablename__):
        return 0
    version = conn.execute(select(SchemaVersionRow.version)).scalar()
    return int(version or 0)


def ensure_schema(engine: Engine, writer: bool) -> None:
    """Create or migrate the schema (writer), or check it is usable (reader)."""
    with engine.begin() as conn:
        version = schema_version(conn)
        if check_version(version, writer, SCHEMA_VERSION):
            return
        for target in range(version + 1, SCHEMA_VERSION + 1):
            MIGRATIONS[target](conn)
        conn.execute(text("DELETE FROM schema_version"))
        conn.execute(SchemaVersionRow.__table__.insert().values(id=1, version=SCHEMA_VERSION))
    if version and _COMPACT_AFTER & set(range(version + 1, SCHEMA_VERSION + 1)):
        compact(engine)


def compact(engine: Engine) -> None:
    """VACUUM the database (outside any transaction; atomic: a crash leaves the old file)."""
    raw = engine.raw_connection()
    try:
        driver = raw.driver_connection
        level = driver.isolation_level
        driver.isolation_level = None  # autocommit: VACUUM cannot run in a transaction
        try:
            driver.execute("VACUUM")
        finally:
            driver.isolation_level = level
    finally:
        raw.close()


def get_meta(conn: Connection) -> dict[str, str]:
    """All metadata as a dict."""
    return {k: v for k, v in conn.execute(select(MetaRow.key, MetaRow.value))}


def set_meta(conn: Connection, **values: object) -> None:
    """Upsert metadata keys (values stored as strings)."""
    for key, value in values.items():
        conn.execute(
            text(
                "INSERT INTO meta(key, value) VALUES (:k, :v) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value"
            ),
            {"k": key, "v": str(value)},
        )


def vector_count(conn: Connection) -> int:
    """Rows of ``vectors`` (a trigger-kept counter: no scan)."""
    value = conn.execute(select(CounterRow.n).where(CounterRow.name == "vectors")).scalar()
    return int(value or 0)


def get_generation(conn: Connection) -> int:
    """The current generation (incremented by every commit that changes vectors)."""
    value = conn.execute(select(MetaRow.value).where(MetaRow.key == "generation")).scalar()
    return int(value) if value is not None else 0


@contextmanager
def translated_errors() -> Iterator[None]:
    """Raise the store's own errors for SQLAlchemy/sqlite3 ones (the store boundary)."""
    try:
        yield
    except OperationalError as exc:  # locked, disk I/O, file gone
        raise StoreUnavailableError(str(exc.orig) if exc.orig else str(exc)) from exc
    except DBAPIError as exc:
        raise StoreError(str(exc.orig) if exc.orig else str(exc)) from exc
