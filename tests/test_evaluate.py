"""Evaluation metrics on hand-computed cases; end-to-end eval on coco-mini with a random CLIP."""

from __future__ import annotations

import argparse
import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from indexer.config import config_from_dict
from indexer.tags import evaluate as ev

from .conftest import COCO, require


# --------------------------------------------------------------------------- metrics
def test_topk_accuracy_hand_computed():
    logits = np.array(
        [
            [0.1, 0.9, 0.3, 0.2],  # label 1: rank 0
            [0.5, 0.1, 0.4, 0.3],  # label 2: rank 1 (0.5 ahead)
            [0.9, 0.8, 0.7, 0.1],  # label 3: rank 3
            [0.4, 0.4, 0.2, 0.0],  # label 1: tie with class 0 (lower index first): rank 1
        ]
    )
    acc = ev.topk_accuracy(logits, [1, 2, 3, 1], ks=(1, 2, 3, 4, 5))
    assert acc == {1: 0.25, 2: 0.75, 3: 0.75, 4: 1.0, 5: 1.0}
    assert ev.topk_accuracy(logits[:1], [0], ks=(1,)) == {1: 0.0}
    with pytest.raises(ValueError):
        ev.topk_accuracy(logits, [0, 1])


def test_retrieval_recall_hand_computed():
    # images along axes; captions with known similarities
    img = np.eye(3, dtype=np.float32)
    txt = np.array(
        [
            [0.9, 0.1, 0.0],  # caption 0 of image 0: image 0 ranks first
            [0.2, 0.3, 0.5],  # caption 1 of image 0: image 0 ranks third
            [0.6, 0.5, 0.1],  # caption 2 of image 1: image 1 ranks second
            [0.0, 0.2, 0.8],  # caption 3 of image 2: first
        ],
        dtype=np.float32,
    )
    t2i = [0, 0, 1, 2]
    r = ev.retrieval_recall(img, txt, t2i, ks=(1, 2, 3))
    assert r["t2i"] == {1: 0.5, 2: 0.75, 3: 1.0}
    # i2t, image 0: captions' scores 0.9, 0.2, 0.6, 0.0 -> its best caption (0) is first.
    # image 1: scores 0.1, 0.3, 0.5, 0.2 -> caption 2 is first.
    # image 2: scores 0.0, 0.5, 0.1, 0.8 -> caption 3 first.
    assert r["i2t"] == {1: 1.0, 2: 1.0, 3: 1.0}
    # make image 1's caption lose to two others: i2t R@1 = 2/3, R@3 = 1
    txt2 = txt.copy()
    txt2[2] = [0.6, 0.1, 0.1]
    txt2[1] = [0.2, 0.3, 0.5]
    txt2[3] = [0.0, 0.2, 0.8]
    r = ev.retrieval_recall(img, txt2, t2i, ks=(1, 2, 3))
    # image 1 column: 0.1, 0.3, 0.1, 0.2 -> caption 2 has two higher (0.3, 0.2): rank 2
    assert r["i2t"] == {1: pytest.approx(2 / 3), 2: pytest.approx(2 / 3), 3: 1.0}
    # an image without captions stays a t2i candidate but is not an i2t query
    img4 = np.vstack([img, [[0.0, 0.0, 1.0]]]).astype(np.float32)
    r = ev.retrieval_recall(img4, txt, t2i, ks=(1,))
    assert r["i2t"] == {1: 1.0}
    assert r["t2i"] == {1: 0.5}  # image 3 ties caption 3's true image: ties favour the match
    with pytest.raises(ValueError):
        ev.retrieval_recall(img, txt, [0, 0, 1, 3])


def test_retrieval_recall_matches_brute_force_on_random_data():
    rng = np.random.default_rng(0)
    img = rng.standard_normal((30, 8)).astype(np.float32)
    txt = rng.standard_normal((70, 8)).astype(np.float32)
    t2i = rng.integers(0, 30, 70)
    r = ev.retrieval_recall(img, txt, t2i, ks=(1, 5, 10))
    sims = txt @ img.T
    order = np.argsort(-sims, axis=1)
    pos = np.array([np.where(order[t] == t2i[t])[0][0] for t in range(70)])
    for k in (1, 5, 10):
        assert r["t2i"][k] == pytest.approx((pos < k).mean())
    order_i = np.argsort(-sims.T, axis=1)
    best = []
    for i in sorted(set(t2i.tolist())):
        mine = set(np.where(t2i == i)[0].tolist())
        best.append(min(j for j, t in enumerate(order_i[i]) if t in mine))
    for k in (1, 5, 10):
        assert r["i2t"][k] == pytest.approx((np.array(best) < k).mean())


def test_format_table_and_json(tmp_path):
    results = [
        {"task": "zeroshot", "images": 10, "classes": 3, "top1": 0.5, "top5": 1.0},
        {"task": "retrieval", "images": 4, "captions": 20, "t2i_R@1": 0.25, "i2t_R@1": math.nan},
    ]
    table = ev.format_table(results)
    assert "top1" in table and "50.00%" in table and "t2i_R@1" in table and "25.00%" in table
    assert len(table.splitlines()) == 2 + 4
    out = tmp_path / "r.json"
    ev.write_json(results, out, model="m")
    doc = json.loads(out.read_text())
    assert doc["model"] == "m" and doc["results"][1]["i2t_R@1"] is None


# --------------------------------------------------------------------------- datasets
def build_imagefolder(root: Path, n_classes: int = 4) -> dict[str, int]:
    """ImageFolder from coco-mini instances: each image's class = its largest annotation's."""
    counts: Counter = Counter()
    chosen: list[tuple[Path, str]] = []
    for split in ("val2017", "train2017"):
        data = json.loads(require(COCO / "annotations" / f"instances_{split}.json").read_text())
        cats = {c["id"]: c["name"].replace(" ", "_") for c in data["categories"]}
        files = {im["id"]: im["file_name"] for im in data["images"]}
        largest: dict[int, tuple[float, int]] = {}
        for a in data["annotations"]:
            if a["area"] > largest.get(a["image_id"], (-1.0, 0))[0]:
                largest[a["image_id"]] = (a["area"], a["category_id"])
        for image_id, (_, cat) in largest.items():
            path = COCO / split / files[image_id]
            if path.exists():
                chosen.append((path, cats[cat]))
                counts[cats[cat]] += 1
    keep = [name for name, _ in counts.most_common(n_classes)]
    for path, name in chosen:
        if name in keep:
            (root / name).mkdir(parents=True, exist_ok=True)
            (root / name / path.name).symlink_to(path)
    return {name: counts[name] for name in keep}


def test_read_imagefolder_and_subset(tmp_path):
    counts = build_imagefolder(tmp_path / "folder")
    ds = ev.read_imagefolder(tmp_path / "folder")
    assert ds.classes == sorted(counts)
    assert Counter(ds.classes[i] for i in ds.labels) == counts
    sub = ds.subset(10)
    assert len(sub.paths) == 10 and sub.classes == ds.classes
    assert len(set(sub.labels)) == len(ds.classes)  # spread over the sorted list
    with pytest.raises(ev.DatasetError):
        ev.read_imagefolder(tmp_path / "nope")


def test_read_coco_captions(tmp_path):
    captions = require(COCO / "annotations" / "captions_val2017.json")
    ds = ev.read_coco_captions(captions, COCO / "val2017")
    assert len(ds.image_paths) == 79 and len(ds.captions) == 395 and ds.missing_images == 0
    assert Counter(ds.text_to_image) == {i: 5 for i in range(79)}
    assert all(p.exists() for p in ds.image_paths)
    sub = ds.subset(3)
    assert len(sub.image_paths) == 3 and sorted(set(sub.text_to_image)) == [0, 1, 2]
    # images that are not on disk are counted and left out
    for p in ds.image_paths[:3]:
        (tmp_path / p.name).symlink_to(p)
    partial = ev.read_coco_captions(captions, tmp_path)
    assert partial.missing_images == 76 and len(partial.image_paths) == 3
    assert len(partial.captions) == 15 and sorted(set(partial.text_to_image)) == [0, 1, 2]
    with pytest.raises(ev.DatasetError, match="no captioned images"):
        ev.read_coco_captions(captions, COCO / "train2017")
    bad = tmp_path / "bad.json"
    bad.write_text('{"images": []}')
    with pytest.raises(ev.DatasetError, match="not a COCO captions file"):
        ev.read_coco_captions(bad, COCO / "val2017")


# --------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def tiny_model(tiny_checkpoint):
    import clipmodel as clip

    return clip.load(tiny_checkpoint, device="cpu")


def test_retrieval_end_to_end_on_coco_captions(tiny_model):
    import clipmodel as clip

    model, preprocess = tiny_model
    ds = ev.read_coco_captions(
        require(COCO / "annotations" / "captions_val2017.json"), COCO / "val2017"
    )
    res = ev.run_retrieval(model, preprocess, ds, batch_size=16)
    assert res["images"] == 79 and res["captions"] == 395
    for d in ("t2i", "i2t"):
        r = [res[f"{d}_R@{k}"] for k in (1, 5, 10)]
        assert all(0.0 <= x <= 1.0 for x in r) and r == sorted(r)
    # on a subset, R@1 equals the fraction of argmax matches computed independently
    sub = ds.subset(20)
    small = ev.run_retrieval(model, preprocess, sub, batch_size=7)
    img = clip.embed_images(model, sub.image_paths, preprocess).numpy()
    txt = clip.embed_texts(model, sub.captions).numpy()
    sims, t2i = txt @ img.T, np.array(sub.text_to_image)
    assert small["t2i_R@1"] == pytest.approx((sims.argmax(axis=1) == t2i).mean())
    i2t_hits = [t2i[sims[:, i].argmax()] == i for i in range(20)]
    assert small["i2t_R@1"] == pytest.approx(np.mean(i2t_hits))


def test_zeroshot_end_to_end_matches_clip_classify(tmp_path, tiny_model):
    import clipmodel as clip

    model, preprocess = tiny_model
    build_imagefolder(tmp_path / "folder", n_classes=4)
    ds = ev.read_imagefolder(tmp_path / "folder").subset(24)
    res = ev.run_zeroshot(model, preprocess, ds, clip.DEFAULT_TEMPLATES, batch_size=8)
    assert res["images"] == 24 and res["classes"] == 4
    assert res["top5"] == 1.0  # 4 classes: the true one is always among the top 5
    probs = clip.classify(model, ds.paths, ds.prompt_names(), templates=clip.DEFAULT_TEMPLATES)
    expected = float((probs.argmax(axis=1) == np.array(ds.labels)).mean())
    assert res["top1"] == pytest.approx(expected)


def test_eval_command_writes_table_and_json(tmp_path, tiny_checkpoint, capsys):
    from indexer.cli import model as tag_commands

    build_imagefolder(tmp_path / "folder", n_classes=3)
    cfg = config_from_dict({"model": {"weights": str(tiny_checkpoint), "device": "cpu"}})
    parser = argparse.ArgumentParser()
    tag_commands.register(parser.add_subparsers(dest="command"))
    out = tmp_path / "eval.json"
    args = parser.parse_args(
        ["eval", "--imagefolder", str(tmp_path / "folder"), "--coco",
         str(COCO / "annotations" / "captions_val2017.json"), "--images", str(COCO / "val2017"),
         "--templates", "default", "--limit", "12", "--batch-size", "6", "--json-out", str(out)]
    )  # fmt: skip
    assert args.handler(args, cfg) == 0
    table = capsys.readouterr().out
    assert "zeroshot" in table and "retrieval" in table and "t2i_R@10" in table
    doc = json.loads(out.read_text())
    zs, rt = doc["results"]
    assert zs["images"] == 12 and zs["classes"] == 3 and rt["images"] == 12
    assert rt["captions"] == 60 and rt["t2i_R@10"] >= rt["t2i_R@1"]


def test_classify_command_prints_probabilities(tmp_path, tiny_checkpoint, capsys, coco_images):
    from indexer.cli import model as tag_commands

    cfg = config_from_dict({"model": {"weights": str(tiny_checkpoint), "device": "cpu"}})
    parser = argparse.ArgumentParser()
    tag_commands.register(parser.add_subparsers(dest="command"))
    images = [str(p) for p in coco_images[:2]]
    args = parser.parse_args(["classify", *images, "--labels", "a dog, a cat,a bird", "--json"])
    assert args.handler(args, cfg) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [d["path"] for d in doc] == images
    for d in doc:
        assert list(d["probabilities"]) == ["a dog", "a cat", "a bird"]
        assert sum(d["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    args = parser.parse_args(["classify", images[0], "--labels", "a dog,a cat"])
    assert args.handler(args, cfg) == 0
    assert "%" in capsys.readouterr().out
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    args = parser.parse_args(["classify", str(bad), "--labels", "a dog,a cat"])
    with pytest.raises(tag_commands.UserError, match="bad.jpg"):
        args.handler(args, cfg)
    args = parser.parse_args(["classify", images[0], "--labels", "a dog"])
    with pytest.raises(tag_commands.UserError, match="two"):
        args.handler(args, cfg)
