"""Issue 13 in the indexer: the self-checked paths reach `index`, `status`, `doctor` and the
image pipeline's own check (JPEG draft decoding, fast resize)."""

from __future__ import annotations

import logging

import pytest

import clipmodel.onnx_export as ox
from indexer.config import load_config
from indexer.embed.encoder import ClipEncoder
from indexer.ingest import fastpaths

from .indexer_helpers import copy_images, run_cli, run_json, write_config
from .stress_checkpoints import write_stress_checkpoint

pytestmark = pytest.mark.skipif(not ox.onnxruntime_available(), reason="needs clipsearch[onnx]")
REFUSAL = "refused onnxruntime int8 ("


@pytest.fixture(scope="module")
def pool_checkpoint(tmp_path_factory):
    """A ResNet whose attention pool carries x100 outliers: plain int8 fails its check there."""
    d = tmp_path_factory.mktemp("stress-rn")
    return write_stress_checkpoint(d / "tiny-rn-pool-100.pt", "tiny-rn", "pool", 100)


@pytest.fixture(scope="module")
def pool_cache(tmp_path_factory):
    """One model cache for the module: its ONNX exports are made once."""
    return tmp_path_factory.mktemp("pool-cache")


def test_refused_path_falls_back_and_status_reports_it(pool_checkpoint, pool_cache, coco_images,
                                                       tmp_path):  # fmt: skip
    photos = copy_images(coco_images[:12], tmp_path / "photos")
    cache = pool_cache
    config = write_config(tmp_path / "c.yaml", [photos[0].parent], tmp_path / "index",
                          pool_checkpoint, model={"cache_dir": str(cache)})  # fmt: skip
    first = run_cli(["index", "--no-progress"], config)
    assert first.returncode == 0, first.stderr
    lines = [ln for ln in first.stderr.splitlines() if "refused" in ln]
    assert len(lines) == 1 and lines[0].startswith(REFUSAL), first.stderr
    assert "running onnxruntime int8-mild (images mean" in lines[0]
    doc = run_json(["status"], config)["fast_paths"]
    assert doc["runtime"] == "onnxruntime int8-mild on cpu"
    model = doc["model"]
    assert model["path"] == "onnxruntime int8-mild" and model["refused"] == ["onnxruntime int8"]
    assert model["faithful"] and model["images"]["min"] >= 0.99
    refused = next(c for c in model["checks"] if c["path"] == "onnxruntime int8")
    assert refused["images"]["mean"] < 0.999  # the numbers of the refusal are kept
    assert doc["image_pipeline"]["passed"] and doc["image_pipeline"]["n"] >= 30
    text = run_cli(["status"], config).stdout
    assert "runs:     onnxruntime int8-mild (images mean" in text
    assert "refused: onnxruntime int8" in text

    checks = sorted(cache.rglob("*fidelity.json")) + sorted(cache.rglob("pipeline-*.json"))
    stamps = {p: p.stat().st_mtime_ns for p in checks}
    assert len(checks) >= 3  # int8, int8-mild and the image pipeline
    copy_images(coco_images[12:14], tmp_path / "photos")
    second = run_cli(["index", "--no-progress"], config)  # a later start: nothing measured
    assert second.returncode == 0, second.stderr
    again = [ln for ln in second.stderr.splitlines() if "refused" in ln]
    assert again == lines  # told again at each start, from the cached measurement
    assert {p: p.stat().st_mtime_ns for p in checks} == stamps
    assert run_json(["status"], config)["fast_paths"]["model"]["path"] == "onnxruntime int8-mild"


def test_image_pipeline_refused_falls_back(tiny_checkpoint, tmp_path, caplog, monkeypatch):
    config = write_config(tmp_path / "c.yaml", [tmp_path], tmp_path / "index", tiny_checkpoint,
                          model={"cache_dir": str(tmp_path / "cache")})  # fmt: skip
    cfg = load_config(config)
    enc = ClipEncoder.from_config(cfg)
    check = fastpaths.check_pipeline(enc, cfg)
    assert check.passed and check.n >= 30 and check.images_min > 0.99
    assert fastpaths.apply_check(enc, check) is True and enc.fast_resize is True

    monkeypatch.setattr(fastpaths, "measure_pipeline", _fail)  # cached: not measured again
    assert fastpaths.check_pipeline(enc, cfg) == check
    monkeypatch.undo()

    with caplog.at_level(logging.WARNING, logger="clipmodel.fidelity"):
        strict = fastpaths.check_pipeline(enc, cfg, bars=(1.01, 1.01))  # bars no path meets
    assert not strict.passed and strict.runs() == {"jpeg_draft": False, "fast_resize": False}
    (line,) = [r.getMessage() for r in caplog.records if r.name == "clipmodel.fidelity"]
    assert line.startswith("refused JPEG draft decoding + fast resize (images mean ")
    assert line.endswith("running the exact image pipeline")
    assert fastpaths.apply_check(enc, strict) is False and enc.fast_resize is False
    lines = fastpaths.fast_path_lines(fastpaths.fast_paths_doc(enc, strict))
    assert lines[1][0] == "decoding" and "refused, exact pipeline runs" in lines[1][1]


def _fail(*args, **kwargs):
    raise AssertionError("measured again")


@pytest.mark.slow  # a soak / diagnostic run: kept out of the 15-minute default run
def test_doctor_measures_every_path(pool_checkpoint, pool_cache, coco_images, tmp_path):
    photos = copy_images(coco_images[20:28], tmp_path / "photos")
    config = write_config(tmp_path / "c.yaml", [photos[0].parent], tmp_path / "index",
                          pool_checkpoint, model={"cache_dir": str(pool_cache)})  # fmt: skip
    doc = run_json(["doctor", "--photos", "8", "--prompt", "a dog", "--prompt", "a red car"],
                   config, timeout=300)  # fmt: skip
    assert doc["own_photos"] and doc["photos"] == 8 and doc["prompts"] == 2
    rows = {r["path"]: r for r in doc["rows"]}
    assert rows["torch fp32"]["images_mean"] is None  # the reference itself
    assert not rows["onnxruntime int8-dynamic"]["passed"]  # the old int8 fails on outliers
    assert not rows["onnxruntime int8"]["passed"] and rows["onnxruntime int8-mild"]["passed"]
    assert rows["onnxruntime fp32"]["images_min"] > 0.999
    for name in ("JPEG draft decoding", "fast resize", "JPEG draft + fast resize"):
        assert rows[name]["passed"] and rows[name]["texts_mean"] is None
    text = run_cli(["doctor", "--photos", "4"], config, timeout=300)
    assert text.returncode == 0, text.stderr
    assert "onnxruntime int8-mild" in text.stdout and "refused" in text.stdout
    assert set(doc["formats"]) == {"HEIF", "RAW"} and "\nformats: HEIF " in text.stdout
