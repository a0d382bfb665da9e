"""The light SQLite reader (stdlib sqlite3, what query processes open) answers as the full
SQLAlchemy store does, keeps the whole interface by opening the full store for the rest, and
refuses bad indexes as clearly."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys

import numpy as np
import pytest

from indexer.store import Changes, ImageText, IndexMissingError, SchemaError, StoreError, TagView
from indexer.store.sqlite.reader import SqliteReader
from indexer.store.sqlite.store import SqliteStore
from indexer.types import ModelIdentity

from .indexer_helpers import REPO

DIM = 16
IDENTITY = ModelIdentity("rand", "e" * 64, DIM, "{}")


def _unit(seed: int, n: int = 1) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _row(i: int, root: str = "/lib", **extra) -> dict:
    row = {"path": os.fsencode(f"{root}/p{i:03d}.jpg"), "root": os.fsencode(root), "size": 10 + i,
           "mtime_ns": i, "content_hash": f"{i:064x}", "width": 64, "height": 48,
           "taken_at": f"2021-01-{1 + i % 28:02d}T10:00:00", "camera": "X" if i % 2 else None,
           "status": "ok", "error": None}  # fmt: skip
    row.update(extra)
    return row


def _fill(path) -> SqliteStore:
    """A version with photos in two roots (one with an undecodable name), errors, a video
    with frames, recognised text and a deletion (a tombstone)."""
    w = SqliteStore(path, writer=True)
    w.bind_model(IDENTITY)
    vecs = _unit(1, 40)
    ups = [_row(i, vector=vecs[i]) for i in range(30)]
    ups += [_row(i, root="/other", vector=vecs[i]) for i in range(30, 36)]
    ups.append(_row(36, path=b"/lib/caf\xe9.jpg", vector=vecs[36]))  # not UTF-8
    ups += [_row(i, status="error", error=f"bad file {i}") for i in (37, 38)]
    frames = (np.array([0, 2000, 4000]), _unit(2, 3))
    ups.append(_row(39, path=b"/lib/v.mp4", vector=vecs[39], duration_ms=5000, frames=frames))
    ids = w.apply(Changes(ups, [], [], []))
    w.apply(Changes([], [], [], [ids[os.fsencode("/lib/p005.jpg")]]))
    w.put_texts([ImageText(ids[os.fsencode("/lib/p001.jpg")], "HELLO world", "test")],
                w.generation())  # fmt: skip
    w.save(force=True)
    return w


def test_the_reader_answers_as_the_full_store(tmp_path):
    path = tmp_path / "v1"
    writer = _fill(path)
    full, light = SqliteStore(path), SqliteReader(path)
    try:
        assert light.meta() == full.meta() and light.generation() == full.generation()
        assert light.model_identity() == IDENTITY
        assert light.counts() == full.counts() == {"images": 39, "ok": 37, "errors": 2, "vectors": 37}
        assert light.roots() == full.roots() == {"/lib": 31, "/other": 6}
        assert light.errors() == full.errors() and [r.error for r in light.errors(limit=1)] == ["bad file 37"]
        assert light.frame_counts() == full.frame_counts() == {"videos": 1, "frames": 3}
        assert light.ocr_counts() == full.ocr_counts()
        assert light.vector_summary() == full.vector_summary()
        assert light.vector_summary().kind == "flat16"
        assert light.mirror.index is None  # the file's header and SQLite's counter: no load
        assert light.last_modified() == full.last_modified()
        ids = list(range(1, 45))
        assert light.records(ids) == full.records(ids) and len(light.records(ids)) == 39
        assert any(r.path == os.fsdecode(b"/lib/caf\xe9.jpg") for r in light.records(ids).values())
        assert light.refresh() and full.refresh() and not light.refresh()
        q = _unit(7)[0]
        for allowed in (None, np.array(ids[:12])):
            got, want = light.search_vectors(q, 10, allowed), full.search_vectors(q, 10, allowed)
            np.testing.assert_array_equal(got[1], want[1])
            np.testing.assert_allclose(got[0], want[0], atol=1e-6)
            for a, b in zip(light.search_frames(q, 2, allowed), full.search_frames(q, 2, allowed)):
                np.testing.assert_array_equal(a, b)
        assert light.vector_state() == full.vector_state()
        assert light.sample_vectors(5).shape == (5, DIM)
        # the rest of the interface: the full store, opened on first use
        assert light._full_store is None
        assert light.tag_counts(TagView()) == full.tag_counts(TagView())
        assert light.filter_ids(folder="/other").tolist() == full.filter_ids(folder="/other").tolist()
        assert light._full_store is not None and light.search_text("hello")
        # a writer's new commit: the reader replays it
        writer.apply(Changes([_row(50, vector=_unit(9)[0])], [], [], []))
        assert light.refresh() and light.counts()["vectors"] == 38
        assert light.search_vectors(_unit(9)[0], 1)[0][0] > 0.999
    finally:
        light.close()
        full.close()
        writer.close()


def test_bad_indexes_are_refused_clearly(tmp_path):
    with pytest.raises(IndexMissingError, match="run `clipsearch index`"):
        SqliteReader(tmp_path / "none")
    path = tmp_path / "v1"
    _fill(path).close()
    con = sqlite3.connect(path / "index.sqlite")
    con.execute("UPDATE schema_version SET version = 99")
    con.commit()
    con.close()
    with pytest.raises(SchemaError, match="newer clipsearch"):
        SqliteReader(path)
    junk = tmp_path / "v2"
    junk.mkdir()
    (junk / "index.sqlite").write_bytes(b"not a database at all" * 100)
    with pytest.raises(StoreError):
        SqliteReader(junk)
    good = tmp_path / "v3"
    _fill(good).close()
    reader = SqliteReader(good)
    (good / "index.sqlite").unlink()  # a reindex removed the version meanwhile
    with pytest.raises(StoreError):
        reader.counts()
    assert not (good / "index.sqlite").exists()  # the reader never creates a database


def test_opening_and_querying_a_reader_never_imports_sqlalchemy(tmp_path):
    path = tmp_path / "v1"
    _fill(path).close()
    code = ("import sys; from indexer.store.sqlite.reader import SqliteReader; import numpy as np; "
            f"r = SqliteReader({os.fspath(path)!r}); r.refresh(); r.counts(); r.roots(); "
            "r.records([1, 2]); r.search_vectors(np.ones(16, np.float32) / 4, 3); "
            "r.search_frames(np.ones(16, np.float32) / 4, 3); r.vector_summary(); "
            "print('sqlalchemy' in sys.modules)")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                         env={**os.environ, "PYTHONPATH": os.fspath(REPO)}, timeout=60)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_a_replay_reads_every_page_of_new_vectors(tmp_path, monkeypatch):
    from indexer.store.sqlite import mirror

    monkeypatch.setattr(mirror, "_REPLAY_PAGE", 4)  # 11 new vectors: pages of 4, 4 and 3
    path = tmp_path / "v1"
    writer = _fill(path)
    reader = SqliteReader(path)
    try:
        reader.refresh()
        before = len(reader.index)
        new = _unit(11, 11)
        writer.apply(Changes([_row(60 + i, vector=new[i]) for i in range(11)], [], [], []))
        assert reader.refresh() and len(reader.index) == before + 11
        for v in new:
            assert reader.search_vectors(v, 1)[0][0] > 0.999
    finally:
        reader.close()
        writer.close()
