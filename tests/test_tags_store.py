"""Issue 6, tags in the index: tagged on index, incremental re-scoring, removal, deletion,
top_n on read, the search filter, and the v1 -> v2 schema migration.

A real SQLite/FAISS index of coco-mini photos encoded by a tiny random CLIP. Thresholds of -1
make every standalone tag apply to every image and exclusive groups always emit a winner, so
the outcome does not depend on what the random model sees.
"""

from __future__ import annotations

import copy
import sqlite3

import numpy as np
import pytest

from indexer.config import ConfigError, load_config
from indexer.embed.encoder import ClipEncoder, HashEncoder
from indexer.library import Library
from indexer.store.sqlite import schema as db
from indexer.tags import sync as tag_store

from .indexer_helpers import as_schema_5, copy_images, run_cli, version_dir, write_config

VOCAB = {
    "templates": ["{}"],
    "top_n": None,
    "tags": {
        "dog": {"prompts": ["a dog"], "threshold": -1.0},
        "beach": {"prompts": ["a beach"], "threshold": -1.0},
        "car": {"prompts": ["a car", "a truck"], "threshold": -1.0},
    },
    "groups": {
        "scene": {
            "exclusive": True,
            "threshold": 0.0,
            "tags": {"indoor": "indoors", "outdoor": "outdoors"},
        },  # fmt: skip
    },
}
ALL_TAGS = {"dog", "beach", "car"}


class TextCounting:
    """An encoder wrapper counting the texts it encodes."""

    def __init__(self, inner):
        self.inner = inner
        self.identity = inner.identity
        self.image_resolution = inner.image_resolution
        self.texts: list[str] = []

    def preprocess(self, image):
        return self.inner.preprocess(image)

    def encode_images(self, batch):
        return self.inner.encode_images(batch)

    def encode_texts(self, texts):
        self.texts += list(texts)
        return self.inner.encode_texts(texts)


def _config(tmp_path, weights, vocab, database=None, **tags):
    return load_config(
        write_config(
            tmp_path / "c.yaml",
            [tmp_path / "photos"],
            tmp_path / "idx",
            weights,
            database,
            index={"dir": str(tmp_path / "idx"), "batch_size": 2},
            tags={"vocabulary": vocab, **tags},
            # Its own model cache: the tag-prompt cache is machine-wide, and these tests count
            # which prompts get encoded.
            model={"cache_dir": str(tmp_path / "model-cache")},
        )  # fmt: skip
    )


def _pg_query(cfg, sql: str) -> list[tuple]:
    from .indexer_helpers import _pg_connect

    with _pg_connect(cfg.database_url) as con:
        name = con.execute("SELECT name FROM clipsearch_current").fetchone()[0]
        con.execute(f"SET search_path = clipsearch_{name}")
        return con.execute(sql).fetchall()


def _rows(cfg) -> dict[tuple[int, str], tuple[int, float]]:
    """{(image_id, tag): (row version, score)} straight from the database (the SQLite rowid,
    PostgreSQL's xmin: both change when a row is rewritten)."""
    if cfg.database_url:
        q = "SELECT xmin::text, image_id, tag, score FROM tags"
        return {(i, t): (r, s) for r, i, t, s in _pg_query(cfg, q)}
    con = sqlite3.connect(version_dir(cfg.index_dir) / "index.sqlite")
    try:
        q = "SELECT rowid, image_id, tag, score FROM tags"
        return {(i, t): (r, s) for r, i, t, s in con.execute(q)}
    finally:
        con.close()


def _defs(cfg) -> dict[str, str]:
    if cfg.database_url:
        return dict(_pg_query(cfg, "SELECT tag, fingerprint FROM tag_defs"))
    con = sqlite3.connect(version_dir(cfg.index_dir) / "index.sqlite")
    try:
        return dict(con.execute("SELECT tag, fingerprint FROM tag_defs"))
    finally:
        con.close()


@pytest.fixture(scope="module")
def tiny_encoder(tiny_checkpoint, tmp_path_factory):
    d = tmp_path_factory.mktemp("enc")
    cfg = load_config(write_config(d / "c.yaml", [d], d / "idx", tiny_checkpoint))
    return ClipEncoder.from_config(cfg)


def test_tags_follow_the_index_and_the_vocabulary(
    tmp_path, coco_images, tiny_checkpoint, tiny_encoder, monkeypatch, database
):
    photos = copy_images(coco_images[:6], tmp_path / "photos")
    cfg = _config(tmp_path, tiny_checkpoint, VOCAB, database)
    syncs = []
    real_sync = tag_store.sync

    def spy(*a, **kw):
        rep = real_sync(*a, **kw)
        syncs.append(rep)
        return rep

    monkeypatch.setattr(tag_store, "sync", spy)

    # 1. New images are tagged while they are indexed, batch by batch.
    enc = TextCounting(tiny_encoder)
    with Library.open(cfg, writer=True, encoder=enc) as lib:
        rep = lib.index(progress=False)
        assert rep.added == 6
        ids = sorted(r.id for r in lib.store.records(range(1, 100)).values())
    assert sum(1 for r in syncs if r.pending) >= 3  # batch_size 2: tagged after each commit
    assert sum(r.pending for r in syncs) == 6
    rows = _rows(cfg)
    for i in ids:
        tags = {t for (j, t) in rows if j == i}
        assert ALL_TAGS <= tags and len(tags & {"indoor", "outdoor"}) == 1, tags
    assert set(_defs(cfg)) == ALL_TAGS | {"indoor", "outdoor"}
    assert sorted(enc.texts) == sorted(["a dog", "a beach", "a car", "a truck", "indoors",
                                        "outdoors"])  # each prompt encoded once  # fmt: skip
    with Library.open(cfg, encoder=enc) as lib:  # readers
        assert lib.tag_counts()["dog"] == 6
        assert {t for t, _ in lib.image_tags(ids[0])} >= ALL_TAGS
        assert lib.ids_with_tags(["dog", "beach"]).tolist() == ids

    # 2. Changing one tag's prompts re-scores only that tag (`tag`, text only).
    before = _rows(cfg)
    vocab = copy.deepcopy(VOCAB)
    vocab["tags"]["dog"]["prompts"] = ["a puppy"]
    cfg = _config(tmp_path, tiny_checkpoint, vocab, database)
    enc = TextCounting(tiny_encoder)
    with Library.open(cfg, writer=True, encoder=enc) as lib:
        rep = lib.tag()
    assert rep.changed == ["dog"] and rep.rescored == 6 and rep.removed == []
    assert enc.texts == ["a puppy"]  # only the changed prompt; no image re-encoded
    after = _rows(cfg)
    others = {k: v for k, v in before.items() if k[1] != "dog"}
    assert {k: v for k, v in after.items() if k[1] != "dog"} == others  # same rowids, scores
    dog_before = {k: v[1] for k, v in before.items() if k[1] == "dog"}
    dog_after = {k: v[1] for k, v in after.items() if k[1] == "dog"}
    assert dog_before.keys() == dog_after.keys() and dog_before != dog_after
    with Library.open(cfg, writer=True, encoder=TextCounting(tiny_encoder)) as lib:
        again = lib.tag()  # nothing changed: nothing to do
    assert again.changed == [] and again.rows == 0 and again.texts_encoded == 0

    # ... and through `index` (tags.auto): the changed tag is re-scored at the end of the run.
    vocab["tags"]["car"]["prompts"] = ["a car"]
    cfg = _config(tmp_path, tiny_checkpoint, vocab, database)
    before = _rows(cfg)
    enc = TextCounting(tiny_encoder)
    with Library.open(cfg, writer=True, encoder=enc) as lib:
        assert lib.index(progress=False).unchanged == 6
    assert enc.texts == ["a car"]
    after = _rows(cfg)
    assert {k: v for k, v in after.items() if k[1] != "car"} == {
        k: v for k, v in before.items() if k[1] != "car"
    }
    assert {k for k in after if k[1] == "car"} == {k for k in before if k[1] == "car"}

    # 3. Removing a tag deletes its rows (and its definition).
    del vocab["tags"]["beach"]
    cfg = _config(tmp_path, tiny_checkpoint, vocab, database)
    with Library.open(cfg, writer=True, encoder=TextCounting(tiny_encoder)) as lib:
        rep = lib.tag()
        assert rep.removed == ["beach"] and rep.texts_encoded == 0
        assert "beach" not in lib.tag_counts()
    assert not any(t == "beach" for _, t in _rows(cfg)) and "beach" not in _defs(cfg)

    # 4. Images deleted from the library lose their tags; new ones are tagged.
    gone = [photos[0], photos[1]]
    with Library.open(cfg, encoder=enc) as lib:
        gone_ids = {lib.store.record_by_path(p).id for p in gone}
    for p in gone:
        p.unlink()
    copy_images(coco_images[6:8], tmp_path / "photos")
    with Library.open(cfg, writer=True, encoder=TextCounting(tiny_encoder)) as lib:
        rep = lib.index(progress=False)
        assert rep.removed == 2 and rep.added == 2
        now_ids = sorted(lib.store.filter_ids().tolist())
    rows = _rows(cfg)
    assert not {i for i, _ in rows} & gone_ids
    assert {i for i, _ in rows} == set(now_ids)
    for i in now_ids:
        assert {"dog", "car"} <= {t for (j, t) in rows if j == i}

    # 5. top_n applies when reading (no re-tagging): one standalone tag + the group's winner.
    capped = _config(tmp_path, tiny_checkpoint, vocab, database, top_n=1)
    with Library.open(capped, encoder=enc) as lib:
        per_image = {i: lib.image_tags(i) for i in now_ids}
        assert all(len(v) == 2 for v in per_image.values())
        counts = lib.tag_counts()
        assert counts["indoor" if "indoor" in counts else "outdoor"] >= 1
        assert counts.get("dog", 0) + counts.get("car", 0) == len(now_ids)
        assert _rows(capped) == rows  # nothing rewritten
        # 6. The search filter: only images carrying the tag (capped), all of them.
        for tag in ("dog", "car"):
            want = lib.ids_with_tags([tag]).tolist()
            assert want == sorted(i for i, v in per_image.items() if tag in dict(v))
            got = lib.search("a photo", k=50, tags=[tag])
            assert sorted(h.id for h in got.hits) == want and got.candidates == len(want)
        both = lib.search("a photo", k=50, tags=["dog", "car"])
        assert both.hits == []  # top_n 1: never both
        winner = "indoor" if counts.get("indoor") else "outdoor"
        combo = lib.search("a photo", k=50, tags=["dog", winner]).hits
        assert {h.id for h in combo} == set(lib.ids_with_tags(["dog"]).tolist()) & set(
            lib.ids_with_tags([winner]).tolist()
        )


def test_auto_off_leaves_tagging_to_the_tag_command(tmp_path, sample_images, database):
    copy_images(sample_images[:3], tmp_path / "photos")
    cfg = _config(tmp_path, None, VOCAB, database, auto=False)
    with Library.open(cfg, writer=True, encoder=HashEncoder()) as lib:
        lib.index(progress=False)
        assert lib.tag_counts() == {}
        rep = lib.tag()
        assert rep.pending == 3 and lib.tag_counts()["dog"] == 3


def test_bad_vocabulary_is_a_config_error(tmp_path, sample_images):
    copy_images(sample_images[:1], tmp_path / "photos")
    cfg = _config(tmp_path, None, {"tags": {"dog": {"prompts": []}}})
    with Library.open(cfg, writer=True, encoder=HashEncoder()) as lib:
        with pytest.raises(ConfigError, match="tags.vocabulary: tags.dog"):
            lib.index(progress=False)


# ----------------------------------------------------------------------------- migration
def _make_v1(cfg) -> None:
    """Turn the index into a schema-1 database: exactly the v1 tables, version 1."""
    path = version_dir(cfg.index_dir) / "index.sqlite"
    con = sqlite3.connect(path)
    con.execute("DROP TABLE tags")
    con.execute("DROP TABLE tag_defs")
    con.execute("DROP TABLE concepts")  # schema 3
    con.execute("DROP TABLE albums")  # schema 4
    con.execute("DELETE FROM meta WHERE key IN ('tags_gen', 'concepts_gen')")
    as_schema_5(con)  # then the tables of schemas 2-4 go
    con.execute("UPDATE schema_version SET version = 1")
    con.commit()
    names = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    con.close()
    v1 = {t.name for t in db.Base.metadata.sorted_tables} - {"tags", "tag_defs", "concepts", "albums",
                                                             "image_counts", "counters", "ocr_text"}  # fmt: skip
    assert names - {"sqlite_sequence"} == v1


def test_v1_index_migrates_to_v2_for_writers(tmp_path, sample_images):
    copy_images(sample_images[:3], tmp_path / "photos")
    cfg = _config(tmp_path, None, VOCAB)
    with Library.open(cfg, writer=True, encoder=HashEncoder()) as lib:
        lib.index(progress=False)
    _make_v1(cfg)
    # readers: the existing clear message (library and CLI)
    with pytest.raises(db.SchemaError, match="schema 1; run `clipsearch index` to migrate"):
        Library.open(cfg, encoder=HashEncoder())
    proc = run_cli(["tags"], cfg.source)
    assert (
        proc.returncode == 1
        and f"run `clipsearch index` to migrate it to {db.SCHEMA_VERSION}" in proc.stderr
    )
    # the writer migrates in place and tags what was indexed before
    with Library.open(cfg, writer=True, encoder=HashEncoder()) as lib:
        assert lib.index(progress=False).unchanged == 3
        assert lib.tag_counts()["dog"] == 3
    con = sqlite3.connect(version_dir(cfg.index_dir) / "index.sqlite")
    assert con.execute("SELECT version FROM schema_version").fetchone()[0] == db.SCHEMA_VERSION
    cols = [r[1] for r in con.execute("PRAGMA table_info(tags)")]
    pk = [r[1] for r in con.execute("PRAGMA table_info(tags)") if r[5]]
    indexes = [r[1] for r in con.execute("PRAGMA index_list(tags)")]
    defs = [r[1] for r in con.execute("PRAGMA table_info(tag_defs)")]
    con.close()
    assert cols == ["image_id", "tag", "score"] and pk == ["image_id", "tag"]
    assert "ix_tags_tag" in indexes and defs == ["tag", "fingerprint"]
    with Library.open(cfg, encoder=HashEncoder()) as lib:
        assert lib.status()["indexed"] == 3 and lib.tag_counts()["beach"] == 3


def test_ids_match_numpy(tmp_path, sample_images, database):
    """ids_with_tags is an AND over tags, ascending ids (np.int64)."""
    copy_images(sample_images[:2], tmp_path / "photos")
    cfg = _config(tmp_path, None, VOCAB, database)
    with Library.open(cfg, writer=True, encoder=HashEncoder()) as lib:
        lib.index(progress=False)
        got = lib.ids_with_tags(["dog", "car", "nope"])
        assert isinstance(got, np.ndarray) and got.size == 0
        assert lib.ids_with_tags([]).size == 0
