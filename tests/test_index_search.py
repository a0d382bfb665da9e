"""Acceptance 4: search by image, text, combined/negative terms, filters, threshold, adaptive."""

from __future__ import annotations

import os

import numpy as np
import pytest

from indexer.config import load_config
from indexer.embed.encoder import ClipEncoder
from indexer.library import Library
from indexer.search.engine import QueryError
from indexer.store import Changes
from indexer.types import ModelIdentity

from .indexer_helpers import copy_images, write_config

DIM = 16  # axes 0-7: the words below; 8-15: background noise


def test_image_queries_find_themselves(tmp_path, coco_images, tiny_checkpoint, database):
    photos = copy_images(coco_images[:40], tmp_path / "photos")
    cfg = load_config(write_config(tmp_path / "c.yaml", [tmp_path / "photos"], tmp_path / "idx",
                                   tiny_checkpoint, database=database))  # fmt: skip
    enc = ClipEncoder.from_config(cfg)
    with Library.open(cfg, writer=True, encoder=enc) as lib:
        lib.index(progress=False)
    with Library.open(cfg, encoder=enc) as lib:
        for p in photos:
            hits = lib.search(image=p, k=3).hits
            assert hits[0].path == os.fspath(p), p
            # the index holds float16 codes (flat16 below 200k): within 2.5e-4 of the cosine
            assert hits[0].score == pytest.approx(1.0, abs=2.5e-4)
            assert hits[0].score > hits[1].score
            # the same image by indexed id and as bytes
            assert lib.search(image=hits[0].id, k=1).hits[0].id == hits[0].id
        assert lib.search(image=photos[3].read_bytes(), k=1).hits[0].path == os.fspath(photos[3])
        assert lib.search(f"id:{hits[0].id}", k=1).hits[0].id == hits[0].id
        assert lib.search(f'img:"{photos[5]}"', k=1).hits[0].path == os.fspath(photos[5])
        # text, including text longer than CLIP's 77-token context
        assert len(lib.search("a photo of a dog", k=5).hits) == 5
        long_text = " ".join(["a red bus parked next to a crowded market street"] * 20)
        assert len(lib.search(long_text, k=5).hits) == 5
        rec = lib.get_image(hits[0].id)
        assert rec is not None and lib.thumbnail_path(rec).exists()
        with pytest.raises(QueryError):
            lib.search(image=10**9)
        with pytest.raises(QueryError):
            lib.search("   ")


class AxisEncoder:
    """Known text vectors: word i of WORDS is basis vector e_i (for end-to-end query tests)."""

    WORDS = ["red", "green", "blue", "sky", "dog", "cat", "car", "tree"]
    identity = ModelIdentity("axis", "a" * 64, DIM, "{}")
    image_resolution = 8

    def encode_texts(self, texts):
        out = np.zeros((len(texts), DIM), np.float32)
        for i, t in enumerate(texts):
            out[i, self.WORDS.index(t)] = 1.0
        return out

    def preprocess(self, image):  # pragma: no cover - no images in these tests
        raise AssertionError("not used")

    encode_images = preprocess


def _unit(*pairs) -> np.ndarray:
    v = np.zeros(DIM, np.float32)
    for axis, value in pairs:
        v[axis] = value
    return v / np.linalg.norm(v)


@pytest.fixture
def known(tmp_path, database):
    """An index with constructed vectors inserted through the store API (both backends)."""
    root = tmp_path / "lib"
    cfg = load_config(
        write_config(tmp_path / "c.yaml", [root], tmp_path / "idx", database=database)
    )
    enc = AxisEncoder()
    rows = {
        # name: (vector, folder, taken_at)
        "red": (_unit((0, 1)), "a", "2019-05-01T10:00:00"),
        "red_green": (_unit((0, 1), (1, 1)), "a", "2020-01-15T08:00:00"),
        "green": (_unit((1, 1)), "b", "2020-06-30T23:59:59"),
        "blue": (_unit((2, 1)), "b", "2021-03-03T03:03:03"),
        "red_blue": (_unit((0, 1), (2, 1)), "b/deep", None),
        "dog1": (_unit((4, 1), (7, 0.05)), "c", "2022-02-02T00:00:00"),
        "dog2": (_unit((4, 1), (6, 0.06)), "c", "2022-02-03T00:00:00"),
        "dog3": (_unit((4, 1), (5, 0.07)), "c", "2022-02-04T00:00:00"),
    }
    for i in range(40):  # background: random vectors (nearly) orthogonal to every word
        v = np.random.default_rng(i).standard_normal(DIM) * np.r_[np.full(8, 0.03), np.ones(8)]
        rows[f"bg{i:02d}"] = (v, "z", None)
    with Library.open(cfg, writer=True, encoder=enc) as lib:
        lib.store.bind_model(enc.identity)
        ch = Changes.empty()
        for name, (vec, folder, taken) in rows.items():
            path = os.fsencode(root / folder / f"{name}.jpg")
            ch.upserts.append({"path": path, "root": os.fsencode(root), "size": 1, "mtime_ns": 1,
                               "content_hash": name, "status": "ok", "taken_at": taken,
                               "vector": vec})  # fmt: skip
        ids = lib.store.apply(ch)
    by_name = {n: ids[os.fsencode(root / f / f"{n}.jpg")] for n, (_, f, _) in rows.items()}
    lib = Library.open(cfg, encoder=enc)
    yield lib, by_name, root
    lib.close()


def _names(res, by_name):
    inv = {v: k for k, v in by_name.items()}
    return [inv[h.id] for h in res.hits]


def test_combined_and_negative_queries(known):
    lib, ids, _ = known
    assert _names(lib.search("red", k=1), ids) == ["red"]
    # red + green: the mixed vector is exactly red_green
    res = lib.search("red + green", k=1)
    assert _names(res, ids) == ["red_green"] and res.hits[0].score == pytest.approx(1.0, abs=2.5e-4)
    # red - blue pushes red_blue down below red_green
    names = _names(lib.search("red - blue", k=3), ids)
    assert names[:2] == ["red", "red_green"] and "red_blue" not in names
    # weights: 3:blue + red -> red_blue beats red
    assert _names(lib.search("3:blue + red", k=2), ids) == ["blue", "red_blue"]
    # an indexed image as a term, combined with text
    res = lib.search(f"id:{ids['blue']} + red", k=1)
    assert _names(res, ids) == ["red_blue"]
    # example image argument plus a negative text term
    assert _names(lib.search("- blue", image=ids["red_blue"], k=1), ids) == ["red"]
    with pytest.raises(QueryError, match="cancel"):
        lib.search("red - red")


def test_filters(known):
    lib, ids, root = known
    names = _names(lib.search("red", k=10, folder=root / "b"), ids)
    assert names[0] == "red_blue" and sorted(names) == ["blue", "green", "red_blue"]
    assert set(_names(lib.search("red", k=10, folder=root / "b" / "deep"), ids)) == {"red_blue"}
    assert _names(lib.search("red", k=10, folder=root / "nothing"), ids) == []
    # capture date: inclusive ranges at year/month/day granularity; undated images excluded
    res = lib.search("red", k=10, since="2020", until="2020-06")
    assert set(_names(res, ids)) == {"red_green", "green"}
    res = lib.search("red", k=10, since="2020-01-16", until="2021-03-03")
    assert set(_names(res, ids)) == {"green", "blue"}
    assert res.candidates == 2
    res = lib.search("dog", k=10, folder=root / "c", since="2022-02-03")
    assert _names(res, ids) == ["dog2", "dog3"]
    with pytest.raises(QueryError, match="invalid date"):
        lib.search("red", since="last tuesday")


def test_threshold_and_adaptive(known):
    lib, ids, _ = known
    res = lib.search("red", k=10, threshold=0.6)
    assert set(_names(res, ids)) == {"red", "red_green", "red_blue"} and res.cutoff == "threshold"
    assert all(h.score >= 0.6 for h in res.hits)
    assert lib.search("red", k=10, threshold=1.01).hits == []
    # Three dog photos stand out from the library: adaptive keeps exactly those.
    res = lib.search("dog", k=20, adaptive=True)
    assert sorted(_names(res, ids)) == ["dog1", "dog2", "dog3"] and res.cutoff == "adaptive"
    plain = lib.search("dog", k=20)
    assert len(plain.hits) == 20 and plain.cutoff == "top_k"
    # Scores are sorted, descending, and are cosines.
    scores = [h.score for h in plain.hits]
    assert scores == sorted(scores, reverse=True) and -1.0 <= min(scores) <= max(scores) <= 1.0


def test_ui_terms_with_without_box(known):
    from indexer.search.parse import merge_terms

    lib, ids, _ = known
    res = lib.search(terms=merge_terms("red", "blue, green"), k=2)
    assert _names(res, ids)[0] == "red" and "red_blue" not in _names(res, ids)
    assert [t["weight"] for t in res.terms] == [1.0, -1.0, -1.0]
