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
from clipmodel.preprocess import (
    Preprocess,
    resize_fast,
    resize_short_side,
    resize_short_side_fast,
)

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


# --- resize_fast: torch's antialiased bicubic standing in for Pillow's (index.fast_resize) ---


def _pixel_diff(a: Image.Image, b: Image.Image) -> np.ndarray:
    assert a.size == b.size and a.mode == b.mode
    return np.abs(np.asarray(a, dtype=np.int16) - np.asarray(b, dtype=np.int16))


def test_resize_fast_matches_pillow_on_photos(coco_images):
    """Model-input and thumbnail sizes on real photos, plus tall and wide strips cut from them
    (Pillow 13 runs the vertical pass first there, so the pass order is checked too)."""
    diffs = []
    for path in coco_images[:16]:
        img = Image.open(path).convert("RGB")
        w, h = img.size
        strips = [img.crop((0, 0, w // 5, h)), img.crop((0, 0, w, h // 5))]
        for src in [img, *strips]:
            for n in (64, 224, 336):
                exact = resize_short_side(src, n)
                fast = resize_short_side_fast(src, n)
                assert fast.size == exact.size
                diffs.append(_pixel_diff(fast, exact).ravel())
            thumb = (
                (256, max(1, round(h * 256 / w))) if w >= h else (max(1, round(w * 256 / h)), 256)
            )
            diffs.append(
                _pixel_diff(resize_fast(img, thumb), img.resize(thumb, Image.BICUBIC)).ravel()
            )
    d = np.concatenate(diffs)
    assert d.max() <= 2, d.max()
    assert d.mean() < 0.05, d.mean()


def test_resize_fast_edge_sizes(coco_images):
    """1-pixel sides, upscaling of tiny images, extreme aspect ratios, exact sizes."""
    photo = Image.open(coco_images[0]).convert("RGB")
    sources = [(1, 1), (1, 40), (40, 1), (2, 3), (3000, 2), (2, 3000), (224, 224), (225, 224),
               (224, 500), (500, 224), (17, 9)]  # fmt: skip
    for size in sources:
        src = photo.resize(size, Image.BICUBIC)
        for n in (1, 2, 7, 224, 336):
            if max(size) * n / min(size) > 50_000:
                continue  # a 3000:2 strip at n=224 would be 336000 pixels long
            exact = resize_short_side(src, n)
            fast = resize_short_side_fast(src, n)
            assert fast.size == exact.size, (size, n)
            if min(size) == n:
                assert fast is src and exact is src  # unchanged, as resize_short_side
            assert _pixel_diff(fast, exact).max() <= 2, (size, n)
        for target in [(1, 1), (1, 224), (224, 1), (5, 3), (640, 427), (900, 2)]:
            assert (
                _pixel_diff(resize_fast(src, target), src.resize(target, Image.BICUBIC)).max() <= 2
            )
    same = resize_fast(photo, photo.size)
    assert same is not photo and same.tobytes() == photo.tobytes()
    with pytest.raises(ValueError, match="at least 1"):
        resize_fast(photo, (0, 10))


def test_resize_fast_follows_pillows_pass_order():
    """On noise the order of the two passes changes pixels by up to ~25 (intermediate rounding
    and clipping); resize_fast must run them in Pillow's order for each shape."""
    rng = np.random.default_rng(3)
    worst = 0
    for _ in range(40):
        src_size = tuple(int(v) for v in rng.integers(2, 200, size=2))
        dst_size = tuple(int(v) for v in rng.integers(1, 260, size=2))
        src = Image.fromarray(rng.integers(0, 256, (src_size[1], src_size[0], 3), dtype=np.uint8))
        fast = resize_fast(src, dst_size)
        worst = max(worst, int(_pixel_diff(fast, src.resize(dst_size, Image.BICUBIC)).max()))
    assert worst <= 2, worst


def test_resize_fast_large_image_bands():
    """Images above 2 MP are copied out of Pillow in row bands; the result must not change."""
    rng = np.random.default_rng(4)
    small = Image.fromarray(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8))
    big = small.resize((2100, 1575), Image.BICUBIC)  # 3.3 MP, smooth
    for target in [(298, 224), (700, 525), (2100, 300)]:
        d = _pixel_diff(resize_fast(big, target), big.resize(target, Image.BICUBIC))
        assert d.max() <= 2 and d.mean() < 0.05, (target, d.max(), d.mean())


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK", "LA", "I;16", "F"])
def test_resize_fast_other_modes_equal_pillow(mode, coco_images):
    photo = Image.open(coco_images[1]).convert("RGB").resize((160, 120))
    if mode == "I;16":
        img = Image.fromarray(np.asarray(photo.convert("L"), dtype=np.uint16) * 257)
    else:
        img = photo.convert(mode)
    for size in [(80, 60), (33, 200), (320, 240)]:
        fast = resize_fast(img, size)
        exact = img.resize(size, Image.BICUBIC)
        assert fast.mode == exact.mode == img.mode
        assert fast.size == size and fast.tobytes() == exact.tobytes()
    assert resize_short_side_fast(img, 50).tobytes() == resize_short_side(img, 50).tobytes()


def test_resize_fast_from_threads_equals_sequential(coco_images):
    from concurrent.futures import ThreadPoolExecutor

    imgs = [Image.open(p).convert("RGB") for p in coco_images[:8]]
    expected = [resize_short_side_fast(im, 224).tobytes() for im in imgs]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda im: resize_short_side_fast(im, 224).tobytes(), imgs * 3))
    assert got == expected * 3


def test_write_thumbnail_fast(coco_images, tmp_path, monkeypatch):
    from indexer.embed import images

    calls = []
    real = images.resize_fast
    monkeypatch.setattr(
        images, "resize_fast", lambda im, size: calls.append(size) or real(im, size)
    )
    photo = images.decode(coco_images[2].read_bytes(), 10**9, 336).image
    fast_dest, exact_dest = tmp_path / "a" / "fast.jpg", tmp_path / "a" / "exact.jpg"
    images.write_thumbnail(photo, fast_dest, 256, fast=True)
    images.write_thumbnail(photo, exact_dest, 256)
    assert len(calls) == 1  # the fast path resized, the exact one did not
    fast, exact = Image.open(fast_dest), Image.open(exact_dest)
    assert fast.format == "JPEG" and fast.mode == "RGB"
    assert fast.size == exact.size and max(fast.size) == 256
    assert calls[0] == fast.size
    assert _pixel_diff(fast.convert("RGB"), exact.convert("RGB")).mean() < 0.5
    assert not list(fast_dest.parent.glob("*.tmp"))
    # An existing thumbnail is kept.
    before = fast_dest.read_bytes()
    images.write_thumbnail(Image.new("RGB", (999, 999)), fast_dest, 256, fast=True)
    assert fast_dest.read_bytes() == before and len(calls) == 1
    # Shrinking >= 4x: Pillow's reduce + bicubic (faster there), byte-identical to the exact path.
    big = photo.resize((photo.width * 4, photo.height * 4), Image.BICUBIC)
    images.write_thumbnail(big, tmp_path / "big-fast.jpg", 256, fast=True)
    images.write_thumbnail(big, tmp_path / "big-exact.jpg", 256)
    assert len(calls) == 1
    assert (tmp_path / "big-fast.jpg").read_bytes() == (tmp_path / "big-exact.jpg").read_bytes()
    # No upscaling of small images.
    images.write_thumbnail(photo.resize((100, 80)), tmp_path / "small.jpg", 256, fast=True)
    assert Image.open(tmp_path / "small.jpg").size == (100, 80)


def test_thumbnail_from_model_size_image(coco_images):
    """The indexer cuts thumbnails from the model-size resize where that covers them: same
    dimensions as from the decoded photo, pixels close; never from an upscaled image."""
    from indexer.embed import images
    from indexer.embed.images import thumbnail_source

    diffs = []
    for path in coco_images[:6]:
        photo = images.decode(path.read_bytes(), 10**9, 336).image
        resized = resize_short_side_fast(photo, 224)
        src = thumbnail_source(photo, resized, 256, fast=True)
        assert src is resized  # 640-px photos: 224-px short side still covers 256 px
        direct = images.thumbnail_image(photo, 256, fast=True)
        cut = images.thumbnail_image(src, 256, fast=True, full_size=photo.size)
        assert cut.size == direct.size and max(cut.size) == 256 and cut.mode == "RGB"
        diffs.append(_pixel_diff(cut, direct).mean())
    assert 0 < max(diffs) < 2.5, diffs
    # Not on the exact path, not when the resize would not cover the thumbnail, not upscaled.
    assert thumbnail_source(photo, resized, 256, fast=False) is photo
    assert thumbnail_source(photo, resized, 512, fast=True) is photo
    small = photo.resize((120, 90))
    assert thumbnail_source(small, resize_short_side_fast(small, 224), 256, fast=True) is small
    assert thumbnail_source(photo, None, 256, fast=True) is photo
