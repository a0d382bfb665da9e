"""Real photos with words drawn on them, and document-like pages, for the OCR tests and
``bench/bench_ocr.py`` (Pillow ``ImageDraw`` with the system's TrueType fonts).

A word is drawn either on a plain band (a sign, a label, a caption: a light or dark box
behind it) or straight onto the photo (no box: the contrast is what the photo gives), at a
pixel size and an angle; each drawing records what a test needs to know about it.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

FONT_DIRS = (Path("/usr/share/fonts/truetype/dejavu"), Path("/usr/share/fonts/truetype/liberation"))
FONT_NAMES = ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSerif.ttf", "LiberationSans-Regular.ttf",
              "LiberationSerif-Regular.ttf")  # fmt: skip


@dataclass
class Drawn:
    """One word drawn on an image."""

    word: str
    size: int  # font size in pixels
    angle: float  # degrees, counter-clockwise
    band: bool  # on a plain band (True) or straight on the photo
    brightness: float  # mean luminance (0..255) of the photo under the word


def fonts() -> list[Path]:
    """The TrueType fonts found (skips the test, naming the package, when none is)."""
    found = [d / n for d in FONT_DIRS for n in FONT_NAMES if (d / n).is_file()]
    if not found:
        pytest.skip("OCR tests need TrueType fonts: apt-get install fonts-dejavu-core")
    return found


# Lower-case letters less "l": in sans-serif fonts it is the glyph of a capital I, which no
# reader can tell apart in a random string (real words have the context that decides).
LETTERS = [c for c in string.ascii_lowercase if c != "l"]


def random_word(rng: np.random.Generator, lo: int = 5, hi: int = 8) -> str:
    """Random lower-case letters (no dictionary word: the engines cannot guess them)."""
    return "".join(rng.choice(LETTERS, int(rng.integers(lo, hi + 1))))


def _luminance(img: Image.Image, box: tuple[int, int, int, int]) -> float:
    return float(np.asarray(img.crop(box).convert("L"), dtype=np.float32).mean())


def draw_word(img: Image.Image, word: str, font: Path, size: int, angle: float, band: bool,
              rng: np.random.Generator, region: tuple[int, int, int, int] | None = None) -> Drawn:  # fmt: skip
    """Draw ``word`` on ``img`` in place, at a random spot of ``region`` (x0, y0, x1, y1;
    default the whole image) where it fits."""
    f = ImageFont.truetype(str(font), size)
    left, top, right, bottom = f.getbbox(word)
    pad = max(4, size // 3) if band else 2
    w, h = right - left + 2 * pad, bottom - top + 2 * pad
    layer = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    d = ImageDraw.Draw(layer)
    ink = None  # straight on the photo: the colour that stands out from what lies under it
    if band:
        light = bool(rng.integers(2))
        d.rectangle((0, 0, w - 1, h - 1), fill=(245, 245, 240, 255) if light else (25, 30, 35, 255))
        ink = (20, 20, 20, 255) if light else (250, 250, 250, 255)
    rot_size = layer.rotate(angle, expand=True).size
    x0, y0, x1, y1 = region or (0, 0, img.width, img.height)
    x = int(rng.integers(x0, max(x0 + 1, x1 - rot_size[0])))
    y = int(rng.integers(y0, max(y0 + 1, y1 - rot_size[1])))
    box = (x, y, min(img.width, x + rot_size[0]), min(img.height, y + rot_size[1]))
    brightness = _luminance(img, box)
    if ink is None:
        ink = (15, 15, 15, 255) if brightness >= 128 else (250, 250, 250, 255)
    d.text((pad - left, pad - top), word, font=f, fill=ink)
    rotated = layer.rotate(angle, expand=True, resample=Image.BICUBIC)
    img.paste(rotated, (x, y), rotated)
    return Drawn(word, size, angle, band, brightness)


def photo_with_word(src: Path, word: str, rng: np.random.Generator, size: int = 32,
                    angle: float = 0.0, band: bool = True) -> tuple[Image.Image, Drawn]:  # fmt: skip
    """A copy of the photo ``src`` with ``word`` drawn on it."""
    img = Image.open(src).convert("RGB")
    font = fonts()[int(rng.integers(len(fonts())))]
    return img, draw_word(img, word, font, size, angle, band, rng)


def document_page(lines: list[list[str]], rng: np.random.Generator, width: int = 1240,
                  sizes: tuple[int, ...] = (20, 24, 28, 36)) -> Image.Image:  # fmt: skip
    """A white page (A4 at 150 dpi by default) with the given lines of words, each line in a
    font and size of its own."""
    height = int(width * 1.414)
    page = Image.new("RGB", (width, height), (255, 255, 255))
    d = ImageDraw.Draw(page)
    y, margin = 90, 100
    for words in lines:
        size = int(rng.choice(sizes))
        f = ImageFont.truetype(str(fonts()[int(rng.integers(len(fonts())))]), size)
        d.text((margin, y), " ".join(words), font=f, fill=(10, 10, 10))
        y += int(size * 1.8)
        if y > height - 120:
            break
    return page
