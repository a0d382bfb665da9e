"""Tag rows in SQLite: the write primitives of one transaction and the reads with ``top_n``.

Tables (schema 2): ``tags(image_id, tag, score)`` holds every tag that passes its threshold,
uncapped; ``tag_defs(tag, fingerprint)`` the definition each tag's rows were scored with; the
meta key ``tags_gen`` the generation up to which vectors have been tagged. Reading applies a
:class:`~indexer.store.records.TagView` in SQL (:func:`visible_sql`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
from sqlalchemy import Connection, bindparam, delete, func, select, text

from indexer.store.base import TagList, TagWriter
from indexer.store.records import Album, Concept, TagView
from indexer.store.sqlite import concepts as concept_sql
from indexer.store.sqlite import schema as db
from indexer.store.sqlite.queries import StoreQueries, chunks, vector_pages
from indexer.store.sqlite.schema import MetaRow, TagDefRow, TagRow, VectorRow

TAGS_GEN_KEY = "tags_gen"


def _stored_fingerprints(conn: Connection) -> dict[str, str]:
    return dict(conn.execute(select(TagDefRow.tag, TagDefRow.fingerprint)).all())


def _tags_generation(conn: Connection) -> int:
    value = conn.execute(select(MetaRow.value).where(MetaRow.key == TAGS_GEN_KEY)).scalar()
    return int(value) if value is not None else 0


class SqliteTagWriter(TagWriter):
    """:class:`TagWriter` on one open SQLite transaction."""

    def __init__(self, conn: Connection):
        self.conn = conn

    def generation(self) -> int:
        return db.get_generation(self.conn)

    def tagged_generation(self) -> int:
        return _tags_generation(self.conn)

    def set_tagged_generation(self, gen: int) -> None:
        db.set_meta(self.conn, **{TAGS_GEN_KEY: gen})

    def fingerprints(self) -> dict[str, str]:
        return _stored_fingerprints(self.conn)

    def set_fingerprints(self, fingerprints: dict[str, str]) -> None:
        for name, fp in fingerprints.items():
            self.conn.execute(
                text(
                    "INSERT INTO tag_defs(tag, fingerprint) VALUES (:t, :f) "
                    "ON CONFLICT(tag) DO UPDATE SET fingerprint = excluded.fingerprint"
                ),
                {"t": name, "f": fp},
            )

    def drop_fingerprints(self, tags: Sequence[str]) -> None:
        for part in chunks(list(tags)):
            self.conn.execute(delete(TagDefRow).where(TagDefRow.tag.in_(part)))

    def delete_tags(self, tags: Sequence[str]) -> None:
        for part in chunks(list(tags)):
            self.conn.execute(delete(TagRow).where(TagRow.tag.in_(part)))

    def delete_image_tags(self, ids: Sequence[int]) -> None:
        keep = concept_sql.concept_names()
        for part in chunks(list(ids)):
            self.conn.execute(
                delete(TagRow).where(TagRow.image_id.in_(part), TagRow.tag.not_in(keep))
            )

    def concepts(self) -> list[Concept]:
        return concept_sql.read_concepts(self.conn)

    def put_concept(self, concept: Concept) -> None:
        concept_sql.put_concept(self.conn, concept)

    def drop_concept(self, name: str) -> None:
        concept_sql.drop_concept(self.conn, name)

    def concepts_generation(self) -> int:
        return concept_sql.concepts_generation(self.conn)

    def set_concepts_generation(self, gen: int) -> None:
        concept_sql.set_concepts_generation(self.conn, gen)

    def delete_concept_rows(self, names: Sequence[str], ids: Sequence[int] | None = None) -> None:
        concept_sql.delete_concept_rows(self.conn, names, ids)

    def insert_tags(self, ids: np.ndarray, assigned: Sequence[TagList]) -> int:
        rows = [
            (i, name, float(score))
            for i, tags in zip(np.asarray(ids).tolist(), assigned)
            for name, score in tags
        ]
        if rows:  # the driver's executemany: ~30x faster than ORM-style dict rows at 1M
            self.conn.exec_driver_sql("INSERT INTO tags (image_id, tag, score) VALUES (?, ?, ?)",
                                      rows)  # fmt: skip
        return len(rows)

    def vector_chunks(
        self, lo: int | None = None, hi: int | None = None, size: int = 4096
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        return vector_pages(self.conn, lo, hi, size)


def visible_sql(view: TagView) -> tuple[str, dict]:
    """A ``WITH visible(image_id, tag, score) AS (...)`` clause: the stored rows with the
    view's ``top_n`` applied (standalone tags ranked per image; exclusive ones kept)."""
    if view.top_n is None:
        return "WITH visible AS (SELECT image_id, tag, score FROM tags)", {}
    sql = (
        "WITH ranked AS (SELECT image_id, tag, score, ROW_NUMBER() OVER ("
        "PARTITION BY image_id ORDER BY score DESC, tag) AS rn FROM tags "
        "WHERE tag NOT IN :excl), "
        "visible AS (SELECT image_id, tag, score FROM ranked WHERE rn <= :top_n "
        "UNION ALL SELECT image_id, tag, score FROM tags WHERE tag IN :excl)"
    )
    return sql, {"excl": list(view.exclusive), "top_n": view.top_n}


def _run(conn: Connection, view: TagView, tail: str, **params: Any) -> list:
    head, p = visible_sql(view)
    stmt = text(f"{head} {tail}")
    expanding = [bindparam("excl", expanding=True)] if "excl" in p else []
    for name, value in params.items():
        if isinstance(value, (list, tuple)):
            expanding.append(bindparam(name, expanding=True))
            params[name] = list(value)
    if expanding:
        stmt = stmt.bindparams(*expanding)
    return conn.execute(stmt, {**p, **params}).all()


class SqliteTags(StoreQueries):
    """The tag methods of :class:`indexer.store.sqlite.SqliteStore`."""

    @contextmanager
    def tag_transaction(self) -> Iterator[SqliteTagWriter]:
        with self._begin() as conn:
            yield SqliteTagWriter(conn)

    def concepts(self) -> list[Concept]:
        with self._connect() as conn:
            return concept_sql.read_concepts(conn)

    def albums(self) -> list[Album]:
        with self._connect() as conn:
            return concept_sql.read_albums(conn)

    def put_album(self, album: Album) -> None:
        with self._begin() as conn:
            concept_sql.put_album(conn, album)

    def drop_album(self, name: str) -> bool:
        with self._begin() as conn:
            return concept_sql.drop_album(conn, name)

    def tag_fingerprints(self) -> dict[str, str]:
        with self._connect() as conn:
            return _stored_fingerprints(conn)

    def tag_progress(self) -> tuple[int, int]:
        with self._connect() as conn:
            gen = _tags_generation(conn)
            q = select(func.count()).select_from(VectorRow).where(VectorRow.gen <= gen)
            done = conn.execute(q).scalar() or 0
            total = conn.execute(select(func.count(VectorRow.image_id))).scalar() or 0
        return int(done), int(total - done)

    def image_tags(self, image_id: int) -> TagList:
        with self._connect() as conn:
            rows = conn.execute(
                select(TagRow.tag, TagRow.score).where(TagRow.image_id == int(image_id))
            ).all()
        return [(str(t), float(s)) for t, s in rows]

    def tag_counts(self, view: TagView) -> dict[str, int]:
        with self._connect() as conn:
            rows = _run(conn, view, "SELECT tag, COUNT(*) AS n FROM visible GROUP BY tag "
                                    "ORDER BY n DESC, tag")  # fmt: skip
        return {str(t): int(n) for t, n in rows}

    def ids_with_tags(self, tags: Sequence[str], view: TagView) -> np.ndarray:
        wanted = sorted(set(tags))
        if not wanted:
            return np.zeros(0, np.int64)
        with self._connect() as conn:
            rows = _run(conn, view, "SELECT image_id FROM visible WHERE tag IN :wanted "
                                    "GROUP BY image_id HAVING COUNT(DISTINCT tag) = :n "
                                    "ORDER BY image_id", wanted=wanted, n=len(wanted))  # fmt: skip
        return np.asarray([r[0] for r in rows], dtype=np.int64)

    def all_image_tags(self, view: TagView) -> dict[int, TagList]:
        out: dict[int, TagList] = {}
        with self._connect() as conn:
            for i, t, s in _run(conn, view, "SELECT image_id, tag, score FROM visible"):
                out.setdefault(int(i), []).append((str(t), float(s)))
        for tags in out.values():
            tags.sort(key=lambda ts: (-ts[1], ts[0]))
        return out
