"""OCR engines: RapidOCR (PP-OCR ONNX models shipped in its wheel) and Tesseract, behind one
small interface, and the ``auto`` router between them.

Measured (``bench/bench_ocr.py``): RapidOCR reads text on photos (signs, labels, rotated
text) far better than Tesseract; on document pages both are good and together near perfect,
and RapidOCR's 180-degree classifier flips document lines. ``auto`` therefore reads
document-like pages (:func:`is_document`: mostly near-white, little colour) with both
(RapidOCR without the classifier) and everything else with RapidOCR alone.
Both are imported lazily, when an engine is made: nothing here runs at import time.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:  # annotations only: a query process never imports Pillow for OCR
    from PIL import Image

PIP_HINT = "pip install 'clipsearch[ocr]'"
APT_HINT = "apt-get install tesseract-ocr"
_PAGE_SIDE = 256  # the page detector looks at a thumbnail this size
_WHITE, _WHITE_SHARE, _GREY_SATURATION, _MID_SHARE = 200, 0.6, 24, 0.2


class OcrUnavailableError(RuntimeError):
    """The configured OCR engine is not installed (the message says how to install it)."""


@dataclass(frozen=True)
class Line:
    """One recognised line: its text, the engine's confidence (0..1) and its height (px)."""

    text: str
    confidence: float
    height: float


class OcrEngine(Protocol):
    name: str

    def read(self, image: Image.Image) -> list[Line]:
        """The lines of text in an RGB image."""
        ...


def is_document(image: Image.Image) -> bool:
    """A document-like page: most pixels near-white, hardly any colour and few mid-tones
    (a scan, a printed page, a screenshot of a text). A bright, pale photo (snow, a white
    sky) can pass too: :class:`AutoEngine` then falls back to RapidOCR."""
    small = image.convert("RGB")
    small.thumbnail((_PAGE_SIDE, _PAGE_SIDE))
    grey = np.asarray(small.convert("L"), dtype=np.float32)
    saturation = np.asarray(small.convert("HSV"), dtype=np.float32)[..., 1]
    mid = float(np.mean((grey > 60) & (grey < _WHITE)))
    return (float(np.mean(grey >= _WHITE)) >= _WHITE_SHARE and mid <= _MID_SHARE
            and float(np.median(saturation)) <= _GREY_SATURATION)  # fmt: skip


class RapidOcrEngine:
    """RapidOCR (``rapidocr_onnxruntime``): detection, angle classification, recognition.

    ``use_cls``: the 180-degree classifier (it reads upside-down text, but flips some
    document lines). RapidOCR drops the spaces between words: matching is space-insensitive.
    """

    name = "rapidocr"

    def __init__(self, use_cls: bool = True, threads: int = 0):
        try:
            from rapidocr_onnxruntime import RapidOCR
        except ImportError:
            raise OcrUnavailableError(f"RapidOCR is not installed: {PIP_HINT}") from None
        opts = {"intra_op_num_threads": threads} if threads > 0 else {}
        self._ocr = RapidOCR(**opts)
        self.use_cls = use_cls

    def read(self, image: Image.Image, use_cls: bool | None = None) -> list[Line]:
        use_cls = self.use_cls if use_cls is None else use_cls
        result, _ = self._ocr(np.asarray(image.convert("RGB")), use_cls=use_cls)
        lines = []
        for box, text, score in result or []:
            q = np.asarray(box, dtype=np.float32)  # corners: top-left, top-right, bottom-...
            height = (np.linalg.norm(q[3] - q[0]) + np.linalg.norm(q[2] - q[1])) / 2
            lines.append(Line(str(text), float(score), float(height)))
        return lines


class TesseractEngine:
    """Tesseract through ``pytesseract`` (one ``tesseract`` process per image).

    ``OMP_THREAD_LIMIT=1`` unless set: Debian's OpenMP build runs ~10x slower on 2 cores
    with its default thread team.
    """

    name = "tesseract"

    def __init__(self, languages: str = "eng"):
        try:
            import pytesseract
        except ImportError:
            raise OcrUnavailableError(f"pytesseract is not installed: {PIP_HINT}") from None
        os.environ.setdefault("OMP_THREAD_LIMIT", "1")
        try:
            have = set(pytesseract.get_languages(config=""))
        except (pytesseract.TesseractNotFoundError, OSError):
            raise OcrUnavailableError(f"the tesseract program is not installed: {APT_HINT}") from None
        missing = [lang for lang in languages.split("+") if lang not in have]
        if missing:
            raise OcrUnavailableError(
                f"Tesseract has no data for {', '.join(missing)} (installed: "
                f"{', '.join(sorted(have)) or 'none'}): apt-get install "
                + " ".join(f"tesseract-ocr-{m}" for m in missing))  # fmt: skip
        self._tess, self.languages = pytesseract, languages

    def read(self, image: Image.Image) -> list[Line]:
        data = self._tess.image_to_data(image.convert("RGB"), lang=self.languages,
                                        output_type=self._tess.Output.DICT)  # fmt: skip
        words: dict[tuple, list[tuple[str, float, float]]] = {}
        for i, word in enumerate(data["text"]):
            conf = float(data["conf"][i])
            if conf < 0 or not word.strip():
                continue
            key = (data["block_num"][i], data["par_num"][i], data["line_num"][i])
            words.setdefault(key, []).append((word, conf / 100, float(data["height"][i])))
        return [Line(" ".join(w for w, _, _ in ws), float(np.mean([c for _, c, _ in ws])),
                     float(np.median([h for _, _, h in ws])))
                for _, ws in sorted(words.items())]  # fmt: skip


class AutoEngine:
    """RapidOCR for photos; on document-like pages Tesseract and RapidOCR without its angle
    classifier, their lines together (measured on pages of random words: Tesseract 95%, 0.6 s;
    RapidOCR 99.6%, 4.2 s; both 100%). A pale photo taken for a page is still read by
    RapidOCR. An engine that is not installed leaves its part to the other; ``used``: the
    engine(s) that read the last image."""

    name = "auto"

    def __init__(self, languages: str = "eng", threads: int = 0):
        self.photo: RapidOcrEngine | None = None
        self.page: TesseractEngine | None = None
        errors = []
        try:
            self.photo = RapidOcrEngine(threads=threads)
        except OcrUnavailableError as exc:
            errors.append(str(exc))
        try:
            self.page = TesseractEngine(languages)
        except OcrUnavailableError as exc:
            errors.append(str(exc))
        if self.photo is None and self.page is None:
            raise OcrUnavailableError("no OCR engine is installed: " + "; ".join(errors))
        self.used = self.name

    def read(self, image: Image.Image) -> list[Line]:
        page = self.photo is None or (self.page is not None and is_document(image))
        lines = self.page.read(image) if page and self.page is not None else []
        if self.photo is not None:
            lines += self.photo.read(image, use_cls=not page)  # the classifier flips page lines
        self.used = "+".join(e.name for e in ((self.page if page else None), self.photo) if e)
        return lines


def make_engine(kind: str, languages: str = "eng", threads: int = 0) -> OcrEngine:
    """The engine ``ocr.engine`` names (auto, rapidocr, tesseract)."""
    if kind == "rapidocr":
        return RapidOcrEngine(threads=threads)
    if kind == "tesseract":
        return TesseractEngine(languages)
    if kind == "auto":
        return AutoEngine(languages, threads)
    raise ValueError(f"unknown OCR engine {kind!r}")


def engine_report(languages: str = "eng") -> dict[str, dict]:
    """Which engines this machine has (``clipsearch doctor``): {name: {available, detail}}."""
    out: dict[str, dict] = {}
    for name, make in (("rapidocr", RapidOcrEngine), ("tesseract", lambda: TesseractEngine(languages))):
        try:
            engine = make()
        except OcrUnavailableError as exc:
            out[name] = {"available": False, "detail": str(exc)}
            continue
        if isinstance(engine, TesseractEngine):
            detail = f"tesseract {engine._tess.get_tesseract_version()} ({languages})"
        else:
            from importlib.metadata import version

            detail = f"rapidocr_onnxruntime {version('rapidocr_onnxruntime')}"
        out[name] = {"available": True, "detail": detail}
    return out
