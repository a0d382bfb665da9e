"""The official ``clip`` package's entry points: ``available_models`` and ``load``."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch

from .build import build_model, describe
from .checkpoints import read_checkpoint
from .cpu import cpu_has_int8_dot, cpu_has_native_bf16
from .download import MODELS, available_models, download, known_sha256s
from .model import CLIP
from .preprocess import Preprocess, for_model

__all__ = [
    "available_models",
    "cpu_has_int8_dot",
    "cpu_has_native_bf16",
    "load",
    "resolve_device",
    "resolve_dtype",
]


def _release_memory() -> None:
    """Give the heap freed by checkpoint loading back to the OS (glibc keeps it otherwise:
    loading ViT-B/32 in bf16 would leave ~1 GB of resident memory behind)."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass  # not glibc: nothing to do


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None``/"auto" -> CUDA when available else CPU."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was requested but CUDA is not available here")
    return device


def resolve_dtype(precision: str, device: torch.device) -> torch.dtype:
    """auto: fp16 on CUDA, fp32 on CPU; or fp32/fp16/bf16 as asked."""
    table = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    if precision == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if precision not in table:
        raise ValueError(f"precision must be one of auto, fp32, fp16, bf16; got {precision!r}")
    if precision == "fp16" and device.type == "cpu":
        warnings.warn(
            "fp16 on CPU is slow and less accurate; bf16 or fp32 is recommended", stacklevel=3
        )
    return table[precision]


def load(
    name: str | os.PathLike,
    device: str | torch.device | None = None,
    jit: bool = False,
    download_root: str | os.PathLike | None = None,
    *,
    precision: str = "auto",
    trust_archive: bool = False,
    activation: str | None = None,
    backend: str = "torch",
    threads: int | None = None,
    image_sessions: int = 1,
    selfcheck: bool = True,
) -> tuple[CLIP, Preprocess]:
    """Load a CLIP model and its preprocessing, as ``clip.load``.

    ``name`` is one of ``available_models()`` (downloaded into ``download_root``, verified by
    SHA256) or a path to a local checkpoint: an OpenAI TorchScript archive, a plain state dict,
    an open_clip checkpoint or a Hugging Face CLIP directory. ``jit`` is accepted for API
    compatibility; the eager model is always returned. ``activation`` ("quick_gelu" or
    "gelu") overrides what the checkpoint implies: plain state dicts cannot tell, and
    non-OpenAI open_clip weights (e.g. LAION's) were trained with exact GELU.

    ``backend="onnxruntime"`` (CPU only, extra ``clipsearch[onnx]``) returns an
    :class:`~clipmodel.onnx_backend.OnnxCLIP` with the same ``encode_image``/``encode_text``;
    ``precision`` picks its variant ("int8", "int8-mild", "int8-dynamic", "fp32"; see
    clipmodel.onnx_export). Its graphs are exported once per checkpoint and cached under
    ``download_root``/onnx. ``threads`` sets its thread count (default: torch's);
    ``image_sessions`` > 1 splits each image batch over that many sessions of
    ``threads // image_sessions`` threads run side by side.

    ``backend="auto"``: on CUDA torch (fp16 for precision "auto"); on the CPU the fastest
    faithful path (clipmodel.fastpath): int8 ONNX Runtime where it is installed and the CPU
    has 8-bit dot products, else torch bf16 where the CPU computes it natively, else fp32.
    ``backend="onnxruntime"`` with precision "auto" tries int8, then int8-mild, then torch
    bf16 (where native) and fp32. Each fast path is self-checked against the exact fp32 model
    on a shipped calibration set (``selfcheck``; measured once, cached beside the export): one
    below the bars (mean cosine >= 0.999, min >= 0.99, images and texts) is refused, with one
    log line, and the next one runs. An explicitly requested precision runs even when it fails
    its check (with a warning). The returned model's ``fast_path`` names what runs and its
    ``fidelity`` (a :class:`~clipmodel.fidelity.FidelityReport`) what it measured.
    """
    if backend not in ("auto", "torch", "onnxruntime"):
        raise ValueError(f"backend must be torch or onnxruntime (or auto); got {backend!r}")
    if backend == "onnxruntime":
        if device is None or str(device) == "auto":
            device = "cpu"  # ONNX Runtime runs on the CPU even where CUDA is present
        if resolve_device(device).type != "cpu":
            raise ValueError("the onnxruntime backend runs on the CPU; use backend='torch'")
    chain = _chain(backend, precision, device)
    if chain is not None:
        device = "cpu"
    elif precision.startswith("int8"):
        raise ValueError(f"precision {precision!r} needs backend='onnxruntime'")
    if jit:
        warnings.warn("clipmodel has no TorchScript mode; returning the eager model", stacklevel=2)
    path, model_name = _locate(name, download_root)
    model = _read_model(path, trust_archive, activation)
    dev = resolve_device(device)
    model = model.to(device=dev, dtype=resolve_dtype("fp32" if chain else precision, dev))
    _release_memory()
    model.model_name = model_name
    model.checkpoint_path = str(path)
    if chain:
        from .fastpath import select

        runner, report = select(model, chain, download_root, f"{backend} {precision}", threads,
                                image_sessions, selfcheck)  # fmt: skip
        if selfcheck and getattr(model, "family", "clip") == "clip":
            _record_for_queries(model, runner, report, path, f"{backend} {precision}",
                                download_root)  # fmt: skip
        if runner is not model:
            del model
            _release_memory()
        return runner, for_model(runner)
    return model, for_model(model)


def _locate(name, download_root) -> tuple[Path, str]:
    """The local checkpoint ``name`` denotes (downloaded and verified first for a known name)."""
    from . import registry

    if str(name) in MODELS:
        return download(str(name), download_root), str(name)
    if registry.is_registered(str(name)):
        return registry.fetch(str(name), download_root), str(name)
    if Path(name).expanduser().exists():
        path = Path(name).expanduser()
        return path, path.name
    raise RuntimeError(
        f"Model {name} not found; available models = {available_models() + registry.names()}"
    )


def _read_model(path: Path, trust_archive: bool, activation: str | None):
    """The fp32 model of any supported checkpoint, with its tokenizer and preprocessing."""
    from .families import detect_folder, load_folder, load_xlmr
    from .families.xlmr_clip import is_xlmr_state_dict

    family = detect_folder(path)
    if family is not None:
        return load_folder(path, family)
    ckpt = read_checkpoint(path, known_sha256s(), trust_archive=trust_archive)
    overrides = dict(ckpt.overrides)
    if activation is not None:
        overrides["activation"] = activation
    if is_xlmr_state_dict(ckpt.state_dict):
        return load_xlmr(ckpt.state_dict, path, ckpt.sha256, overrides)
    model = build_model(ckpt.state_dict, **overrides)
    model.checkpoint_sha256, model.checkpoint_format = ckpt.sha256, ckpt.format
    model.architecture = describe(model.config)
    return model


def _record_for_queries(model, runner, report, path: Path, requested: str, cache_dir) -> None:
    """Record what this self-checked load chose, so that a query can run it without torch
    (clipmodel.query)."""
    from .fastpath import check_file
    from .query import write_manifest

    checks = [check_file(model, c.path, cache_dir) for c in report.checks]
    machine = {"int8_dot": cpu_has_int8_dot(), "native_bf16": cpu_has_native_bf16()}
    write_manifest(runner, path, requested, cache_dir, checks, machine)


def _chain(backend: str, precision: str, device) -> list[str] | None:
    """The paths a load tries in order (see clipmodel.fastpath), or None for a plain torch
    load (backend torch, or auto on CUDA, or auto with a torch precision)."""
    from .onnx_export import QUANTIZATIONS

    ort = "onnxruntime "
    if backend == "onnxruntime":
        if precision == "auto":
            tail = ["torch bf16"] * cpu_has_native_bf16() + ["torch fp32"]
            return [ort + "int8", ort + "int8-mild"] + tail
        if precision not in QUANTIZATIONS:
            kinds = ", ".join(QUANTIZATIONS)
            raise ValueError(
                f"the onnxruntime backend runs int8 or fp32 ({kinds}), not {precision!r}"
            )
        return [ort + precision]
    if backend == "torch" or resolve_device(device).type == "cuda":
        return None
    if precision == "auto":
        from .fastpath import auto_chain

        return auto_chain("cpu")
    if precision in QUANTIZATIONS and precision != "fp32":
        return [ort + precision]
    return None
