"""Near-duplicate grouping: exact groups on constructed vectors; an end-to-end run on photos."""

from __future__ import annotations

import io
import shutil

import numpy as np
import pytest
from PIL import Image

from indexer.tags.duplicates import describe_groups, find_duplicate_groups, similar_pairs

D = 32


def random_unit(rng: np.random.Generator, n: int) -> np.ndarray:
    x = rng.standard_normal((n, D)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def near(v: np.ndarray, cos: float, rng: np.random.Generator) -> np.ndarray:
    """A unit vector with cosine exactly ``cos`` to unit vector ``v``."""
    r = rng.standard_normal(D)
    r -= (r @ v) * v
    r /= np.linalg.norm(r)
    return (cos * v + np.sqrt(1 - cos**2) * r).astype(np.float32)


def test_planted_duplicates_and_chains_are_found_exactly():
    rng = np.random.default_rng(0)
    base = random_unit(rng, 300)  # random 32-d vectors: pairwise cosines well below 0.8
    vecs = [base]
    ids = list(range(1000, 1300))
    planted = {}
    # pairs and a triple of near-copies
    for i, cos in [(5, 0.99), (17, 0.97), (42, 0.999)]:
        vecs.append(near(base[i], cos, rng)[None])
        ids.append(2000 + i)
        planted[i] = [1000 + i, 2000 + i]
    vecs.append(np.stack([near(base[100], 0.98, rng), near(base[100], 0.985, rng)]))
    ids += [2100, 2101]
    planted[100] = [1100, 2100, 2101]
    # a chain a~b~c where a and c alone are below the threshold: one group
    b = near(base[200], 0.96, rng)
    c = near(b, 0.96, rng)
    assert float(base[200] @ c) < 0.95
    vecs.append(np.stack([b, c]))
    ids += [2200, 2201]
    planted[200] = [1200, 2200, 2201]
    # just below the threshold: not a duplicate
    vecs.append(near(base[250], 0.94, rng)[None])
    ids.append(2250)
    x = np.concatenate(vecs)
    groups = find_duplicate_groups(ids, x, threshold=0.95)
    expected = sorted(planted.values(), key=lambda g: (-len(g), g[0]))
    assert groups == expected
    assert groups[0] == [1100, 2100, 2101] and groups[1] == [1200, 2200, 2201]
    # a stricter threshold keeps only the closest copies
    assert find_duplicate_groups(ids, x, threshold=0.99) == [[1005, 2005], [1042, 2042]]


def test_threshold_is_inclusive_and_exact_copies_group():
    v = np.array([[1, 0, 0], [0.95, np.sqrt(1 - 0.95**2), 0], [0, 0, 1], [0, 0, 1]], np.float32)
    assert find_duplicate_groups([1, 2, 3, 4], v, 0.95) == [[1, 2], [3, 4]]
    assert find_duplicate_groups([1, 2, 3, 4], v, 0.951) == [[3, 4]]
    pairs = similar_pairs(v, 0.95)
    assert sorted(map(tuple, pairs.tolist())) == [(0, 1), (2, 3)]


def test_edge_cases():
    assert find_duplicate_groups([], np.zeros((0, 4), np.float32)) == []
    assert find_duplicate_groups([7], np.ones((1, 4), np.float32)) == []
    with pytest.raises(ValueError, match="ids"):
        find_duplicate_groups([1, 2], np.ones((3, 4), np.float32))
    with pytest.raises(ValueError, match="threshold"):
        find_duplicate_groups([1, 2], np.ones((2, 4), np.float32), threshold=1.5)


def test_describe_groups_orders_best_copy_first():
    meta = {
        1: {"path": "a.jpg", "size": 1000, "width": 640, "height": 480},
        2: {"path": "a_small.jpg", "size": 300, "width": 320, "height": 240},
        3: {"path": "a_copy.jpg", "size": 1200, "width": 640, "height": 480},
    }
    (g,) = describe_groups([[1, 2, 3]], meta.get)
    assert [m.id for m in g.members] == [3, 1, 2]
    assert g.keep.path == "a_copy.jpg" and g.keep.pixels == 640 * 480
    assert g.to_dict()["keep"] == 3
    (g,) = describe_groups([[4, 5]], lambda i: None)  # unknown metadata: by id
    assert [m.id for m in g.members] == [4, 5] and g.members[0].size is None


def test_end_to_end_on_photos_with_resized_and_reencoded_copies(
    tmp_path, coco_images, tiny_checkpoint
):
    import clipmodel as clip

    originals = []
    for i, src in enumerate(coco_images[:6]):
        dest = tmp_path / f"orig{i}.jpg"
        shutil.copyfile(src, dest)
        originals.append(dest)
    copies = {}
    for i in (0, 3):
        im = Image.open(originals[i]).convert("RGB")
        small = im.resize((im.width // 2, im.height // 2), Image.Resampling.BICUBIC)
        buf = io.BytesIO()
        small.save(buf, "JPEG", quality=70)
        dest = tmp_path / f"copy{i}.jpg"
        dest.write_bytes(buf.getvalue())
        copies[i] = dest
    paths = originals + list(copies.values())
    model, preprocess = clip.load(tiny_checkpoint, device="cpu")
    vecs = clip.embed_images(model, paths, preprocess).numpy()
    ids = list(range(len(paths)))
    groups = find_duplicate_groups(ids, vecs, threshold=0.999)
    copy_ids = {i: len(originals) + k for k, i in enumerate(copies)}
    for orig, copy in copy_ids.items():
        assert any(orig in g and copy in g for g in groups), groups
    meta = {i: {"path": str(p), "size": p.stat().st_size} for i, p in enumerate(paths)}
    for i in ids:
        with Image.open(paths[i]) as im:
            meta[i].update(width=im.width, height=im.height)
    described = describe_groups(groups, meta.get)
    for g in described:
        assert not g.keep.path.startswith(str(tmp_path / "copy"))  # full-size original first


def test_library_duplicates_on_both_backends(tmp_path, sample_images, database):
    """Library.duplicates reads every stored vector from the store: byte-identical copies
    (equal HashEncoder vectors) group with their original, the larger file first."""
    from indexer.config import load_config
    from indexer.embed.encoder import HashEncoder
    from indexer.library import Library

    from .indexer_helpers import copy_images, write_config

    photos = copy_images(sample_images[:4], tmp_path / "photos")
    shutil.copyfile(photos[1], tmp_path / "photos" / "copy_of_1.jpg")
    cfg = load_config(write_config(tmp_path / "c.yaml", [tmp_path / "photos"], tmp_path / "idx",
                                   database=database))  # fmt: skip
    with Library.open(cfg, writer=True, encoder=HashEncoder()) as lib:
        lib.index(progress=False)
    with Library.open(cfg, encoder=HashEncoder()) as lib:
        groups = lib.duplicates(threshold=0.999)
    assert len(groups) == 1
    assert {m.path for m in groups[0].members} == {
        str(photos[1]),
        str(tmp_path / "photos" / "copy_of_1.jpg"),
    }


def test_approximate_pairs_find_the_exact_pairs_of_a_planted_set():
    """The inverted-file search (the path of large libraries) on a clustered set with planted
    near-duplicates, chains and near misses: the same pairs and groups as the exact search,
    from float32 and from float16 vectors."""
    from indexer.tags.pairs import approximate_pairs, exact_pairs

    rng = np.random.default_rng(3)
    centres = random_unit(rng, 40)
    x = np.stack([near(centres[i % 40], 0.7, rng) for i in range(4000)])
    for i in range(0, 4000, 37):  # planted copies at 0.95-0.995 of every 37th vector
        x[i + 1] = near(x[i], rng.uniform(0.95, 0.995), rng)
    x[3001] = near(x[3000], 0.94, rng)  # a near miss
    ids = np.arange(10, 4010)
    truth = exact_pairs(x, 0.95)
    assert len(truth) >= 100 and not ((truth == [3000, 3001]).all(1)).any()
    for vecs in (x, x.astype(np.float16)):
        got = approximate_pairs(vecs, 0.95, nlist=32, proj_dim=16)
        assert got.tolist() == exact_pairs(vecs, 0.95).tolist()
    assert find_duplicate_groups(ids, x, 0.95, exact=False) == find_duplicate_groups(
        ids, x, 0.95, exact=True
    )
    # the search is approximate: probing one list of many misses pairs across list borders
    assert len(approximate_pairs(x, 0.95, nlist=400, nprobe=1, proj_dim=4)) < len(truth)
