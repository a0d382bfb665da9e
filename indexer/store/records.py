"""Value types that cross the store boundary: image records, change batches, tag views."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

STATUS_OK = "ok"
STATUS_ERROR = "error"


@dataclass
class Record:
    """One image row as the rest of the program sees it (``path`` is a ``str``)."""

    id: int
    path: str
    root: str
    size: int | None
    mtime_ns: int | None
    content_hash: str | None
    width: int | None
    height: int | None
    taken_at: str | None
    camera: str | None
    status: str
    error: str | None
    indexed_at: float
    duration_ms: int | None = None  # a video's length (None: a photo)

    @property
    def is_video(self) -> bool:
        return self.duration_ms is not None

    @classmethod
    def from_row(cls, row) -> Record:  # noqa: ANN001 - a row with the images table's columns
        return cls(
            row.id, os.fsdecode(row.path), os.fsdecode(row.root), row.size, row.mtime_ns,
            row.content_hash, row.width, row.height, row.taken_at, row.camera, row.status,
            row.error, row.indexed_at, row.duration_ms,
        )  # fmt: skip


@dataclass
class Changes:
    """A batch of changes applied in one transaction by :meth:`IndexStore.apply`.

    ``upserts``: image rows (dicts of ImageRow columns; ``id`` present = update that row) with
    an optional ``vector`` (np.ndarray) or ``copy_from`` (id whose vector, and frames, to copy);
    rows without either become vector-less (errors). A video's upsert also carries ``frames``:
    (times in ms (n,), vectors (n, d)), which replace the row's frames (an upsert with a
    ``vector`` and no ``frames`` leaves the row none). ``moves``/``touches``: dicts with ``id`` and the columns
    to update, vectors untouched. ``deletes``: ids of rows to remove with their vectors.
    """

    upserts: list[dict]
    moves: list[dict]
    touches: list[dict]
    deletes: list[int]

    @classmethod
    def empty(cls) -> Changes:
        return cls([], [], [], [])

    def __len__(self) -> int:
        return len(self.upserts) + len(self.moves) + len(self.touches) + len(self.deletes)


@dataclass(frozen=True)
class VectorState:
    """What the searchable vector index holds: its kind, size and the generation it reflects."""

    kind: str | None
    count: int
    generation: int


@dataclass(frozen=True)
class TagView:
    """How stored (uncapped) tag rows are read: at most ``top_n`` standalone tags per image
    (None: all), best first; tags named in ``exclusive`` (exclusive groups' winners) are
    always kept on top of those."""

    top_n: int | None = None
    exclusive: tuple[str, ...] = ()


@dataclass
class Concept:
    """A personal concept taught by example: a linear model over this version's vectors.

    ``positives``/``negatives`` are image ids of the examples; ``logit(x) = z @ weights + bias``
    with ``z = (x - center) / |x - center|`` (``z = x`` when ``center`` is None), and photos with
    ``logit >= threshold`` carry the concept as a tag named ``name``.
    ``model`` is the checkpoint sha256 of the vectors it was fitted on.
    """

    name: str
    positives: list[int]
    negatives: list[int]
    weights: np.ndarray
    bias: float
    threshold: float
    hint: str | None = None
    model: str = ""
    stats: dict = field(default_factory=dict)
    created: float = 0.0
    updated: float = 0.0
    center: np.ndarray | None = None


def concept_row(c: Concept) -> dict[str, Any]:
    """The column values of a ``concepts`` row (every backend stores the same columns)."""
    return {
        "name": c.name,
        "positives": json.dumps([int(i) for i in c.positives]),
        "negatives": json.dumps([int(i) for i in c.negatives]),
        "hint": c.hint,
        "weights": np.ascontiguousarray(c.weights, dtype="<f4").tobytes(),
        "bias": float(c.bias), "threshold": float(c.threshold), "model": c.model,
        "stats": json.dumps(c.stats), "created": float(c.created), "updated": float(c.updated),
        "center": None if c.center is None else np.ascontiguousarray(c.center, "<f4").tobytes(),
    }  # fmt: skip


def concept_from_row(r: Any) -> Concept:  # noqa: ANN401 - a database row of concept_row's columns
    """The :class:`Concept` of a ``concepts`` row."""
    return Concept(r.name, json.loads(r.positives), json.loads(r.negatives),
                   np.frombuffer(r.weights, dtype="<f4").astype(np.float32), float(r.bias),
                   float(r.threshold), r.hint, r.model, json.loads(r.stats), r.created, r.updated,
                   None if r.center is None else np.frombuffer(r.center, "<f4").astype(np.float32))  # fmt: skip


@dataclass
class Album:
    """A smart album: a saved search (``spec``: query text, marked photos, concepts, filters,
    cut-off; see :mod:`indexer.search.albums`) run again whenever it is read."""

    name: str
    spec: dict
    created: float = 0.0
    updated: float = 0.0


# ----------------------------------------------------------------- recognised text (OCR)
OCR_OK, OCR_ERROR = "ok", "error"


def compact_text(text: str) -> str:
    """The form text is matched in: lower-case letters and digits only (RapidOCR drops
    spaces, so ``invoice 2023``, ``Invoice2023`` and ``INVOICE-2023`` are one)."""
    return "".join(ch for ch in text.casefold() if ch.isalnum())


@dataclass(frozen=True)
class ImageText:
    """The text recognised in one image: ``status`` ok (``text`` may be empty: none found) or
    error (``error`` the reason); ``engine`` the OCR engine that read it."""

    image_id: int
    text: str
    engine: str
    status: str = OCR_OK
    error: str | None = None
    seconds: float = 0.0


def text_from_row(row) -> ImageText:  # noqa: ANN001 - an ocr_text row of either backend
    """The :class:`ImageText` of a stored ``ocr_text`` row (both backends share the columns)."""
    return ImageText(int(row.image_id), row.text, row.engine, row.status, row.error,
                     float(row.seconds))  # fmt: skip


@dataclass(frozen=True)
class TextMatch:
    """An image whose recognised text contains a query phrase (``text``: all its text)."""

    image_id: int
    text: str
