"""Video frames in PostgreSQL (schema 3): the ``frames`` table, searched exactly in SQL.

Frames are written, copied and dropped by :meth:`PgStore.apply` in its transaction
(:class:`PgFrameChanges`), in a few statements per commit whatever its size: a library without
videos pays one ``EXISTS``. Frames are far fewer than photos (1,000 videos sampled every 2 s:
~30,000), so searches scan them exactly (``1 - (vector <=> query)``) without an HNSW index.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

import numpy as np
from pgvector.sqlalchemy import VECTOR
from sqlalchemy import Connection, bindparam, func, select, text

from indexer.store.postgres.queries import PgQueries
from indexer.store.postgres.schema import frames
from indexer.store.vectors.checks import as_frames

_DROP = text("DELETE FROM frames WHERE image_id = ANY(:ids)")
_COPY = text(
    "INSERT INTO frames(image_id, t_ms, gen, vector) SELECT c.dst, f.t_ms, :gen, f.vector "
    "FROM unnest(CAST(:src AS bigint[]), CAST(:dst AS bigint[])) AS c(src, dst) "
    "JOIN frames f ON f.image_id = c.src"
)


def copy_frames(conn: Connection, rows: Sequence[tuple[int, int, int, np.ndarray]]) -> None:
    """Insert (image_id, t_ms, gen, vector) rows with one binary COPY (vectors as pgvector's
    binary format, like :func:`indexer.store.postgres.store.copy_vectors`)."""
    cur = conn.connection.driver_connection.cursor()  # psycopg, in this transaction
    with cur.copy("COPY frames (image_id, t_ms, gen, vector) FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(["int8", "int4", "int8", "bytea"])
        for image_id, t_ms, gen, vec in rows:
            v = np.asarray(vec, dtype=">f4")
            copy.write_row((image_id, t_ms, gen, struct.pack(">HH", len(v), 0) + v.tobytes()))


class PgFrameChanges:
    """The frame side of one :meth:`PgStore.apply`: gathered per row, written at the end."""

    def __init__(self) -> None:
        self.replaced: list[int] = []  # upserted rows: their old frames go
        self.puts: dict[int, object] = {}  # row -> its new (times, vectors)
        self.copies: dict[int, int] = {}  # dst -> src

    def upsert(self, row_id: int, new_frames: object | None, copy_from: int | None) -> None:
        self.replaced.append(row_id)
        self.puts.pop(row_id, None)
        self.copies.pop(row_id, None)
        if copy_from is not None:
            self.copies[row_id] = int(copy_from)
        elif new_frames is not None:
            self.puts[row_id] = new_frames

    def write(self, conn: Connection, deletes: Sequence[int], gen: int) -> None:
        """Apply them inside the caller's transaction (``deletes``: rows being removed)."""
        rows = [(row_id, int(t), gen, v) for row_id, f in self.puts.items()
                for t, v in zip(*as_frames(f))]  # fmt: skip
        stored = conn.execute(text("SELECT EXISTS (SELECT 1 FROM frames)")).scalar()
        if not stored and not rows:
            return  # nothing to drop and nothing to copy from
        if stored and self.replaced:
            conn.execute(_DROP, {"ids": self.replaced})
        if rows:
            copy_frames(conn, rows)
        if self.copies:  # after the puts: a copy of a row written in this batch gets its frames
            conn.execute(_COPY, {"src": list(self.copies.values()), "dst": list(self.copies),
                                 "gen": gen})  # fmt: skip
        if stored and deletes:
            conn.execute(_DROP, {"ids": [int(i) for i in deletes]})


class PgFrames(PgQueries):
    """The frame reads of :class:`indexer.store.postgres.PgStore`."""

    def search_frames(
        self, query: np.ndarray, k: int, allowed_ids: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        empty = np.empty(0, np.float32), np.empty(0, np.int64), np.empty(0, np.int64)
        dim = self.dim()  # type: ignore[attr-defined] - IndexStore.dim
        if k < 1 or dim is None:
            return empty
        where = ""
        params: dict = {"q": np.asarray(query, np.float32).reshape(-1), "k": int(k)}
        if allowed_ids is not None:
            allowed = np.unique(np.asarray(allowed_ids, np.int64))
            if not len(allowed):
                return empty
            where, params["ids"] = "WHERE image_id = ANY(:ids)", allowed.tolist()
        stmt = text(
            f"SELECT 1 - (vector <=> :q) AS s, image_id, t_ms FROM frames {where} "
            "ORDER BY vector <=> :q, image_id, t_ms LIMIT :k"
        ).bindparams(bindparam("q", type_=VECTOR(dim)))
        with self._connect() as conn:
            rows = conn.execute(stmt, params).all()
        if not rows:
            return empty
        scores, ids, times = zip(*rows)
        return (np.asarray(scores, np.float32), np.asarray(ids, np.int64),
                np.asarray(times, np.int64))  # fmt: skip

    def frames(self, image_id: int) -> tuple[np.ndarray, np.ndarray]:
        q = (select(frames.c.t_ms, frames.c.vector).where(frames.c.image_id == int(image_id))
             .order_by(frames.c.t_ms))  # fmt: skip
        with self._connect() as conn:
            rows = conn.execute(q).all()
        times = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        if not rows:
            return times, np.zeros((0, self.dim() or 0), np.float32)  # type: ignore[attr-defined]
        return times, np.stack([np.asarray(r[1], dtype=np.float32) for r in rows])

    def frame_counts(self) -> dict[str, int]:
        q = select(func.count(func.distinct(frames.c.image_id)), func.count()).select_from(frames)
        with self._connect() as conn:
            videos, n = conn.execute(q).one()
        return {"videos": int(videos), "frames": int(n)}
