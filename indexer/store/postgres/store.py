"""PgStore: one index version in a PostgreSQL schema, vectors searched in the database.

The contract is :class:`indexer.store.base.IndexStore`'s. There is no derived vector file:
the ``vectors`` table (``vector(d)``, HNSW cosine index) is searched directly, so
:meth:`PgStore.refresh` only notes the latest generation and a crash can leave no orphan.
Several writers (other processes, other machines) may write at once: every :meth:`apply` is one
transaction that bumps the generation row (row-locked until commit, so commits are ordered by
generation) and upserts image rows on their unique path.

Searching: exact scans (the HNSW index disabled for the transaction) when the table or the
allowed set is small; otherwise the HNSW index with pgvector 0.8 iterative scans, falling back
to an exact scan in the rare case the iterative scan stops before ``k`` allowed hits.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Mapping

import numpy as np
from pgvector.sqlalchemy import VECTOR
from sqlalchemy import Connection, bindparam, delete, func, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from indexer.store.base import IndexStore
from indexer.store.errors import IndexMissingError
from indexer.store.postgres import schema as db
from indexer.store.postgres.frames import PgFrameChanges, PgFrames
from indexer.store.postgres.ocr import PgOcr
from indexer.store.postgres.schema import images, ocr_text, tags, tombstones, vectors
from indexer.store.postgres.tags import PgTags
from indexer.store.records import Changes, VectorState
from indexer.store.vectors.checks import normalize
from indexer.types import ModelIdentity

EXACT_TABLE_MAX = 20_000  # below this many vectors every search is exact
EXACT_ALLOWED_MAX = 20_000  # filtered searches over at most this many ids are exact
EF_SEARCH_MIN = 400  # clustered 1M (bench_postgres): graphs of m 16 missed whole clusters at 200
MAX_SCAN_TUPLES = 200_000  # iterative scans visit at most this many (then exact)


def copy_vectors(conn: Connection, rows: list[tuple[int, int, np.ndarray]]) -> None:
    """Insert (image_id, gen, vector) rows with one binary COPY (~10x faster than INSERTs of
    the text form). Each vector goes as the bytes of pgvector's binary format (dim, 0, then
    big-endian float32s), which the server reads with the type's own receive function."""
    cur = conn.connection.driver_connection.cursor()  # psycopg, in this transaction
    with cur.copy("COPY vectors (image_id, gen, vector) FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(["int8", "int8", "bytea"])
        for image_id, gen, vec in rows:
            v = np.asarray(vec, dtype=">f4")
            copy.write_row((image_id, gen, struct.pack(">HH", len(v), 0) + v.tobytes()))


def _exact(conn: Connection) -> None:
    """Exact search for the rest of the transaction: the planner may not use the HNSW index."""
    conn.execute(text("SET LOCAL enable_indexscan = off"))


class PgStore(PgTags, PgOcr, PgFrames, IndexStore):
    """One index version (a schema of the database at ``url``); ``writer`` stores are opened
    by writers holding their advisory locks (:mod:`indexer.store.postgres.location`)."""

    def __init__(self, url: str, schema: str, writer: bool = False, kind: str = "auto"):
        self.url, self.schema, self.writer, self.kind = url, schema, writer, kind
        self.exact_table_max, self.exact_allowed_max = EXACT_TABLE_MAX, EXACT_ALLOWED_MAX
        self.last_plan = ""  # how the last search ran: exact, hnsw or hnsw+exact (fallback)
        self.engine = db.make_engine(url, schema)
        self._gen = 0
        self._count = 0
        self._hnsw = False
        self._dim: int | None = None
        try:
            with self._begin() as conn:
                exists = conn.execute(text("SELECT to_regnamespace(:s) IS NOT NULL"),
                                      {"s": schema}).scalar()  # fmt: skip
                if not writer and (not exists or db.read_version(conn) == 0):
                    raise IndexMissingError(f"no index {schema} in {db.mask_url(url)}; run "
                                            "`clipsearch index` first")  # fmt: skip
                db.ensure_schema(conn, schema, writer)
            self.refresh()
        except BaseException:
            self.engine.dispose()
            raise

    # ----------------------------------------------------------------- metadata / model
    def meta(self) -> dict[str, str]:
        with self._connect() as conn:
            return db.get_meta(conn)

    def generation(self) -> int:
        with self._connect() as conn:
            return db.get_generation(conn)

    def bind_model(self, identity: ModelIdentity) -> None:
        self.check_model(identity)
        with self._begin() as conn:
            conn.execute(text("LOCK TABLE meta IN SHARE ROW EXCLUSIVE MODE"))  # one binder
            if "checkpoint_sha256" not in db.get_meta(conn):
                db.set_meta(conn, model_name=identity.name,
                            checkpoint_sha256=identity.checkpoint_sha256,
                            embed_dim=identity.embed_dim, preprocess=identity.preprocess,
                            created_at=time.time())  # fmt: skip
            db.bind_dimension(conn, int(db.get_meta(conn)["embed_dim"]))
        self.check_model(identity)  # another writer may have bound first

    def dim(self) -> int | None:
        """The vectors' dimension (cached once bound: a version's never changes)."""
        if self._dim is None:
            self._dim = super().dim()
        return self._dim

    def set_meta(self, values: Mapping[str, str]) -> None:
        with self._begin() as conn:
            db.set_meta(conn, **dict(values))

    # ----------------------------------------------------------------- generations
    def refresh(self) -> bool:
        with self._connect() as conn:
            gen = db.get_generation(conn)
            if gen == self._gen:
                return False
            self._count = int(conn.execute(select(func.count()).select_from(vectors)).scalar())
            self._hnsw = db.has_hnsw(conn)
        changed, self._gen = gen != self._gen, gen
        return changed

    def save(self, force: bool = False, interval: float | None = None) -> bool:
        return False  # nothing derived: the database is the index

    def maintain(self) -> None:
        """After an indexing run: build the HNSW index once exact scans get too large."""
        self.refresh()
        if not self._hnsw and self._count > self.exact_table_max:
            self.build_vector_index()

    def build_vector_index(self) -> None:
        """Build the HNSW index now (writers; later vectors are added to it as written)."""
        if self.dim() is None:
            return
        with self._begin() as conn:
            db.build_hnsw(conn)
        self._gen = -1  # re-read the state
        self.refresh()

    def last_modified(self) -> float | None:
        value = self.meta().get("modified_at")
        return float(value) if value else None

    # ----------------------------------------------------------------- writing
    def apply(self, changes: Changes) -> dict[bytes, int]:
        """Apply ``changes`` in one transaction with a new generation."""
        assert self.writer, "apply() needs a writer store"
        now = time.time()
        pending: dict[int, np.ndarray] = {}
        ups = [dict(up) for up in changes.upserts]
        extra = [(up.pop("vector", None), up.pop("copy_from", None), up.pop("frames", None))
                 for up in ups]  # fmt: skip
        frames = PgFrameChanges()
        for up in ups:
            up.setdefault("indexed_at", now)
        set_row = update(images).where(images.c.id == bindparam("row_id"))
        with self._begin() as conn:
            gen = db.next_generation(conn)
            ids_by_path = self._upsert_rows(conn, ups, set_row)
            dropped: list[int] = []
            for up, (vec, copy_from, new_frames) in zip(ups, extra):
                row_id = ids_by_path[up["path"]]
                frames.upsert(row_id, new_frames if vec is not None else None, copy_from)
                if copy_from is not None:
                    vec = pending.get(copy_from)
                    if vec is None:
                        found = self.vectors([copy_from], conn=conn)[1]
                        if not len(found):
                            raise RuntimeError(f"cannot copy the vector of image {copy_from}: none")
                        vec = found[0]
                if vec is not None:
                    pending[row_id] = normalize(np.asarray(vec, np.float32).reshape(1, -1))[0]
                else:
                    pending.pop(row_id, None)
                    dropped.append(row_id)
            if dropped:
                self._drop_vectors(conn, dropped, gen)
            self._put_vectors(conn, pending, gen)
            frames.write(conn, changes.deletes, gen)
            for mv in changes.moves + changes.touches:
                mv = dict(mv)
                mv["row_id"] = mv.pop("id")
                conn.execute(set_row, mv)
            if changes.deletes:
                ids = [int(i) for i in changes.deletes]
                self._drop_vectors(conn, ids, gen)
                conn.execute(delete(tags).where(tags.c.image_id.in_(ids)))
                conn.execute(delete(images).where(images.c.id.in_(ids)))
            db.set_meta(conn, modified_at=now)
        self.refresh()
        return ids_by_path

    @staticmethod
    def _upsert_rows(conn: Connection, ups: list[dict], set_row) -> dict[bytes, int]:  # noqa: ANN001
        """Write the image rows: updates by id, new rows in one INSERT per column set that
        takes over a row another writer added for the same path meanwhile."""
        out: dict[bytes, int] = {}
        groups: dict[tuple, list[dict]] = {}
        for up in ups:
            if up.get("id") is not None:
                out[up["path"]] = up["id"]
                conn.execute(set_row, {**{k: v for k, v in up.items() if k != "id"},
                                       "row_id": up["id"]})  # fmt: skip
            else:
                groups.setdefault(tuple(sorted(up)), []).append(up)
        for cols, rows in groups.items():
            rows = list({r["path"]: r for r in rows}.values())  # one row per path
            stmt = pg_insert(images)
            stmt = stmt.on_conflict_do_update(
                index_elements=[images.c.path],
                set_={c: stmt.excluded[c] for c in cols if c != "path"})  # fmt: skip
            for row_id, path in conn.execute(stmt.returning(images.c.id, images.c.path), rows):
                out[bytes(path)] = row_id
        return out

    def _put_vectors(self, conn: Connection, new: dict[int, np.ndarray], gen: int) -> None:
        """Store each image's new vector (replacing its old one and the tags scored on it)."""
        if not new:
            return
        ids = list(new)
        for table in (vectors, tags, ocr_text, tombstones):
            conn.execute(delete(table).where(table.c.image_id.in_(ids)))
        copy_vectors(conn, [(i, gen, v) for i, v in new.items()])

    def _drop_vectors(self, conn: Connection, ids: list[int], gen: int) -> list[int]:
        had = conn.execute(delete(vectors).where(vectors.c.image_id.in_(ids))
                           .returning(vectors.c.image_id)).scalars().all()  # fmt: skip
        if had:
            conn.execute(delete(tags).where(tags.c.image_id.in_(had)))  # tags go with vectors
            conn.execute(delete(ocr_text).where(ocr_text.c.image_id.in_(had)))  # so does text
            stmt = pg_insert(tombstones).values([{"image_id": i, "gen": gen} for i in had])
            conn.execute(stmt.on_conflict_do_update(index_elements=[tombstones.c.image_id],
                                                    set_={"gen": gen}))  # fmt: skip
        return list(had)

    # ----------------------------------------------------------------- searching
    def vector_state(self) -> VectorState:
        return VectorState("hnsw" if self._hnsw else "exact", self._count,
                           self._gen)  # fmt: skip

    def search_vectors(
        self, query: np.ndarray, k: int, allowed_ids: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        scores, ids = np.full(k, -np.inf, np.float32), np.full(k, -1, np.int64)
        dim = self.dim()
        if k <= 0 or dim is None:
            return scores, ids
        q = normalize(np.asarray(query, np.float32).reshape(1, -1))[0]
        allowed = None if allowed_ids is None else np.unique(np.asarray(allowed_ids, np.int64))
        if allowed is not None and not len(allowed):
            return scores, ids
        with self._begin() as conn:
            rows = self._search(conn, q, k, allowed, dim)
        for i, (image_id, dist) in enumerate(rows[:k]):
            ids[i], scores[i] = image_id, 1.0 - float(dist)
        return scores, ids

    def _search(self, conn: Connection, q: np.ndarray, k: int, allowed: np.ndarray | None,
                dim: int) -> list:  # fmt: skip
        where = "" if allowed is None else "WHERE image_id = ANY(:ids)"
        sql = (f"SELECT image_id, vector <=> :q AS d FROM vectors {where} "
               "ORDER BY d, image_id LIMIT :k")  # fmt: skip
        stmt = text(sql).bindparams(bindparam("q", type_=VECTOR(dim)))
        params: dict = {"q": q, "k": int(k)}
        if allowed is not None:
            params["ids"] = allowed.tolist()
        small = allowed is not None and len(allowed) <= self.exact_allowed_max
        if not self._hnsw or self._count <= self.exact_table_max or small or k >= self._count:
            _exact(conn)
            self.last_plan = "exact"
            return conn.execute(stmt, params).all()
        # HNSW: the index scan orders by distance only (ties broken below, within the k)
        conn.execute(text(f"SET LOCAL hnsw.ef_search = {max(EF_SEARCH_MIN, min(2 * k, 1000))}"))
        conn.execute(text(f"SET LOCAL hnsw.max_scan_tuples = {MAX_SCAN_TUPLES}"))
        conn.execute(text("SET LOCAL hnsw.iterative_scan = strict_order"))
        ann = text(f"SELECT image_id, vector <=> :q AS d FROM vectors {where} "
                   "ORDER BY vector <=> :q LIMIT :k").bindparams(bindparam("q", type_=VECTOR(dim)))  # fmt: skip
        rows = conn.execute(ann, params).all()
        self.last_plan = "hnsw"
        want = k if allowed is None else min(k, len(allowed))
        if len(rows) < want:  # the scan stopped early (very selective filter): be exact
            _exact(conn)
            rows = conn.execute(stmt, params).all()
            self.last_plan = "hnsw+exact"
        return sorted(rows, key=lambda r: (r[1], r[0]))

    def sample_vectors(self, n: int) -> np.ndarray:
        with self._connect() as conn:
            ids = np.asarray(conn.execute(select(vectors.c.image_id).order_by(vectors.c.image_id))
                             .scalars().all(), np.int64)  # fmt: skip
            if not len(ids):
                return np.zeros((0, self.dim() or 0), np.float32)
            rng = np.random.default_rng(self._gen)
            chosen = rng.choice(ids, size=min(n, len(ids)), replace=False)
            return self.vectors(chosen.tolist(), conn=conn)[1]

    def close(self) -> None:
        self.engine.dispose()
