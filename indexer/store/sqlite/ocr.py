"""Recognised text in SQLite (schema 7): ``ocr_text`` rows, their FTS5 trigram index
``ocr_fts`` (substring matches on the compact form) and the ``ocr_gen`` meta key."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Connection, select

from indexer.store.records import OCR_ERROR, ImageText, TextMatch, compact_text, text_from_row
from indexer.store.sqlite import schema as db
from indexer.store.sqlite.queries import StoreQueries, chunks
from indexer.store.sqlite.schema import MetaRow, OcrTextRow

OCR_GEN_KEY = "ocr_gen"
_TRIGRAM = 3  # FTS5's trigram tokenizer matches phrases of 3+ characters; shorter ones scan
_UPSERT = (
    "INSERT INTO ocr_text(image_id, engine, status, text, compact, error, seconds) "
    "SELECT ?, ?, ?, ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM vectors WHERE image_id = ? "
    "AND gen <= ?) ON CONFLICT(image_id) DO UPDATE SET engine = excluded.engine, "
    "status = excluded.status, text = excluded.text, compact = excluded.compact, "
    "error = excluded.error, seconds = excluded.seconds"
)


def _ocr_generation(conn: Connection) -> int:
    value = conn.execute(select(MetaRow.value).where(MetaRow.key == OCR_GEN_KEY)).scalar()
    return int(value) if value is not None else 0


class SqliteOcr(StoreQueries):
    """The recognised-text methods of :class:`indexer.store.sqlite.SqliteStore`."""

    def ocr_generation(self) -> int:
        with self._connect() as conn:
            return _ocr_generation(conn)

    def set_ocr_generation(self, gen: int) -> None:
        with self._begin() as conn:
            db.set_meta(conn, **{OCR_GEN_KEY: int(gen)})

    def ocr_pending(self, upto: int, limit: int) -> list[int]:
        with self._connect() as conn:
            rows = conn.exec_driver_sql(
                "SELECT v.image_id FROM vectors v WHERE v.gen > ? AND v.gen <= ? AND NOT EXISTS "
                "(SELECT 1 FROM ocr_text o WHERE o.image_id = v.image_id) "
                "ORDER BY v.image_id LIMIT ?", (_ocr_generation(conn), int(upto), int(limit)),
            ).all()  # fmt: skip
        return [int(r[0]) for r in rows]

    def put_texts(self, texts: Sequence[ImageText], upto: int) -> int:
        rows = [(t.image_id, t.engine, t.status, t.text, compact_text(t.text), t.error,
                 float(t.seconds), t.image_id, int(upto)) for t in texts]  # fmt: skip
        if not rows:
            return 0
        with self._begin() as conn:
            return int(conn.exec_driver_sql(_UPSERT, rows).rowcount)

    def image_texts(self, ids: Sequence[int]) -> dict[int, ImageText]:
        out: dict[int, ImageText] = {}
        with self._connect() as conn:
            for part in chunks([int(i) for i in ids]):
                for row in conn.execute(select(OcrTextRow).where(OcrTextRow.image_id.in_(part))):
                    out[int(row.image_id)] = text_from_row(row)
        return out

    def search_text(self, phrase: str, limit: int | None = None) -> list[TextMatch]:
        q = compact_text(phrase)
        if not q:
            return []
        tail = " ORDER BY o.image_id DESC" + (" LIMIT ?" if limit is not None else "")
        extra = (int(limit),) if limit is not None else ()
        with self._connect() as conn:
            if len(q) >= _TRIGRAM:  # q is letters and digits only: safe inside the quotes
                sql = ("SELECT o.image_id, o.text FROM ocr_fts JOIN ocr_text o ON o.image_id = "
                       "ocr_fts.rowid WHERE ocr_fts MATCH ?")  # fmt: skip
                rows = conn.exec_driver_sql(sql + tail, (f'"{q}"', *extra)).all()
            else:
                sql = "SELECT o.image_id, o.text FROM ocr_text o WHERE o.compact LIKE ?"
                rows = conn.exec_driver_sql(sql + tail, (f"%{q}%", *extra)).all()
        return [TextMatch(int(i), str(t)) for i, t in rows]

    def ocr_errors(self, limit: int | None = None) -> list[ImageText]:
        q = select(OcrTextRow).where(OcrTextRow.status == OCR_ERROR).order_by(OcrTextRow.image_id)
        if limit is not None:
            q = q.limit(limit)
        with self._connect() as conn:
            return [text_from_row(r) for r in conn.execute(q)]
