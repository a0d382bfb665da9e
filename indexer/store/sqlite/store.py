"""SqliteStore: one index version = a SQLite database (source of truth) + a derived FAISS file.

Writers change SQLite in transactions that bump the *generation* and tag each written vector
with it; deleted vectors leave tombstones. The FAISS file is saved atomically together with the
generation it reflects. Anyone opening the store brings its in-memory FAISS index up to the
SQLite generation by replaying newer vectors and tombstones (writers also verify the id sets and
save the repaired file), so a crash at any moment loses nothing and leaves no orphans.
Readers call :meth:`SqliteStore.refresh` before each query to see a running writer's progress.
The contract is :class:`indexer.store.base.IndexStore`'s.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from sqlalchemy import Connection, bindparam, delete, insert, select, update

from indexer.store.base import IndexStore
from indexer.store.errors import IndexMissingError
from indexer.store.records import Changes
from indexer.store.sqlite import schema as db
from indexer.store.sqlite.frame_search import FrameCache
from indexer.store.sqlite.frames import FrameChanges, SqliteFrames
from indexer.store.sqlite.mirror import FAISS_FILE_KEY, PRUNED_KEY, FaissMirror
from indexer.store.sqlite.ocr import SqliteOcr
from indexer.store.sqlite.queries import chunks, decode_rows, driver, encode_vector
from indexer.store.sqlite.schema import (
    ImageRow,
    OcrTextRow,
    TagRow,
    TombstoneRow,
    VectorRow,
)
from indexer.store.sqlite.shared import SqlReads
from indexer.store.sqlite.tags import SqliteTags
from indexer.store.vectors.checks import normalize
from indexer.store.vectors.index import VectorIndex, choose_kind, start_kind
from indexer.store.versions import file_signature
from indexer.types import ModelIdentity

DB_NAME = "index.sqlite"
FAISS_NAME = "vectors.faiss"


class SqliteStore(SqlReads, SqliteTags, SqliteOcr, SqliteFrames, IndexStore):
    """SQLite + FAISS for one index version directory; ``writer`` stores must hold the lock."""

    def __init__(self, path: Path, writer: bool = False, kind: str = "auto"):
        self.path = Path(path)
        self.writer = writer
        self.kind = kind
        self.db_path = self.path / DB_NAME
        self.faiss_path = self.path / FAISS_NAME
        if writer:
            self.path.mkdir(parents=True, exist_ok=True)
        elif not self.db_path.exists():
            raise IndexMissingError(f"no index in {self.path}; run `clipsearch index` first")
        self.engine = db.make_engine(self.db_path, writer)
        with db.translated_errors():
            db.ensure_schema(self.engine, writer)
        self.mirror = FaissMirror(self.faiss_path, writer, kind)  # the FAISS index, kept current
        self._frame_cache = FrameCache()
        self._last_save = time.monotonic()
        self._dirty = False
        if writer:
            for tmp in self.path.glob(f".{FAISS_NAME}.*.tmp"):  # left by a crash mid-save
                tmp.unlink(missing_ok=True)
            self.repair()

    # ----------------------------------------------------------------- metadata / model
    def bind_model(self, identity: ModelIdentity) -> None:
        self.check_model(identity)
        with self._begin() as conn:
            if "checkpoint_sha256" not in db.get_meta(conn):
                db.set_meta(
                    conn,
                    model_name=identity.name,
                    checkpoint_sha256=identity.checkpoint_sha256,
                    embed_dim=identity.embed_dim,
                    preprocess=identity.preprocess,
                    created_at=time.time(),
                )

    def set_meta(self, values: Mapping[str, str]) -> None:
        with self._begin() as conn:
            db.set_meta(conn, **dict(values))

    # ----------------------------------------------------------------- FAISS sync
    @property
    def index(self) -> VectorIndex | None:
        return self.mirror.index

    @index.setter
    def index(self, value: VectorIndex | None) -> None:
        self.mirror.index = value

    @property
    def index_gen(self) -> int:
        return self.mirror.gen

    @index_gen.setter
    def index_gen(self, value: int) -> None:
        self.mirror.gen = value

    def repair(self) -> dict:
        """Writer start-up: load, replay, verify id sets against SQLite, fix and save."""
        with self._connect() as conn:
            self.mirror.load(driver(conn), self.dim())
        report = {"added": 0, "removed": 0, "rebuilt": False}
        if self.index is None:
            return report
        with self._connect() as conn:
            sql_gen = db.get_generation(conn)
            if self.index_gen > sql_gen:
                self.index = VectorIndex.create(self.index.dim, start_kind(self.kind))
                self.index_gen = 0
                report["rebuilt"] = True
            changed = self.mirror.replay(driver(conn), sql_gen)
            sql_ids = np.asarray(
                conn.execute(select(VectorRow.image_id).order_by(VectorRow.image_id))
                .scalars()
                .all(),
                dtype=np.int64,
            )
            faiss_ids = self.index.ids()
            missing = np.setdiff1d(sql_ids, faiss_ids, assume_unique=True)
            extra = np.setdiff1d(faiss_ids, sql_ids, assume_unique=True)
            if len(extra):
                self.index.remove(extra)
            if len(missing):
                self.index.add(*self.vectors(missing.tolist(), conn=conn))
            report.update(added=int(len(missing)), removed=int(len(extra)))
            if changed or len(missing) or len(extra) or self.mirror.file_gen != sql_gen:
                self._dirty = True
            conn.execute(delete(TombstoneRow).where(TombstoneRow.gen <= sql_gen))
            db.set_meta(conn, **{PRUNED_KEY: sql_gen})
            conn.commit()
        self.maybe_rebuild_kind()
        self.save(force=self._dirty)
        return report

    def maybe_rebuild_kind(self) -> bool:
        """Rebuild FAISS from SQLite when the configured/automatic index kind has changed."""
        if self.index is None:
            return False
        want = choose_kind(len(self.index), self.kind)
        if want == self.index.kind:
            return False
        with self._connect() as conn:
            rows = conn.execute(select(VectorRow.image_id, VectorRow.vector)).all()
        ids, vecs = decode_rows(rows) if rows else (np.zeros(0, np.int64), None)
        if vecs is None:
            self.index = VectorIndex.create(self.index.dim, want)
        else:
            self.index = VectorIndex.build(ids, vecs, kind=want)
        self._dirty = True
        return True

    def maintain(self) -> None:
        self.maybe_rebuild_kind()

    def save(self, force: bool = False, interval: float | None = None) -> bool:
        """Save FAISS atomically with its generation (if dirty and ``interval`` has passed)."""
        if not self.writer or self.index is None or not (self._dirty or force):
            return False
        if interval is not None and time.monotonic() - self._last_save < interval:
            return False
        sig = self.index.save(self.faiss_path, self.index_gen)
        self.set_meta({FAISS_FILE_KEY: json.dumps(sig, sort_keys=True)})
        self.mirror.sig = file_signature(self.faiss_path)
        self._last_save = time.monotonic()
        self._dirty = False
        return True

    # ----------------------------------------------------------------- writing
    def apply(self, changes: Changes) -> dict[bytes, int]:
        """Apply ``changes`` in one transaction (new generation), then update FAISS.

        Returns the ids of the upserted rows by path (bytes).
        """
        assert self.writer, "apply() needs a writer store"
        now = time.time()
        ids_by_path: dict[bytes, int] = {}
        added_ids: list[int] = []
        added_vecs: list[np.ndarray] = []
        removed: list[int] = []
        pending: dict[int, bytes] = {}  # new vector blobs, written together after the rows
        frames = FrameChanges()
        # Statements built once and executed with each row's parameters: SQLAlchemy compiles
        # them once per set of columns (a statement built per row cost ~1 ms a row).
        images = ImageRow.__table__
        add_row = insert(images)
        set_row = update(images).where(images.c.id == bindparam("row_id"))
        with self._begin() as conn:
            gen = db.get_generation(conn) + 1
            db.set_meta(conn, generation=gen)
            for up in changes.upserts:
                up = dict(up)
                vec, copy_from = up.pop("vector", None), up.pop("copy_from", None)
                new_frames = up.pop("frames", None)
                up.setdefault("indexed_at", now)
                row_id = up.pop("id", None)
                if row_id is None:
                    row_id = conn.execute(add_row, up).inserted_primary_key[0]
                else:
                    conn.execute(set_row, {**up, "row_id": row_id})
                ids_by_path[up["path"]] = row_id
                frames.upsert(row_id, new_frames if vec is not None else None, copy_from)
                if copy_from is not None:  # the stored blob is copied bit for bit
                    blob = (
                        pending.get(copy_from)
                        or conn.execute(
                            select(VectorRow.vector).where(VectorRow.image_id == copy_from)
                        ).scalar()
                    )
                    if blob is None:
                        raise RuntimeError(f"cannot copy the vector of image {copy_from}: none")
                elif vec is not None:
                    vec = normalize(np.asarray(vec, dtype=np.float32).reshape(1, -1))[0]
                    blob = encode_vector(vec)
                if copy_from is not None or vec is not None:
                    pending[row_id] = blob
                    added_ids.append(row_id)
                    # FAISS gets the stored (rounded) vector: what a replay would give it
                    added_vecs.append(decode_rows([(row_id, blob)])[1][0])
                else:
                    pending.pop(row_id, None)
                    if self._drop_vectors(conn, [row_id], gen):
                        removed.append(row_id)
            self._put_vectors(conn, pending, gen)
            frames.write(conn, changes.deletes, gen)
            for mv in changes.moves + changes.touches:
                mv = dict(mv)
                mv["row_id"] = mv.pop("id")
                conn.execute(set_row, mv)
            if changes.deletes:
                for part in chunks(changes.deletes):
                    removed += self._drop_vectors(conn, list(part), gen)
                    conn.execute(delete(TagRow).where(TagRow.image_id.in_(part)))
                    conn.execute(delete(ImageRow).where(ImageRow.id.in_(part)))
            db.set_meta(conn, vector_count=db.vector_count(conn))
        if self.index is None and added_vecs:
            self.index = VectorIndex.create(len(added_vecs[0]), start_kind(self.kind))
        if self.index is not None:
            if removed:
                self.index.remove(np.asarray(removed, dtype=np.int64))
            if added_ids:
                self.index.add(np.asarray(added_ids, dtype=np.int64), np.stack(added_vecs))
            self.index_gen = gen
            self._dirty = True
        return ids_by_path

    def _put_vectors(self, conn: Connection, vectors: dict[int, bytes], gen: int) -> None:
        """Store each image's new vector (replacing its old one, and the tags scored on it)."""
        if not vectors:
            return
        for part in chunks(list(vectors)):
            for table in (VectorRow, TagRow, OcrTextRow, TombstoneRow):
                conn.execute(delete(table).where(table.image_id.in_(part)))
        rows = [{"image_id": i, "gen": gen, "vector": b} for i, b in vectors.items()]
        conn.execute(insert(VectorRow), rows)

    def _drop_vectors(self, conn: Connection, ids: list[int], gen: int) -> list[int]:
        had = conn.execute(select(VectorRow.image_id).where(VectorRow.image_id.in_(ids)))
        had = had.scalars().all()
        if had:
            conn.execute(delete(VectorRow).where(VectorRow.image_id.in_(had)))
            conn.execute(delete(TagRow).where(TagRow.image_id.in_(had)))  # tags go with vectors
            conn.execute(delete(OcrTextRow).where(OcrTextRow.image_id.in_(had)))  # so does text
            conn.execute(delete(TombstoneRow).where(TombstoneRow.image_id.in_(had)))
            conn.execute(insert(TombstoneRow), [{"image_id": i, "gen": gen} for i in had])
        return list(had)

    def close(self) -> None:
        if self.writer:
            self.save()
        self.engine.dispose()
