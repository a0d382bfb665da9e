"""The seed recipe: the official way to embed a folder, as in the "semantic image search" snippet.

OpenAI's reference model (clip-anytorch's clip/model.py, ``build_model`` then ``.float()``) in
fp32; every image fully decoded and preprocessed, then encoded one at a time. torchvision
cannot be imported with CPU torch here, so preprocessing uses clipmodel's exact pipeline, which
equals the official torchvision one on PIL images (tests/test_preprocess.py).
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from PIL import Image

from clipmodel.preprocess import Preprocess


def reference_build_model():
    from tests.reference import reference_model_module

    return reference_model_module().build_model


@torch.no_grad()
def seed_recipe(weights: Path, paths: list[Path]) -> tuple[float, torch.Tensor]:
    """Embed ``paths`` the official way; returns (seconds, normalised features (N, D))."""
    state_dict = torch.load(weights, map_location="cpu", weights_only=True)
    model = reference_build_model()(state_dict).float().eval()
    preprocess = Preprocess(model.visual.input_resolution)
    start = time.perf_counter()
    features = []
    for path in paths:
        image = preprocess(Image.open(path)).unsqueeze(0)
        emb = model.encode_image(image)
        emb /= emb.norm(dim=-1, keepdim=True)
        features.append(emb)
    return time.perf_counter() - start, torch.cat(features)
