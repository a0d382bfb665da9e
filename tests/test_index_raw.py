"""Issue 20, RAW: real DNG files made from photos (tests/dng.py) decode, index and find
themselves; RAWs beside a same-named JPEG follow ``library.raw_with_jpeg``; bad RAW files are
recorded with their reasons while the run goes on."""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from indexer.config import ConfigError, load_config
from indexer.embed.encoder import ClipEncoder
from indexer.embed.images import BadImage, decode, read_file
from indexer.embed.raw import NOT_INSTALLED, data_end
from indexer.ingest.scan import walk
from indexer.library import Library

from .indexer_helpers import copy_images, sqlite_state, write_config

rawpy = pytest.importorskip("rawpy", reason="RAW tests need rawpy (pip install -e '.[raw]')")
pytest.importorskip("imagecodecs", reason="writing DNG previews needs imagecodecs")
from .dng import write_dng  # noqa: E402 - after the skips: it needs tifffile

SIZE = (640, 480)


def _photo(path: Path) -> Image.Image:
    with Image.open(path) as img:
        return img.convert("RGB").resize(SIZE, Image.Resampling.BICUBIC)


def _fit(path: Path, side: int = 640) -> Image.Image:
    """The photo at ``path`` with its long side ``side`` (its aspect kept), even sizes."""
    with Image.open(path) as img:
        img = img.convert("RGB")
        img.thumbnail((side, side), Image.Resampling.BICUBIC)
    return img.crop((0, 0, img.width // 2 * 2, img.height // 2 * 2))


def _diff(a: Image.Image, b: Image.Image) -> float:
    b = b.resize(a.size, Image.Resampling.BICUBIC)
    return float(np.abs(np.asarray(a, np.float32) - np.asarray(b, np.float32)).mean())


def test_a_dng_made_from_a_photo_is_read_by_libraw(tmp_path, coco_images):
    photo = _photo(coco_images[0])
    path = write_dng(tmp_path / "a.dng", photo)
    with rawpy.imread(os.fspath(path)) as raw:
        assert raw.raw_pattern.tolist() == [[0, 1], [3, 2]] and raw.color_desc == b"RGBG"
        assert (raw.sizes.raw_width, raw.sizes.raw_height) == SIZE
        thumb = raw.extract_thumb()
        assert thumb.format == rawpy.ThumbFormat.JPEG
        preview = Image.open(io.BytesIO(thumb.data))
        assert preview.size == SIZE
        full = Image.fromarray(raw.postprocess(use_camera_wb=True, gamma=(2.4, 12.92),
                                               no_auto_bright=True))  # fmt: skip
    assert full.size == SIZE
    assert _diff(photo, preview) < 4  # JPEG quality 90
    assert _diff(photo, full) < 12  # demosaiced
    assert data_end(path.read_bytes()) == path.stat().st_size


def test_decode_preview_or_half_size_demosaic(tmp_path, coco_images):
    photo = _photo(coco_images[1])
    big = write_dng(tmp_path / "big.dng", photo)
    small = write_dng(tmp_path / "small.dng", photo, preview_side=160)
    bare = write_dng(tmp_path / "bare.dng", photo, preview_side=0)
    # A preview covering the model's need is used (and draft-decoded by libjpeg)
    dec = decode(read_file(big), 10**9, 300, name=big, min_preview=300)
    assert dec.image.size == SIZE and (dec.width, dec.height) == SIZE
    assert (dec.taken_at, dec.camera) == ("2021-06-05T04:03:02", "Clipsearch Test Camera 1")
    assert decode(read_file(big), 10**9, 200, name=big, min_preview=200).image.size == (320, 240)
    # A 160 px preview is too small for the model: half-size demosaic (one pixel a 2x2 cell)
    for path in (small, bare):
        dec = decode(read_file(path), 10**9, 300, name=path, min_preview=300)
        assert dec.image.size == (320, 240) and (dec.width, dec.height) == SIZE
        assert dec.image.mode == "RGB" and dec.camera == "Clipsearch Test Camera 1"
        assert dec.taken_at == "2021-06-05T04:03:02"
        assert _diff(photo, dec.image) < 12
    # Without a draft size (UI, query images) the preview needs 1024 px a side
    assert decode(read_file(big), 10**9, name=big).image.size == (320, 240)
    # DNG bytes without a name (uploads) still go through LibRaw
    assert decode(big.read_bytes(), 10**9, min_preview=300).camera == "Clipsearch Test Camera 1"
    # The RAW's orientation: the demosaic and the (unrotated) preview both come out upright
    turned = write_dng(tmp_path / "turned.dng", photo, orientation=6)
    a = decode(read_file(turned), 10**9, 300, name=turned, min_preview=300)
    b = decode(read_file(turned), 10**9, 300, name=turned, min_preview=5000)
    assert (a.width, a.height) == (480, 640) and a.image.size == (480, 640)
    assert b.image.size == (240, 320) and _diff(a.image, b.image) < 12
    assert _diff(photo.transpose(Image.Transpose.ROTATE_270), a.image) < 4
    # Pixel limit from the RAW's size, before any pixel is decoded
    with pytest.raises(BadImage, match="decompression bomb: RAW 640x480"):
        decode(read_file(big), 640 * 480 - 1, name=big)


def test_without_rawpy_each_raw_gets_the_install_hint(tmp_path, coco_images, monkeypatch):
    path = write_dng(tmp_path / "a.dng", _photo(coco_images[2]))
    monkeypatch.setitem(sys.modules, "rawpy", None)  # import rawpy -> ImportError
    with pytest.raises(BadImage) as exc:
        decode(read_file(path), 10**9, name=path)
    assert str(exc.value) == NOT_INSTALLED == "RAW support not installed: pip install 'clipsearch[raw]'"


def _index(cfg, enc=None):
    enc = enc or ClipEncoder.from_config(cfg)
    with Library.open(cfg, writer=True, encoder=enc) as lib:
        return lib.index(progress=False), enc


def test_dngs_index_and_find_themselves(tmp_path, coco_images, tiny_checkpoint):
    lib_dir = tmp_path / "photos"
    copy_images(coco_images[10:16], lib_dir / "jpegs")
    sources = coco_images[20:26]
    dngs, sizes = [], []
    for i, src in enumerate(sources):  # even: preview path; odd: a 160 px preview, demosaic
        name = "IMG_0000.DNG" if i == 0 else f"img_{i:04d}.dng"  # extensions: any case
        photo = _fit(src)
        sizes.append(photo.size)
        dngs.append(write_dng(lib_dir / "raw" / name, photo,
                              preview_side=None if i % 2 == 0 else 160,
                              model=f"Test Camera {i}", taken=f"2020:01:0{i + 1} 10:00:00"))
    cfg = load_config(write_config(tmp_path / "c.yaml", [lib_dir], tmp_path / "idx",
                                   tiny_checkpoint))  # fmt: skip
    rep, enc = _index(cfg)
    assert (rep.added, rep.errors) == (12, 0), rep
    with Library.open(cfg, encoder=enc) as lib:
        for i, (src, dng) in enumerate(zip(sources, dngs, strict=True)):
            assert lib.search(image=src, k=3).hits[0].path == os.fspath(dng), i
            hits = lib.search(image=dng, k=3).hits
            assert hits[0].path == os.fspath(dng) and hits[0].score > hits[1].score, i
            rec = lib.get_image(hits[0].id)
            assert (rec.width, rec.height) == sizes[i]
            assert rec.taken_at == f"2020-01-0{i + 1}T10:00:00"
            assert rec.camera == f"Clipsearch Test Camera {i}"
            thumb = lib.thumbnail_path(rec)
            decoded = max(sizes[i]) // (1 if i % 2 == 0 else 2)  # demosaiced: half-size
            assert thumb is not None and max(Image.open(thumb).size) == min(256, decoded)
    assert _index(cfg, enc)[0].unchanged == 12


def test_raw_with_jpeg_skip_or_index(tmp_path, coco_images, tiny_checkpoint):
    lib_dir = tmp_path / "photos"
    lib_dir.mkdir()
    for i, src in enumerate(coco_images[30:33]):
        _photo(src).save(lib_dir / f"DSC_{i}.{'JPG' if i == 0 else 'jpeg'}", quality=90)
        write_dng(lib_dir / f"DSC_{i}.dng", _photo(src))
    lone = write_dng(lib_dir / "lone.dng", _photo(coco_images[33]))
    cfg_file = write_config(tmp_path / "c.yaml", [lib_dir], tmp_path / "idx", tiny_checkpoint,
                            library={"raw_with_jpeg": "index"})  # fmt: skip
    cfg = load_config(cfg_file)
    rep, enc = _index(cfg)
    assert (rep.added, rep.errors) == (7, 0)
    # skip (the default): the RAW twins are swept like removed files, not recorded as errors
    data = yaml.safe_load(cfg_file.read_text())
    del data["library"]["raw_with_jpeg"]
    cfg_file.write_text(yaml.safe_dump(data))
    cfg = load_config(cfg_file)
    assert cfg.library.raw_with_jpeg == "skip"
    rep, _ = _index(cfg, enc)
    assert (rep.removed, rep.errors, rep.scanned) == (3, 0, 4)
    state = sqlite_state(cfg.index_dir)
    assert sorted(Path(p).name for p in state["ok"]) == [
        "DSC_0.JPG", "DSC_1.jpeg", "DSC_2.jpeg", "lone.dng"] and state["errors"] == {}
    # runs on paths (clipsearch index PATH, the watch service's batches) follow the JPEG: it
    # goes away, its RAW is indexed; it comes back, the RAW leaves the index again
    jpeg = lib_dir / "DSC_1.jpeg"
    kept = jpeg.read_bytes()
    jpeg.unlink()
    with Library.open(cfg, writer=True, encoder=enc) as lib:
        rep = lib.index([os.fspath(jpeg)], progress=False)
    assert (rep.added, rep.removed, rep.errors) == (1, 1, 0)
    assert os.fspath(lib_dir / "DSC_1.dng") in sqlite_state(cfg.index_dir)["ok"]
    jpeg.write_bytes(kept)
    with Library.open(cfg, writer=True, encoder=enc) as lib:
        rep = lib.index([os.fspath(jpeg)], progress=False)
    assert (rep.added + rep.moved + rep.copied, rep.removed, rep.errors) == (1, 1, 0)
    assert sqlite_state(cfg.index_dir)["ok"].keys() == state["ok"].keys()
    # the same rule for single files
    twin = lib_dir / "DSC_1.dng"
    found = walk([(twin, lib_dir), (lone, lib_dir)], cfg.library.extensions, raw_with_jpeg="skip")
    assert [e.path for e in found.entries] == [os.fspath(lone)]
    found = walk([(twin, lib_dir)], cfg.library.extensions, raw_with_jpeg="index")
    assert [e.path for e in found.entries] == [os.fspath(twin)]
    # a JPEG that is not indexed (not in library.extensions) does not hide its RAW
    found = walk([(lib_dir, lib_dir)], [".dng"], raw_with_jpeg="skip")
    assert len(found.entries) == 4


def test_raw_with_jpeg_is_validated(tmp_path):
    path = write_config(tmp_path / "c.yaml", [tmp_path], tmp_path / "idx",
                        library={"raw_with_jpeg": "both"})  # fmt: skip
    with pytest.raises(ConfigError, match="library.raw_with_jpeg: expected skip or index, "
                                          "got 'both'"):  # fmt: skip
        load_config(path)


def test_bad_raw_files_are_recorded_and_the_run_goes_on(tmp_path, coco_images, tiny_checkpoint):
    lib_dir = tmp_path / "photos"
    lib_dir.mkdir()
    good = write_dng(lib_dir / "good.dng", _photo(coco_images[40]))
    whole = good.read_bytes()
    # the CFA strip is the file's last block: a truncated copy keeps its (intact) preview
    (lib_dir / "truncated.dng").write_bytes(whole[: len(whole) // 2])
    (lib_dir / "cfa_cut.dng").write_bytes(whole[:-100])
    (lib_dir / "header_only.dng").write_bytes(whole[:200])
    rng = np.random.default_rng(0)
    (lib_dir / "random.nef").write_bytes(rng.bytes(50_000))
    (lib_dir / "random.cr2").write_bytes(rng.bytes(3_000))
    (lib_dir / "empty.arw").write_bytes(b"")
    (lib_dir / "text.raf").write_bytes(b"FUJIFILMCCD-RAW " + b"\0" * 10)
    bad_preview = bytearray(write_dng(tmp_path / "bp.dng", _photo(coco_images[41])).read_bytes())
    start = bytes(bad_preview).index(b"\xff\xd8\xff")  # the preview's JPEG stream
    bad_preview[start + 200 : start + 4000] = rng.bytes(3800)
    (lib_dir / "bad_preview.dng").write_bytes(bytes(bad_preview))
    copy_images(coco_images[42:44], lib_dir)
    cfg = load_config(write_config(tmp_path / "c.yaml", [lib_dir], tmp_path / "idx",
                                   tiny_checkpoint))  # fmt: skip
    rep, _ = _index(cfg)
    errors = {Path(p).name: r for p, r in sqlite_state(cfg.index_dir)["errors"].items()}
    assert errors == {
        "truncated.dng": "truncated or unreadable RAW (sensor data: data ends early)",
        "cfa_cut.dng": "truncated or unreadable RAW (sensor data: data ends early)",
        "header_only.dng": errors["header_only.dng"],
        "random.nef": "not a RAW file LibRaw can read (unsupported format or corrupt header)",
        "random.cr2": "not a RAW file LibRaw can read (unsupported format or corrupt header)",
        "empty.arw": "empty file (0 bytes)",
        "text.raf": errors["text.raf"],
    }, errors
    assert "RAW" in errors["header_only.dng"] and "RAW" in errors["text.raf"]
    assert rep.errors == 7 and rep.added == 4  # good.dng, bad_preview.dng (demosaic), 2 JPEGs


def test_doctor_reports_raw_support(monkeypatch):
    from indexer.ingest.doctor import formats

    assert formats()["RAW"] == f"rawpy {rawpy.__version__} (LibRaw " \
        f"{'.'.join(map(str, rawpy.libraw_version))})"  # fmt: skip
    monkeypatch.setitem(sys.modules, "rawpy", None)
    assert formats()["RAW"] is None


def test_data_end_reads_where_each_container_ends(tmp_path, coco_images):
    import struct

    dng = write_dng(tmp_path / "a.dng", _photo(coco_images[3]), preview_side=0).read_bytes()
    assert data_end(dng) == len(dng) and data_end(dng[:-1]) == len(dng)
    raf = b"FUJIFILMCCD-RAW ".ljust(84, b"\0") + struct.pack(">6I", 200, 100, 300, 50, 400, 1000)
    assert data_end(raf.ljust(1400, b"\0")) == 1400 and data_end(raf.ljust(900, b"\0")) == 1400
    bmff = struct.pack(">I4s", 16, b"ftyp").ljust(16, b"\0") + struct.pack(">I4s", 100, b"moov")
    assert data_end(bmff.ljust(116, b"\0")) == 116 and data_end(bmff.ljust(60, b"\0")) == 116
    assert data_end(b"\x00" * 64) is None  # unknown: LibRaw unpacks to check
