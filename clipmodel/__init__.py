"""clipmodel: our implementation of OpenAI CLIP inference, with the official ``clip`` API.

    import clipmodel as clip
    model, preprocess = clip.load("ViT-B/32")

Submodules import lazily, so ``import clipmodel`` stays cheap (torch loads on first use).
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "available_models": "download",
    "register_model": "download",
    "CheckpointUnavailableError": "download",
    "ChecksumMismatchError": "download",
    "load": "api",
    "CLIP": "model",
    "CLIPConfig": "model",
    "clip_loss": "model",
    "build_model": "build",
    "OPENAI_CONFIGS": "configs",
    "infer_config": "build",
    "CheckpointFormatError": "build",
    "tokenize": "tokenizer",
    "Tokenizer": "tokenizer",
    "Preprocess": "preprocess",
    "OnnxCLIP": "onnx_backend",
    "Fidelity": "fidelity",
    "FidelityReport": "fidelity",
    "onnxruntime_available": "onnx_backend",
    "transform": "preprocess",
    "embed_texts": "zeroshot",
    "embed_images": "zeroshot",
    "encode_text_long": "zeroshot",
    "zeroshot_classifier": "zeroshot",
    "classify": "zeroshot",
    "similarity": "zeroshot",
    "IMAGENET_TEMPLATES": "templates",
    "DEFAULT_TEMPLATES": "templates",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'clipmodel' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
