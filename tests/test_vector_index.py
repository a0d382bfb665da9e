"""VectorIndex on real FAISS with constructed vectors whose answers are known."""

from __future__ import annotations

import os
import time

import faiss
import numpy as np
import pytest

from indexer.store.vectors import index as vi_mod
from indexer.store.vectors.checks import KINDS, normalize
from indexer.store.vectors.index import (
    FLAT_MAX,
    VectorIndex,
    choose_kind,
    set_threads,
)

APPROX_KINDS = ("ivf", "ivf-sq8", "hnsw")


def unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    return normalize(rng.standard_normal((n, d)))


def brute_force(
    queries: np.ndarray, ids: np.ndarray, x: np.ndarray, k: int, allowed=None
) -> tuple[np.ndarray, np.ndarray]:
    sims = queries @ x.T
    if allowed is not None:
        sims[:, ~np.isin(ids, allowed)] = -np.inf
    top = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(sims, top, axis=1), ids[top]


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth)]))


@pytest.fixture(scope="module")
def clustered() -> dict[str, np.ndarray]:
    """20k unit vectors in 64 dims around 200 gaussian centres, plus 200 held-out queries."""
    rng = np.random.default_rng(1234)
    d, n, n_clusters = 64, 20_000, 200
    centres = unit(rng, n_clusters, d)

    def draw(m: int) -> np.ndarray:
        return normalize(
            centres[rng.integers(0, n_clusters, m)] + 0.15 * rng.standard_normal((m, d))
        )

    x, queries = draw(n), draw(200)
    ids = np.arange(n, dtype=np.int64) * 3 + 7  # not positions: catches id/offset mix-ups
    _, truth = brute_force(queries, ids, x, 20)
    return {"x": x, "ids": ids, "queries": queries, "truth": truth}


@pytest.fixture(scope="module")
def clustered_indexes(clustered) -> dict[str, VectorIndex]:
    return {k: VectorIndex.build(clustered["ids"], clustered["x"], kind=k) for k in KINDS}


@pytest.fixture
def small() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    ids = rng.choice(1_000_000, size=600, replace=False).astype(np.int64)
    return ids, unit(rng, 600, 16)


def build_small(kind: str, ids: np.ndarray, x: np.ndarray) -> VectorIndex:
    return (
        VectorIndex.build(ids, x, kind=kind, nlist=8)
        if kind.startswith("ivf")
        else (VectorIndex.build(ids, x, kind=kind))
    )


# ------------------------------------------------------------------- helpers & kinds


def test_normalize_unit_rows_zero_rows_and_copy():
    raw = np.array([[3.0, 4.0], [0.0, 0.0], [0.0, -2.0]], dtype=np.float64)
    out = normalize(raw)
    assert out.dtype == np.float32 and out.flags.c_contiguous
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, 0.0], [0.0, -1.0]], rtol=1e-6)
    assert raw[0, 0] == 3.0  # input untouched
    with pytest.raises(ValueError):
        normalize(np.ones(3))


def test_choose_kind_thresholds():
    assert choose_kind(0) == "flat16"  # exact over float16 codes, as SQLite stores them
    assert choose_kind(FLAT_MAX - 1) == "flat16"
    assert choose_kind(FLAT_MAX) == "ivf-sq8"
    assert choose_kind(5_000_000) == "ivf-sq8"
    assert choose_kind(10, "hnsw") == "hnsw"
    assert choose_kind(10_000_000, "flat") == "flat"
    with pytest.raises(ValueError, match="unknown index kind"):
        choose_kind(10, "lsh")


def test_default_ivf_sizes_are_bounded():
    assert vi_mod.default_nlist(20_000) == 282  # 2*sqrt(n)
    assert vi_mod.default_nlist(5_000) == 128  # 2*sqrt(n)=141, capped to n/39
    assert vi_mod.default_nlist(1_000_000) == 2000
    assert vi_mod.default_nlist(10) == 1
    assert vi_mod.default_nprobe(4000) == 256
    assert vi_mod.default_nprobe(8) == 8


def test_ivf_training_uses_a_bounded_sample():
    """k-means sees at most TRAIN_POINTS_PER_LIST points per list, and the index still works."""
    rng = np.random.default_rng(3)
    centers = rng.standard_normal((50, 32))
    x = centers[rng.integers(0, 50, 6000)] + 0.1 * rng.standard_normal((6000, 32))
    ids = np.arange(6000, dtype=np.int64)
    idx = VectorIndex.build(ids, x, kind="ivf", nlist=20)
    assert vi_mod.TRAIN_POINTS_PER_LIST * 20 < len(x)  # the cap applied
    assert len(idx) == 6000
    scores, found = idx.search(x[:5], 1)
    assert (found[:, 0] == ids[:5]).all()


def test_set_threads_validates_and_applies():
    before = faiss.omp_get_max_threads()
    try:
        set_threads(1)
        assert faiss.omp_get_max_threads() == 1
    finally:
        faiss.omp_set_num_threads(before)
    with pytest.raises(ValueError):
        set_threads(0)


# ------------------------------------------------------------------- flat exactness


def test_flat_top_k_equals_numpy_brute_force(small):
    ids, x = small
    index = VectorIndex.build(ids, x, kind="flat")
    queries = unit(np.random.default_rng(3), 12, 16)
    scores, found = index.search(queries, 10)
    want_scores, want_ids = brute_force(queries, ids, x, 10)
    assert scores.dtype == np.float32 and found.dtype == np.int64
    np.testing.assert_array_equal(found, want_ids)
    np.testing.assert_allclose(scores, want_scores, atol=1e-5)


def test_auto_kind_small_library_is_flat16(small):
    ids, x = small
    index = VectorIndex.build(ids, x)
    assert index.kind == "flat16" and index.dim == 16 and len(index) == 600


def test_queries_and_vectors_are_normalised_on_the_way_in(small):
    ids, x = small
    index = VectorIndex.build(ids, x * 5.0, kind="flat")
    scores, found = index.search(3.0 * x[:2], 1)  # 1-D/2-D, any scale
    np.testing.assert_array_equal(found[:, 0], ids[:2])
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-5)
    scores, found = index.search(x[4], 1)
    assert found.shape == (1, 1) and found[0, 0] == ids[4]


@pytest.mark.parametrize("kind", KINDS)
def test_k_larger_than_index_returns_all_padded(kind):
    rng = np.random.default_rng(0)
    ids = np.array([10, 20, 30, 40, 50], dtype=np.int64)
    x = unit(rng, 5, 8)
    index = VectorIndex.build(ids, x, kind=kind)
    scores, found = index.search(x[:2], 8)
    assert scores.shape == found.shape == (2, 8)
    assert sorted(found[0, :5]) == ids.tolist()
    assert (found[:, 5:] == -1).all() and np.isneginf(scores[:, 5:]).all()
    assert np.all(np.diff(scores[:, :5], axis=1) <= 1e-6)  # best first


def test_empty_index_search_is_all_padding():
    index = VectorIndex.create(32)
    scores, found = index.search(unit(np.random.default_rng(0), 3, 32), 4)
    assert (found == -1).all() and np.isneginf(scores).all() and len(index) == 0


# ------------------------------------------------------------------- mutation


@pytest.mark.parametrize("kind", KINDS)
def test_add_replace_remove_ids_contains(kind, small):
    ids, x = small
    index = build_small(kind, ids, x)
    assert len(index) == 600
    np.testing.assert_array_equal(index.ids(), np.sort(ids))
    assert index.ids().dtype == np.int64

    # Replacing an id moves it: the new vector is found under the old id, only once.
    target = unit(np.random.default_rng(99), 1, 16)
    index.add(ids[:1], target)
    assert len(index) == 600
    scores, found = index.search(target, 3)
    assert found[0, 0] == ids[0] and scores[0, 0] == pytest.approx(1.0, abs=0.02)
    assert list(found[0]).count(ids[0]) == 1

    # New ids extend the index.
    index.add(np.array([5, 6], dtype=np.int64), unit(np.random.default_rng(5), 2, 16))
    assert len(index) == 602
    np.testing.assert_array_equal(index.contains(np.array([5, 6, 4, ids[3]])), [1, 1, 0, 1])

    # Remove counts only ids that were present; removed ids never come back from search.
    gone = np.concatenate([ids[1:51], [123_456_789]])
    assert index.remove(gone) == 50
    assert index.remove(ids[1:3]) == 0
    assert len(index) == 552 and not index.contains(ids[1:51]).any()
    _, found = index.search(x[1:51], 10)
    assert not np.isin(found, ids[1:51]).any()
    expected = np.sort(np.concatenate([ids[:1], ids[51:], [5, 6]]))
    np.testing.assert_array_equal(index.ids(), expected)


@pytest.mark.parametrize("kind", KINDS)
def test_get_vectors_and_sample(kind, small):
    ids, x = small
    index = build_small(kind, ids, x)
    # SQ8 returns the decoded 8-bit approximation, flat16 the float16 rounding (<= 2**-12)
    tol = {"ivf-sq8": 0.02, "flat16": 2.5e-4}.get(kind, 1e-6)
    np.testing.assert_allclose(index.get_vectors(ids[[3, 1, 2]]), x[[3, 1, 2]], atol=tol)
    with pytest.raises(KeyError):
        index.get_vectors(np.array([ids[0], 17], dtype=np.int64))
    sample = index.sample(50, seed=1)
    assert sample.shape == (50, 16)
    np.testing.assert_allclose(np.linalg.norm(sample, axis=1), 1.0, atol=tol)
    assert index.sample(10_000).shape == (600, 16)


def test_ivf_created_empty_trains_on_first_batch(small):
    ids, x = small
    index = VectorIndex.create(16, "ivf-sq8")
    assert len(index) == 0
    index.add(ids[:300], x[:300])
    index.add(ids[300:], x[300:])
    _, found = index.search(x[[0, 450]], 1)
    np.testing.assert_array_equal(found[:, 0], ids[[0, 450]])
    with pytest.raises(ValueError, match="needs >= 64 vectors"):
        VectorIndex.create(16, "ivf", nlist=64).add(ids[:10], x[:10])


def test_invalid_inputs_are_rejected(small):
    ids, x = small
    index = VectorIndex.create(16)
    with pytest.raises(ValueError, match="dimension"):
        index.add(ids[:2], unit(np.random.default_rng(0), 2, 8))
    with pytest.raises(ValueError, match="duplicate"):
        index.add(np.array([1, 1]), x[:2])
    with pytest.raises(ValueError, match=">= 0"):
        index.add(np.array([-1, 2]), x[:2])
    with pytest.raises(ValueError, match="NaN"):
        index.add(np.array([1]), np.full((1, 16), np.nan))
    with pytest.raises(ValueError, match="ids for"):
        index.add(ids[:3], x[:2])
    with pytest.raises(ValueError, match="k must"):
        index.search(x[:1], 0)
    with pytest.raises(TypeError, match="unknown index parameter"):
        VectorIndex.create(16, "hnsw", efsearch=5)
    with pytest.raises(ValueError, match="unknown index kind"):
        VectorIndex.create(16, "pq")
    assert len(index) == 0


# ------------------------------------------------------------------- filters


def test_flat_allowed_ids_exact_top_among_allowed(small):
    ids, x = small
    index = VectorIndex.build(ids, x, kind="flat")
    rng = np.random.default_rng(11)
    allowed = rng.choice(ids, size=40, replace=False)
    queries = unit(rng, 6, 16)
    scores, found = index.search(queries, 10, allowed_ids=allowed)
    want_scores, want_ids = brute_force(queries, ids, x, 10, allowed)
    np.testing.assert_array_equal(found, want_ids)
    np.testing.assert_allclose(scores, want_scores, atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_allowed_ids_edge_cases(kind, small):
    ids, x = small
    index = build_small(kind, ids, x)
    scores, found = index.search(x[:2], 5, allowed_ids=np.array([], dtype=np.int64))
    assert found.shape == (2, 5) and (found == -1).all() and np.isneginf(scores).all()
    # Unknown ids are ignored; fewer allowed than k pads.
    allowed = np.array([ids[9], ids[9], 424_242], dtype=np.int64)
    scores, found = index.search(x[:2], 3, allowed_ids=allowed)
    assert (found[:, 0] == ids[9]).all() and (found[:, 1:] == -1).all()
    assert np.isfinite(scores[:, 0]).all() and np.isneginf(scores[:, 1:]).all()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("fraction", [0.1, 0.002])
def test_allowed_ids_on_clustered_data(kind, fraction, clustered, clustered_indexes):
    rng = np.random.default_rng(int(fraction * 1000))
    ids, x, queries = clustered["ids"], clustered["x"], clustered["queries"][:50]
    allowed = rng.choice(ids, size=int(len(ids) * fraction), replace=False)
    _, found = clustered_indexes[kind].search(queries, 20, allowed_ids=allowed)
    _, truth = brute_force(queries, ids, x, 20, allowed)
    assert np.isin(found[found >= 0], allowed).all()
    assert (found >= 0).all()  # every query still gets a full page of allowed results
    assert recall(found, truth) >= 0.95
    if kind != "ivf-sq8":  # the best allowed hit itself (SQ8 may swap near-ties)
        assert np.mean(found[:, 0] == truth[:, 0]) >= 0.95


# ------------------------------------------------------------------- recall


@pytest.mark.parametrize("kind", KINDS)
def test_recall_at_20_with_default_params(kind, clustered, clustered_indexes):
    index = clustered_indexes[kind]
    queries = clustered["queries"]
    start = time.perf_counter()
    _, found = index.search(queries, 20)
    per_query_us = (time.perf_counter() - start) / len(queries) * 1e6
    r = recall(found, clustered["truth"])
    print(f"{kind}: recall@20={r:.3f} search={per_query_us:.0f}us/query")
    assert r >= {"flat": 1.0, "flat16": 0.999}.get(kind, 0.95)


def test_search_params_change_ivf_and_hnsw_breadth(clustered, clustered_indexes):
    queries, truth = clustered["queries"], clustered["truth"]
    ivf = VectorIndex.build(clustered["ids"], clustered["x"], kind="ivf", nlist=256, nprobe=1)
    narrow = recall(ivf.search(queries, 20)[1], truth)
    ivf.set_search_params(nprobe=256)  # every list: exact
    assert recall(ivf.search(queries, 20)[1], truth) == 1.0 > narrow
    hnsw = clustered_indexes["hnsw"]
    try:
        hnsw.set_search_params(ef_search=512)
        assert recall(hnsw.search(queries, 20)[1], truth) >= 0.99
    finally:
        hnsw.set_search_params(ef_search=vi_mod.DEFAULT_EF_SEARCH)
    with pytest.raises(ValueError):
        hnsw.set_search_params(nprobe=0)


# ------------------------------------------------------------------- persistence


@pytest.mark.parametrize("kind", KINDS)
def test_save_load_round_trip(kind, small, tmp_path):
    ids, x = small
    index = build_small(kind, ids, x)
    index.set_search_params(nprobe=3, ef_search=40)
    index.remove(ids[:5])
    path = tmp_path / "vectors.idx"
    index.save(path, generation=17)
    loaded, generation = VectorIndex.load(str(path))
    assert generation == 17
    assert (loaded.kind, loaded.dim, len(loaded)) == (kind, 16, 595)
    np.testing.assert_array_equal(loaded.ids(), index.ids())
    queries = x[:20]
    for allowed in (None, ids[100:160]):
        a_scores, a_ids = index.search(queries, 7, allowed_ids=allowed)
        b_scores, b_ids = loaded.search(queries, 7, allowed_ids=allowed)
        np.testing.assert_array_equal(a_ids, b_ids)
        np.testing.assert_array_equal(a_scores, b_scores)
    # Still fully usable after loading (IVF stays trained, HNSW can rebuild).
    loaded.add(ids[:5], x[:5])
    assert loaded.remove(ids[5:7]) == 2 and len(loaded) == 598


def test_save_overwrites_with_new_generation_and_leaves_no_temp_files(small, tmp_path):
    ids, x = small
    path = tmp_path / "vectors.idx"
    index = VectorIndex.build(ids, x)
    index.save(path, generation=1)
    index.remove(ids[:100])
    index.save(path, generation=2)
    assert os.listdir(tmp_path) == ["vectors.idx"]
    loaded, generation = VectorIndex.load(path)
    assert generation == 2 and len(loaded) == 500


def test_failed_save_keeps_old_file_and_cleans_up(small, tmp_path, monkeypatch):
    ids, x = small
    path = tmp_path / "vectors.idx"
    index = VectorIndex.build(ids, x)
    index.save(path, generation=1)

    def explode(*args):
        raise OSError("disk full")

    monkeypatch.setattr(vi_mod.faiss, "write_index", explode)
    with pytest.raises(OSError, match="disk full"):
        index.save(path, generation=2)
    assert os.listdir(tmp_path) == ["vectors.idx"]
    assert VectorIndex.load(path)[1] == 1


def test_untrained_ivf_round_trip(tmp_path):
    index = VectorIndex.create(24, "ivf", nprobe=5)
    index.save(tmp_path / "empty.idx", generation=0)
    loaded, generation = VectorIndex.load(tmp_path / "empty.idx")
    assert (loaded.kind, loaded.dim, len(loaded), generation) == ("ivf", 24, 0, 0)
    loaded.add(np.arange(100), unit(np.random.default_rng(0), 100, 24))
    assert len(loaded) == 100


@pytest.mark.parametrize("cut", [0, 10, 40, "half", "minus1"])
def test_truncated_file_raises_value_error_naming_it(cut, small, tmp_path):
    ids, x = small
    path = tmp_path / "vectors.idx"
    VectorIndex.build(ids, x, kind="hnsw").save(path, generation=3)
    data = path.read_bytes()
    keep = {"half": len(data) // 2, "minus1": len(data) - 1}.get(cut, cut)
    path.write_bytes(data[:keep])
    with pytest.raises(ValueError, match="vectors.idx"):
        VectorIndex.load(path)


def test_corrupt_bytes_raise_value_error(small, tmp_path):
    ids, x = small
    path = tmp_path / "vectors.idx"
    VectorIndex.build(ids, x).save(path, generation=3)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="checksum"):
        VectorIndex.load(path)
    path.write_bytes(b"not an index at all, just some text padding it out")
    with pytest.raises(ValueError, match="not a clipsearch vector index"):
        VectorIndex.load(path)


# ------------------------------------------------------------------- memory-mapped readers


@pytest.mark.parametrize("kind", KINDS)
def test_memory_mapped_load_searches_alike_and_copies_before_a_change(kind, small, tmp_path):
    ids, x = small
    index = build_small(kind, ids, x)
    path = tmp_path / "vectors.idx"
    sig = index.save(path, generation=5)
    before = path.read_bytes()
    mapped, generation = VectorIndex.load(path, mmap=True, trusted=sig)
    assert generation == 5 and mapped._mapped and mapped.file_signature == sig
    for allowed in (None, ids[100:160]):
        a = index.search(x[:10], 7, allowed_ids=allowed)
        b = mapped.search(x[:10], 7, allowed_ids=allowed)
        np.testing.assert_array_equal(a[1], b[1])
        np.testing.assert_array_equal(a[0], b[0])
    # a change (a reader replaying a writer's rows) works on a copy; the file stays as it was
    mapped.add(ids[:3] + 10_000, x[:3])
    assert mapped.remove(ids[3:5]) == 2 and len(mapped) == len(index) + 1 and not mapped._mapped
    assert mapped.search(x[0], 1)[1][0, 0] in (ids[0], ids[0] + 10_000)
    assert path.read_bytes() == before


def test_a_stale_signature_does_not_skip_the_checksum(small, tmp_path):
    ids, x = small
    path = tmp_path / "vectors.idx"
    sig = VectorIndex.build(ids, x).save(path, generation=3)
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0xFF  # inside FAISS's bytes, which start the file
    path.write_bytes(bytes(data))  # a rewritten file: another ctime, so another signature
    for mmap in (False, True):
        with pytest.raises(ValueError, match="checksum"):
            VectorIndex.load(path, mmap=mmap, trusted=sig)


def test_format_1_files_are_still_read(small, tmp_path):
    """Files written before FAISS's bytes moved to the front (format 1) load, copied."""
    import json
    import struct
    import zlib

    import faiss

    ids, x = small
    index = VectorIndex.build(ids, x, kind="flat")
    header = json.dumps({"dim": 16, "kind": "flat", "generation": 9, "count": len(ids),
                         "params": {"nlist": None, "nprobe": None, "m": 32,
                                    "ef_construction": 40, "ef_search": 128}}).encode()  # fmt: skip
    payload = faiss.serialize_index(index._index).tobytes()
    crc = zlib.crc32(payload, zlib.crc32(header))
    path = tmp_path / "old.idx"
    path.write_bytes(struct.pack("<8sII", b"CSVINDEX", 1, len(header)) + header + payload
                     + struct.pack("<QI8s", len(payload), crc, b"CSVIEND\x00"))  # fmt: skip
    loaded, generation = VectorIndex.load(path, mmap=True)
    assert generation == 9 and not loaded._mapped
    np.testing.assert_array_equal(loaded.search(x[:5], 3)[1], index.search(x[:5], 3)[1])
