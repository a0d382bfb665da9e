"""Preprocessing equals OpenAI's Resize(BICUBIC)/CenterCrop/ToTensor/Normalize on PIL images.

The reference below restates torchvision's documented semantics independently with PIL +
numpy (torchvision itself cannot be imported with the CPU build of torch).
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image, UnidentifiedImageError

import clipmodel as clip
from clipmodel.preprocess import Preprocess

MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)


def torchvision_reference(img: Image.Image, n: int) -> np.ndarray:
    # Resize(n): the short side becomes n, the long side int(n * long / short).
    w, h = img.size
    if w <= h:
        size = (n, int(n * h / w))
    else:
        size = (int(n * w / h), n)
    if size != (w, h):
        img = img.resize(size, Image.BICUBIC)
    # CenterCrop(n): top/left rounded as torchvision does.
    w, h = img.size
    top, left = int(round((h - n) / 2.0)), int(round((w - n) / 2.0))
    img = img.crop((left, top, left + n, top + n)).convert("RGB")
    x = np.asarray(img, dtype=np.uint8).astype(np.float32) / 255.0  # ToTensor
    x = (x - MEAN) / STD  # Normalize
    return x.transpose(2, 0, 1)


def real_photos(coco_images, sample_images):
    photos = [Image.open(p) for p in coco_images[:12]] + [Image.open(p) for p in sample_images]
    modes = {im.mode for im in photos}
    assert {"RGB", "L", "RGBA"} <= modes, modes
    return photos


@pytest.mark.parametrize("n_px", [224, 288, 336])
def test_matches_official_pipeline(n_px, coco_images, sample_images):
    pre = Preprocess(n_px)
    worst = 0.0
    sizes = set()
    for img in real_photos(coco_images, sample_images):
        img.load()
        sizes.add(img.size)
        ours = pre(img).numpy()
        ref = torchvision_reference(img, n_px)
        assert ours.shape == ref.shape == (3, n_px, n_px)
        worst = max(worst, float(np.abs(ours - ref).max()))
    assert len(sizes) >= 5
    assert worst <= 1e-6, worst


def test_input_kinds_agree(sample_images, tmp_path):
    path = next(p for p in sample_images if p.suffix == ".jpg")
    pre = Preprocess(224)
    from_path = pre(path)
    from_str = pre(str(path))
    from_bytes = pre(path.read_bytes())
    from_pil = pre(Image.open(path))
    from_array = pre(np.asarray(Image.open(path).convert("RGB")))
    from_float = pre(np.asarray(Image.open(path).convert("RGB")).astype(np.float32) / 255.0)
    for t in (from_str, from_bytes, from_pil, from_array, from_float):
        torch.testing.assert_close(t, from_path, atol=1e-6, rtol=0)


def test_exif_orientation_is_applied():
    base = Image.new("RGB", (300, 200))
    base.paste((255, 0, 0), (0, 0, 150, 200))  # left half red
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise for display
    buf = io.BytesIO()
    base.save(buf, "PNG", exif=exif.tobytes())
    img = clip.preprocess.open_image(buf.getvalue())
    assert img.size == (200, 300)
    top = np.asarray(img.convert("RGB"))[5, 100]
    assert top[0] > 200  # the red half is now on top


@pytest.mark.parametrize("mode", ["P", "CMYK", "I;16", "LA", "1", "PA-transparent"])
def test_other_modes_become_rgb(mode):
    rgb = Image.new("RGB", (120, 90), (200, 40, 40))
    if mode == "I;16":
        img = Image.fromarray(np.full((90, 120), 40000, dtype=np.uint16))
    elif mode == "PA-transparent":
        img = rgb.convert("P")
        img.info["transparency"] = 0
    else:
        img = rgb.convert(mode)
    x = Preprocess(64)(img)
    assert x.shape == (3, 64, 64) and torch.isfinite(x).all()
    if mode == "I;16":  # 40000/65535 of full scale, not clipped to white
        value = x[0, 0, 0] * STD[0] + MEAN[0]
        assert abs(value.item() - 40000 / 65535) < 0.01


def test_bad_inputs_raise_clearly():
    with pytest.raises(ValueError, match="shape"):
        Preprocess(64)(np.zeros((4, 4, 7)))
    with pytest.raises(TypeError):
        Preprocess(64)(12345)
    with pytest.raises(ValueError, match="exceeds the limit"):
        Preprocess(64, max_pixels=100)(Image.new("RGB", (20, 20)))
    with pytest.raises(UnidentifiedImageError):
        Preprocess(64)(b"definitely not an image")
