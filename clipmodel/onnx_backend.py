"""CLIP's two encoders on ONNX Runtime: the fast CPU path (optional extra ``clipsearch[onnx]``).

Each checkpoint is exported once from our fp32 model (``torch.onnx``, dynamic batch and text
length), its matrix products are quantized to int8 (ONNX Runtime's dynamic quantization:
per-channel int8 weights, activations quantized per call), and the two graphs are cached in
``<cache>/onnx/`` under a key made of the checkpoint's SHA256, the architecture and the tool
versions. Later loads reuse the cache. Only ``MatMul`` is quantized: the patch-embedding
convolution stays fp32 because ONNX Runtime's integer convolution is slower than its fp32 one.

Measured on a 2-core AVX512-VNNI CPU with ViT-B/32 (``bench/bench_model.py``): images 65
per second (torch bf16: 36), a short text query 5 ms (torch bf16: 16 ms), embeddings within
cosine 0.9995 of the fp32 model (``bench/bench_fidelity.py`` checks a given checkpoint).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .model import CLIP

__all__ = ["OnnxCLIP", "export_onnx", "load_onnx", "onnxruntime_available"]

EXPORT_VERSION = 1  # bump when the exported graphs change, to invalidate cached files
QUANTIZATIONS = ("int8", "fp32")
_REQUIRED = ("onnxruntime", "onnx", "onnxscript")


class OnnxUnavailableError(RuntimeError):
    """ONNX Runtime (or the exporter's packages) is not installed."""


def onnxruntime_available() -> bool:
    """True when ONNX Runtime and the packages the exporter needs are installed."""
    return all(importlib.util.find_spec(name) is not None for name in _REQUIRED)


def _require() -> None:
    missing = [name for name in _REQUIRED if importlib.util.find_spec(name) is None]
    if missing:
        raise OnnxUnavailableError(
            f"the onnxruntime backend needs {', '.join(missing)}: "
            "pip install 'clipsearch[onnx]' (or set model.backend: torch)"
        )


class _ImageGraph(nn.Module):
    def __init__(self, model: CLIP):
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(image)


class _TextGraph(nn.Module):
    """Text tower on tokens already trimmed to the batch's longest sequence (see encode_text)."""

    def __init__(self, model: CLIP):
        super().__init__()
        self.model = model

    def forward(self, tokens: torch.Tensor, eot: torch.Tensor) -> torch.Tensor:
        m = self.model
        n = tokens.shape[1]
        x = m.token_embedding(tokens) + m.positional_embedding[:n]
        causal = torch.full((n, n), float("-inf"), dtype=x.dtype).triu(1)
        x, _ = m.transformer(x, mask=causal)
        x = m.ln_final(x)
        x = x[torch.arange(x.shape[0]), eot]
        return x @ m.text_projection


def cache_key(model: CLIP, quantize: str) -> str:
    """What the cached graphs depend on: weights, architecture, quantization, tool versions."""
    import onnxruntime

    parts = {
        "checkpoint": getattr(model, "checkpoint_sha256", None),
        "config": dataclasses.asdict(model.config),
        "quantize": quantize,
        "export": EXPORT_VERSION,
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
    }
    if parts["checkpoint"] is None:  # a model not loaded from a file: hash the weights
        h = hashlib.sha256()
        for name, t in sorted(model.state_dict().items()):
            h.update(name.encode())
            h.update(t.detach().float().cpu().numpy().tobytes())
        parts["checkpoint"] = h.hexdigest()
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:24]


def _export_graphs(model: CLIP, out: Path) -> tuple[Path, Path]:
    """fp32 ONNX graphs of both towers, batch (and text length) dynamic."""
    import logging
    import warnings

    # The exporter logs that torchvision's operators are skipped: noise for CLIP.
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    if model.dtype != torch.float32:
        raise ValueError(f"ONNX export needs the fp32 model (this one is {model.dtype})")
    model.eval()
    batch = torch.export.Dim("batch")
    length = torch.export.Dim("length", min=2, max=model.context_length)
    r = model.image_resolution
    image_path, text_path = out / "image.onnx", out / "text.onnx"
    tokens = torch.tensor([[1, 2, 3], [4, 5, 6]], dtype=torch.long)
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _ImageGraph(model), (torch.zeros(2, 3, r, r),), image_path, dynamo=True,
            input_names=["image"], output_names=["image_features"],
            dynamic_shapes={"image": {0: batch}}, external_data=False, verbose=False,
        )  # fmt: skip
        torch.onnx.export(
            _TextGraph(model), (tokens, torch.tensor([2, 2])), text_path, dynamo=True,
            input_names=["tokens", "eot"], output_names=["text_features"],
            dynamic_shapes={"tokens": {0: batch, 1: length}, "eot": {0: batch}},
            external_data=False, verbose=False,
        )  # fmt: skip
    return image_path, text_path


def _quantize(src: Path, dst: Path) -> None:
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    # The quantizer logs advice on the root logger (logging.warning), which would also
    # configure logging for the whole process; keep both from happening.
    root = logging.getLogger()
    quiet, guard = logging.Filter("onnxruntime-quantization-silenced"), logging.NullHandler()
    root.addFilter(quiet)
    root.addHandler(guard)
    try:
        quantize_dynamic(
            src, dst, weight_type=QuantType.QInt8, per_channel=True, op_types_to_quantize=["MatMul"]
        )
    finally:
        root.removeFilter(quiet)
        root.removeHandler(guard)


def export_onnx(
    model: CLIP, cache_dir: str | os.PathLike, quantize: str = "int8"
) -> tuple[Path, Path]:
    """The (image, text) ONNX files for ``model``, exported and quantized on first use.

    Files appear atomically (written in a temporary folder beside them, then renamed), so an
    interrupted export leaves nothing half-written and concurrent exports are harmless.
    """
    _require()
    if quantize not in QUANTIZATIONS:
        raise ValueError(f"quantize must be one of {', '.join(QUANTIZATIONS)}; got {quantize!r}")
    root = Path(cache_dir).expanduser() / "onnx"
    key = cache_key(model, quantize)
    image_path, text_path = root / f"{key}-image.onnx", root / f"{key}-text.onnx"
    if image_path.is_file() and text_path.is_file():
        return image_path, text_path
    root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".export-", dir=root))
    try:
        staged = list(_export_graphs(model, work))
        if quantize == "int8":
            for i, src in enumerate(staged):
                staged[i] = work / f"int8-{src.name}"
                _quantize(src, staged[i])
        # Both graphs are complete before either is published; the image file last, as the
        # cache check above needs both.
        os.replace(staged[1], text_path)
        os.replace(staged[0], image_path)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return image_path, text_path


def _spinning_default() -> bool:
    """ORT's threads spin while waiting unless OMP_WAIT_POLICY=PASSIVE asks every runtime in
    the process not to (the clipsearch CLI sets it so decode threads get the CPU)."""
    return os.environ.get("OMP_WAIT_POLICY", "").upper() != "PASSIVE"


def _session(path: Path, threads: int, spinning: bool | None) -> Any:
    import onnxruntime as ort

    if spinning is None:
        spinning = _spinning_default()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = max(1, threads)
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # Spinning worker threads take the CPU that image-decoding threads need.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    return ort.InferenceSession(os.fspath(path), opts, providers=["CPUExecutionProvider"])


class OnnxCLIP:
    """CLIP's ``encode_image`` / ``encode_text`` on ONNX Runtime sessions (CPU, float32 out).

    Carries the same descriptive attributes as :class:`CLIP` (``config``, ``embed_dim``,
    ``image_resolution``, ``checkpoint_sha256``...) so callers can use either.
    """

    device = torch.device("cpu")
    dtype = torch.float32

    def __init__(self, model: CLIP, image_path: Path, text_path: Path, quantize: str,
                 threads: int | None = None, spinning: bool | None = None):  # fmt: skip
        threads = threads or torch.get_num_threads()
        self.config = model.config
        self.context_length = model.context_length
        self.embed_dim = model.embed_dim
        self.image_resolution = model.image_resolution
        self.logit_scale = model.logit_scale.detach().float().clone()
        for attr in ("model_name", "checkpoint_sha256", "checkpoint_format", "checkpoint_path",
                     "architecture"):  # fmt: skip
            setattr(self, attr, getattr(model, attr, None))
        self.quantize = quantize
        self.paths = (image_path, text_path)
        self._image = _session(image_path, threads, spinning)
        self._text = _session(text_path, threads, spinning)

    def __repr__(self) -> str:
        return f"OnnxCLIP({self.model_name!r}, {self.quantize}, {self.paths[0].name})"

    def eval(self) -> OnnxCLIP:
        return self

    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        """Image embeddings (unnormalised, float32), shape (B, embed_dim)."""
        x = np.ascontiguousarray(image.detach().float().cpu().numpy())
        return torch.from_numpy(self._image.run(None, {"image": x})[0])

    def encode_text(
        self, text: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Text embeddings (unnormalised, float32) read at each end-of-text token."""
        if text.shape[1] > self.context_length:
            raise ValueError(
                f"token sequence of length {text.shape[1]} exceeds context length "
                f"{self.context_length}"
            )
        if text.shape[0] == 0:
            return torch.empty(0, self.embed_dim)
        if attention_mask is not None:
            eot = attention_mask.long().sum(dim=-1) - 1
        else:
            eot = text.argmax(dim=-1)
        # Causal attention: the padding after the longest sequence cannot change any result.
        n = max(2, int(eot.max()) + 1)
        feed = {
            "tokens": np.ascontiguousarray(text[:, :n].cpu().numpy().astype(np.int64)),
            "eot": eot.cpu().numpy().astype(np.int64),
        }
        return torch.from_numpy(self._text.run(None, feed)[0])

    def forward(self, image: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Scaled cosine similarities: (logits_per_image, logits_per_text)."""
        img = torch.nn.functional.normalize(self.encode_image(image), dim=-1)
        txt = torch.nn.functional.normalize(self.encode_text(text), dim=-1)
        logits = self.logit_scale.exp() * img @ txt.t()
        return logits, logits.t()

    __call__ = forward


def load_onnx(
    model: CLIP,
    cache_dir: str | os.PathLike | None = None,
    quantize: str = "int8",
    threads: int | None = None,
    spinning: bool | None = None,
) -> OnnxCLIP:
    """``model`` on ONNX Runtime (exported and cached on first use; see the module docs).

    A cached file that ONNX Runtime cannot open (damaged on disk) is deleted and re-exported.
    """
    if cache_dir is None:
        from .download import default_cache_dir

        cache_dir = default_cache_dir()
    image_path, text_path = export_onnx(model, cache_dir, quantize)
    try:
        return OnnxCLIP(model, image_path, text_path, quantize, threads, spinning)
    except Exception as exc:  # onnxruntime raises its own exception types for bad files
        if type(exc).__module__.split(".")[0] != "onnxruntime":
            raise
        image_path.unlink(missing_ok=True)
        text_path.unlink(missing_ok=True)
        image_path, text_path = export_onnx(model, cache_dir, quantize)
        return OnnxCLIP(model, image_path, text_path, quantize, threads, spinning)
