"""The encoder of a query process (CLI search, the UI): the configured model's cached ONNX
towers without torch (``clipmodel.query``), where the configuration runs them and the
recorded export is still the model's; else None, with the reason, and the caller loads the
:class:`~indexer.embed.encoder.ClipEncoder` (which exports and records again).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from indexer.config import Config
from indexer.embed.encoder import Encoder, EncoderUnavailableError, model_source
from indexer.types import ModelIdentity

LOG = logging.getLogger("indexer.embed.query")


def requested_path(cfg: Config) -> str | None:
    """What ``ClipEncoder.from_config`` asks ``clipmodel.load`` for when that is a
    self-checked CPU load ("auto auto", "onnxruntime int8", ...); None where it loads torch
    (an explicit torch backend or precision, or a GPU)."""
    m = cfg.model
    if m.backend == "torch":
        return None
    if m.backend == "auto" and m.precision == "auto":
        # torch would pick CUDA on a machine with a GPU; only a visible GPU can make it do so
        return "auto auto" if m.device == "cpu" or (m.device == "auto" and not _gpu_visible()) \
            else None  # fmt: skip
    if m.backend == "onnxruntime" or m.precision == "int8":
        return f"onnxruntime {m.precision}"
    return None


def _gpu_visible() -> bool:
    dev = Path("/dev")
    return any(dev.glob("nvidia[0-9]*")) or (dev / "kfd").exists()


class QueryEncoder:
    """The :class:`~indexer.embed.encoder.Encoder` protocol over ``clipmodel.query``: texts and
    (where the self-check chose an ONNX image tower) example images, without torch.

    ``fallback()`` gives the full encoder, loaded only if an image query needs torch.
    """

    def __init__(self, model: Any, name: str, fallback: Callable[[], Encoder] | None = None):
        from clipmodel.image_spec import describe

        self.model = model
        self._fallback = fallback
        self._full: Encoder | None = None
        self.image_resolution = int(model.image_resolution)
        settings = {"preprocess": describe(self.image_resolution),
                    "resolution": self.image_resolution}  # fmt: skip
        # as ClipEncoder's, so that the index's model check sees the same model
        self.identity = ModelIdentity(name, str(model.checkpoint_sha256), int(model.embed_dim),
                                      json.dumps(settings, sort_keys=True))  # fmt: skip

    @classmethod
    def from_config(cls, cfg: Config, fallback: Callable[[], Encoder] | None = None,
                    threads: int = 1) -> tuple[QueryEncoder | None, str]:  # fmt: skip
        """The torch-free encoder of the configured model, or (None, why not)."""
        requested = requested_path(cfg)
        if requested is None:
            return None, "the configuration runs the model on torch"
        try:
            source = model_source(cfg)
        except EncoderUnavailableError as exc:
            return None, str(exc)
        from clipmodel.query import QueryModel, QueryModelUnavailable

        cache = cfg.cache_dir
        try:
            model = QueryModel.open(source, requested, cache, threads)
        except QueryModelUnavailable as exc:
            return None, str(exc)
        name = cfg.model.name if cfg.weights_path is None else model.model_name
        return cls(model, name, fallback), ""

    @property
    def runtime(self) -> str:
        return f"{self.model.fast_path} on cpu (queries without torch)"

    def fidelity(self) -> dict | None:
        return self.model.doc.get("fidelity")

    def _full_encoder(self) -> Encoder:
        if self._full is None:
            if self._fallback is None:
                raise EncoderUnavailableError(
                    f"the image tower runs {self.model.image_path}, which needs torch"
                )
            LOG.info("image queries need torch here: %s", self.model.image_path)
            self._full = self._fallback()
        return self._full

    def preprocess(self, image: Any) -> Any:
        """The image tower's input (OpenAI's preprocessing, exact resize)."""
        if not self.model.images_onnx:
            full = self._full_encoder()
            prepare = getattr(full, "prepare", None)
            return prepare(image, fast_resize=False)[0] if prepare else full.preprocess(image)
        return self.model.prepare(image)

    def prepare(self, image: Any, fast_resize: bool | None = None) -> tuple[Any, None]:
        return self.preprocess(image), None

    def encode_images(self, batch: list[Any]) -> np.ndarray:
        if not self.model.images_onnx:
            return self._full_encoder().encode_images(batch)
        return self.model.encode_images(batch)

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        return self.model.encode_texts(list(texts))


def reader_encoder(cfg: Config, full: Callable[[], Encoder]) -> Encoder:
    """A query process's encoder: the torch-free one where it can run, else ``full()``."""
    enc, why = QueryEncoder.from_config(cfg, full)
    if enc is None:
        LOG.info("queries load the full model: %s", why)
        return full()
    return enc
