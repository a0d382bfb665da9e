"""The official package's API surface: names, lazy import, zero-shot helpers."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

import clipmodel as clip

OFFICIAL = [
    "RN50",
    "RN101",
    "RN50x4",
    "RN50x16",
    "RN50x64",
    "ViT-B/32",
    "ViT-B/16",
    "ViT-L/14",
    "ViT-L/14@336px",
]


def test_available_models():
    assert clip.available_models()[:9] == OFFICIAL


def test_import_is_light():
    code = "import sys, clipmodel; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_named_model_offline_gives_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("CLIPSEARCH_OFFLINE", "1")
    with pytest.raises(clip.CheckpointUnavailableError) as err:
        clip.load("ViT-B/32", device="cpu", download_root=tmp_path)
    msg = str(err.value)
    assert str(tmp_path / "ViT-B-32.pt") in msg and "CLIPSEARCH_WEIGHTS" in msg


def test_templates():
    assert len(clip.IMAGENET_TEMPLATES) == 80 and len(set(clip.IMAGENET_TEMPLATES)) == 80
    assert all("{}" in t for t in clip.IMAGENET_TEMPLATES)


def test_zeroshot_helpers(tiny_checkpoint, sample_images):
    model, preprocess = clip.load(tiny_checkpoint, device="cpu")
    labels = ["a dog", "a cat", "a rocket"]
    probs = clip.classify(model, sample_images[:3], labels, preprocess=preprocess)
    assert isinstance(probs, np.ndarray) and probs.shape == (3, 3)
    np.testing.assert_allclose(probs.sum(axis=1), 1, atol=1e-5)

    weights = clip.zeroshot_classifier(model, ["dog", "cat"], clip.IMAGENET_TEMPLATES[:5])
    assert weights.shape == (model.embed_dim, 2)
    torch.testing.assert_close(weights.norm(dim=0), torch.ones(2))
    # A one-template ensemble is the normalised embedding of that prompt.
    single = clip.zeroshot_classifier(model, ["dog"], ["a photo of a {}."])
    direct = clip.embed_texts(model, ["a photo of a dog."])
    torch.testing.assert_close(single[:, 0], direct[0], atol=1e-5, rtol=0)

    img = clip.embed_images(model, sample_images[:2], preprocess)
    txt = clip.embed_texts(model, labels)
    sims = clip.similarity(img, txt, numpy=True)
    np.testing.assert_allclose(sims, (img @ txt.T).numpy(), atol=1e-5)
    assert clip.similarity(img.numpy(), txt.numpy()).shape == (2, 3)
    with pytest.raises(ValueError):
        clip.classify(model, sample_images[:1], [])
