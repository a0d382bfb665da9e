"""Acceptance 3: a corpus of bad and unusual files never stops a run and is recorded."""

from __future__ import annotations

import io
import json
import os
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from PIL import Image

from .indexer_helpers import REPO, cli_env, sqlite_state, write_config


def _unprivileged_prefix() -> list[str] | None:
    """Command prefix under which file permissions apply (None: impossible here).

    Root reads any file; dropping CAP_DAC_OVERRIDE/CAP_DAC_READ_SEARCH from the bounding set
    (setpriv) makes a mode-000 file unreadable for the indexer while it stays root otherwise.
    """
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return None
    return [setpriv, "--bounding-set", "-dac_override,-dac_read_search", "--"]


def _png_with_size(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height (pixel data of 1x1): a decompression bomb."""
    buf = io.BytesIO()
    Image.new("L", (1, 1)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    ihdr = data.index(b"IHDR")
    data[ihdr + 4 : ihdr + 12] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[ihdr : ihdr + 17]))
    data[ihdr + 17 : ihdr + 21] = struct.pack(">I", crc)
    return bytes(data)


def _rotated_jpeg() -> bytes:
    img = Image.new("RGB", (200, 100), (200, 30, 30))
    exif = Image.Exif()
    exif[274] = 6  # orientation: rotate 90 CW to display
    exif[271] = "Canon"
    exif[272] = "Canon EOS 5D"
    exif.get_ifd(0x8769)[36867] = "2019:07:14 10:20:30"
    buf = io.BytesIO()
    img.save(buf, "JPEG", exif=exif)
    return buf.getvalue()


def build_corpus(
    root: Path, photo: Path, unreadable_case: bool = True
) -> tuple[dict[str, str], set[str]]:
    """Write the corpus; returns ({bad path: expected reason fragment}, {valid paths})."""
    root.mkdir(parents=True)
    good: set[str] = set()
    bad: dict[str, str] = {}

    def save(name: str | bytes, img: Image.Image | None = None, data: bytes | None = None,
             **kw) -> str:  # fmt: skip
        path = os.path.join(os.fsencode(root), os.fsencode(name))
        if img is not None:
            img.save(path, **kw)
        else:
            with open(path, "wb") as fh:
                fh.write(data or b"")
        return os.fsdecode(path)

    rgb = Image.open(photo).convert("RGB").resize((160, 120))
    good.add(save("cmyk.jpg", rgb.convert("CMYK"), format="JPEG"))
    good.add(save("gray16.png", Image.new("I;16", (64, 48), 40000), format="PNG"))
    pal = rgb.convert("P", palette=Image.Palette.ADAPTIVE)
    good.add(save("palette.png", pal, format="PNG", transparency=0))
    good.add(save("rgba.png", rgb.convert("RGBA"), format="PNG"))
    good.add(save("la.png", rgb.convert("LA"), format="PNG"))
    frames = [rgb, rgb.rotate(90), rgb.rotate(180)]
    good.add(save("anim.gif", frames[0], format="GIF", save_all=True, append_images=frames[1:]))
    good.add(save("anim.webp", frames[0], format="WEBP", save_all=True, append_images=frames[1:]))
    good.add(save("rotated.jpg", data=_rotated_jpeg()))
    good.add(save("photo.bmp", rgb, format="BMP"))
    good.add(save("photo.tiff", rgb, format="TIFF"))
    good.add(save("UPPER.JPG", rgb.rotate(45), format="JPEG"))
    good.add(save("caf\u0065\u0301 \U0001f4f7 -x.jpg", rgb.rotate(30), format="JPEG"))
    good.add(save("new\nline.png", rgb.rotate(60), format="PNG"))
    good.add(save(b"undecodable-\xff\xfe.jpg", rgb.rotate(15), format="JPEG"))
    (root / "sub").mkdir()
    os.symlink("..", root / "sub" / "loop")  # folder symlink loop: walked once
    os.symlink(os.fsdecode(os.path.join(os.fsencode(root), b"rgba.png")), root / "sub" / "link.png")
    good.add(os.fspath(root / "sub" / "link.png"))

    bad[save("empty.jpg", data=b"")] = "empty file"
    full = photo.read_bytes()
    bad[save("truncated.jpg", data=full[: len(full) // 2])] = "cannot decode image"
    bad[save("corrupt.jpg", data=os.urandom(4096))] = "not a recognised image format"
    bad[save("text.png", data=b"hello, I am not a PNG\n" * 50)] = "not a recognised image format"
    bad[save("bomb.png", data=_png_with_size(100_000, 100_000))] = "decompression bomb"
    bad[save("big.png", data=_png_with_size(6000, 5000))] = "exceeds library.max_pixels"
    try:
        import pillow_heif  # noqa: F401

        heic_reason = "not a recognised image format"
    except ImportError:
        heic_reason = "needs the optional pillow-heif package"
    bad[save("phone.heic", data=b"\x00\x00\x00\x18ftypheic" + os.urandom(500))] = heic_reason
    os.mkfifo(root / "fifo.jpg")
    bad[os.fspath(root / "fifo.jpg")] = "not a regular file"
    os.symlink(root / "does-not-exist.jpg", root / "broken.jpg")
    bad[os.fspath(root / "broken.jpg")] = "cannot stat"
    os.symlink("selfloop.jpg", root / "selfloop.jpg")
    bad[os.fspath(root / "selfloop.jpg")] = "cannot stat"
    if unreadable_case:
        unreadable = save("unreadable.jpg", rgb, format="JPEG")
        os.chmod(unreadable, 0)
        bad[unreadable] = "Permission denied"
    return bad, good


def _run(args: list[str], cfg: Path, prefix: list[str]) -> subprocess.CompletedProcess:
    cmd = [*prefix, sys.executable, "-m", "indexer.cli", "--config", os.fspath(cfg), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO,
                          env=cli_env())  # fmt: skip


def test_unreadable_file_subcase_runs():
    """The permission sub-case of test_bad_input_corpus needs non-root or setpriv."""
    if _unprivileged_prefix() is None:
        pytest.skip("running as root without setpriv: cannot make a file unreadable to root")


# the PostgreSQL run repeats ~75 s of CLI runs whose store part the other tests cover (slow)
@pytest.mark.parametrize(
    "database", ["sqlite", pytest.param("postgres", marks=pytest.mark.slow)], indirect=True
)
def test_bad_input_corpus(tmp_path, coco_images, tiny_checkpoint, database):
    prefix = _unprivileged_prefix()
    photos = tmp_path / "photos"
    bad, good = build_corpus(photos, coco_images[0], unreadable_case=prefix is not None)
    prefix = prefix or []
    cfg = write_config(tmp_path / "c.yaml", [photos], tmp_path / "idx", tiny_checkpoint,
                       library={"max_pixels": 20_000_000}, database=database)  # fmt: skip

    proc = _run(["index", "--json"], cfg, prefix)
    assert proc.returncode == 0, proc.stderr
    rep = json.loads(proc.stdout)
    state = sqlite_state(tmp_path / "idx", database)
    assert set(state["ok"]) == good
    assert set(state["errors"]) == set(bad)
    for path, fragment in bad.items():
        assert fragment in state["errors"][path], (path, state["errors"][path])
    assert rep["errors"] == len(bad) and rep["added"] + rep["copied"] == len(good)
    assert len(state["vector_ids"]) == len(good)

    # The EXIF-rotated photo is stored upright with its capture time and camera.
    status = json.loads(_run(["status", "--json", "--errors", "100"], cfg, prefix).stdout)
    assert {e["path"] for e in status["error_files"]} == set(bad)
    assert all(e["error"] for e in status["error_files"])
    out = _run(["search", "--image", os.fspath(photos / "rotated.jpg"), "-k", "1", "--json"],
               cfg, prefix)  # fmt: skip
    hit = json.loads(out.stdout)["results"][0]
    assert hit["path"] == os.fspath(photos / "rotated.jpg")
    assert (hit["width"], hit["height"]) == (100, 200)
    assert hit["taken_at"] == "2019-07-14T10:20:30" and hit["camera"] == "Canon EOS 5D"
    with Image.open(hit["thumbnail"]) as th:
        assert th.height > th.width

    # Second run: nothing retried.
    rep2 = json.loads(_run(["index", "--json"], cfg, prefix).stdout)
    assert rep2["unchanged"] == rep2["scanned"] == rep["scanned"]
    assert rep2["encoded"] == rep2["errors"] == rep2["updated"] == 0

    # A bad file that changes is retried (and now indexed).
    fixed = photos / "truncated.jpg"
    shutil.copyfile(coco_images[1], fixed)
    rep3 = json.loads(_run(["index", "--json"], cfg, prefix).stdout)
    assert (rep3["updated"], rep3["encoded"], rep3["errors"]) == (1, 1, 0)
    state = sqlite_state(tmp_path / "idx", database)
    assert os.fspath(fixed) in state["ok"] and os.fspath(fixed) not in state["errors"]


def test_decode_handles_modes(coco_images):
    """Unit check of indexer.images.decode on the unusual-but-valid modes."""
    from indexer.embed.images import BadImage, decode

    rgb = Image.open(coco_images[0]).convert("RGB")
    for mode in ("CMYK", "L", "LA", "RGBA", "P", "I", "I;16", "F", "1"):
        buf = io.BytesIO()
        img = rgb.convert(mode) if mode not in ("I;16",) else Image.new("I;16", (20, 10), 999)
        img.save(buf, "TIFF")
        out = decode(buf.getvalue(), max_pixels=10**8)
        assert out.image.mode == "RGB" and out.image.size == img.size, mode
    with pytest.raises(BadImage, match="decompression bomb"):
        decode(_png_with_size(20_000, 20_000), max_pixels=10**8)
