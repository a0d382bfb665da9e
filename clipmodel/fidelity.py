"""Self-checks of the fast paths against the exact fp32 model (issue 13).

A fast path (int8 ONNX Runtime, torch bf16; in the indexer also JPEG draft decoding or the fast
resize) changes the numbers. Each one is measured on a fixed calibration set shipped with the
package (34 photos cut from the project's openly licensed sample photos, see
calibration/LICENSES.md, and 50 prompts): the cosine of every embedding to the exact path's
(fp32 torch, official preprocessing), mean and minimum, for images and for texts. A path is
faithful when both pass: mean >= 0.999 and min >= 0.99 (``MEAN_BAR``, ``MIN_BAR``).

Measurements are cached as JSON (see clipmodel.fastpath for where) with the code version that
made them: a later start reads them back (no cost); another version of the code measures again.

    from clipmodel.fidelity import measure, calibration_files
    fid = measure(fast_embeddings, exact_embeddings)   # Fidelity(mean=..., min=..., n=...)
    fid.passed
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "CHECK_VERSION",
    "MEAN_BAR",
    "MIN_BAR",
    "Fidelity",
    "FidelityReport",
    "PathCheck",
    "calibration_files",
    "calibration_inputs",
    "calibration_prompts",
    "embed_calibration",
    "measure",
]

MEAN_BAR = 0.999
MIN_BAR = 0.99
CHECK_VERSION = 1  # bump when the calibration set or the measurement changes
CALIBRATION_DIR = Path(__file__).with_name("calibration")


@dataclass(frozen=True)
class Fidelity:
    """Cosine of a fast path's embeddings to the exact ones: mean and minimum over ``n``."""

    mean: float
    min: float
    n: int

    @property
    def passed(self) -> bool:
        return self.mean >= MEAN_BAR and self.min >= MIN_BAR

    def __str__(self) -> str:
        return f"mean {self.mean:.5f} min {self.min:.5f}"


def _unit(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def measure(fast: Any, exact: Any) -> Fidelity:
    """Fidelity of embeddings ``fast`` (n, d) to ``exact`` (n, d), row by row (arrays or
    tensors, normalised or not). Use it for any variant: an image pipeline (JPEG draft
    decoding, fast resize) embedded by the same model as the exact pipeline, or a model path."""
    a, b = _unit(fast), _unit(exact)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"expected two (n, d) arrays of one shape; got {a.shape}, {b.shape}")
    if not len(a):
        raise ValueError("no embeddings to compare")
    cos = (a * b).sum(-1)
    return Fidelity(float(cos.mean()), float(cos.min()), len(cos))


@dataclass
class PathCheck:
    """One path measured against the exact one on the calibration set."""

    path: str
    images: Fidelity | None
    texts: Fidelity | None
    seconds: float = 0.0  # what the measurement cost (0 when read from the cache)
    cached: bool = False
    version: str = ""

    @property
    def passed(self) -> bool:
        return all(f is None or f.passed for f in (self.images, self.texts))

    def summary(self) -> str:
        parts = [f"{what} {f}" for what, f in (("images", self.images), ("texts", self.texts))
                 if f is not None]  # fmt: skip
        return ", ".join(parts) or "not measured"

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["passed"] = self.passed
        return d

    @classmethod
    def from_dict(cls, d: dict) -> PathCheck:
        fid = {k: Fidelity(**d[k]) if d.get(k) else None for k in ("images", "texts")}
        return cls(d["path"], fid["images"], fid["texts"], float(d.get("seconds", 0.0)),
                   bool(d.get("cached", False)), str(d.get("version", "")))  # fmt: skip


@dataclass
class FidelityReport:
    """Which path runs and how faithful it measured, and what was refused on the way.

    ``path``: what runs, e.g. "onnxruntime int8", "torch bf16", "torch fp32" (exact), or for
    towers on different paths "onnxruntime int8 (texts: torch bf16)"; ``image_path`` and
    ``text_path`` name each tower's. ``requested``: what the caller asked for ("auto ...", or
    the explicit backend/precision). ``checks``: every path measured, in the order tried.
    ``refused``: what was measured below the bars and not run, e.g. "onnxruntime int8" or
    "onnxruntime int8 (texts)" (refused for the texts only).
    """

    path: str
    requested: str
    checks: list[PathCheck] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    image_path: str = ""
    text_path: str = ""

    def __post_init__(self) -> None:
        self.image_path = self.image_path or self.path
        self.text_path = self.text_path or self.path

    def _check_of(self, path: str) -> PathCheck | None:
        return next((c for c in reversed(self.checks) if c.path == path), None)

    @property
    def check(self) -> PathCheck | None:
        """The image path's measurement (None for the exact path or one not checked)."""
        return self._check_of(self.image_path)

    @property
    def images(self) -> Fidelity | None:
        c = self._check_of(self.image_path)
        return c.images if c else None

    @property
    def texts(self) -> Fidelity | None:
        c = self._check_of(self.text_path)
        return c.texts if c else None

    @property
    def faithful(self) -> bool:
        """True when each tower runs the exact path or one measured above the bars."""
        ok = []
        for path, fid in ((self.image_path, self.images), (self.text_path, self.texts)):
            ok.append(path == "torch fp32" or (fid is not None and fid.passed))
        return all(ok)

    def to_dict(self) -> dict:
        return {"path": self.path, "image_path": self.image_path, "text_path": self.text_path,
                "requested": self.requested, "faithful": self.faithful,
                "images": dataclasses.asdict(self.images) if self.images else None,
                "texts": dataclasses.asdict(self.texts) if self.texts else None,
                "refused": list(self.refused), "checks": [c.to_dict() for c in self.checks],
                "bars": {"mean": MEAN_BAR, "min": MIN_BAR}}  # fmt: skip

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


def calibration_files() -> list[Path]:
    """The shipped calibration photos (JPEG files, 256 x 256)."""
    return sorted(CALIBRATION_DIR.glob("*.jpg"))


@lru_cache(maxsize=1)
def calibration_prompts() -> tuple[str, ...]:
    text = (CALIBRATION_DIR / "prompts.txt").read_text(encoding="utf-8")
    return tuple(line for line in text.splitlines() if line.strip())


@lru_cache(maxsize=4)
def calibration_inputs(resolution: int):
    """(images (N, 3, R, R) normalised as ``preprocess`` makes them, tokens (M, 77)) of the
    calibration set, at a model's input resolution."""
    import torch
    from PIL import Image

    from .preprocess import Preprocess
    from .tokenizer import tokenize

    pre = Preprocess(resolution)
    images = []
    for path in calibration_files():
        with Image.open(path) as img:
            images.append(pre(img))
    return torch.stack(images), tokenize(list(calibration_prompts()), truncate=True)


def model_calibration(model: Any):
    """The calibration set as ``model`` reads it: its own preprocessing and tokenizer (OpenAI's
    for CLIP, the cached :func:`calibration_inputs`)."""
    import torch
    from PIL import Image

    from .preprocess import for_model
    from .tokenizer import model_tokenizer

    if getattr(model, "family", "clip") == "clip":
        return calibration_inputs(int(model.image_resolution))
    pre = for_model(model)
    images = []
    for path in calibration_files():
        with Image.open(path) as img:
            images.append(pre(img))
    return torch.stack(images), model_tokenizer(model)(list(calibration_prompts()))


def embed_calibration(model: Any, images=None, tokens=None) -> tuple[np.ndarray, np.ndarray]:
    """Normalised (image, text) embeddings of the calibration set (or of the given inputs) by
    any model with ``encode_image`` / ``encode_text`` (torch CLIP in any dtype, OnnxCLIP)."""
    import torch

    if images is None or tokens is None:
        default_images, default_tokens = model_calibration(model)
        images = default_images if images is None else images
        tokens = default_tokens if tokens is None else tokens
    dtype = getattr(model, "dtype", torch.float32)
    with torch.inference_mode():
        img = [model.encode_image(images[i : i + 16].to(dtype)).float() for i in
               range(0, len(images), 16)]  # fmt: skip
        # texts of similar length together: each batch runs only to its longest text
        order = torch.argsort(tokens.argmax(dim=-1))  # any order is exact (undone below)
        txt = torch.cat([model.encode_text(tokens[order[i : i + 16]]).float()
                         for i in range(0, len(tokens), 16)])  # fmt: skip
        txt = txt[torch.argsort(order)]
    return _unit(torch.cat(img)).astype(np.float32), _unit(txt).astype(np.float32)


def read_check(path: Path, version: str) -> PathCheck | None:
    """A cached measurement, if one made by this ``version`` of the code is there."""
    try:
        d = json.loads(Path(path).read_text())
        check = PathCheck.from_dict(d)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if check.version != version:
        return None
    check.cached, check.seconds = True, 0.0
    return check


def write_check(path: Path, check: PathCheck) -> None:
    """Store a measurement atomically (a temporary file renamed into place)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(check.to_dict(), indent=2))
    os.replace(tmp, path)
