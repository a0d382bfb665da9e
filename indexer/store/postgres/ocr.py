"""Recognised text in PostgreSQL (schema 2): ``ocr_text`` rows, matched by ``LIKE`` on the
compact form through a ``pg_trgm`` GIN index, and the ``ocr_gen`` meta key."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Connection, func, select, text

from indexer.store.postgres import schema as db
from indexer.store.postgres.queries import PgQueries
from indexer.store.postgres.schema import ocr_text, vectors
from indexer.store.records import OCR_ERROR, ImageText, TextMatch, compact_text, text_from_row

OCR_GEN_KEY = "ocr_gen"
_UPSERT = text(
    "INSERT INTO ocr_text(image_id, engine, status, text, compact, error, seconds) "
    "SELECT :id, :engine, :status, :text, :compact, :error, :seconds WHERE EXISTS (SELECT 1 "
    "FROM vectors WHERE image_id = :id AND gen <= :upto) ON CONFLICT (image_id) DO UPDATE SET "
    "engine = excluded.engine, status = excluded.status, text = excluded.text, "
    "compact = excluded.compact, error = excluded.error, seconds = excluded.seconds"
)


def _ocr_generation(conn: Connection) -> int:
    value = conn.execute(text("SELECT value FROM meta WHERE key = :k"), {"k": OCR_GEN_KEY}).scalar()
    return int(value) if value is not None else 0


class PgOcr(PgQueries):
    """The recognised-text methods of :class:`indexer.store.postgres.PgStore`."""

    def ocr_generation(self) -> int:
        with self._connect() as conn:
            return _ocr_generation(conn)

    def set_ocr_generation(self, gen: int) -> None:
        with self._begin() as conn:
            db.set_meta(conn, **{OCR_GEN_KEY: int(gen)})

    def ocr_pending(self, upto: int, limit: int) -> list[int]:
        with self._connect() as conn:
            rows = conn.execute(text(
                "SELECT v.image_id FROM vectors v WHERE v.gen > :lo AND v.gen <= :hi AND NOT "
                "EXISTS (SELECT 1 FROM ocr_text o WHERE o.image_id = v.image_id) "
                "ORDER BY v.image_id LIMIT :n"),
                {"lo": _ocr_generation(conn), "hi": int(upto), "n": int(limit)}).all()  # fmt: skip
        return [int(r[0]) for r in rows]

    def put_texts(self, texts: Sequence[ImageText], upto: int) -> int:
        rows = [{"id": t.image_id, "engine": t.engine, "status": t.status, "text": t.text,
                 "compact": compact_text(t.text), "error": t.error, "seconds": float(t.seconds),
                 "upto": int(upto)} for t in texts]  # fmt: skip
        if not rows:
            return 0
        written = 0
        with self._begin() as conn:
            for row in rows:  # one statement a row: rowcount tells which were still current
                written += conn.execute(_UPSERT, row).rowcount
        return written

    def image_texts(self, ids: Sequence[int]) -> dict[int, ImageText]:
        ids = [int(i) for i in ids]
        if not ids:
            return {}
        with self._connect() as conn:
            rows = conn.execute(select(ocr_text).where(ocr_text.c.image_id.in_(ids))).all()
        return {int(r.image_id): text_from_row(r) for r in rows}

    def search_text(self, phrase: str, limit: int | None = None) -> list[TextMatch]:
        q = compact_text(phrase)
        if not q:
            return []
        stmt = (select(ocr_text.c.image_id, ocr_text.c.text)
                .where(ocr_text.c.compact.like(f"%{q}%")).order_by(ocr_text.c.image_id.desc()))  # fmt: skip
        if limit is not None:
            stmt = stmt.limit(limit)
        with self._connect() as conn:
            return [TextMatch(int(i), str(t)) for i, t in conn.execute(stmt).all()]

    def ocr_counts(self) -> dict[str, int]:
        with self._connect() as conn:
            read, with_text, errors = conn.execute(select(
                func.count(), func.count().filter(ocr_text.c.compact != ""),
                func.count().filter(ocr_text.c.status == OCR_ERROR)).select_from(ocr_text)).one()  # fmt: skip
            n = conn.execute(select(func.count()).select_from(vectors)).scalar() or 0
        return {"read": int(read), "with_text": int(with_text), "errors": int(errors),
                "pending": max(0, int(n) - int(read))}  # fmt: skip

    def ocr_errors(self, limit: int | None = None) -> list[ImageText]:
        stmt = select(ocr_text).where(ocr_text.c.status == OCR_ERROR).order_by(ocr_text.c.image_id)
        if limit is not None:
            stmt = stmt.limit(limit)
        with self._connect() as conn:
            return [text_from_row(r) for r in conn.execute(stmt).all()]
