"""Test concepts built from one photo and its augmentations (crops, flips, colour, resizes).

``augmented_copies(src, dest, n)`` writes ``n`` JPEG variants of ``src``: deterministic mixes
of a crop (80-95 % of the frame), a horizontal flip, a colour / brightness / contrast change
and a resize, so that their CLIP vectors cluster around the original's. ``strength`` scales
every change toward none (1: those ranges; 0.5: crops of 90-97.5 %, half the colour change,
resizes to 75-100 %): a random checkpoint's vectors cluster only under milder changes than a
trained one's (docs/benchmarks.md, "Personal concepts").
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

KINDS = ("crop", "flip", "colour", "resize")


def augment(
    img: Image.Image, seed: int, kinds: tuple[str, ...] = KINDS, strength: float = 1.0
) -> Image.Image:
    """One deterministic augmentation of ``img`` made of ``kinds`` (all four by default),
    each change scaled by ``strength`` (0 < strength <= 1)."""
    if not 0 < strength <= 1:
        raise ValueError(f"strength must be in (0, 1], got {strength}")
    rng = np.random.default_rng(seed)
    img = img.convert("RGB")
    w, h = img.size
    f = 1 - strength * (1 - rng.uniform(0.8, 0.95))
    cw, ch = int(w * f), int(h * f)
    x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    if "crop" in kinds:
        img = img.crop((x, y, x + cw, y + ch))
    if seed % 2 and "flip" in kinds:
        img = ImageOps.mirror(img)
    factors = [1 + strength * (rng.uniform(1 - a, 1 + a) - 1) for a in (0.4, 0.2, 0.2)]
    if "colour" in kinds:
        img = ImageEnhance.Color(img).enhance(factors[0])
        img = ImageEnhance.Brightness(img).enhance(factors[1])
        img = ImageEnhance.Contrast(img).enhance(factors[2])
    s = 1 - strength * (1 - rng.uniform(0.5, 1.0))
    if "resize" in kinds:
        img = img.resize((max(32, int(img.width * s)), max(32, int(img.height * s))))
    return img


def augmented_copies(
    src: Path,
    dest: Path,
    n: int,
    prefix: str = "aug",
    kinds: tuple[str, ...] = KINDS,
    strength: float = 1.0,
) -> list[Path]:
    """``n`` augmented JPEG copies of ``src`` written into ``dest`` (created)."""
    dest.mkdir(parents=True, exist_ok=True)
    with Image.open(src) as im:
        im.load()
        out = []
        for i in range(n):
            path = dest / f"{prefix}-{src.stem}-{i:02d}.jpg"
            augment(im, i, kinds, strength).save(path, quality=90)
            out.append(path)
    return out


def augmented_library(
    photos: Path, coco: list[Path], copies: int = 12, others: int = 45, x: int = 0
) -> tuple[list[Path], list[Path]]:
    """Photo ``coco[x]`` plus ``copies`` augmentations of it and ``others`` other coco photos
    in ``photos``; returns (the copies of X, original first; the other photos)."""
    import shutil

    photos.mkdir(parents=True, exist_ok=True)
    src = coco[x]
    original = photos / src.name
    shutil.copyfile(src, original)
    family = [original, *augmented_copies(src, photos, copies)]
    rest = []
    for p in [c for i, c in enumerate(coco) if i != x][:others]:
        shutil.copyfile(p, photos / p.name)
        rest.append(photos / p.name)
    return family, rest


def precision_at(ids: list[int], relevant: set[int], exclude: set[int], n: int = 10) -> float:
    """Precision@n of ranked ``ids`` (``exclude``: the query and marked photos, skipped)."""
    ranked = [i for i in ids if i not in exclude][:n]
    return sum(i in relevant for i in ranked) / n
