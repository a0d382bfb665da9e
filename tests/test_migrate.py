"""``clipsearch migrate``: SQLite -> PostgreSQL -> SQLite is lossless (ids, vectors bit for bit,
errors, tags, concepts, albums, metadata) and resumes after an interruption."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from indexer.cli import main as cli_main
from indexer.config import load_config
from indexer.embed.encoder import HashEncoder
from indexer.library import Library
from indexer.store import Concept, StoreError, migrate_to_postgres
from indexer.store.postgres import transfer

from .indexer_helpers import copy_images, pg_state, sqlite_state, version_dir, write_config

VOCAB = {"templates": ["{}"], "top_n": None,
         "tags": {"dog": {"prompts": ["a dog"], "threshold": -1.0},
                  "sea": {"prompts": ["the sea"], "threshold": 0.0}}}  # fmt: skip


def _rows(index_dir, sql):
    con = sqlite3.connect(version_dir(index_dir) / "index.sqlite")
    try:
        return sorted(con.execute(sql).fetchall())
    finally:
        con.close()


def _everything(index_dir) -> dict:
    return {"state": sqlite_state(index_dir),
            "tags": _rows(index_dir, "SELECT image_id, tag, score FROM tags"),
            "defs": _rows(index_dir, "SELECT tag, fingerprint FROM tag_defs"),
            "concepts": _rows(index_dir, "SELECT * FROM concepts"),
            "albums": _rows(index_dir, "SELECT * FROM albums"),
            "meta": _rows(index_dir, "SELECT key, value FROM meta WHERE key NOT IN "
                                     "('modified_at', 'tombstones_pruned', 'vector_count', "
                                     "'faiss_file')")}  # fmt: skip


def test_round_trip_is_lossless_and_resumable(tmp_path, sample_images, pg_url, monkeypatch):
    photos = tmp_path / "photos"
    copy_images(sample_images, photos)
    (photos / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    cfg_path = write_config(tmp_path / "c.yaml", [photos], tmp_path / "idx",
                            tags={"vocabulary": VOCAB})  # fmt: skip
    cfg = load_config(cfg_path)
    with Library.open(cfg, writer=True, encoder=HashEncoder()) as lib:
        lib.index(progress=False)
        ids = sorted(r.id for r in lib.store.records(range(1, 100)).values() if r.status == "ok")
        lib.albums.save("dogs", {"query": "a dog", "k": 5})
        with lib.store.tag_transaction() as tx:
            tx.put_concept(Concept("mine", ids[:2], ids[2:4], np.arange(32, dtype=np.float32),
                                   0.5, 0.1, "hint", "0" * 64, {"auc": 0.9}, 1.0, 2.0))  # fmt: skip
    before = _everything(cfg.index_dir)
    assert before["state"]["errors"] and before["tags"] and before["concepts"] and before["albums"]

    # interrupted after the first chunk of 3 images: nothing is active in PostgreSQL yet
    monkeypatch.setattr(transfer, "CHUNK", 3)

    def boom(n: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        migrate_to_postgres(cfg.index_dir, pg_url, boom)
    with pytest.raises(StoreError, match="no index"):  # the partial copy is not current
        transfer.from_postgres(pg_url, tmp_path / "nothing")
    assert cli_main(["--config", str(cfg_path), "migrate", "--to", pg_url]) == 0  # resumes
    assert cli_main(["--config", str(cfg_path), "migrate", "--to", pg_url]) == 1  # not twice
    in_pg = pg_state(pg_url)
    assert in_pg["ok"] == before["state"]["ok"] and in_pg["errors"] == before["state"]["errors"]
    assert all(in_pg["vectors"][i].tobytes() == v.tobytes()
               for i, v in before["state"]["vectors"].items())  # fmt: skip

    # the PostgreSQL copy serves the same searches, tags and albums
    pg_cfg = load_config(write_config(tmp_path / "p.yaml", [photos], tmp_path / "idx-p",
                                      None, pg_url, tags={"vocabulary": VOCAB}))  # fmt: skip
    with (
        Library.open(cfg, encoder=HashEncoder()) as a,
        Library.open(pg_cfg, encoder=HashEncoder()) as b,
    ):
        for q in ("a dog", "the sea"):
            assert [h.id for h in a.search(q, k=5).hits] == [h.id for h in b.search(q, k=5).hits]
        assert a.tag_counts() == b.tag_counts() and [x.name for x in b.store.albums()] == ["dogs"]
        assert b.store.concepts()[0].weights.tobytes() == np.arange(32, dtype=np.float32).tobytes()
    back_path = write_config(tmp_path / "b.yaml", [photos], tmp_path / "idx-back",
                             tags={"vocabulary": VOCAB})  # fmt: skip
    assert cli_main(["--config", str(back_path), "migrate", "--from", pg_url]) == 0
    after = _everything(tmp_path / "idx-back")
    assert after["state"]["ok"] == before["state"]["ok"]
    assert after["state"]["errors"] == before["state"]["errors"]
    assert {i: v.tobytes() for i, v in after["state"]["vectors"].items()} == {
        i: v.tobytes() for i, v in before["state"]["vectors"].items()}  # fmt: skip
    for key in ("tags", "defs", "concepts", "albums"):
        assert after[key] == before[key], key
    meta_a, meta_b = dict(after["meta"]), dict(before["meta"])
    assert {k: v for k, v in meta_a.items() if k != "generation"} == {
        k: v for k, v in meta_b.items() if k != "generation"}  # fmt: skip
    with Library.open(load_config(back_path), encoder=HashEncoder()) as lib:
        st = lib.status()
        assert st["faiss"]["count"] == st["vectors"] == len(before["state"]["vectors"])

    # new rows in the PostgreSQL copy get new ids
    copy_images(sample_images[:1], photos / "more")
    with Library.open(pg_cfg, writer=True, encoder=HashEncoder()) as lib:
        assert lib.index(progress=False).copied == 1
    assert max(pg_state(pg_url)["ok"].values()) > max(before["state"]["ok"].values())
