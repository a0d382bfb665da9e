"""OpenAI's reference code (clip-anytorch 2.6.0's clip/model.py and clip/simple_tokenizer.py),
loaded by file path: importing the ``clip`` package itself would import torchvision."""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from importlib import metadata
from pathlib import Path

import pytest


def _reference_file(name: str) -> Path:
    try:
        dist = metadata.distribution("clip-anytorch")
    except metadata.PackageNotFoundError:
        pytest.skip(
            "reference package clip-anytorch==2.6.0 is not installed (run the test command)"
        )
    path = Path(dist.locate_file(f"clip/{name}"))
    if not path.exists():
        pytest.skip(f"reference file {path} is missing")
    return path


def _load(name: str, module_name: str):
    spec = importlib.util.spec_from_file_location(module_name, _reference_file(name))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@lru_cache(maxsize=1)
def reference_model_module():
    """OpenAI's clip/model.py as a module (``CLIP``, ``build_model``, ...)."""
    return _load("model.py", "openai_clip_reference_model")


@lru_cache(maxsize=1)
def reference_tokenizer():
    """An instance of OpenAI's ``SimpleTokenizer`` over the vocabulary it ships with."""
    module = _load("simple_tokenizer.py", "openai_clip_reference_tokenizer")
    return module.SimpleTokenizer()
