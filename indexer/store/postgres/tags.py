"""Tag rows, personal concepts and smart albums in PostgreSQL (the SQLite backend's tables and
meta keys, same contract: see :mod:`indexer.store.sqlite.tags` and ``concepts``)."""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
from sqlalchemy import Connection, delete, func, insert, select, text

from indexer.store.base import TagList, TagWriter
from indexer.store.postgres import schema as db
from indexer.store.postgres.queries import PgQueries, vector_pages
from indexer.store.postgres.schema import albums, concepts, tag_defs, tags, vectors
from indexer.store.records import Album, Concept, TagView, concept_from_row, concept_row

TAGS_GEN_KEY = "tags_gen"
# the advisory lock of tag transactions (the one-bigint key space: apart from the writers'
# two-key locks of indexer.store.postgres.location)
TAGS_LOCK = zlib.crc32(b"clipsearch tags")
CONCEPTS_GEN_KEY = "concepts_gen"


def _meta_int(conn: Connection, key: str) -> int:
    value = conn.execute(text("SELECT value FROM meta WHERE key = :k"), {"k": key}).scalar()
    return int(value) if value is not None else 0


def _fingerprints(conn: Connection) -> dict[str, str]:
    return dict(conn.execute(select(tag_defs.c.tag, tag_defs.c.fingerprint)).all())


def read_concepts(conn: Connection) -> list[Concept]:
    return [concept_from_row(r) for r in conn.execute(select(concepts).order_by(concepts.c.name))]


def read_albums(conn: Connection) -> list[Album]:
    rows = conn.execute(select(albums).order_by(albums.c.name)).all()
    return [Album(r.name, json.loads(r.spec), r.created, r.updated) for r in rows]


class PgTagWriter(TagWriter):
    """:class:`TagWriter` on one open PostgreSQL transaction."""

    def __init__(self, conn: Connection):
        self.conn = conn

    def generation(self) -> int:
        return db.get_generation(self.conn)

    def tagged_generation(self) -> int:
        return _meta_int(self.conn, TAGS_GEN_KEY)

    def set_tagged_generation(self, gen: int) -> None:
        db.set_meta(self.conn, **{TAGS_GEN_KEY: gen})

    def fingerprints(self) -> dict[str, str]:
        return _fingerprints(self.conn)

    def set_fingerprints(self, fingerprints: dict[str, str]) -> None:
        for name, fp in fingerprints.items():
            self.conn.execute(text(
                "INSERT INTO tag_defs(tag, fingerprint) VALUES (:t, :f) ON CONFLICT (tag) "
                "DO UPDATE SET fingerprint = excluded.fingerprint"), {"t": name, "f": fp})  # fmt: skip

    def drop_fingerprints(self, names: Sequence[str]) -> None:
        if names:
            self.conn.execute(delete(tag_defs).where(tag_defs.c.tag.in_(list(names))))

    def delete_tags(self, names: Sequence[str]) -> None:
        if names:
            self.conn.execute(delete(tags).where(tags.c.tag.in_(list(names))))

    def delete_image_tags(self, ids: Sequence[int]) -> None:
        if len(ids):
            keep = select(concepts.c.name).scalar_subquery()
            self.conn.execute(delete(tags).where(tags.c.image_id.in_([int(i) for i in ids]),
                                                 tags.c.tag.not_in(keep)))  # fmt: skip

    def insert_tags(self, ids: np.ndarray, assigned: Sequence[TagList]) -> int:
        rows = [{"image_id": int(i), "tag": name, "score": float(score)}
                for i, found in zip(ids.tolist(), assigned) for name, score in found]  # fmt: skip
        if rows:
            self.conn.execute(insert(tags), rows)
        return len(rows)

    def concepts(self) -> list[Concept]:
        return read_concepts(self.conn)

    def put_concept(self, c: Concept) -> None:
        self.conn.execute(delete(concepts).where(concepts.c.name == c.name))
        self.conn.execute(concepts.insert().values(**concept_row(c)))

    def drop_concept(self, name: str) -> None:
        self.conn.execute(delete(concepts).where(concepts.c.name == name))
        self.conn.execute(delete(tags).where(tags.c.tag == name))

    def concepts_generation(self) -> int:
        return _meta_int(self.conn, CONCEPTS_GEN_KEY)

    def set_concepts_generation(self, gen: int) -> None:
        db.set_meta(self.conn, **{CONCEPTS_GEN_KEY: gen})

    def delete_concept_rows(self, names: Sequence[str], ids: Sequence[int] | None = None) -> None:
        if not names:
            return
        q = delete(tags).where(tags.c.tag.in_(list(names)))
        if ids is not None:
            q = q.where(tags.c.image_id.in_([int(i) for i in ids]))
        self.conn.execute(q)

    def vector_chunks(
        self, lo: int | None = None, hi: int | None = None, size: int = 4096
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        return vector_pages(self.conn, lo, hi, size)


def visible_sql(view: TagView) -> tuple[str, dict]:
    """``WITH visible(image_id, tag, score)``: the rows with the view's ``top_n`` applied."""
    if view.top_n is None:
        return "WITH visible AS (SELECT image_id, tag, score FROM tags)", {}
    sql = ("WITH ranked AS (SELECT image_id, tag, score, ROW_NUMBER() OVER (PARTITION BY "
           "image_id ORDER BY score DESC, tag COLLATE \"C\") AS rn FROM tags WHERE NOT (tag = ANY(:excl))), "
           "visible AS (SELECT image_id, tag, score FROM ranked WHERE rn <= :top_n "
           "UNION ALL SELECT image_id, tag, score FROM tags WHERE tag = ANY(:excl))")  # fmt: skip
    return sql, {"excl": list(view.exclusive), "top_n": view.top_n}


def _run(conn: Connection, view: TagView, tail: str, **params: Any) -> list:
    head, p = visible_sql(view)
    return conn.execute(text(f"{head} {tail}"), {**p, **params}).all()


class PgTags(PgQueries):
    """The tag, concept and album methods of :class:`indexer.store.postgres.PgStore`."""

    @contextmanager
    def tag_transaction(self) -> Iterator[PgTagWriter]:
        # Tag transactions of all writers take turns: each reads the generations once the one
        # before has committed, so two writers never score (and insert) the same rows.
        with self._begin() as conn:
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": TAGS_LOCK})
            yield PgTagWriter(conn)

    def concepts(self) -> list[Concept]:
        with self._connect() as conn:
            return read_concepts(conn)

    def albums(self) -> list[Album]:
        with self._connect() as conn:
            return read_albums(conn)

    def put_album(self, album: Album) -> None:
        with self._begin() as conn:
            conn.execute(delete(albums).where(albums.c.name == album.name))
            conn.execute(albums.insert().values(
                name=album.name, spec=json.dumps(album.spec, sort_keys=True),
                created=float(album.created), updated=float(album.updated)))  # fmt: skip

    def drop_album(self, name: str) -> bool:
        with self._begin() as conn:
            return bool(conn.execute(delete(albums).where(albums.c.name == name)).rowcount)

    def tag_fingerprints(self) -> dict[str, str]:
        with self._connect() as conn:
            return _fingerprints(conn)

    def tag_progress(self) -> tuple[int, int]:
        with self._connect() as conn:
            gen = _meta_int(conn, TAGS_GEN_KEY)
            done = conn.execute(select(func.count()).select_from(vectors)
                                .where(vectors.c.gen <= gen)).scalar() or 0  # fmt: skip
            total = conn.execute(select(func.count()).select_from(vectors)).scalar() or 0
        return int(done), int(total - done)

    def image_tags(self, image_id: int) -> TagList:
        with self._connect() as conn:
            rows = conn.execute(select(tags.c.tag, tags.c.score)
                                .where(tags.c.image_id == int(image_id))).all()  # fmt: skip
        return [(str(t), float(s)) for t, s in rows]

    def tag_counts(self, view: TagView) -> dict[str, int]:
        with self._connect() as conn:
            rows = _run(conn, view, "SELECT tag, COUNT(*) AS n FROM visible GROUP BY tag "
                                    "ORDER BY n DESC, tag COLLATE \"C\"")  # fmt: skip
        return {str(t): int(n) for t, n in rows}

    def ids_with_tags(self, names: Sequence[str], view: TagView) -> np.ndarray:
        wanted = sorted(set(names))
        if not wanted:
            return np.zeros(0, np.int64)
        with self._connect() as conn:
            rows = _run(conn, view, "SELECT image_id FROM visible WHERE tag = ANY(:wanted) "
                                    "GROUP BY image_id HAVING COUNT(DISTINCT tag) = :n "
                                    "ORDER BY image_id", wanted=wanted, n=len(wanted))  # fmt: skip
        return np.asarray([r[0] for r in rows], dtype=np.int64)

    def all_image_tags(self, view: TagView) -> dict[int, TagList]:
        out: dict[int, TagList] = {}
        with self._connect() as conn:
            for i, t, s in _run(conn, view, "SELECT image_id, tag, score FROM visible"):
                out.setdefault(int(i), []).append((str(t), float(s)))
        for found in out.values():
            found.sort(key=lambda ts: (-ts[1], ts[0]))
        return out
