"""Video frames in the store, on both backends: written, copied and dropped with their video's
vector in one transaction, searched exactly (best first, filtered), seen by readers after
``refresh()``; ``Record.duration_ms``; the PostgreSQL schema migration 2 -> 3; and
``clipsearch migrate`` carrying frames both ways."""

from __future__ import annotations

import numpy as np
import pytest

from indexer.store import Changes
from indexer.types import ModelIdentity

DIM = 16
IDENTITY = ModelIdentity("rand", "f" * 64, DIM, "{}")


def _unit(seed: int, n: int | None = None) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n or 1, DIM)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return v if n else v[0]


def _row(name: str, **extra) -> dict:
    row = {"path": f"/lib/{name}".encode(), "root": b"/lib", "size": 1, "mtime_ns": 1,
           "content_hash": name, "status": "ok", "error": None}  # fmt: skip
    row.update(extra)
    return row


def _video(name: str, seed: int, times=(0, 2000, 4000), **extra) -> dict:
    vecs = _unit(seed, len(times))
    mean = vecs.mean(axis=0)
    return _row(name, vector=mean / np.linalg.norm(mean), duration_ms=times[-1] + 1000,
                frames=(np.asarray(times), vecs), **extra)  # fmt: skip


def _apply(store, *upserts: dict, deletes=()) -> dict[bytes, int]:
    return store.apply(Changes(list(upserts), [], [], list(deletes)))


def _id(ids: dict[bytes, int], name: str) -> int:
    return ids[f"/lib/{name}".encode()]


@pytest.fixture(params=["sqlite", "sqlite-full", "postgres"])
def stores(request, tmp_path):
    """(writer, a factory of read-only stores on the same index) for each backend (SQLite:
    the light reader queries open, and the full SQLAlchemy store opened read-only)."""
    if request.param.startswith("sqlite"):
        from indexer.store.sqlite.reader import SqliteReader
        from indexer.store.sqlite.store import SqliteStore

        path = tmp_path / "v1"
        writer = SqliteStore(path, writer=True)
        writer.bind_model(IDENTITY)

        def reader():
            return SqliteStore(path) if request.param == "sqlite-full" else SqliteReader(path)

        yield writer, reader
        writer.close()
    else:
        from indexer.store.postgres import PgLocation

        loc = PgLocation(request.getfixturevalue("pg_server").create_database())
        writer = loc.open("v1", writer=True)
        writer.bind_model(IDENTITY)
        yield writer, lambda: loc.open("v1")
        writer.close()
        loc.close()


def test_frames_written_with_their_video_and_searched(stores):
    store, open_reader = stores
    reader = open_reader()
    try:
        assert reader.frame_counts() == {"videos": 0, "frames": 0}
        ids = _apply(store, _video("a.mp4", 1), _video("b.mp4", 2, times=(500, 1500)),
                     _row("p.jpg", vector=_unit(3)))  # fmt: skip
        a, b, p = _id(ids, "a.mp4"), _id(ids, "b.mp4"), _id(ids, "p.jpg")
        assert store.frame_counts() == {"videos": 2, "frames": 5}
        times, vecs = store.frames(a)
        assert times.dtype == np.int64 and times.tolist() == [0, 2000, 4000]
        assert vecs.dtype == np.float32 and vecs.shape == (3, DIM)
        assert np.allclose(vecs, _unit(1, 3), atol=2e-3)
        t_none, v_none = store.frames(p)
        assert t_none.tolist() == [] and v_none.shape == (0, DIM)

        # the query is b's second frame: that frame first, then the rest by cosine
        query = _unit(2, 2)[1]
        scores, got_ids, got_t = store.search_frames(query, 3)
        assert scores.dtype == np.float32 and got_ids.dtype == got_t.dtype == np.int64
        assert (got_ids[0], got_t[0]) == (b, 1500) and scores[0] == pytest.approx(1.0, abs=2e-3)
        assert len(scores) == 3 and np.all(np.diff(scores) <= 1e-6)
        every = np.concatenate([_unit(1, 3), _unit(2, 2)])
        assert np.allclose(scores, np.sort(every @ query)[::-1][:3], atol=2e-3)
        assert len(store.search_frames(query, 50)[0]) == 5
        assert np.allclose(store.search_frames(3 * query, 3)[0], scores, atol=1e-5)  # cosines
        s, i, t = store.search_frames(query, 10, allowed_ids=np.array([a, p]))
        assert set(i.tolist()) == {a} and sorted(t.tolist()) == [0, 2000, 4000]
        assert len(store.search_frames(query, 10, allowed_ids=np.array([p]))[0]) == 0

        # a reader opened before the commit sees the frames after refresh()
        reader.refresh()
        assert reader.frame_counts() == {"videos": 2, "frames": 5}
        assert reader.search_frames(query, 1)[1].tolist() == [b]
        assert reader.frames(b)[0].tolist() == [500, 1500]
        recs = reader.records([a, p])
        assert recs[a].duration_ms == 5000 and recs[a].is_video
        assert recs[p].duration_ms is None and not recs[p].is_video
        assert reader.record_by_path("/lib/b.mp4").duration_ms == 2500
    finally:
        reader.close()


def test_frames_replaced_copied_and_dropped(stores):
    store, _ = stores
    ids = _apply(store, _video("a.mp4", 1), _video("b.mp4", 2), _video("c.mp4", 3),
                 _video("d.mp4", 4), _video("e.mp4", 5))  # fmt: skip
    a, b, c, d, e = (_id(ids, f"{n}.mp4") for n in "abcde")
    assert store.frame_counts() == {"videos": 5, "frames": 15}
    new = _apply(
        store,
        _video("a.mp4", 10, times=(100, 200), id=a),  # re-encoded: its new frames replace
        _row("b.mp4", id=b, vector=_unit(11), duration_ms=5000),  # a vector, no frames: none
        _row("copy.mp4", copy_from=c, duration_ms=5000),  # a duplicate: c's frames, copied
        _row("d.mp4", id=d, status="error", error="cannot decode"),  # an error: none
        deletes=[e],
    )
    dup = _id(new, "copy.mp4")
    assert store.frames(a)[0].tolist() == [100, 200]
    assert np.allclose(store.frames(a)[1], _unit(10, 2), atol=2e-3)
    assert store.frames(b)[0].tolist() == [] and store.frames(d)[0].tolist() == []
    assert store.frames(e)[0].tolist() == []
    t_c, v_c = store.frames(c)
    t_dup, v_dup = store.frames(dup)
    assert t_dup.tolist() == t_c.tolist() == [0, 2000, 4000]
    assert v_dup.tobytes() == v_c.tobytes()  # copied bit for bit
    assert store.frame_counts() == {"videos": 3, "frames": 8}
    hit = store.search_frames(_unit(3, 3)[2], 2)
    assert sorted(hit[1].tolist()) == sorted([c, dup]) and hit[2].tolist() == [4000, 4000]
    # copying a photo (no frames) gives none; a photos-only batch writes no frames
    more = _apply(store, _row("p.jpg", vector=_unit(20)), _row("p2.jpg", copy_from=b))
    assert store.frames(_id(more, "p2.jpg"))[0].tolist() == []
    assert store.frame_counts() == {"videos": 3, "frames": 8}
    _apply(store, deletes=[c, dup, a])
    assert store.frame_counts() == {"videos": 0, "frames": 0}
    assert len(store.search_frames(_unit(3), 5)[0]) == 0


def test_photos_only_library_writes_no_frames(stores):
    store, _ = stores
    ids = _apply(store, *(_row(f"p{i}.jpg", vector=_unit(i)) for i in range(20)))
    _apply(store, _row("p0.jpg", id=_id(ids, "p0.jpg"), vector=_unit(99)),
           deletes=[_id(ids, "p1.jpg")])  # fmt: skip
    assert store.frame_counts() == {"videos": 0, "frames": 0}
    assert len(store.search_frames(_unit(1), 5)[0]) == 0
    rec = store.records([_id(ids, "p2.jpg")])[_id(ids, "p2.jpg")]
    assert rec.duration_ms is None and not rec.is_video
    # an upsert with an empty frame list is a video without frames, not an error
    new = _apply(store, _row("v.mp4", vector=_unit(5), duration_ms=10,
                             frames=(np.zeros(0, np.int64), np.zeros((0, DIM), np.float32))))  # fmt: skip
    assert store.frames(_id(new, "v.mp4"))[0].tolist() == []


def test_postgres_schema_2_migrates_to_3(pg_server):
    from sqlalchemy import text

    from indexer.store.postgres import PgLocation
    from indexer.store.postgres import schema as db

    loc = PgLocation(pg_server.create_database())
    s = loc.open("v1", writer=True)
    s.bind_model(IDENTITY)
    ids = _apply(s, _row("p.jpg", vector=_unit(1)))
    with s.engine.begin() as conn:  # back to a schema-2 index
        conn.execute(text("DROP TABLE frames"))
        conn.execute(text("ALTER TABLE images DROP COLUMN duration_ms"))
        conn.execute(text("UPDATE schema_version SET version = 2"))
    s.close()
    s = loc.open("v1", writer=True)
    try:
        with s.engine.connect() as conn:
            assert db.read_version(conn) == db.SCHEMA_VERSION == 3
            assert db.vector_dimension(conn, "frames") == DIM  # typed like the vectors
        p = _id(ids, "p.jpg")
        assert s.records([p])[p].duration_ms is None
        v = _id(_apply(s, _video("v.mp4", 2)), "v.mp4")
        assert s.frames(v)[0].tolist() == [0, 2000, 4000]
        assert s.search_frames(_unit(2, 3)[0], 1)[1].tolist() == [v]
    finally:
        s.close()
        loc.close()


def test_migrate_carries_frames_both_ways(tmp_path, pg_url):
    from indexer.store.location import DirectoryLocation
    from indexer.store.postgres import PgLocation, transfer
    from indexer.store.sqlite.store import SqliteStore

    src_dir = tmp_path / "idx"
    src_loc = DirectoryLocation(src_dir)
    src = SqliteStore(src_loc.versions.path("v1"), writer=True)
    src.bind_model(IDENTITY)
    ids = _apply(src, _video("a.mp4", 1), _row("p.jpg", vector=_unit(2)),
                 _row("bad.mp4", status="error", error="x", duration_ms=7))  # fmt: skip
    a = _id(ids, "a.mp4")
    want_t, want_v = src.frames(a)
    src.close()
    src_loc.versions.set_current("v1")

    assert transfer.to_postgres(src_dir, pg_url)["frames"] == 3
    loc = PgLocation(pg_url)
    pg = loc.open(loc.versions.current())
    try:
        t, v = pg.frames(a)
        assert t.tolist() == want_t.tolist() and np.array_equal(v, want_v)
        assert pg.records([a])[a].duration_ms == 5000
        assert pg.record_by_path("/lib/bad.mp4").duration_ms == 7
        assert pg.frame_counts() == {"videos": 1, "frames": 3}
    finally:
        pg.close()
        loc.close()

    back_dir = tmp_path / "back"
    assert transfer.from_postgres(pg_url, back_dir)["frames"] == 3
    back_loc = DirectoryLocation(back_dir)
    back = SqliteStore(back_loc.versions.path(back_loc.versions.current()))
    try:
        t, v = back.frames(a)
        assert t.tolist() == want_t.tolist() and v.tobytes() == want_v.tobytes()
        assert back.records([a])[a].duration_ms == 5000
        assert back.search_frames(want_v[1], 1)[2].tolist() == [2000]
    finally:
        back.close()
