"""Image preprocessing equal to OpenAI's torchvision pipeline, in PIL + numpy.

Official pipeline: Resize(n, BICUBIC) -> CenterCrop(n) -> convert("RGB") -> ToTensor -> Normalize.
Inputs may be PIL images, paths, bytes or HxWx3 numpy arrays; EXIF orientation is applied.
``resize_fast`` / ``resize_short_side_fast``: a faster stand-in for Pillow's bicubic resize.
"""

from __future__ import annotations

import functools
import io
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageOps

if TYPE_CHECKING:
    import torch

from .image_spec import MEAN, STD, ImageSpec, describe  # noqa: F401 - re-exported

# Modes PIL resizes with true bicubic filtering and that the official pipeline handles as is.
_NATIVE_MODES = {"RGB", "RGBA", "L"}

ImageInput = Image.Image | str | os.PathLike | bytes | np.ndarray


def open_image(source: ImageInput, max_pixels: int | None = None) -> Image.Image:
    """A PIL image from any supported input, EXIF-rotated; ``max_pixels`` caps decompression bombs."""
    if isinstance(source, Image.Image):
        img = source
    elif isinstance(source, np.ndarray):
        img = _from_array(source)
    elif isinstance(source, (bytes, bytearray, memoryview)):
        img = Image.open(io.BytesIO(bytes(source)))
    elif isinstance(source, (str, os.PathLike)):
        img = Image.open(Path(source))
    else:
        raise TypeError(f"cannot read an image from {type(source).__name__}")
    if max_pixels is not None and img.width * img.height > max_pixels:
        raise ValueError(
            f"image of {img.width}x{img.height} pixels exceeds the limit of {max_pixels} pixels"
        )
    if getattr(img, "is_animated", False):
        img.seek(0)
    if img.getexif().get(0x0112, 1) != 1:  # EXIF orientation tag says the pixels are rotated
        img = ImageOps.exif_transpose(img)
    return img


def _from_array(arr: np.ndarray) -> Image.Image:
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, axis=-1)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise ValueError(f"expected an HxWx3 (or HxWx4) array, got shape {arr.shape}")
    if arr.dtype != np.uint8:
        arr = np.asarray(arr, dtype=np.float64)
        if arr.max(initial=0.0) <= 1.0:
            arr = arr * 255.0
        arr = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
    return Image.fromarray(np.ascontiguousarray(arr[:, :, :3]), "RGB")


def to_supported_mode(img: Image.Image) -> Image.Image:
    """Convert modes PIL cannot bicubic-resize well (P, CMYK, I;16, LA, ...) to RGB/RGBA first."""
    if img.mode in _NATIVE_MODES:
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        # Scale to 8 bits by the range the values use: 0-1 (float), 0-255, or 16-bit.
        arr = np.asarray(img, dtype=np.float64)
        peak = arr.max(initial=0)
        top = 65535.0 if img.mode.startswith("I;16") or peak > 255 else 255.0
        if img.mode == "F" and peak <= 1.0:
            top = 1.0
        return Image.fromarray(np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    if img.mode in ("P", "PA") and ("transparency" in img.info or img.mode == "PA"):
        return img.convert("RGBA")
    if img.mode in ("LA", "La", "RGBa"):
        return img.convert("RGBA")
    return img.convert("RGB")


def short_side_size(width: int, height: int, size: int) -> tuple[int, int] | None:
    """(width, height) with the short side ``size`` by torchvision's Resize(int) rule, or
    None when the short side already is ``size``."""
    short, long = (width, height) if width <= height else (height, width)
    if short == size:
        return None
    new_long = int(size * long / short)
    return (size, new_long) if width <= height else (new_long, size)


def resize_short_side(img: Image.Image, size: int) -> Image.Image:
    """Bicubic resize so the short side is ``size`` (torchvision's Resize(int) size rule)."""
    target = short_side_size(*img.size, size)
    return img if target is None else img.resize(target, Image.BICUBIC)


# Images above this many pixels are copied out of Pillow in row bands: Image.tobytes() (and so
# np.asarray) joins 64 KiB chunks and took 30-50 ms for 12 MP here, the bands 10-15 ms.
_BAND_PIXELS = 1 << 21
_BAND_BYTES = 1 << 20


def _rgb_array(img: Image.Image) -> np.ndarray:
    """A writable HxWx3 uint8 copy of an RGB image (writable: torch warns on read-only arrays)."""
    w, h = img.size
    if w * h <= _BAND_PIXELS:
        return np.array(img)
    out = np.empty((h, w, 3), dtype=np.uint8)
    rows = max(1, _BAND_BYTES // (4 * w))
    for top in range(0, h, rows):
        bottom = min(h, top + rows)
        out[top:bottom] = np.asarray(img.crop((0, top, w, bottom)))
    return out


@functools.cache
def _pillow_may_go_vertical_first() -> bool:
    """Whether this Pillow runs the vertical pass first when the height shrinks much more.

    Pillow 13 does (for speed); older versions always run the horizontal pass first, as torch
    does. The pass order changes rounding and clipping of the intermediate image, so
    :func:`resize_fast` follows Pillow's. Probed once on a noise image where the orders differ.
    """
    noise = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    src = Image.fromarray(noise)
    pil = np.asarray(src.resize((32, 8), Image.BICUBIC))
    vertical_first = src.resize((16, 8), Image.BICUBIC).resize((32, 8), Image.BICUBIC)
    return bool(np.array_equal(pil, np.asarray(vertical_first)))


def resize_fast(img: Image.Image, size: tuple[int, int]) -> Image.Image:
    """``img.resize(size, BICUBIC)``, 3-5x faster for RGB images; other modes use Pillow as is.

    Why: speed. torch's antialiased bicubic on uint8 channels-last tensors follows Pillow's
    algorithm (a = -0.5, fixed-point weights); on real photos pixels differ by a mean of 0.003
    and at most 2 (out of 255) from Pillow's. It runs on the calling thread only.
    """
    w, h = int(size[0]), int(size[1])
    if w < 1 or h < 1:
        raise ValueError(f"cannot resize to {w}x{h}: width and height must be at least 1")
    if img.mode != "RGB":
        return img.resize((w, h), Image.BICUBIC)
    if (w, h) == img.size:
        return img.copy()  # as Pillow's resize does
    import torch
    import torch.nn.functional as F

    src_w, src_h = img.size
    x = torch.from_numpy(_rgb_array(img)).view(1, src_h, src_w, 3).permute(0, 3, 1, 2)
    # torch runs the horizontal pass first; Pillow 13 runs the vertical one first when the
    # height shrinks by more than twice as many pixels as the width (Resample.c).
    if w != src_w and src_h > h and src_h - h > 2 * (src_w - w) and _pillow_may_go_vertical_first():
        x = F.interpolate(x, size=(h, src_w), mode="bicubic", antialias=True)
    out = F.interpolate(x, size=(h, w), mode="bicubic", antialias=True)
    return Image.fromarray(np.ascontiguousarray(out[0].permute(1, 2, 0).numpy()))


def resize_short_side_fast(img: Image.Image, size: int) -> Image.Image:
    """:func:`resize_short_side` (the same output size) computed with :func:`resize_fast`."""
    target = short_side_size(*img.size, size)
    return img if target is None else resize_fast(img, target)


def center_crop(img: Image.Image, size: int) -> Image.Image:
    """Center crop to size x size (torchvision's rounding); pads with black if smaller."""
    w, h = img.size
    if w < size or h < size:
        canvas = Image.new(img.mode, (max(w, size), max(h, size)))
        canvas.paste(img, ((max(w, size) - w) // 2, (max(h, size) - h) // 2))
        img, (w, h) = canvas, canvas.size
    top = int(round((h - size) / 2.0))
    left = int(round((w - size) / 2.0))
    return img.crop((left, top, left + size, top + size))


_SCALE = (1.0 / (255.0 * np.asarray(STD, dtype=np.float64))).astype(np.float32)
_SHIFT = (np.asarray(MEAN, dtype=np.float64) / np.asarray(STD, dtype=np.float64)).astype(np.float32)


def to_array(
    img: Image.Image, mean: tuple[float, ...] = MEAN, std: tuple[float, ...] = STD
) -> np.ndarray:
    """RGB image -> normalised float32 CHW array (ToTensor + Normalize), without torch.

    Computed as ``x * (1 / (255 std)) - mean / std`` on the channel-first bytes: the same
    values to within float32 rounding (1e-6), in one pass instead of three.
    """
    if mean is MEAN and std is STD:
        scale, shift = _SCALE, _SHIFT
    else:
        m, s = np.asarray(mean, dtype=np.float64), np.asarray(std, dtype=np.float64)
        scale, shift = (1.0 / (255.0 * s)).astype(np.float32), (m / s).astype(np.float32)
    chw = np.asarray(img.convert("RGB")).transpose(2, 0, 1)
    out = np.empty(chw.shape, dtype=np.float32)
    np.multiply(chw, scale[:, None, None], out=out)
    out -= shift[:, None, None]
    return out


def to_tensor(
    img: Image.Image, mean: tuple[float, ...] = MEAN, std: tuple[float, ...] = STD
) -> torch.Tensor:
    """:func:`to_array` as a torch tensor (the models' input)."""
    import torch

    return torch.from_numpy(to_array(img, mean, std))


class Preprocess:
    """Callable image -> model input tensor (3, n, n): OpenAI's ``preprocess`` by default, or
    the preprocessing another model family's ``spec`` describes."""

    def __init__(self, n_px: int, max_pixels: int | None = None, spec: ImageSpec | None = None):
        self.n_px = n_px
        self.max_pixels = max_pixels
        self.spec = spec if spec is not None else ImageSpec(n_px)
        if self.spec.size != n_px:
            raise ValueError(f"preprocessing size {self.spec.size} != model resolution {n_px}")

    @property
    def is_openai(self) -> bool:
        """True for OpenAI's pipeline (short side, centre crop, OpenAI's mean and std)."""
        return self.spec.is_openai

    def resize(self, img: Image.Image, fast: bool = False) -> Image.Image:
        """Step one: the short side to n (crop models) or the image to n x n (the others)."""
        if self.spec.resample == "bilinear":
            target = short_side_size(*img.size, self.n_px) if self.spec.crop else None
            size = target or (img.size if self.spec.crop else (self.n_px, self.n_px))
            return img if size == img.size else img.resize(size, Image.BILINEAR)
        if self.spec.crop:
            return (resize_short_side_fast if fast else resize_short_side)(img, self.n_px)
        size = (self.n_px, self.n_px)
        return resize_fast(img, size) if fast else img.resize(size, Image.BICUBIC)

    def finish(self, resized: Image.Image) -> torch.Tensor:
        """Step two: centre crop (where the spec crops) and normalise."""
        img = center_crop(resized, self.n_px) if self.spec.crop else resized
        return to_tensor(img, tuple(self.spec.mean), tuple(self.spec.std))

    def __call__(self, image: ImageInput) -> torch.Tensor:
        import torch

        return torch.from_numpy(self.array(image))

    def crop(self, image: ImageInput) -> Image.Image:
        """The image resized and centre-cropped (or squashed to size, per the spec), before
        the conversion to numbers: what :meth:`array` and the call normalise."""
        img = to_supported_mode(open_image(image, self.max_pixels))
        if self.is_openai:
            return center_crop(resize_short_side(img, self.n_px), self.n_px)
        resized = self.resize(img)
        return center_crop(resized, self.n_px) if self.spec.crop else resized

    def array(self, image: ImageInput) -> np.ndarray:
        """The model input as a numpy array (3, n, n): the same numbers, without torch."""
        return to_array(self.crop(image), tuple(self.spec.mean), tuple(self.spec.std))

    def __repr__(self) -> str:
        return describe(self.n_px, self.spec)


def transform(n_px: int) -> Preprocess:
    """The preprocessing for a model of input resolution ``n_px``."""
    return Preprocess(n_px)


def for_model(model, max_pixels: int | None = None) -> Preprocess:
    """The preprocessing ``model`` was trained with (its ``image_spec``, else OpenAI's)."""
    spec = getattr(model, "image_spec", None)
    return Preprocess(int(model.image_resolution), max_pixels, spec)
