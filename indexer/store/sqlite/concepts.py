"""Personal concepts (schema 3: the ``concepts`` table, the ``concepts_gen`` key; schema 5: their
``center``) and smart albums (schema 4: the ``albums`` table) in SQLite.

A concept's tag rows are ordinary ``tags`` rows named after it; these functions run on the
connection of one transaction (the tag writer's) or of a read.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from sqlalchemy import Connection, delete, select

from indexer.store.records import Album, Concept, concept_from_row, concept_row
from indexer.store.sqlite import schema as db
from indexer.store.sqlite.queries import chunks
from indexer.store.sqlite.schema import AlbumRow, ConceptRow, MetaRow, TagRow

CONCEPTS_GEN_KEY = "concepts_gen"


def read_concepts(conn: Connection) -> list[Concept]:
    rows = conn.execute(select(ConceptRow.__table__).order_by(ConceptRow.name)).all()
    return [concept_from_row(r) for r in rows]


def concept_names():  # noqa: ANN201 - a SQLAlchemy subquery
    """``SELECT name FROM concepts``, for ``NOT IN`` filters."""
    return select(ConceptRow.name).scalar_subquery()


def put_concept(conn: Connection, c: Concept) -> None:
    conn.execute(delete(ConceptRow).where(ConceptRow.name == c.name))
    conn.execute(ConceptRow.__table__.insert().values(**concept_row(c)))


def drop_concept(conn: Connection, name: str) -> None:
    conn.execute(delete(ConceptRow).where(ConceptRow.name == name))
    conn.execute(delete(TagRow).where(TagRow.tag == name))


def concepts_generation(conn: Connection) -> int:
    value = conn.execute(select(MetaRow.value).where(MetaRow.key == CONCEPTS_GEN_KEY)).scalar()
    return int(value) if value is not None else 0


def set_concepts_generation(conn: Connection, gen: int) -> None:
    db.set_meta(conn, **{CONCEPTS_GEN_KEY: gen})


def delete_concept_rows(conn: Connection, names: Sequence[str], ids: Sequence[int] | None) -> None:
    for part in chunks(list(names)):
        q = delete(TagRow).where(TagRow.tag.in_(part))
        if ids is None:
            conn.execute(q)
        else:
            for id_part in chunks(list(ids)):
                conn.execute(q.where(TagRow.image_id.in_(id_part)))


def read_albums(conn: Connection) -> list[Album]:
    rows = conn.execute(select(AlbumRow.__table__).order_by(AlbumRow.name)).all()
    return [Album(r.name, json.loads(r.spec), r.created, r.updated) for r in rows]


def put_album(conn: Connection, album: Album) -> None:
    conn.execute(delete(AlbumRow).where(AlbumRow.name == album.name))
    conn.execute(AlbumRow.__table__.insert().values(
        name=album.name, spec=json.dumps(album.spec, sort_keys=True),
        created=float(album.created), updated=float(album.updated)))  # fmt: skip


def drop_album(conn: Connection, name: str) -> bool:
    return bool(conn.execute(delete(AlbumRow).where(AlbumRow.name == name)).rowcount)
