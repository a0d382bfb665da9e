"""Smart albums (issue 16): saved searches stored in the index (schema 4) that stay current as
photos arrive; ``clipsearch albums`` list/create/show/export (links or paths)/delete.

A real SQLite/FAISS index of coco-mini photo X, augmentations of it and other photos, encoded
by a tiny random ViT CLIP; a concept taught from 3 copies of X defines one album.
"""

from __future__ import annotations

import os
import shutil
import sqlite3

import pytest

from indexer.config import load_config
from indexer.library import Library
from indexer.search.albums import AlbumError, make_spec
from indexer.search.engine import QueryError

from .augment import augmented_copies, augmented_library
from .indexer_helpers import run_cli, run_json, version_dir, write_config

X = 20


@pytest.fixture
def env(tmp_path, tiny_checkpoint, coco_images):
    family, rest = augmented_library(tmp_path / "photos", coco_images, copies=6, others=24, x=X)
    cfg_path = write_config(tmp_path / "c.yaml", [tmp_path / "photos"], tmp_path / "idx",
                            tiny_checkpoint, tags={"auto": False}, search={"threshold": None})  # fmt: skip
    cfg = load_config(cfg_path)
    with Library.open(cfg, writer=True) as lib:
        lib.index(progress=False)
        ids = [lib.store.record_by_path(p).id for p in family]
        lib.concepts.teach("x", ids[1:4])
    return tmp_path, cfg, cfg_path, ids, rest


def test_album_stays_current_and_exports(env, coco_images):
    tmp, cfg, cfg_path, ids, rest = env
    with Library.open(cfg, writer=True) as lib:
        a = lib.albums.save("copies of x", make_spec(concepts=["x"]))
        b = lib.albums.save("like x", make_spec(like=ids[:2], k=5))
        first = {h.id for h in lib.albums.run(a).hits}
        assert first == set(lib.ids_with_tags(["x"]).tolist()) and set(ids[1:4]) <= first
        assert len(lib.albums.run(b).hits) == 5
        assert [x.name for x in lib.albums.list()] == ["copies of x", "like x"]
        # new photos arrive: the album follows without being saved again
        new = augmented_copies(coco_images[X], tmp / "photos", 3, prefix="late")
        lib.index([str(p) for p in new], progress=False)
        now = {h.path for h in lib.albums.run("copies of x").hits}
        assert len({str(p) for p in new} & now) >= 2
        with pytest.raises(AlbumError, match="unknown album 'nope'"):
            lib.albums.get("nope")
        with pytest.raises(AlbumError, match="needs a query, liked photos or a concept"):
            make_spec(tags=["x"])
        with pytest.raises(QueryError, match="unknown concept 'cats'"):
            lib.albums.save("bad", make_spec(concepts=["cats"]))
        assert "bad" not in [x.name for x in lib.albums.list()]
    with Library.open(cfg) as lib, pytest.raises(PermissionError):
        lib.albums.save("reader", make_spec(query="id:1"))
    # export: a folder of links (kept current) and a list of paths
    links = tmp / "export"
    links.mkdir()
    (links / "notes.txt").write_text("mine")
    os.symlink("/nowhere.jpg", links / "stale.jpg")
    proc = run_cli(["albums", "export", "copies of x", "--links", str(links)], cfg_path)
    assert proc.returncode == 0, proc.stderr
    targets = {os.readlink(p) for p in links.iterdir() if p.is_symlink()}
    assert targets == now and (links / "notes.txt").read_text() == "mine"
    proc = run_cli(["albums", "export", "copies of x", "--paths", "-"], cfg_path)
    assert set(proc.stdout.splitlines()) == now
    # a photo leaves the library: the next export drops its link
    gone = sorted(now)[0]
    os.unlink(gone)
    assert run_cli(["index"], cfg_path).returncode == 0
    assert run_cli(["albums", "export", "copies of x", "--links", str(links)], cfg_path).returncode == 0
    targets = {os.readlink(p) for p in links.iterdir() if p.is_symlink()}
    assert targets == now - {gone}


def test_albums_cli(env):
    tmp, cfg, cfg_path, ids, rest = env
    doc = run_json(["albums", "create", "mix", f"id:{ids[0]}", "--like", str(ids[1]), "--unlike",
                    str(rest[0]), "-k", "7", "--folder", str(tmp / "photos")], cfg_path)  # fmt: skip
    assert doc["count"] == 7 and doc["spec"]["like"] == [ids[1]] and doc["spec"]["k"] == 7
    unlike_id = doc["spec"]["unlike"][0]
    with Library.open(cfg) as lib:
        assert lib.get_image(unlike_id).path == str(rest[0])
        expected = [h.id for h in lib.search(f"id:{ids[0]}", like=[ids[1]], unlike=[unlike_id],
                                             k=7).hits]  # fmt: skip
    shown = run_json(["albums", "show", "mix"], cfg_path)
    assert [r["id"] for r in shown["results"]] == expected
    run_json(["albums", "create", "x", "--concept", "x"], cfg_path)
    listed = run_json(["albums", "list"], cfg_path)["albums"]
    assert [a["name"] for a in listed] == ["mix", "x"] and listed[1]["count"] >= 3
    assert "mix: 7 photos" in run_cli(["albums"], cfg_path).stdout
    for args, msg in ((["albums", "show", "nope"], "unknown album 'nope'"),
                      (["albums", "create", "e"], "needs a query, liked photos or a concept"),
                      (["albums", "create", "u", "--like", "/no.jpg"], "'/no.jpg' is not in the index")):  # fmt: skip
        proc = run_cli(args, cfg_path)
        assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1 and msg in proc.stderr
    assert run_cli(["albums", "delete", "mix"], cfg_path).returncode == 0
    assert [a["name"] for a in run_json(["albums", "list"], cfg_path)["albums"]] == ["x"]
    con = sqlite3.connect(version_dir(cfg.index_dir) / "index.sqlite")
    assert con.execute("SELECT version FROM schema_version").fetchone()[0] >= 4  # albums came with 4
    assert [r[0] for r in con.execute("SELECT name FROM albums")] == ["x"]
    con.close()
    shutil.rmtree(tmp / "idx")  # no index: a clear error
    proc = run_cli(["albums"], cfg_path)
    assert proc.returncode == 1 and "run `clipsearch index` first" in proc.stderr
