"""Safe reading and decoding of photos, EXIF metadata and thumbnails.

Every failure is turned into :class:`BadImage` with a short human-readable reason, so one bad
file never stops an indexing run. Files are opened non-blocking and checked to be regular files
before reading (a FIFO named ``x.jpg`` must not hang the indexer); pixel counts are checked from
the header before any pixel is decoded (decompression bombs).
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import stat
import threading
import warnings
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from PIL import Image, ImageOps, UnidentifiedImageError

from clipmodel.preprocess import resize_fast, to_supported_mode
from indexer.embed.raw import RawError, is_raw_name, open_raw, raw_support

HASH_NAME = "blake2b-256"
_EXIF_IFD = 0x8769
_TAG_DATETIME_ORIGINAL = 36867
_TAG_DATETIME_DIGITIZED = 36868
_TAG_DATETIME = 306
_TAG_MAKE = 271
_TAG_MODEL = 272
_TAG_ORIENTATION = 274
_TAG_DNG_VERSION = 50706
_REDUCING_GAP = 2.0  # thumbnails: Pillow box-reduces first when shrinking >= 2x this
RAW_PREVIEW_MIN = 1024  # RAW previews used without a draft size: both sides at least this
# LibRaw flip -> the transpose that makes a RAW's (unrotated) preview upright
_FLIP = {3: Image.Transpose.ROTATE_180, 5: Image.Transpose.ROTATE_90, 6: Image.Transpose.ROTATE_270}
_heif_checked = False


class BadImage(Exception):
    """A file that cannot be indexed; ``str(exc)`` is the reason recorded in the index."""


@dataclass
class Decoded:
    """A fully decoded, upright image plus what the index records about it."""

    image: Image.Image
    width: int
    height: int
    taken_at: str | None
    camera: str | None


def setup_codecs() -> bool:
    """Register optional codecs (HEIF via pillow-heif) and silence Pillow's bomb warning.

    Called once before decoding (not at import). Returns whether HEIF support is available.
    """
    global _heif_checked
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
    if _heif_checked:
        return "HEIF" in Image.registered_extensions().values()
    _heif_checked = True
    try:
        import pillow_heif  # type: ignore[import-not-found]

        pillow_heif.register_heif_opener()
        return True
    except Exception:  # noqa: BLE001 - optional dependency, any failure means "not available"
        return False


def os_reason(exc: OSError) -> str:
    name = errno.errorcode.get(exc.errno or 0, "")
    text = exc.strerror or str(exc)
    return f"{text} ({name})" if name else text


def read_file(path: str | os.PathLike, max_bytes: int | None = None) -> bytes:
    """The bytes of a regular file; :class:`BadImage` for FIFOs, devices, errors and empty files."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise BadImage(f"cannot open: {os_reason(exc)}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise BadImage("not a regular file")
        if st.st_size == 0:
            raise BadImage("empty file (0 bytes)")
        if max_bytes is not None and st.st_size > max_bytes:
            raise BadImage(f"file too large ({st.st_size} bytes)")
        with os.fdopen(fd, "rb", closefd=True) as fh:
            fd = -1
            data = fh.read()
    except OSError as exc:
        raise BadImage(f"cannot read: {os_reason(exc)}") from None
    finally:
        if fd >= 0:
            os.close(fd)
    if not data:
        raise BadImage("empty file (0 bytes)")
    return data


def content_hash(data: bytes) -> str:
    """Hex digest identifying file content (used to recognise moved and duplicate files)."""
    return hashlib.blake2b(data, digest_size=32).hexdigest()


def _exif_datetime(value: object) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("ascii", "ignore")
    if not isinstance(value, str):
        return None
    value = value.strip().strip("\x00").strip()
    for fmt in ("%Y:%m:%d %H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y:%m:%d %H:%M"):
        try:
            return datetime.strptime(value[:19], fmt).strftime("%Y-%m-%dT%H:%M:%S")
        except ValueError:
            continue
    return None


def _clean_text(value: object) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        return None
    value = " ".join(value.replace("\x00", " ").split())
    return value[:100] or None


def read_exif(img: Image.Image) -> tuple[str | None, str | None, int]:
    """(capture time ISO, camera "Make Model", orientation) from EXIF; never raises."""
    try:
        exif = img.getexif()
    except Exception:  # noqa: BLE001 - corrupt EXIF is common and harmless
        return None, None, 1
    return exif_fields(exif)


def exif_fields(exif: Image.Exif) -> tuple[str | None, str | None, int]:
    """:func:`read_exif` of a loaded :class:`PIL.Image.Exif` (also a TIFF-based RAW's IFD0)."""
    try:
        sub = exif.get_ifd(_EXIF_IFD)
    except Exception:  # noqa: BLE001
        sub = {}
    taken = None
    for tag, source in (
        (_TAG_DATETIME_ORIGINAL, sub),
        (_TAG_DATETIME_DIGITIZED, sub),
        (_TAG_DATETIME_ORIGINAL, exif),  # DNG writers may keep it in IFD0
        (_TAG_DATETIME, exif),
    ):
        taken = _exif_datetime(source.get(tag))
        if taken:
            break
    make, model = _clean_text(exif.get(_TAG_MAKE)), _clean_text(exif.get(_TAG_MODEL))
    if make and model and model.lower().startswith(make.lower()):
        make = None
    camera = " ".join(p for p in (make, model) if p) or None
    orientation = exif.get(_TAG_ORIENTATION, 1)
    return taken, camera, orientation if isinstance(orientation, int) else 1


def decode(
    data: bytes,
    max_pixels: int,
    draft_size: int | None = None,
    name: str | os.PathLike | None = None,
    min_preview: int | None = None,
) -> Decoded:
    """Decode image bytes into an upright, loaded PIL image (first frame of animations).

    ``draft_size`` (JPEG only, opt-in) lets libjpeg decode at a reduced scale that still covers
    ``draft_size`` pixels on each side. ``name``: the file's name or path; a camera RAW
    extension decodes through LibRaw (:func:`decode_raw`), as do DNGs and, when ``name`` is
    None, bytes that Pillow does not know but LibRaw does. Raises :class:`BadImage` with the
    reason on any failure.
    """
    if is_raw_name(name):
        return decode_raw(data, max_pixels, draft_size, min_preview)
    try:
        img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        if name is None and raw_support() is not None:
            try:
                return decode_raw(data, max_pixels, draft_size, min_preview)
            except BadImage as exc:
                if not str(exc).startswith("not a RAW file"):
                    raise
        raise BadImage("not a recognised image format") from None
    except Image.DecompressionBombError as exc:
        raise BadImage(f"decompression bomb: {exc}".split(". ")[0]) from None
    except Exception as exc:  # noqa: BLE001 - any decoder error is a bad file
        raise BadImage(f"cannot open image: {exc}") from None
    try:
        width, height = img.size
        if width < 1 or height < 1:
            raise BadImage(f"invalid image size {width}x{height}")
        if width * height > max_pixels:
            raise BadImage(
                f"decompression bomb: {width}x{height} = {width * height} pixels exceeds "
                f"library.max_pixels ({max_pixels})"
            )
        if img.format == "TIFF" and _TAG_DNG_VERSION in img.tag_v2 and raw_support():
            return decode_raw(data, max_pixels, draft_size, min_preview)  # not its preview IFD
        taken, camera, orientation = read_exif(img)
        if orientation in (5, 6, 7, 8):
            width, height = height, width
        if getattr(img, "n_frames", 1) > 1:
            img.seek(0)
        if draft_size and img.format == "JPEG":
            img.draft("RGB", (draft_size, draft_size))
        img.load()
        try:
            ImageOps.exif_transpose(img, in_place=True)  # (a copy would cost ~0.1 ms a photo)
        except Exception:  # noqa: BLE001 - a broken orientation tag: keep pixels as stored
            pass
        img = to_rgb(img)
    except BadImage:
        raise
    except Image.DecompressionBombError as exc:
        raise BadImage(f"decompression bomb: {exc}".split(". ")[0]) from None
    except MemoryError:
        raise BadImage("out of memory while decoding") from None
    except Exception as exc:  # noqa: BLE001 - truncated / corrupt data
        raise BadImage(f"cannot decode image: {exc}") from None
    return Decoded(img, width, height, taken, camera)


def _container_exif(data: bytes) -> tuple[str | None, str | None]:
    """(capture time, camera) from a TIFF-based RAW's own IFDs (DNG, CR2, NEF, ARW, ...)."""
    if data[:4] not in (b"II*\x00", b"MM\x00*"):
        return None, None
    try:
        exif = Image.Exif()
        exif.load(data)
    except Exception:  # noqa: BLE001 - metadata is optional
        return None, None
    return exif_fields(exif)[:2]


def decode_raw(
    data: bytes, max_pixels: int, draft_size: int | None = None, min_preview: int | None = None
) -> Decoded:
    """:func:`decode` of camera RAW bytes: the embedded JPEG preview (itself draft-decoded with
    ``draft_size``) when it covers ``min_preview`` (else ``draft_size``, else
    :data:`RAW_PREVIEW_MIN`) pixels on each side, else a half-size demosaic. The size recorded
    is the full photo's; capture time and camera come from the RAW's EXIF, the preview's, or
    LibRaw's time."""
    need = min_preview or draft_size or RAW_PREVIEW_MIN
    try:
        frame = open_raw(data, max_pixels, need)
    except RawError as exc:
        raise BadImage(str(exc)) from None
    taken, camera = _container_exif(data)
    if frame.preview is not None:
        try:
            dec = decode(frame.preview, max_pixels, draft_size)
            img = dec.image
            if frame.flip in _FLIP and _orientation(frame.preview) == 1:
                img = img.transpose(_FLIP[frame.flip])
            return Decoded(img, frame.width, frame.height, taken or dec.taken_at or frame.taken_at,
                           camera or dec.camera)  # fmt: skip
        except BadImage:  # a broken preview: the sensor data may still be whole
            try:
                frame = open_raw(data, max_pixels, need, preview=False)
            except RawError as exc:
                raise BadImage(str(exc)) from None
    img = Image.fromarray(frame.pixels)
    return Decoded(img, frame.width, frame.height, taken or frame.taken_at, camera)


def _orientation(jpeg: bytes) -> int:
    try:
        with Image.open(io.BytesIO(jpeg)) as img:
            value = img.getexif().get(_TAG_ORIENTATION, 1)
    except Exception:  # noqa: BLE001
        return 1
    return value if isinstance(value, int) else 1


def to_rgb(img: Image.Image) -> Image.Image:
    """RGB for any mode: 16-bit/float scaled down, palette/alpha flattened as PIL's convert does."""
    return img if img.mode == "RGB" else to_supported_mode(img).convert("RGB")


def _pillow_reduce_factor(src: tuple[int, int], dst: tuple[int, int]) -> int:
    """The factor Pillow's resize(..., reducing_gap) box-reduces by first (1: none)."""
    return max(int(s / d / _REDUCING_GAP) or 1 for s, d in zip(src, dst))


def thumbnail_image(
    img: Image.Image, size: int, fast: bool = False, full_size: tuple[int, int] | None = None
) -> Image.Image:
    """The thumbnail of ``img`` (longest side ``size``, RGB).

    ``fast``: resize with :func:`~clipmodel.preprocess.resize_fast` (3-5x faster, pixels within
    2 of Pillow's) where Pillow would not first box-reduce the image (shrinking < 4x, as after
    JPEG draft decoding); larger reductions keep Pillow's reduce + bicubic, which is faster there.
    ``full_size``: the size of the photo ``img`` was reduced from (the thumbnail's dimensions
    follow it, so they do not depend on which reduction it is made from).
    """
    w, h = full_size or img.size
    scale = min(1.0, size / max(w, h))
    box = (max(1, round(w * scale)), max(1, round(h * scale)))
    if box == img.size:
        thumb = img
    elif fast and _pillow_reduce_factor(img.size, box) == 1:
        thumb = resize_fast(img, box)
    else:
        thumb = img.resize(box, Image.Resampling.BICUBIC, reducing_gap=_REDUCING_GAP)
    return thumb.convert("RGB") if thumb.mode != "RGB" else thumb


def write_thumbnail(
    img: Image.Image,
    dest: Path,
    size: int,
    fast: bool = False,
    full_size: tuple[int, int] | None = None,
) -> None:
    """Write :func:`thumbnail_image` as a JPEG atomically; skip if it already exists."""
    if dest.exists():
        return
    buf = io.BytesIO()
    thumbnail_image(img, size, fast, full_size).save(buf, "JPEG", quality=85)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_bytes(buf.getvalue())
    os.replace(tmp, dest)


def draft_target(resolution: int) -> int:
    """Smallest side to ask libjpeg's DCT scaling for, for a model of input ``resolution``."""
    return (3 * resolution + 1) // 2


def thumbnail_source(image: Any, resized: Any, size: int, fast: bool) -> Any:
    """What a photo's thumbnail is made from: its model-size resize (``resized``, from
    ``ClipEncoder.prepare``) when fast resizing and it is a reduction that still covers the
    thumbnail (a small shrink: ~0.35 ms less per web-size photo, pixels ~1 from a direct
    resize on average; bench/bench_fidelity.py), else the decoded ``image``."""
    if resized is None or not fast or resized.width > image.width:
        return image
    return resized if max(resized.size) >= size else image
