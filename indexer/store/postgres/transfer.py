"""``clipsearch migrate``: copy the active index version between SQLite and PostgreSQL.

Lossless: every row of images (ids kept, so concepts' example ids stay valid; videos with their
``duration_ms``), vectors and video frames (with their generations; SQLite's float16 copies
arrive as the float32 unit vectors the SQLite store reads, and go back to the same float16
bits), tags, recognised text, tag definitions, concepts, albums and metadata.
Resumable: images are copied in id order, each chunk with its vectors, frames and tags in one target
transaction, so a rerun after a crash continues after the last copied id; the small tables and
the metadata follow, and only then is the copy made the target's active version. Tombstones are
not copied (they only tell a FAISS file what to replay; a copy starts without one).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sqlalchemy import Connection, Engine, Table, delete, func, insert, select, text

from indexer.store.errors import StoreError
from indexer.store.location import DirectoryLocation
from indexer.store.lock import WriterLock
from indexer.store.postgres import schema as pg
from indexer.store.postgres.frames import copy_frames
from indexer.store.postgres.location import PgLocation
from indexer.store.postgres.store import copy_vectors
from indexer.store.sqlite import schema as lite
from indexer.store.sqlite.queries import decode_rows, encode_vector
from indexer.store.sqlite.store import SqliteStore

CHUNK = 2000
_SMALL = ("tag_defs", "concepts", "albums", "meta")
# meta keys that describe one copy's own files (the FAISS file's signature): never copied
_LOCAL_META = ("faiss_file",)


@dataclass
class _Side:
    engine: Engine
    tables: dict[str, Table]
    to_vector: Callable  # stored value -> np.ndarray
    from_vector: Callable  # np.ndarray -> stored value
    write_vectors: Callable[[Connection, list[dict]], None]
    write_frames: Callable[[Connection, list[dict]], None]


def _sqlite_side(store: SqliteStore) -> _Side:
    # SQLite keeps float16 (schema 6): read back as the store reads it (float32, unit norm)
    tables = {t.name: t for t in lite.Base.metadata.sorted_tables}
    return _Side(store.engine, tables, lambda b: decode_rows([(0, b)])[1][0], encode_vector,
                 lambda conn, rows: conn.execute(insert(tables["vectors"]), rows),
                 lambda conn, rows: conn.execute(insert(tables["frames"]), rows))  # fmt: skip


def _pg_side(engine: Engine) -> _Side:
    return _Side(engine, dict(pg.metadata.tables), lambda v: np.asarray(v, np.float32),
                 lambda v: v, lambda conn, rows: copy_vectors(
                     conn, [(r["image_id"], r["gen"], r["vector"]) for r in rows]),
                 lambda conn, rows: copy_frames(
                     conn, [(r["image_id"], r["t_ms"], r["gen"], r["vector"]) for r in rows]))  # fmt: skip


@contextmanager
def _translated(url: str) -> Iterator[None]:
    """Both backends' driver errors as the store's (passwords masked)."""
    with lite.translated_errors(), pg.translated_errors(url):
        yield


def _copy(src: _Side, dst: _Side, progress: Callable[[int], None] | None) -> dict[str, int]:
    """Copy every row from ``src`` to ``dst`` (resuming after the last image id in ``dst``)."""
    si, di = src.tables["images"], dst.tables["images"]
    with dst.engine.connect() as d:
        last = int(d.execute(select(func.max(di.c.id))).scalar() or 0)
    copied = 0
    while True:
        with src.engine.connect() as s:
            rows = [dict(r._mapping) for r in s.execute(
                select(si).where(si.c.id > last).order_by(si.c.id).limit(CHUNK))]  # fmt: skip
            if not rows:
                break
            hi = rows[-1]["id"]
            sv, st = src.tables["vectors"], src.tables["tags"]
            vecs = [{"image_id": r.image_id, "gen": r.gen, "vector": dst.from_vector(src.to_vector(r.vector))}
                    for r in s.execute(select(sv).where(sv.c.image_id > last, sv.c.image_id <= hi))]  # fmt: skip
            sf = src.tables["frames"]
            frames = [{"image_id": r.image_id, "t_ms": r.t_ms, "gen": r.gen,
                       "vector": dst.from_vector(src.to_vector(r.vector))}
                      for r in s.execute(select(sf).where(sf.c.image_id > last, sf.c.image_id <= hi)
                                         .order_by(sf.c.image_id, sf.c.t_ms))]  # fmt: skip
            tags, texts = ([dict(r._mapping) for r in s.execute(
                select(t).where(t.c.image_id > last, t.c.image_id <= hi))]
                for t in (st, src.tables["ocr_text"]))  # fmt: skip
        with dst.engine.begin() as d:
            d.execute(insert(di), rows)
            if vecs:
                dst.write_vectors(d, vecs)
            if frames:
                dst.write_frames(d, frames)
            if tags:
                d.execute(insert(dst.tables["tags"]), tags)
            if texts:  # recognised text goes with its vector (SQLite's triggers index it)
                d.execute(insert(dst.tables["ocr_text"]), texts)
        last, copied = hi, copied + len(rows)
        if progress:
            progress(copied)
    with src.engine.connect() as s:
        small = {n: [dict(r._mapping) for r in s.execute(select(src.tables[n]))] for n in _SMALL}
    small["meta"] = [r for r in small["meta"] if r["key"] not in _LOCAL_META]
    with dst.engine.begin() as d:
        for name, rows in small.items():
            d.execute(delete(dst.tables[name]))
            if rows:
                d.execute(insert(dst.tables[name]), rows)
    return _counts(src.engine, src.tables)


def _counts(engine: Engine, tables: dict[str, Table]) -> dict[str, int]:
    def count(name: str):  # noqa: ANN202 - a SQLAlchemy select
        q = select(func.count()).select_from(tables[name])
        return q.where(tables[name].c.key.not_in(_LOCAL_META)) if name == "meta" else q

    with engine.connect() as c:
        return {
            n: int(c.execute(count(n)).scalar())
            for n in ("images", "vectors", "frames", "tags", "ocr_text", *_SMALL)
        }


def _check(src: dict[str, int], dst: dict[str, int]) -> None:
    if src != dst:
        raise StoreError(f"the copy differs from the source (rows per table {dst} != {src})")


def to_postgres(index_dir: Path, url: str, progress: Callable[[int], None] | None = None) -> dict:
    """Copy the active SQLite version in ``index_dir`` into the database at ``url``."""
    source = DirectoryLocation(index_dir)
    target = PgLocation(url)
    try:
        with WriterLock(index_dir), _translated(url):  # nothing changes the source meanwhile
            name = source.versions.current()
            if name is None:
                raise StoreError(f"no index in {index_dir} to migrate")
            if target.versions.current() is not None:
                raise StoreError(f"{target.describe()} already holds an index (version "
                                 f"{target.versions.current()}); migrate into an empty database")  # fmt: skip
            src_store = SqliteStore(source.versions.path(name))
            dst_store = target.open(name, writer=True)
            try:
                dim = src_store.dim()
                with dst_store.engine.begin() as conn:
                    if dim:
                        pg.bind_dimension(conn, dim)
                dst = _pg_side(dst_store.engine)
                counts = _copy(_sqlite_side(src_store), dst, progress)
                with dst_store.engine.begin() as conn:
                    _fix_sequence(conn)
                _check(counts, _counts(dst_store.engine, dst.tables))
                dst_store.refresh()
                dst_store.maintain()  # the HNSW index, when the table is large
            finally:
                src_store.close()
                dst_store.close()
            target.versions.set_current(name)
            return {"version": name, **counts}
    finally:
        target.close()


def _fix_sequence(conn: Connection) -> None:
    """New rows get ids after the copied ones."""
    conn.execute(text("SELECT setval(pg_get_serial_sequence('images', 'id'), "
                      "coalesce((SELECT max(id) FROM images), 0) + 1, false)"))  # fmt: skip


def from_postgres(url: str, index_dir: Path, progress: Callable[[int], None] | None = None) -> dict:
    """Copy the active version of the database at ``url`` into SQLite in ``index_dir``."""
    source = PgLocation(url)
    target = DirectoryLocation(index_dir)
    try:
        with WriterLock(index_dir), _translated(url):
            name = source.versions.current()
            if name is None:
                raise StoreError(f"no index in {source.describe()} to migrate")
            if target.versions.current() is not None:
                raise StoreError(f"{index_dir} already holds an index (version "
                                 f"{target.versions.current()}); migrate into an empty index.dir")  # fmt: skip
            src_store = source.open(name)
            dst_store = SqliteStore(target.versions.path(name), writer=True)
            try:
                src = _pg_side(src_store.engine)
                counts = _copy(src, _sqlite_side(dst_store), progress)
                _check(counts, _counts(dst_store.engine, _sqlite_side(dst_store).tables))
            finally:
                src_store.close()
                dst_store.close()
            SqliteStore(target.versions.path(name), writer=True).close()  # builds FAISS
            target.versions.set_current(name)
            return {"version": name, **counts}
    finally:
        source.close()
