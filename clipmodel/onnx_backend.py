"""CLIP's two encoders on ONNX Runtime: the fast CPU path (optional extra ``clipsearch[onnx]``).

The graphs are exported, quantized and cached by clipmodel.onnx_export (variants ``int8``:
SmoothQuant + dynamic int8, the default; ``int8-mild``; ``int8-dynamic``; ``fp32``); which one
runs, self-checked against the exact model, is decided in clipmodel.fastpath.

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

import os
import queue
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .model import CLIP
from .onnx_common import image_patches, pixels_from_normalized, text_feed
from .onnx_common import session as _session
from .onnx_export import (  # noqa: F401  (re-exported: the backend's public names)
    EXPORT_VERSION,
    QUANTIZATIONS,
    OnnxUnavailableError,
    cache_key,
    export_onnx,
    onnxruntime_available,
)

__all__ = [
    "OnnxCLIP",
    "export_onnx",
    "image_patches",
    "load_onnx",
    "onnxruntime_available",
    "pixels_from_normalized",
]

SINGLE_THREAD_ROWS = 8  # images per call of a single-threaded image session (see OnnxCLIP)


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
        self.family = getattr(model, "family", "clip")
        self.context_length = model.context_length
        self.embed_dim = model.embed_dim
        self.image_resolution = model.image_resolution
        self.logit_scale = model.logit_scale.detach().float().clone()
        for attr in ("model_name", "checkpoint_sha256", "checkpoint_format", "checkpoint_path",
                     "architecture"):  # fmt: skip
            setattr(self, attr, getattr(model, attr, None))
        # the families' own tokenizer, preprocessing and sigmoid head (clipmodel.families)
        for attr in ("tokenizer", "image_spec", "text_config", "sigmoid_calibration"):
            if hasattr(model, attr):
                setattr(self, attr, getattr(model, attr))
        bias = getattr(model, "logit_bias", None)
        self.logit_bias = None if bias is None else bias.detach().float().clone()
        self.quantize = quantize
        self.paths = (image_path, text_path)
        self._threads, self._spinning = threads, spinning
        self._text_model = None  # a torch model encoding the texts instead (see use_text)
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
        self.patch_size = (
            model.visual.patch_size if self.family == "clip" and model.config.is_vit else None
        )

    def use_text(self, text_path: Path | None = None, text_model: Any = None) -> None:
        """Encode texts with another text graph (a milder variant's) or a torch model instead
        (clipmodel.fastpath, when the int8 text tower fails its check but the image one does
        not)."""
        if text_path is not None:
            self._text, self._text_model = _session(text_path, self._threads, self._spinning), None
            self.paths = (self.paths[0], text_path)
        elif text_model is not None:
            self._text, self._text_model = None, text_model

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
        if self._text_model is not None:
            with torch.inference_mode():
                return self._text_model.encode_text(text, attention_mask).float()
        if self.family != "clip":
            if attention_mask is not None:
                raise ValueError(f"the {self.family} text graph takes no attention mask")
            from .families.onnx import text_feed as family_feed

            pad = getattr(getattr(self, "tokenizer", None), "pad_id", None)
            feed = family_feed(self.family, text.cpu().numpy(), pad)
        elif attention_mask is None:
            feed = text_feed(text.cpu().numpy())
        else:
            eot = attention_mask.long().sum(dim=-1) - 1
            # Causal attention: the padding after the longest sequence cannot change any result.
            n = max(2, int(eot.max()) + 1)
            feed = {
                "tokens": np.ascontiguousarray(text[:, :n].cpu().numpy().astype(np.int64)),
                "eot": eot.cpu().numpy().astype(np.int64),
            }
        return torch.from_numpy(self._text.run(None, feed)[0])

    def forward(self, image: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Scaled cosine similarities (plus SigLIP's bias): (logits_per_image,
        logits_per_text)."""
        img = torch.nn.functional.normalize(self.encode_image(image), dim=-1)
        txt = torch.nn.functional.normalize(self.encode_text(text), dim=-1)
        logits = self.logit_scale.exp() * img @ txt.t()
        if self.logit_bias is not None:
            logits = logits + self.logit_bias
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
