"""Real DNG files made from photos, for the RAW tests and bench/bench_raw.py.

The photo is turned back into what a sensor would record: sRGB decoded to linear light,
sampled through an RGGB Bayer filter into 12-bit values (a CFA image in a SubIFD, with the DNG
tags LibRaw needs). IFD0 holds a JPEG preview (``tifffile`` with ``imagecodecs``). The colour
matrix is XYZ -> linear sRGB, so the camera is "sRGB": demosaicing gives the photo back.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

WHITE = 4095  # 12-bit sensor
# XYZ (D65) -> linear sRGB: DNG's ColorMatrix1 maps XYZ to camera space
_XYZ_TO_SRGB = (3.2404542, -1.5371385, -0.4985314, -0.9692660, 1.8760108, 0.0415560,
                0.0556434, -0.2040259, 1.0572252)  # fmt: skip


def _rationals(values) -> list[int]:
    out = []
    for v in values:
        out += [int(round(v * 10000)), 10000]
    return out


def bayer_mosaic(rgb: Image.Image) -> np.ndarray:
    """The RGGB mosaic (uint16, 12-bit) a sensor would record of ``rgb`` (even size)."""
    a = np.asarray(rgb.convert("RGB"), dtype=np.float32) / 255.0
    lin = np.where(a <= 0.04045, a / 12.92, ((a + 0.055) / 1.055) ** 2.4)
    v = np.round(lin * WHITE).astype(np.uint16)
    mosaic = np.empty(v.shape[:2], np.uint16)
    mosaic[0::2, 0::2] = v[0::2, 0::2, 0]
    mosaic[0::2, 1::2] = v[0::2, 1::2, 1]
    mosaic[1::2, 0::2] = v[1::2, 0::2, 1]
    mosaic[1::2, 1::2] = v[1::2, 1::2, 2]
    return mosaic


def write_dng(
    path: Path,
    photo: Image.Image,
    size: tuple[int, int] | None = None,
    preview_side: int | None = None,
    make: str = "Clipsearch",
    model: str = "Test Camera 1",
    taken: str = "2021:06:05 04:03:02",
    orientation: int = 1,
) -> Path:
    """Write ``photo`` (resized to ``size``, even) as a DNG: CFA data in a SubIFD and, unless
    ``preview_side`` is 0, a JPEG preview in IFD0 whose long side is ``preview_side`` (None:
    the full size)."""
    import tifffile

    rgb = photo.convert("RGB")
    if size is not None:
        rgb = rgb.resize(size, Image.Resampling.BICUBIC)
    w, h = rgb.width // 2 * 2, rgb.height // 2 * 2
    rgb = rgb.crop((0, 0, w, h))
    mosaic = bayer_mosaic(rgb)
    path.parent.mkdir(parents=True, exist_ok=True)
    ifd0 = [
        (50706, "B", 4, (1, 4, 0, 0), True),  # DNGVersion
        (50707, "B", 4, (1, 1, 0, 0), True),  # DNGBackwardVersion
        (50708, "s", 0, model, True),  # UniqueCameraModel
        (271, "s", 0, make, True),
        (272, "s", 0, model, True),
        (274, "H", 1, orientation, True),
        (306, "s", 0, taken, True),
        (36867, "s", 0, taken, True),  # DateTimeOriginal
        (50721, "2i", 9, _rationals(_XYZ_TO_SRGB), True),  # ColorMatrix1
        (50778, "H", 1, 21, True),  # CalibrationIlluminant1: D65
        (50728, "2I", 3, _rationals((1, 1, 1)), True),  # AsShotNeutral
    ]
    cfa = [
        (33421, "H", 2, (2, 2), True),  # CFARepeatPatternDim
        (33422, "B", 4, (0, 1, 1, 2), True),  # CFAPattern: RGGB
        (50714, "H", 1, 0, True),  # BlackLevel
        (50717, "H", 1, WHITE, True),  # WhiteLevel
    ]
    with tifffile.TiffWriter(path) as tw:
        if preview_side == 0:
            # IFD0 is the CFA image itself (no preview): DNG allows the raw data in IFD0
            tw.write(mosaic, photometric=32803, subfiletype=0, extratags=ifd0 + cfa,
                     metadata=None)  # fmt: skip
            return path
        scale = 1.0 if preview_side is None else preview_side / max(w, h)
        prev = rgb.resize((max(1, round(w * scale)), max(1, round(h * scale))),
                          Image.Resampling.BICUBIC)  # fmt: skip
        # one strip: LibRaw's preview is the JPEG stream of the first strip
        tw.write(np.asarray(prev), photometric="rgb", compression="jpeg",
                 compressionargs={"level": 90}, rowsperstrip=prev.height, subfiletype=1,
                 subifds=1, extratags=ifd0, metadata=None)  # fmt: skip
        tw.write(mosaic, photometric=32803, subfiletype=0, extratags=cfa, metadata=None)
    return path
