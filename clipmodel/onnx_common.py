"""What the ONNX export, the ONNX Runtime backend and the torch-free query runtime share,
without importing torch: the export's version and variants, whether ONNX Runtime is
installed, session options, and the int8 ViT's pixel-patch input layout.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

import numpy as np

from .image_spec import MEAN, STD

__all__ = ["EXPORT_VERSION", "QUANTIZATIONS", "OnnxUnavailableError", "code_version",
           "image_patches", "onnxruntime_available", "pixels_from_normalized", "session"]  # fmt: skip

EXPORT_VERSION = 3  # bump when the exported graphs change, to invalidate cached files
QUANTIZATIONS = ("int8", "int8-mild", "int8-dynamic", "fp32")
_REQUIRED = ("onnxruntime", "onnx", "onnxscript")
EXTERNAL_MIN_BYTES = 32 << 20  # an optimized graph's tables this large are memory-mapped
_EXTERNAL_FILE = "session.optimized_model_external_initializers_file_name"
_EXTERNAL_MIN = "session.optimized_model_external_initializers_min_size_in_bytes"


class OnnxUnavailableError(RuntimeError):
    """ONNX Runtime (or the exporter's packages) is not installed."""


def onnxruntime_available() -> bool:
    """True when ONNX Runtime and the packages the exporter needs are installed."""
    return all(importlib.util.find_spec(name) is not None for name in _REQUIRED)


def require() -> None:
    missing = [name for name in _REQUIRED if importlib.util.find_spec(name) is None]
    if missing:
        raise OnnxUnavailableError(
            f"the onnxruntime backend needs {', '.join(missing)}: "
            "pip install 'clipsearch[onnx]' (or set model.backend: torch)"
        )


def code_version(export_version: int = EXPORT_VERSION) -> str:
    """What a cached measurement (and a query manifest) must have been made by to be reused."""
    from . import __version__
    from .fidelity import CHECK_VERSION

    return f"clipmodel {__version__}, check {CHECK_VERSION}, export {export_version}"


def image_patches(pixels: np.ndarray, patch: int) -> np.ndarray:
    """(…, H, W, 3) uint8 images -> (…, (H/patch) * (W/patch), patch * patch * 3) patches,
    row-major over the grid, each patch laid out (row, column, colour): the int8 ViT input."""
    *lead, h, w, c = pixels.shape
    gh, gw = h // patch, w // patch
    x = pixels.reshape(*lead, gh, patch, gw, patch, c)
    k = len(lead)
    x = x.transpose(*range(k), k, k + 2, k + 1, k + 3, k + 4)
    return np.ascontiguousarray(x).reshape(*lead, gh * gw, patch * patch * c)


def pixels_from_normalized(images: np.ndarray) -> np.ndarray:
    """Normalised float images (B, 3, H, W) -> the 8-bit RGB pixels (B, H, W, 3) they came from
    (exact for ``preprocess``'s output; other values round to the nearest 8-bit level)."""
    std, mean = np.asarray(STD, np.float32), np.asarray(MEAN, np.float32)
    pixels = images.transpose(0, 2, 3, 1) * (255.0 * std) + 255.0 * mean
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)


def _spinning_default() -> bool:
    """ORT's threads spin while waiting unless OMP_WAIT_POLICY=PASSIVE asks every runtime in
    the process not to (the clipsearch CLI sets it so decode threads get the CPU)."""
    return os.environ.get("OMP_WAIT_POLICY", "").upper() != "PASSIVE"


def _options(threads: int, spinning: bool, prepack: bool = True) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = max(1, threads)
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # Spinning worker threads take the CPU that image-decoding threads need.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    if not prepack:
        opts.add_session_config_entry("session.disable_prepacking", "1")
    return opts


def session(path: Path, threads: int, spinning: bool | None, optimized: Path | None = None,
            prepack: bool = True) -> Any:  # fmt: skip
    """An ONNX Runtime CPU session of ``path`` on ``threads`` threads.

    ``optimized``: where ONNX Runtime's optimized form of the graph is kept for this machine
    and version: loaded as is when there (graph optimization is ~40% of a large graph's load
    time), else written by this load (the same graph and numbers). ``prepack=False``: weights
    are not copied into the GEMM kernels' packed layout, for a process that runs a few
    queries (the random ViT-B/32 text graph: load 0.14 -> 0.07 s, 65 -> 46 MB; a query
    ~1 ms slower)."""
    import onnxruntime as ort

    if spinning is None:
        spinning = _spinning_default()
    opts = _options(threads, spinning, prepack)
    providers = ["CPUExecutionProvider"]
    if optimized is None:
        return ort.InferenceSession(os.fspath(path), opts, providers=providers)
    if optimized.is_file():
        plain = _options(threads, spinning, prepack)
        plain.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        try:
            return ort.InferenceSession(os.fspath(optimized), plain, providers=providers)
        except Exception as exc:  # e.g. its table file gone: made again from the export
            if type(exc).__module__.split(".")[0] != "onnxruntime":
                raise
            optimized.unlink(missing_ok=True)
    tmp = optimized.with_name(f".{optimized.name}.{os.getpid()}.tmp")
    data = optimized.with_name(f"{optimized.stem}.{os.getpid()}.data")
    try:
        optimized.parent.mkdir(parents=True, exist_ok=True)
        opts.optimized_model_filepath = os.fspath(tmp)
        # The large tables (a text tower's token embedding: 101 MB at ViT-B/32) go to a file
        # of their own, which ONNX Runtime memory-maps on load: a query then reads only the
        # rows of its tokens (load 0.37 -> 0.12 s, peak memory 293 -> 115 MB at ViT-B/32).
        opts.add_session_config_entry(_EXTERNAL_FILE, data.name)
        opts.add_session_config_entry(_EXTERNAL_MIN, str(EXTERNAL_MIN_BYTES))
        opts.log_severity_level = 3  # not the warning that the file is for this machine: it is
        sess = ort.InferenceSession(os.fspath(path), opts, providers=providers)
        os.replace(tmp, optimized)
        return sess
    except OSError:  # a read-only cache: the graph is optimized again on each load
        tmp.unlink(missing_ok=True)
        data.unlink(missing_ok=True)
        opts.optimized_model_filepath = ""
        return ort.InferenceSession(os.fspath(path), opts, providers=providers)


def text_feed(tokens: np.ndarray) -> dict[str, np.ndarray]:
    """The text graph's inputs for zero-padded token rows (N, context): the tokens trimmed
    to the longest sequence (causal attention: the padding after it changes nothing) and the
    position of each row's end-of-text token (the largest id)."""
    eot = tokens.argmax(axis=-1)
    n = max(2, int(eot.max()) + 1)
    return {"tokens": np.ascontiguousarray(tokens[:, :n], dtype=np.int64),
            "eot": eot.astype(np.int64)}  # fmt: skip
