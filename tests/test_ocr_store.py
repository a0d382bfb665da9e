"""Issue 20, OCR in the store: text rows round trip on SQLite (FTS5) and PostgreSQL (pg_trgm),
space- and case-insensitive substring matches, the OCR generation and pending images, text
going with its vector, and the schema migrations (SQLite 6 -> 7)."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from indexer.store import OCR_ERROR, Changes, ImageText, compact_text, open_store
from indexer.types import ModelIdentity

DIM = 16


def _unit(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def _row(name: str, **extra) -> dict:
    row = {"path": f"/photos/{name}".encode(), "root": b"/photos", "size": 1, "mtime_ns": 1,
           "content_hash": name, "status": "ok", "error": None}  # fmt: skip
    row.update(extra)
    return row


def _apply(store, *upserts: dict, deletes: list[int] = ()) -> dict[bytes, int]:
    return store.apply(Changes(list(upserts), [], [], list(deletes)))


@pytest.fixture
def store(tmp_path, database):
    s = open_store(database or tmp_path / "v1", writer=True)
    s.bind_model(ModelIdentity("rand", "b" * 64, DIM, "{}"))
    yield s
    s.close()


def test_compact_text():
    assert compact_text("Invoice 2023") == compact_text("INVOICE-2023") == "invoice2023"
    assert compact_text("  Straße, café!") == "strassecafé"
    assert compact_text("...") == ""


def test_text_round_trip_match_and_pending(store):
    ids = _apply(store, *(_row(n, vector=_unit(i)) for i, n in enumerate("abcd")))
    a, b, c, d = (ids[f"/photos/{n}".encode()] for n in "abcd")
    gen = store.generation()
    assert store.ocr_generation() == 0
    assert store.ocr_pending(gen, 10) == sorted([a, b, c, d])
    assert store.ocr_pending(gen, 2) == sorted([a, b, c, d])[:2]
    texts = [ImageText(a, "Invoice2023\nTOTAL 12.50", "rapidocr", seconds=0.2),
             ImageText(b, "invoice 2023 paid", "tesseract"),
             ImageText(c, "", "rapidocr"),
             ImageText(d, "", "rapidocr", OCR_ERROR, "cannot decode image: truncated")]  # fmt: skip
    assert store.put_texts(texts, gen) == 4
    assert store.ocr_pending(gen, 10) == []
    store.set_ocr_generation(gen)
    assert store.ocr_generation() == gen
    assert store.ocr_counts() == {"read": 4, "with_text": 2, "errors": 1, "pending": 0}
    got = store.image_texts([a, d, 10**9])
    assert set(got) == {a, d} and got[a].text == "Invoice2023\nTOTAL 12.50"
    assert got[a].engine == "rapidocr" and got[a].seconds == pytest.approx(0.2)
    assert [e.image_id for e in store.ocr_errors()] == [d]
    assert store.ocr_errors()[0].error == "cannot decode image: truncated"
    # space-, case- and punctuation-insensitive substrings, newest id first
    for phrase in ("invoice 2023", "INVOICE2023", "Invoice-2023", "voice20"):
        assert [m.image_id for m in store.search_text(phrase)] == sorted([a, b], reverse=True)
    assert [m.image_id for m in store.search_text("total 12.50")] == [a]
    assert [m.image_id for m in store.search_text("12")] == [a]  # short: no trigram
    assert [m.image_id for m in store.search_text("invoice", limit=1)] == [max(a, b)]
    assert store.search_text("paid")[0].text == "invoice 2023 paid"
    assert store.search_text("nothing here") == [] and store.search_text("!!") == []
    # a re-read replaces the row
    assert store.put_texts([ImageText(c, "Late Text", "rapidocr")], gen) == 1
    assert [m.image_id for m in store.search_text("latetext")] == [c]


def test_text_goes_with_its_vector(store):
    ids = _apply(store, _row("a", vector=_unit(1)), _row("b", vector=_unit(2)),
                 _row("c", vector=_unit(3)))  # fmt: skip
    a, b, c = (ids[f"/photos/{n}".encode()] for n in "abc")
    gen = store.generation()
    store.put_texts([ImageText(i, f"word{i}x", "rapidocr") for i in (a, b, c)], gen)
    store.set_ocr_generation(gen)
    # a: re-encoded (new vector: its text goes, it is pending again); b: deleted; c: an error
    _apply(store, _row("a", id=a, vector=_unit(4)), _row("c", id=c, status="error", error="x"),
           deletes=[b])  # fmt: skip
    assert store.search_text(f"word{a}x") == store.search_text(f"word{b}x") == []
    assert store.search_text(f"word{c}x") == []
    assert store.image_texts([a, b, c]) == {}
    new = store.generation()
    assert store.ocr_pending(new, 10) == [a]
    # a pass that started before a re-encode does not write text for the new vector
    assert store.put_texts([ImageText(a, "stale", "rapidocr")], gen) == 0
    assert store.ocr_pending(new, 10) == [a]
    assert store.put_texts([ImageText(a, "fresh", "rapidocr")], new) == 1
    assert store.ocr_counts()["pending"] == 0


def test_sqlite_schema_6_migrates_to_7(tmp_path):
    from indexer.store.sqlite import schema as db

    s = open_store(tmp_path / "v1", writer=True)
    s.bind_model(ModelIdentity("rand", "b" * 64, DIM, "{}"))
    ids = _apply(s, _row("a", vector=_unit(1)))
    s.close()
    con = sqlite3.connect(tmp_path / "v1" / "index.sqlite")
    for name in ("ocr_fts_insert", "ocr_fts_delete", "ocr_fts_update"):
        con.execute(f"DROP TRIGGER {name}")
    con.execute("DROP TABLE ocr_fts")
    con.execute("DROP TABLE ocr_text")
    con.execute("UPDATE schema_version SET version = 6")
    con.commit()
    con.close()
    s = open_store(tmp_path / "v1", writer=True)
    try:
        a = ids[b"/photos/a"]
        assert s.ocr_pending(s.generation(), 10) == [a]
        s.put_texts([ImageText(a, "Migrated Sign", "rapidocr")], s.generation())
        assert [m.image_id for m in s.search_text("migrated sign")] == [a]
    finally:
        s.close()
    con = sqlite3.connect(tmp_path / "v1" / "index.sqlite")
    assert con.execute("SELECT version FROM schema_version").fetchone()[0] == db.SCHEMA_VERSION
    con.close()


def test_postgres_uses_a_trigram_index(pg_url):
    from sqlalchemy import text

    s = open_store(pg_url, writer=True)
    try:
        with s.engine.connect() as conn:
            found = conn.execute(text("SELECT to_regclass('ix_ocr_text_trgm') IS NOT NULL")).scalar()
        assert found
    finally:
        s.close()
