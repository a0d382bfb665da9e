"""CLIP's two encoders on ONNX Runtime: the fast CPU path (optional extra ``clipsearch[onnx]``).

Each checkpoint is exported once from our fp32 model (``torch.onnx``, dynamic batch and text
length), its matrix products are quantized to int8 (ONNX Runtime's dynamic quantization:
per-channel int8 weights, activations quantized per call), and the two graphs are cached in
``<cache>/onnx/`` under a key made of the checkpoint's SHA256, the architecture and the tool
versions. Later loads reuse the cache.

A ViT's int8 image graph reads 8-bit pixels, already cut into patches (:func:`image_patches`):
the normalisation is folded into the patch embedding's weights, so that first product runs on
the integer pixels exactly (only its weights are quantized) and the float input of the
convolution disappears. :meth:`OnnxCLIP.encode_image` still takes the usual normalised float
images and rounds them back to the 8-bit values they came from.

Measured on a 2-core AVX512-VNNI CPU with ViT-B/32 (``bench/bench_model.py``): images 72 per
second in one 2-thread session, 81 in two single-threaded ones (``image_sessions=2``, as the
indexer runs it there; torch bf16: 42), a short text query 3 ms (torch bf16: 9 ms),
embeddings within cosine 0.999 of the fp32 model (``bench/bench_fidelity.py`` checks a given
checkpoint).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import os
import queue
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .model import CLIP
from .preprocess import MEAN, STD

__all__ = [
    "OnnxCLIP",
    "export_onnx",
    "image_patches",
    "load_onnx",
    "onnxruntime_available",
    "pixels_from_normalized",
]

EXPORT_VERSION = 2  # bump when the exported graphs change, to invalidate cached files
QUANTIZATIONS = ("int8", "fp32")
SINGLE_THREAD_ROWS = 8  # images per call of a single-threaded image session (see OnnxCLIP)
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


class _PatchGraph(nn.Module):
    """ViT image tower from patch embeddings (B, patches, width); see _splice_pixel_input."""

    def __init__(self, model: CLIP):
        super().__init__()
        self.model = model
        self.grid = model.image_resolution // model.visual.patch_size

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        return self.model.visual.forward_patches(patches, self.grid, self.grid)


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
        return m.ln_final(m.transformer.forward_at(x, eot, mask=causal)) @ m.text_projection


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


def _pixel_input(model: CLIP, quantize: str) -> bool:
    """Whether the image graph reads 8-bit pixel patches (int8 ViTs) rather than float images."""
    return quantize == "int8" and model.config.is_vit


def _export_graphs(model: CLIP, out: Path, pixel_input: bool) -> tuple[Path, Path]:
    """fp32 ONNX graphs of both towers, batch (and text length) dynamic. With ``pixel_input``
    the image graph starts after the patch embedding (its input: patch embeddings)."""
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
    if pixel_input:
        grid = r // model.visual.patch_size
        width = model.visual.conv1.out_channels
        image_graph, image_in = _PatchGraph(model), ("patches", torch.zeros(2, grid * grid, width))
    else:
        image_graph, image_in = _ImageGraph(model), ("image", torch.zeros(2, 3, r, r))
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            image_graph, (image_in[1],), image_path, dynamo=True,
            input_names=[image_in[0]], output_names=["image_features"],
            dynamic_shapes={image_in[0]: {0: batch}}, external_data=False, verbose=False,
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
    from onnxruntime.quantization.shape_inference import quant_pre_process

    # The quantizer logs advice on the root logger (logging.warning), which would also
    # configure logging for the whole process; keep both from happening.
    root = logging.getLogger()
    quiet, guard = logging.Filter("onnxruntime-quantization-silenced"), logging.NullHandler()
    root.addFilter(quiet)
    root.addHandler(guard)
    folded = dst.with_name(f"folded-{dst.name}")
    try:
        # Folds constants first (the recommended pre-processing): a weight sliced from a
        # parameter in the graph (the last block's query, see Transformer.forward_at) must be
        # an initializer to be quantized.
        quant_pre_process(src, folded, skip_symbolic_shape=True)
        quantize_dynamic(
            folded, dst, weight_type=QuantType.QInt8, per_channel=True,
            op_types_to_quantize=["MatMul"],
        )  # fmt: skip
    finally:
        root.removeFilter(quiet)
        root.removeHandler(guard)
        folded.unlink(missing_ok=True)


def _pixel_embedding(model: CLIP) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The patch embedding as a product with raw 8-bit pixel patches (see image_patches):
    per-output-channel int8 weights (K, width), their scales (width,) and a bias (width,).

    Normalisation ``x = p / (255 std) - mean / std`` is folded in: the weights are scaled by
    1 / (255 std) per colour channel and ``-W . (mean / std)`` becomes the bias.
    """
    w = model.visual.conv1.weight.detach().double().cpu()  # (width, 3, P, P)
    std, mean = torch.tensor(STD, dtype=torch.float64), torch.tensor(MEAN, dtype=torch.float64)
    scaled = w / (255.0 * std)[None, :, None, None]
    bias = -(w * (mean / std)[None, :, None, None]).sum(dim=(1, 2, 3))
    # rows in the order image_patches lays a patch out: (row, column, colour)
    matrix = scaled.permute(2, 3, 1, 0).reshape(-1, w.shape[0])
    scale = (matrix.abs().amax(dim=0) / 127.0).clamp_min(1e-12)
    q = torch.round(matrix / scale).clamp(-127, 127).to(torch.int8)
    return q.numpy(), scale.float().numpy(), bias.float().numpy()


def _splice_pixel_input(path: Path, model: CLIP) -> None:
    """Put the integer patch embedding in front of a _PatchGraph: input ``pixels`` (B, patches,
    P*P*3) uint8 -> MatMulInteger -> float, scaled, biased -> the graph's ``patches``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    m = onnx.load(os.fspath(path))
    g = m.graph
    (old,) = g.input
    q, scale, bias = _pixel_embedding(model)
    batch = old.type.tensor_type.shape.dim[0]
    n = old.type.tensor_type.shape.dim[1].dim_value
    pixels = helper.make_tensor_value_info(
        "pixels", TensorProto.UINT8, [batch.dim_param or batch.dim_value, n, q.shape[0]]
    )
    g.initializer.extend([
        numpy_helper.from_array(q, "pixel_embed_weight"),
        numpy_helper.from_array(np.zeros((), np.uint8), "pixel_zero_point"),
        numpy_helper.from_array(scale, "pixel_embed_scale"),
        numpy_helper.from_array(bias, "pixel_embed_bias"),
    ])  # fmt: skip
    nodes = [
        helper.make_node(
            "MatMulInteger",
            ["pixels", "pixel_embed_weight", "pixel_zero_point"],
            ["pixel_embed_int"],
        ),  # fmt: skip
        helper.make_node("Cast", ["pixel_embed_int"], ["pixel_embed_float"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["pixel_embed_float", "pixel_embed_scale"], ["pixel_embed_scaled"]),
        helper.make_node("Add", ["pixel_embed_scaled", "pixel_embed_bias"], [old.name]),
    ]
    rest = list(g.node)
    del g.node[:]
    g.node.extend(nodes + rest)
    g.input.remove(old)
    g.input.append(pixels)
    onnx.save(m, os.fspath(path))


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
        pixel_input = _pixel_input(model, quantize)
        staged = list(_export_graphs(model, work, pixel_input))
        if quantize == "int8":
            for i, src in enumerate(staged):
                staged[i] = work / f"int8-{src.name}"
                _quantize(src, staged[i])
            if pixel_input:
                _splice_pixel_input(staged[0], model)
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
                 threads: int | None = None, spinning: bool | None = None,
                 image_sessions: int = 1):  # fmt: skip
        threads = threads or torch.get_num_threads()
        image_sessions = max(1, min(image_sessions, threads))
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
        # Several image sessions, each on its own threads: concurrent calls each take a free
        # one, and a call that finds several free splits its batch over them. No barrier spans
        # sessions, so other work (image decoding) can share the cores without stalling every
        # parallel operation of the model (see indexer.encoder.ThreadPlan).
        sessions = [
            _session(image_path, threads // image_sessions, spinning) for _ in range(image_sessions)
        ]
        self._image = sessions[0]
        self._free: queue.SimpleQueue = queue.SimpleQueue()
        for sess in sessions:
            self._free.put(sess)
        self._pool = ThreadPoolExecutor(image_sessions - 1) if image_sessions > 1 else None
        # A single-threaded session runs at most this many images per call (0: no limit): its
        # activations then stay in cache (ViT-B/32 int8, two such sessions on 2 cores: 79-80
        # images/s in runs of 8, 73 in runs of 32). Callers with many images can hand them
        # over in calls of this size, so that every session has work until the end.
        self.rows_per_call = SINGLE_THREAD_ROWS if threads // image_sessions == 1 else 0
        self._text = _session(text_path, threads, spinning)
        # int8 ViTs read 8-bit pixel patches (see image_patches); others normalised images
        self.pixel_input = self._image.get_inputs()[0].name == "pixels"
        self.patch_size = model.visual.patch_size if model.config.is_vit else None

    def __repr__(self) -> str:
        return f"OnnxCLIP({self.model_name!r}, {self.quantize}, {self.paths[0].name})"

    def eval(self) -> OnnxCLIP:
        return self

    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        """Image embeddings (unnormalised, float32), shape (B, embed_dim), of normalised
        images (B, 3, R, R) as ``preprocess`` makes them."""
        x = image.detach().float().cpu().numpy()
        if not self.pixel_input:
            return self._run_image("image", np.ascontiguousarray(x))
        return self.encode_pixels(image_patches(pixels_from_normalized(x), self.patch_size))

    def encode_pixels(self, patches: np.ndarray) -> torch.Tensor:
        """Image embeddings from 8-bit pixel patches (B, patches, P*P*3): the indexer's input
        for int8 ViTs (:func:`image_patches` of the cropped RGB images, no normalisation)."""
        if not self.pixel_input:
            raise ValueError("this image graph takes normalised float images (encode_image)")
        return self._run_image("pixels", np.ascontiguousarray(patches, dtype=np.uint8))

    def _run_image(self, name: str, x: np.ndarray) -> torch.Tensor:
        """The image graph on ``x``: on one free session, or split over every free one (this
        thread runs the first part; each session is handed back as soon as its part is done)."""
        wanted = -(-len(x) // self.rows_per_call) if self.rows_per_call else len(x)
        mine = [self._free.get()]
        while len(mine) < wanted:
            try:
                mine.append(self._free.get_nowait())
            except queue.Empty:
                break
        parts = np.array_split(x, len(mine))
        futures = [
            self._pool.submit(self._run_on, sess, name, part)
            for sess, part in zip(mine[1:], parts[1:])
        ]
        outs = [self._run_on(mine[0], name, parts[0])] + [f.result() for f in futures]
        return torch.from_numpy(outs[0] if len(outs) == 1 else np.concatenate(outs))

    def _run_on(self, sess: Any, name: str, x: np.ndarray) -> np.ndarray:
        step = self.rows_per_call or len(x)
        try:
            starts = range(0, max(len(x), 1), step)  # an empty batch still runs once
            outs = [sess.run(None, {name: x[i : i + step]})[0] for i in starts]
        finally:
            self._free.put(sess)
        return outs[0] if len(outs) == 1 else np.concatenate(outs)

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
    image_sessions: int = 1,
) -> OnnxCLIP:
    """``model`` on ONNX Runtime (exported and cached on first use; see the module docs).

    ``image_sessions`` > 1 splits image batches over that many sessions run side by side, with
    ``threads // image_sessions`` threads each (``threads`` for text).

    A cached file that ONNX Runtime cannot open (damaged on disk) is deleted and re-exported.
    """
    if cache_dir is None:
        from .download import default_cache_dir

        cache_dir = default_cache_dir()
    image_path, text_path = export_onnx(model, cache_dir, quantize)
    try:
        return OnnxCLIP(model, image_path, text_path, quantize, threads, spinning, image_sessions)
    except Exception as exc:  # onnxruntime raises its own exception types for bad files
        if type(exc).__module__.split(".")[0] != "onnxruntime":
            raise
        image_path.unlink(missing_ok=True)
        text_path.unlink(missing_ok=True)
        image_path, text_path = export_onnx(model, cache_dir, quantize)
        return OnnxCLIP(model, image_path, text_path, quantize, threads, spinning, image_sessions)
