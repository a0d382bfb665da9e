"""IndexStore.apply on a real SQLite file and FAISS index: a batch's vectors are written
together after its rows, with the semantics of writing them one by one."""

from __future__ import annotations

import numpy as np
from sqlalchemy import insert, select

from indexer.store import Changes
from indexer.store.sqlite import SqliteStore as IndexStore
from indexer.store.sqlite.schema import STATUS_ERROR, STATUS_OK, TagRow, TombstoneRow, VectorRow


def _row(name: str, **extra) -> dict:
    row = {"path": f"/photos/{name}".encode(), "root": b"/photos", "size": 1, "mtime_ns": 1,
           "content_hash": name, "status": STATUS_OK, "error": None}  # fmt: skip
    row.update(extra)
    return row


def _unit(seed: int, dim: int = 16) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(dim).astype(np.float32)
    return v / np.linalg.norm(v)


def _apply(store: IndexStore, *upserts: dict) -> dict[bytes, int]:
    changes = Changes.empty()
    changes.upserts.extend(upserts)
    return store.apply(changes)


def test_batch_vectors_replace_copy_and_drop(tmp_path):
    store = IndexStore(tmp_path / "v1", writer=True)
    try:
        ids = _apply(store, _row("a", vector=_unit(1)), _row("c", vector=_unit(3)))
        a, c = ids[b"/photos/a"], ids[b"/photos/c"]
        with store.engine.begin() as conn:
            conn.execute(insert(TagRow), [{"image_id": a, "tag": "dog", "score": 0.3}])

        # one batch: a gets a new vector, b copies a's (the new one, written in this same
        # batch), c becomes an error and loses its vector
        new = _unit(2)
        ids = _apply(
            store,
            _row("a", id=a, vector=new),
            _row("b", copy_from=a),
            _row("c", id=c, status=STATUS_ERROR, error="truncated"),
        )
        b = ids[b"/photos/b"]
        found, vecs = store.vectors([a, b, c])
        assert list(found) == [a, b]
        np.testing.assert_allclose(vecs, np.stack([new, new]), atol=5e-4)  # stored as float16
        assert vecs[0].tobytes() == vecs[1].tobytes()  # the copy is bit for bit
        with store.engine.connect() as conn:
            assert conn.execute(select(TagRow.image_id)).scalars().all() == []  # scored on old
            assert conn.execute(select(TombstoneRow.image_id)).scalars().all() == [c]
            assert sorted(conn.execute(select(VectorRow.image_id)).scalars()) == [a, b]
        # FAISS holds the same: ids a and b, both with the new vector, c gone
        assert sorted(store.index.ids().tolist()) == [a, b]
        hits = store.index.search(new[None, :], 3)
        # (flat16 below 200k: the float16 codes score a unit vector within ~2.5e-4 of 1)
        assert set(hits[1][0][:2].tolist()) == {a, b} and np.allclose(hits[0][0][:2], 1, atol=5e-4)

        # an error row gets its vector back when it is encoded again (tombstone cleared)
        _apply(store, _row("c", id=c, vector=_unit(3)))
        with store.engine.connect() as conn:
            assert conn.execute(select(TombstoneRow.image_id)).scalars().all() == []
        assert sorted(store.index.ids().tolist()) == sorted([a, b, c])
    finally:
        store.close()
