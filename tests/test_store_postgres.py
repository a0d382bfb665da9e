"""The PostgreSQL store on its own: filtered HNSW searches (pgvector iterative scans) against
exact search, exactly k hits whenever k exist, and passwords never in messages."""

from __future__ import annotations

import os

import numpy as np
import pytest

from indexer.store import Changes, StoreUnavailableError, mask_url
from indexer.types import ModelIdentity

DIM = 32
N = 4000


@pytest.fixture(scope="module")
def filled(pg_server):
    """N random unit vectors written in one batch, then the HNSW index built (read-only use)."""
    from indexer.store.postgres import PgLocation

    loc = PgLocation(pg_server.create_database())
    store = loc.open("v1", writer=True)
    loc.versions.set_current("v1")
    store.bind_model(ModelIdentity("rand", "b" * 64, DIM, "{}"))
    rng = np.random.default_rng(7)
    vecs = rng.standard_normal((N, DIM)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    ch = Changes.empty()
    for i in range(N):
        ch.upserts.append({"path": os.fsencode(f"/lib/p{i:05d}.jpg"), "root": b"/lib", "size": 1,
                           "mtime_ns": 1, "content_hash": f"{i:064x}", "status": "ok",
                           "vector": vecs[i]})  # fmt: skip
    ids_by_path = store.apply(ch)
    ids = np.array([ids_by_path[os.fsencode(f"/lib/p{i:05d}.jpg")] for i in range(N)], np.int64)
    assert store.vector_state().kind == "exact"  # small: no HNSW index until needed
    store.build_vector_index()
    assert store.vector_state().kind == "hnsw"
    yield store, ids, vecs
    store.close()
    loc.close()


def _exact(vecs, ids, q, allowed, k):
    mask = np.isin(ids, allowed)
    scores = vecs[mask] @ q
    order = np.argsort(-scores, kind="stable")[:k]
    return ids[mask][order]


@pytest.mark.parametrize("keep", [0.01, 0.3, 1.0])
def test_filtered_hnsw_returns_k_hits_with_high_recall(filled, keep, request):
    store, ids, vecs = filled
    store.exact_table_max = store.exact_allowed_max = 0  # force the HNSW index path
    request.addfinalizer(lambda: setattr(store, "exact_table_max", 20_000))
    request.addfinalizer(lambda: setattr(store, "exact_allowed_max", 20_000))
    rng = np.random.default_rng(int(keep * 100))
    recalls = []
    for _ in range(20):
        q = vecs[rng.integers(N)] + 0.3 * rng.standard_normal(DIM).astype(np.float32)
        q /= np.linalg.norm(q)
        allowed = np.sort(rng.choice(ids, size=int(N * keep), replace=False))
        scores, got = store.search_vectors(q, 20, None if keep == 1.0 else allowed)
        assert (got >= 0).sum() == 20, "a filter must never return fewer than k hits that exist"
        assert np.isin(got, allowed).all()
        assert np.all(np.diff(scores) <= 1e-6), "best first"
        want = _exact(vecs, ids, q, allowed, 20)
        recalls.append(len(set(got.tolist()) & set(want.tolist())) / 20)
        assert store.last_plan.startswith("hnsw")
    assert np.mean(recalls) >= 0.95, recalls


def test_fewer_allowed_than_k_and_exact_scores(filled):
    store, ids, vecs = filled
    allowed = ids[[3, 10, 500, 3999]]
    scores, got = store.search_vectors(vecs[10], 20, allowed)
    assert got[0] == ids[10] and scores[0] == pytest.approx(1.0, abs=1e-5)
    assert sorted(got[:4].tolist()) == sorted(allowed.tolist()) and (got[4:] == -1).all()
    assert np.isneginf(scores[4:]).all() and store.last_plan == "exact"
    # the table's exact path matches numpy bit for bit in order
    s2, g2 = store.search_vectors(vecs[5], 10)
    assert g2.tolist() == _exact(vecs, ids, vecs[5], ids, 10).tolist()
    assert np.allclose(s2, np.sort(vecs @ vecs[5])[::-1][:10], atol=1e-5)


def test_passwords_never_reach_messages():
    from indexer.store.postgres import PgLocation

    url = "postgresql://clip:s3cr3t-pw@127.0.0.1:1/nowhere"
    assert "s3cr3t-pw" not in mask_url(url) and mask_url(url).startswith("postgresql://clip:***@")
    loc = PgLocation(url)
    with pytest.raises(StoreUnavailableError) as err:
        loc.versions.current()
    assert "s3cr3t-pw" not in str(err.value) and "s3cr3t-pw" not in loc.describe()
    assert err.value.__cause__ is None  # the driver's exception (with the URL) is not chained


def test_open_store_by_url(pg_url):
    """open_store takes a PostgreSQL URL: a reader of an empty database is told there is no
    index; a writer creates v1, which readers then open."""
    from indexer.store import IndexMissingError, open_store

    with pytest.raises(IndexMissingError, match="no index"):
        open_store(pg_url)
    writer = open_store(pg_url, writer=True)
    writer.bind_model(ModelIdentity("rand", "c" * 64, DIM, "{}"))
    vec = np.ones(DIM, np.float32)
    writer.apply(Changes([{"path": b"/x/1.jpg", "root": b"/x", "status": "ok", "vector": vec}],
                         [], [], []))  # fmt: skip
    reader = open_store(pg_url)
    try:
        assert reader.counts() == {"images": 1, "ok": 1, "errors": 0, "vectors": 1}
        assert reader.dim() == DIM and reader.generation() == writer.generation() == 1
    finally:
        reader.close()
        writer.close()
