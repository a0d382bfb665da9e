"""The official quick-start style snippets run unchanged (``import clip``) against clipmodel.

``clip.load("ViT-B/32")`` resolves through the real cache/verification path: the cache holds a
random full-size ViT-B/32 checkpoint registered under that name with its own SHA256.
"""

from __future__ import annotations

import shutil
import textwrap

import numpy as np
import pytest

import clipmodel
from clipmodel import download as dl

from .checkpoints import write_random_checkpoint

QUICK_START = """
import torch
import clip
from PIL import Image

device = "cuda" if torch.cuda.is_available() else "cpu"
model, preprocess = clip.load("ViT-B/32", device=device)

image = preprocess(Image.open(IMAGE_PATH)).unsqueeze(0).to(device)
text = clip.tokenize(["a diagram", "a dog", "a cat"]).to(device)

with torch.no_grad():
    image_features = model.encode_image(image)
    text_features = model.encode_text(text)

    logits_per_image, logits_per_text = model(image, text)
    probs = logits_per_image.softmax(dim=-1).cpu().numpy()

print("Label probs:", probs)
"""

SIMILARITY = """
import torch
import clip
from PIL import Image

model, preprocess = clip.load("ViT-B/32")
image_input = preprocess(Image.open(IMAGE_PATH)).unsqueeze(0)
classes = ["apple", "bee", "camera", "dog", "rocket", "horse"]
text_inputs = torch.cat([clip.tokenize(f"a photo of a {c}") for c in classes])

with torch.no_grad():
    image_features = model.encode_image(image_input)
    text_features = model.encode_text(text_inputs)

image_features /= image_features.norm(dim=-1, keepdim=True)
text_features /= text_features.norm(dim=-1, keepdim=True)
similarity = (100.0 * image_features @ text_features.T).softmax(dim=-1)
values, indices = similarity[0].topk(5)
for value, index in zip(values, indices):
    print(f"{classes[index]:>16s}: {100 * value.item():.2f}%")
"""

BATCH_SEARCH = """
import torch
import clip
from PIL import Image

device = "cpu"
model, preprocess = clip.load("ViT-B/32", device=device)

features = []
with torch.no_grad():
    for i in range(0, len(IMAGE_PATHS), 4):
        batch = torch.stack([preprocess(Image.open(p)) for p in IMAGE_PATHS[i:i + 4]]).to(device)
        emb = model.encode_image(batch)
        features.append(emb / emb.norm(dim=-1, keepdim=True))
image_features = torch.cat(features)

with torch.no_grad():
    query = model.encode_text(clip.tokenize(["a rocket launch"]).to(device))
    query /= query.norm(dim=-1, keepdim=True)
scores = (image_features @ query.T).squeeze(1)
best = scores.topk(3)
results = [(IMAGE_PATHS[i], s.item()) for s, i in zip(best.values, best.indices)]
"""

MODERATION = """
import torch
import clip
from PIL import Image

model, preprocess = clip.load("ViT-B/32", device="cpu")
categories = ["safe for work", "violence", "nudity", "drugs", "hate symbols", "self-harm"]
text = clip.tokenize([f"a photo containing {c}" for c in categories])
flags = {}
for path in IMAGE_PATHS:
    image = preprocess(Image.open(path)).unsqueeze(0)
    with torch.no_grad():
        logits_per_image, _ = model(image, text)
        probs = logits_per_image.softmax(dim=-1)[0]
    flags[path] = {c: p.item() for c, p in zip(categories, probs)}
"""


@pytest.fixture(scope="module")
def vit_b32_in_cache(tmp_path_factory):
    cache = tmp_path_factory.mktemp("clip-cache")
    ckpt = write_random_checkpoint(tmp_path_factory.mktemp("w") / "vit.pt", "ViT-B/32", seed=11)
    shutil.copy(ckpt, cache / "ViT-B-32.pt")
    original = dl.MODELS["ViT-B/32"]
    dl.register_model("ViT-B/32", original.url, dl.sha256_file(ckpt))
    yield cache
    dl.MODELS["ViT-B/32"] = original


@pytest.fixture
def run_snippet(vit_b32_in_cache, monkeypatch, sample_images):
    monkeypatch.setenv("CLIPSEARCH_CACHE_DIR", str(vit_b32_in_cache))
    monkeypatch.setenv("CLIPSEARCH_OFFLINE", "1")  # proves nothing is fetched
    monkeypatch.setitem(__import__("sys").modules, "clip", clipmodel)

    def run(source: str) -> dict:
        scope = {
            "IMAGE_PATH": str(sample_images[0]),
            "IMAGE_PATHS": [str(p) for p in sample_images[:6]],
        }
        exec(compile(textwrap.dedent(source), "<snippet>", "exec"), scope)
        return scope

    return run


def test_quick_start(run_snippet, capsys):
    scope = run_snippet(QUICK_START)
    probs = scope["probs"]
    assert probs.shape == (1, 3)
    np.testing.assert_allclose(probs.sum(), 1.0, atol=1e-5)
    assert scope["logits_per_text"].shape == (3, 1)
    assert "Label probs:" in capsys.readouterr().out


def test_normalised_similarity(run_snippet, capsys):
    scope = run_snippet(SIMILARITY)
    assert len(scope["values"]) == 5
    assert abs(scope["image_features"].norm().item() - 1) < 1e-5
    assert capsys.readouterr().out.count("%") == 5


def test_batch_encoding_search(run_snippet):
    scope = run_snippet(BATCH_SEARCH)
    assert scope["image_features"].shape == (6, 512)
    scores = [s for _, s in scope["results"]]
    assert scores == sorted(scores, reverse=True) and len(scores) == 3


def test_content_moderation(run_snippet):
    scope = run_snippet(MODERATION)
    assert len(scope["flags"]) == 6
    for probs in scope["flags"].values():
        assert abs(sum(probs.values()) - 1) < 1e-4
