"""Video frames in SQLite (schema 8): the ``frames`` table and an exact in-memory frame search.

Frames are written, copied and dropped by :meth:`SqliteStore.apply` in its transaction (the
functions below); the meta key ``frames_gen`` is the generation of the last commit that changed
any. Readers keep every frame vector in one float32 matrix, reloaded when ``frames_gen`` moves,
and search it with one matrix product (frames are far fewer than photos: a library of 1,000
videos sampled every 2 s holds ~30,000; 100,000 frames of 512-d take 200 MB).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sqlalchemy import Connection, delete, insert, select

from indexer.store.sqlite import schema as db
from indexer.store.sqlite.queries import chunks, decode_rows, encode_vector
from indexer.store.sqlite.reads import FRAMES_GEN_KEY
from indexer.store.sqlite.schema import FrameRow
from indexer.store.vectors.checks import as_frames


def put_frames(conn: Connection, image_id: int, frames: object, gen: int) -> None:
    """Replace the frames of ``image_id`` by ``frames`` (``(times, vectors)``)."""
    conn.execute(delete(FrameRow).where(FrameRow.image_id == image_id))
    times, vecs = as_frames(frames)
    if len(times):
        rows = [{"image_id": image_id, "t_ms": int(t), "gen": gen, "vector": encode_vector(v)}
                for t, v in zip(times, vecs, strict=True)]  # fmt: skip
        conn.execute(insert(FrameRow), rows)


def copy_frames(conn: Connection, src: int, dst: int, gen: int) -> None:
    """Give ``dst`` the frames of ``src`` (bit for bit; none if ``src`` has none)."""
    conn.execute(delete(FrameRow).where(FrameRow.image_id == dst))
    conn.exec_driver_sql(
        "INSERT INTO frames(image_id, t_ms, gen, vector) "
        "SELECT ?, t_ms, ?, vector FROM frames WHERE image_id = ?",
        (dst, gen, src),
    )


def drop_frames(conn: Connection, ids: Sequence[int]) -> int:
    """Delete the frames of these images; returns the rows deleted."""
    n = 0
    for part in chunks(list(ids)):
        n += conn.execute(delete(FrameRow).where(FrameRow.image_id.in_(part))).rowcount or 0
    return n


class SqliteFrames:
    """The frame reads of :class:`~indexer.store.sqlite.SqliteStore` (needs ``_connect``)."""

    def frames(self, image_id: int) -> tuple[np.ndarray, np.ndarray]:
        with self._connect() as conn:  # type: ignore[attr-defined]
            rows = conn.execute(
                select(FrameRow.t_ms, FrameRow.vector)
                .where(FrameRow.image_id == int(image_id))
                .order_by(FrameRow.t_ms)
            ).all()
        if not rows:
            return np.empty(0, np.int64), np.zeros((0, self.dim() or 0), np.float32)  # type: ignore[attr-defined]
        times, vecs = decode_rows(rows)
        return times, vecs

class FrameChanges:
    """The frame side of one :meth:`SqliteStore.apply`: gathered per row, written at the end
    in a few statements (a library without videos pays one ``EXISTS`` per commit)."""

    def __init__(self) -> None:
        self.replaced: list[int] = []  # upserted rows: their old frames go
        self.puts: list[tuple[int, object]] = []
        self.copies: list[tuple[int, int]] = []  # (src, dst)

    def upsert(self, row_id: int, frames: object | None, copy_from: int | None) -> None:
        self.replaced.append(row_id)
        if copy_from is not None:
            self.copies.append((copy_from, row_id))
        elif frames is not None:
            self.puts.append((row_id, frames))

    def write(self, conn: Connection, deletes: Sequence[int], gen: int) -> None:
        """Apply them inside the caller's transaction (``deletes``: rows being removed)."""
        stored = conn.exec_driver_sql("SELECT EXISTS (SELECT 1 FROM frames)").scalar()
        changed = bool(self.puts or self.copies)
        if stored:
            changed |= drop_frames(conn, self.replaced) > 0
        for row_id, frames in self.puts:
            put_frames(conn, row_id, frames, gen)
        for src, dst in self.copies:
            copy_frames(conn, src, dst, gen)
        if stored:
            changed |= drop_frames(conn, deletes) > 0
        if changed:
            db.set_meta(conn, **{FRAMES_GEN_KEY: gen})
