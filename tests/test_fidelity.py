"""Issue 13: stress checkpoints with real-weight statistics, the faithful int8 path, and the
self-check with its fallback chain (clipmodel.fidelity, clipmodel.fastpath).

Small random models run in the default suite (their outliers are real: see
test_stress_outliers_are_real); full-size ViT-B/32 checks are marked slow.
"""

from __future__ import annotations

import json
import logging
import time

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import clipmodel
import clipmodel as clip
import clipmodel.fastpath as fp
import clipmodel.fidelity as fid
import clipmodel.onnx_export as ox
from clipmodel.build import build_model

from .checkpoints import reference_model
from .stress_checkpoints import (
    activation_ratio,
    stress_cases,
    stress_state_dict,
    write_stress_checkpoint,
)

pytestmark = pytest.mark.skipif(not ox.onnxruntime_available(), reason="needs clipsearch[onnx]")
LOGGER = "clipmodel.fidelity"


def _inputs(arch: str, paths, captions):
    model = build_model(reference_model(arch).state_dict())
    pre = clip.Preprocess(model.image_resolution)
    images = torch.stack([pre(Image.open(p)) for p in paths])
    return images, clip.tokenize(captions, truncate=True)


@pytest.fixture(scope="module")
def stress_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("stress")


@pytest.fixture(scope="module")
def tiny_cache(tmp_path_factory, tiny_checkpoint):
    """A model cache holding the tiny checkpoint's int8 export and its self-check."""
    cache = tmp_path_factory.mktemp("tiny-cache")
    clip.load(tiny_checkpoint, backend="onnxruntime", download_root=cache)
    return cache


def _ckpt(stress_dir, arch, kind, s):
    path = stress_dir / f"{arch}-{kind}-{s}.pt"
    if not path.exists():
        write_stress_checkpoint(path, arch, kind, s)
    return path


# -- the stress checkpoints ----------------------------------------------------------------------


@pytest.mark.parametrize("arch", ["tiny-vit", "tiny-rn"])
def test_stress_outliers_are_real(arch, sample_images, coco_captions):
    images, tokens = _inputs(arch, sample_images[:8], coco_captions[:16])
    plain_sd = reference_model(arch).state_dict()
    plain = build_model(plain_sd).eval()
    base = activation_ratio(plain, images, tokens)
    with torch.no_grad():
        plain_out = plain.encode_image(images), plain.encode_text(tokens)
    for kind, s in stress_cases(arch):
        if s != 100:
            continue
        sd = stress_state_dict(plain_sd, kind, s)
        model = build_model(sd).eval()
        ratio = activation_ratio(model, images, tokens)
        with torch.no_grad():
            out = model.encode_image(images), model.encode_text(tokens)
        for emb in out:  # well-behaved: finite, and not one constant vector
            assert emb.isfinite().all(), kind
            e = F.normalize(emb, dim=-1)
            assert (e @ e.T).min() < 1 - 1e-5, kind
        if kind == "ln":  # outliers in the LayerNorm outputs, the function unchanged
            assert ratio["qkv"] > 30 * base["qkv"] and ratio["fc"] > 30 * base["fc"], ratio
            for a, b in zip(out, plain_out):
                assert torch.allclose(a, b, rtol=1e-3, atol=1e-4 * b.abs().max())
        elif kind == "massive":  # a few residual channels ~s x the rest, persisting
            assert ratio["residual"] > 30 * base["residual"], ratio
        elif kind == "columns":  # input channels with s x larger weights
            prefix = "visual.transformer." if arch == "tiny-vit" else "transformer."
            w = sd[prefix + "resblocks.0.mlp.c_fc.weight"].abs().amax(0)
            assert w.max() > 30 * w.median()
        elif kind == "bn":
            w = sd["visual.layer1.0.bn2.weight"].abs()
            assert w.max() > 30 * w.median()
            for a, b in zip(out, plain_out):  # exact across the ReLU
                assert torch.allclose(a, b, rtol=1e-3, atol=1e-4 * b.abs().max())
        elif kind == "pool":
            assert ratio["pool"] > 10 * base["pool"], ratio


def test_stress_kinds_validated():
    sd = reference_model("tiny-vit").state_dict()
    with pytest.raises(ValueError, match="needs a ResNet"):
        stress_state_dict(sd, "bn", 10)
    with pytest.raises(ValueError, match="kind must be one of"):
        stress_state_dict(sd, "nope", 10)
    same = stress_state_dict(sd, "ln", 1)
    assert all(torch.equal(same[k], v) for k, v in sd.items())


# -- measure and the report ----------------------------------------------------------------------


def test_measure():
    a = torch.randn(5, 8)
    assert fid.measure(a, a * 3).min == pytest.approx(1.0)
    assert fid.measure(a, -a).mean == pytest.approx(-1.0)
    assert not fid.measure(a, torch.randn(5, 8)).passed
    with pytest.raises(ValueError):
        fid.measure(a, a[:4])
    assert len(fid.calibration_files()) >= 30 and len(fid.calibration_prompts()) >= 50
    assert (fid.CALIBRATION_DIR / "LICENSES.md").is_file()


# -- the chosen path, faithful on every kind -----------------------------------------------------


# the text-tower kinds once (on the ViT checkpoint: the ResNet's text tower is the same)
CASES = [("tiny-vit", k, 100) for k in ("ln", "massive", "columns")] + [
    ("tiny-rn", k, 100) for k in ("bn", "pool")
]


@pytest.mark.parametrize(("arch", "kind", "s"), CASES)
def test_default_path_is_faithful_on_stress(arch, kind, s, stress_dir, tmp_path, coco_images,
                                            coco_captions):  # fmt: skip
    ckpt = _ckpt(stress_dir, arch, kind, s)
    model, pre = clip.load(ckpt, device="cpu", backend="onnxruntime", download_root=tmp_path)
    assert model.fidelity.faithful and model.fast_path == model.fidelity.path
    assert model.fast_path.startswith("onnxruntime int8")  # int8 stays where it is faithful
    exact, _ = clip.load(ckpt, device="cpu", precision="fp32")
    x = torch.stack([pre(Image.open(p)) for p in coco_images[:48]])
    tokens = clip.tokenize(coco_captions[:64], truncate=True)
    with torch.inference_mode():
        img = fid.measure(model.encode_image(x), exact.encode_image(x))
        txt = fid.measure(model.encode_text(tokens), exact.encode_text(tokens))
    assert img.passed and txt.passed, (img, txt)


def test_plain_int8_is_refused_on_stress(stress_dir, tmp_path, caplog):
    """Negative control: the per-tensor int8 of before fails the check on strong outliers."""
    ckpt = _ckpt(stress_dir, "tiny-vit", "ln", 100)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        model, _ = clip.load(ckpt, backend="onnxruntime", precision="int8-dynamic",
                             download_root=tmp_path)  # fmt: skip
    report = model.fidelity
    assert report.path == "onnxruntime int8-dynamic" and not report.faithful  # run as asked
    assert not report.check.passed and report.check.texts.mean < 0.99
    (line,) = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert "below the bars" in line and "running it as requested" in line


def test_refused_path_falls_back_with_one_log_line(stress_dir, tmp_path, caplog, monkeypatch):
    ckpt = _ckpt(stress_dir, "tiny-vit", "columns", 100)
    real = fp.build

    def smooth_int8_fails(model, path, *args, **kwargs):  # int8 built without smoothing
        if path == "onnxruntime int8":
            path = "onnxruntime int8-dynamic"
        runner = real(model, path, *args, **kwargs)
        return runner

    monkeypatch.setattr(fp, "build", smooth_int8_fails)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        model, _ = clip.load(ckpt, backend="onnxruntime", download_root=tmp_path)
    report = model.fidelity
    assert report.refused == ["onnxruntime int8"]
    assert report.path == model.fast_path == "onnxruntime int8-mild" and report.faithful
    lines = [r for r in caplog.records if r.name == LOGGER]
    assert len(lines) == 1 and lines[0].levelno == logging.WARNING
    msg = lines[0].getMessage()
    bad = report.checks[0]
    assert msg.startswith(f"refused onnxruntime int8 (images mean {bad.images.mean:.5f} min ")
    assert f"texts mean {bad.texts.mean:.5f}" in msg and "running onnxruntime int8-mild (" in msg
    d = json.loads(report.to_json())  # what status --json shows
    assert d["path"] == "onnxruntime int8-mild" and d["refused"] == ["onnxruntime int8"]
    assert d["images"]["mean"] >= fid.MEAN_BAR and d["faithful"] is True


@pytest.mark.slow  # test_refused_path_falls_back_with_one_log_line covers the refusal by default
def test_everything_refused_runs_exact(tiny_checkpoint, tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(fid, "MEAN_BAR", 1.5)  # nothing can pass
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        model, _ = clip.load(tiny_checkpoint, backend="onnxruntime", download_root=tmp_path)
    assert isinstance(model, clipmodel.CLIP) and model.dtype == torch.float32
    assert model.fast_path == "torch fp32" and model.fidelity.faithful
    assert model.fidelity.refused[:2] == ["onnxruntime int8", "onnxruntime int8-mild"]
    (line,) = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert line.count("refused ") == len(model.fidelity.refused)
    assert line.endswith("running torch fp32 (exact)")


@pytest.mark.slow  # two full measurements: kept out of the 15-minute default run
def test_check_cached_and_recomputed(tiny_checkpoint, tmp_path, monkeypatch):
    model, _ = clip.load(tiny_checkpoint, backend="onnxruntime", download_root=tmp_path)
    first = model.fidelity.check
    assert not first.cached and first.seconds > 0
    files = sorted((tmp_path / "onnx").glob("*-fidelity.json"))
    assert len(files) == 1 and json.loads(files[0].read_text())["path"] == "onnxruntime int8"

    def boom(*args, **kwargs):
        raise AssertionError("measured again")

    with monkeypatch.context() as m:  # a later start: no measuring, no export
        m.setattr(fp, "embed_calibration", boom)
        m.setattr(ox, "_export_graphs", boom)
        again, _ = clip.load(tiny_checkpoint, backend="onnxruntime", download_root=tmp_path)
    assert again.fidelity.check.cached and again.fidelity.check.images == first.images

    # another version of the code uses the cached export: measured again, not re-exported
    with monkeypatch.context() as m:
        m.setattr(clipmodel, "__version__", "9.9.9")
        m.setattr(ox, "_export_graphs", boom)
        newer, _ = clip.load(tiny_checkpoint, backend="onnxruntime", download_root=tmp_path)
    assert not newer.fidelity.check.cached and "9.9.9" in newer.fidelity.check.version

    # a new EXPORT_VERSION: a new export, measured again
    calls = []
    real = ox._export_graphs
    monkeypatch.setattr(ox, "EXPORT_VERSION", ox.EXPORT_VERSION + 100)
    monkeypatch.setattr(ox, "_export_graphs", lambda *a, **k: calls.append(1) or real(*a, **k))
    bumped, _ = clip.load(tiny_checkpoint, backend="onnxruntime", download_root=tmp_path)
    assert calls == [1] and not bumped.fidelity.check.cached
    assert len(list((tmp_path / "onnx").glob("*-fidelity.json"))) == 2


def test_selfcheck_off_and_explicit_torch(tiny_checkpoint, tiny_cache):
    model, _ = clip.load(tiny_checkpoint, backend="onnxruntime", download_root=tiny_cache,
                         selfcheck=False)  # fmt: skip
    assert model.fast_path == "onnxruntime int8" and model.fidelity.check is None
    plain, _ = clip.load(tiny_checkpoint, device="cpu")  # the official API: torch, unchecked
    assert not hasattr(plain, "fidelity")


def test_auto_backend(tiny_checkpoint, tiny_cache, monkeypatch):
    import clipmodel.api as api

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(api, "cpu_has_int8_dot", lambda: True)
    model, _ = clip.load(tiny_checkpoint, backend="auto", download_root=tiny_cache)
    assert model.fast_path == "onnxruntime int8" and model.fidelity.check.cached
    monkeypatch.setattr(api, "cpu_has_int8_dot", lambda: False)
    monkeypatch.setattr(api, "cpu_has_native_bf16", lambda: True)
    assert fp.auto_chain() == ["torch bf16", "torch fp32"]
    model, _ = clip.load(tiny_checkpoint, backend="auto", download_root=tiny_cache)
    assert model.fast_path == "torch bf16" and model.dtype == torch.bfloat16
    assert model.fidelity.check.passed
    monkeypatch.setattr(api, "cpu_has_native_bf16", lambda: False)
    model, _ = clip.load(tiny_checkpoint, backend="auto", download_root=tiny_cache)
    assert model.fast_path == "torch fp32"


def test_measure_paths_for_doctor(tiny_checkpoint, tiny_cache, sample_images):
    exact, pre = clip.load(tiny_checkpoint, device="cpu", precision="fp32")
    checks = fp.measure_paths(exact, tiny_cache, paths=["onnxruntime int8", "onnxruntime fp32",
                                                       "torch fp32"])  # fmt: skip
    assert [c.path for c in checks] == ["onnxruntime int8", "onnxruntime fp32", "torch fp32"]
    assert checks[1].images.min > 0.99999 and checks[0].passed
    own = torch.stack([pre(Image.open(p)) for p in sample_images[:4]])
    mine = fp.measure_paths(exact, tiny_cache, paths=["onnxruntime int8"], images=own,
                            prompts=["a dog", "a cat"])  # fmt: skip
    assert mine[0].images.n == 4 and mine[0].texts.n == 2
    assert fp.all_paths()[-1] == "torch fp32"


@pytest.mark.slow
def test_selfcheck_cost_full_size(tmp_path):
    """Full-size ViT-B/32: the self-check at first export costs <= 15 s, nothing later."""
    ckpt = write_stress_checkpoint(tmp_path / "vit.pt", "ViT-B/32", "ln", 1)
    model, _ = clip.load(ckpt, backend="onnxruntime", download_root=tmp_path, threads=2)
    assert model.fidelity.faithful and model.fidelity.check.seconds <= 15
    start = time.perf_counter()
    again, _ = clip.load(ckpt, backend="onnxruntime", download_root=tmp_path, threads=2)
    assert again.fidelity.check.cached and time.perf_counter() - start < 30


def _texts_fail(monkeypatch, paths):
    """Make the self-check of ``paths`` report failing texts (their images still pass)."""
    real = fp.check

    def check(model, path, runner, *args, **kwargs):
        result = real(model, path, runner, *args, **kwargs)
        if path in paths:
            result = fid.PathCheck(path, result.images, fid.Fidelity(0.95, 0.9, 50))
        return result

    monkeypatch.setattr(fp, "check", check)


def test_towers_judged_apart(tiny_checkpoint, tiny_cache, monkeypatch, caplog):
    """int8 images stay when only the int8 texts fail: the texts go to the next path."""
    tokens = clip.tokenize(["a dog", "kids flying a red kite on the beach"])
    exact, _ = clip.load(tiny_checkpoint, device="cpu", precision="fp32")
    with monkeypatch.context() as m, caplog.at_level(logging.WARNING, logger=LOGGER):
        _texts_fail(m, {"onnxruntime int8"})
        model, _ = clip.load(tiny_checkpoint, backend="onnxruntime", download_root=tiny_cache)
    report = model.fidelity
    assert report.image_path == "onnxruntime int8" and report.text_path == "onnxruntime int8-mild"
    assert model.fast_path == "onnxruntime int8 (texts: onnxruntime int8-mild)"
    assert report.refused == ["onnxruntime int8 (texts)"] and report.faithful
    assert model.pixel_input and model.paths[1] != model.paths[0]
    (line,) = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert line.startswith(
        "refused onnxruntime int8 for the texts (texts mean 0.95000 min 0.90000;"
    )

    caplog.clear()
    with monkeypatch.context() as m, caplog.at_level(logging.WARNING, logger=LOGGER):
        _texts_fail(m, {"onnxruntime int8", "onnxruntime int8-mild", "torch bf16"})
        model, _ = clip.load(tiny_checkpoint, backend="onnxruntime", download_root=tiny_cache)
    report = model.fidelity
    assert report.image_path == "onnxruntime int8" and report.text_path == "torch fp32"
    assert model.fast_path == "onnxruntime int8 (texts: torch fp32)" and report.faithful
    with torch.inference_mode():
        assert torch.allclose(model.encode_text(tokens), exact.encode_text(tokens))
    assert len([r for r in caplog.records if r.name == LOGGER]) == 1
    assert json.loads(report.to_json())["text_path"] == "torch fp32"
