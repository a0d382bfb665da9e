"""Camera RAW files (DNG, CR2/CR3, NEF, ARW, RAF, ORF, RW2, ...) through rawpy (LibRaw).

:func:`open_raw` reads what :func:`indexer.embed.images.decode` needs from a RAW file: the
embedded JPEG preview when it is large enough (the fast path: cameras embed a full-size or
~1.6 MP rendering of the photo), else a half-size demosaic (each 2x2 Bayer cell becomes one
pixel: no interpolation, ~4x fewer pixels than a full demosaic). rawpy is imported on first
use; without it every RAW file is a :class:`RawError` naming the extra that installs it.

LibRaw reads the preview without touching the sensor data, so a file cut short after its
preview would pass unnoticed: :func:`data_end` reads where the container says its last data
block ends (TIFF-based RAWs, RAF, CR3), and when that is past the end of the file, or the
container is unknown, LibRaw unpacks the sensor data to tell a truncated file from a valid one.
"""

from __future__ import annotations

import io
import os
import struct
from dataclasses import dataclass
from typing import Any

from indexer.config import RAW_EXTENSIONS

NOT_INSTALLED = "RAW support not installed: pip install 'clipsearch[raw]'"
_EXTS = frozenset(RAW_EXTENSIONS)
# TIFF-structured RAW headers (TIFF itself; Olympus ORF, Panasonic RW2 variants) -> byte order
_TIFF_MAGIC = {b"II*\x00": "<", b"MM\x00*": ">", b"IIRO": "<", b"IIRS": "<", b"MMOR": ">",
               b"IIU\x00": "<"}  # fmt: skip
_DATA_TAGS = ((273, 279), (324, 325), (513, 514))  # strips, tiles, JPEG: (offsets, byte counts)
_IFD_TAGS = (330, 34665)  # SubIFDs (DNG, NEF, ARW: the sensor data), EXIF
_WANTED = frozenset(t for pair in _DATA_TAGS for t in pair) | frozenset(_IFD_TAGS)
_TYPE_SIZE = {1: 1, 3: 2, 4: 4, 13: 4, 16: 8}
_TYPE_CODE = {1: "B", 3: "H", 4: "I", 13: "I", 16: "Q"}


class RawError(Exception):
    """A RAW file that cannot be read; ``str(exc)`` is the reason."""


@dataclass
class RawFrame:
    """What a RAW file gives: the preview JPEG, or upright RGB pixels (uint8 HxWx3)."""

    width: int  # the full photo, upright
    height: int
    preview: bytes | None = None
    pixels: Any = None
    flip: int = 0  # LibRaw's orientation (0, 3: 180, 5: 90 CCW, 6: 90 CW), for the preview
    taken_at: str | None = None  # LibRaw's capture time (when the container's EXIF has none)


def is_raw_name(name: str | os.PathLike | None) -> bool:
    """Whether a file name has a camera RAW extension (case-insensitive)."""
    return name is not None and os.path.splitext(os.fspath(name))[1].lower() in _EXTS


def _rawpy() -> Any:
    try:
        import rawpy  # type: ignore[import-not-found]
    except ImportError:
        raise RawError(NOT_INSTALLED) from None
    return rawpy


def raw_support() -> str | None:
    """``"rawpy X (LibRaw Y)"`` when RAW files can be decoded here, else None."""
    try:
        rawpy = _rawpy()
    except RawError:
        return None
    return f"rawpy {rawpy.__version__} (LibRaw {'.'.join(map(str, rawpy.libraw_version))})"


def _reason(exc: Exception, stage: str) -> str:
    name = type(exc).__name__
    text = exc.args[0].decode("utf-8", "replace") if exc.args and isinstance(exc.args[0], bytes) \
        else str(exc)  # fmt: skip
    if name == "LibRawFileUnsupportedError":
        return "not a RAW file LibRaw can read (unsupported format or corrupt header)"
    if name == "LibRawIOError":
        return f"truncated or unreadable RAW ({stage}: data ends early)"
    if name in ("LibRawTooBigError", "LibRawUnsufficientMemoryError", "LibRawMemPoolOverflowError"):
        return f"RAW too large to decode ({stage}: {text})"
    if name == "LibRawDataError":
        return f"corrupt RAW data ({stage}: {text})"
    return f"cannot decode RAW ({stage}: {name}: {text})"


def _open(rawpy: Any, data: bytes) -> Any:
    raw = rawpy.RawPy()
    try:
        raw.open_buffer(io.BytesIO(data))
    except Exception as exc:  # noqa: BLE001 - every LibRaw error is a bad file
        raw.close()
        raise RawError(_reason(exc, "header")) from None
    return raw


def _checked_size(raw: Any, max_pixels: int) -> tuple[int, int]:
    s = raw.sizes
    if s.raw_width * s.raw_height > max_pixels:
        raise RawError(f"decompression bomb: RAW {s.raw_width}x{s.raw_height} = "
                       f"{s.raw_width * s.raw_height} pixels exceeds library.max_pixels "
                       f"({max_pixels})")  # fmt: skip
    if s.width < 1 or s.height < 1:
        raise RawError(f"invalid RAW image size {s.width}x{s.height}")
    return (s.height, s.width) if s.flip in (5, 6) else (s.width, s.height)


def _timestamp(raw: Any) -> str | None:
    try:
        ts = raw.other.timestamp
    except Exception:  # noqa: BLE001 - no or invalid time: not worth failing the photo for
        return None
    return ts.strftime("%Y-%m-%dT%H:%M:%S") if ts is not None and ts.year > 1970 else None


def _preview(raw: Any, rawpy: Any, min_side: int) -> bytes | None:
    """The embedded JPEG preview when both its sides are >= ``min_side``, else None."""
    try:
        thumb = raw.extract_thumb()
    except Exception:  # noqa: BLE001 - no preview, or one LibRaw cannot extract
        return None
    if thumb.format != rawpy.ThumbFormat.JPEG:
        return None  # (a bitmap preview is small; the demosaic is as fast to make)
    from PIL import Image

    try:
        with Image.open(io.BytesIO(thumb.data)) as img:  # the header only
            if min(img.size) < min_side:
                return None
    except Exception:  # noqa: BLE001 - a broken preview: demosaic instead
        return None
    return bytes(thumb.data)


def _postprocess(raw: Any, half_size: bool) -> Any:
    try:
        # Upright (LibRaw applies the orientation), camera white balance, 8 bits, the sRGB
        # tone curve (the rest of the pipeline reads pixels as sRGB; LibRaw's default is
        # BT.709's) and no histogram stretch (it would depend on the scene's highlights).
        return raw.postprocess(half_size=half_size, use_camera_wb=True, output_bps=8,
                               gamma=(2.4, 12.92), no_auto_bright=True)  # fmt: skip
    except Exception as exc:  # noqa: BLE001
        raise RawError(_reason(exc, "sensor data")) from None


def open_raw(data: bytes, max_pixels: int, min_preview: int, preview: bool = True) -> RawFrame:
    """Read RAW bytes: the preview JPEG when ``preview`` and it covers ``min_preview`` pixels on
    each side (and the file is whole), else a half-size demosaic. Raises :class:`RawError`."""
    rawpy = _rawpy()
    raw = _open(rawpy, data)
    try:
        width, height = _checked_size(raw, max_pixels)
        frame = RawFrame(width, height, flip=raw.sizes.flip)
        if preview:
            end = data_end(data)
            if end is None or end > len(data):  # unknown container, or one that says cut short
                try:  # (before the preview: LibRaw unpacks the sensor data first or not at all)
                    raw.unpack()
                except Exception as exc:  # noqa: BLE001
                    raise RawError(_reason(exc, "sensor data")) from None
                frame.taken_at = _timestamp(raw)
            frame.preview = _preview(raw, rawpy, min_preview)
            if frame.preview is not None:
                return frame
        frame.pixels, frame.flip = _postprocess(raw, half_size=True), 0
        frame.taken_at = _timestamp(raw)  # (rawpy unpacks the sensor data to read it)
        return frame
    finally:
        raw.close()


def demosaic(data: bytes, max_pixels: int, half_size: bool = True) -> Any:
    """Upright RGB pixels (uint8 HxWx3) of RAW bytes: half-size or full demosaic (AHD)."""
    rawpy = _rawpy()
    raw = _open(rawpy, data)
    try:
        _checked_size(raw, max_pixels)
        return _postprocess(raw, half_size)
    finally:
        raw.close()


def _tiff_end(data: bytes, order: str) -> int:
    """The end of the last data block (strips, tiles, JPEG) of any IFD, following the IFD
    chain, SubIFDs and the EXIF IFD; an IFD pointing past the end counts as its offset."""
    size, end, seen = len(data), 0, set()
    stack = [struct.unpack_from(order + "I", data, 4)[0]]
    while stack and len(seen) < 256:
        off = stack.pop()
        if off in seen or off < 8:
            continue
        seen.add(off)
        if off + 2 > size:
            end = max(end, off + 2)
            continue
        (n,) = struct.unpack_from(order + "H", data, off)
        if off + 2 + 12 * n + 4 > size:
            end = max(end, off + 2 + 12 * n + 4)
            continue
        values: dict[int, tuple] = {}
        for i in range(n):
            tag, typ, count, inline = struct.unpack_from(order + "HHI4s", data, off + 2 + 12 * i)
            if tag not in _WANTED or typ not in _TYPE_SIZE or count > 1 << 16:
                continue
            nbytes = _TYPE_SIZE[typ] * count
            if nbytes <= 4:
                blob = inline[:nbytes]
            else:
                (at,) = struct.unpack(order + "I", inline)
                if at + nbytes > size:
                    end = max(end, at + nbytes)
                    continue
                blob = data[at : at + nbytes]
            values[tag] = struct.unpack(order + _TYPE_CODE[typ] * count, blob)
        for offsets, counts in _DATA_TAGS:
            for o, c in zip(values.get(offsets, ()), values.get(counts, ())):
                end = max(end, o + c)
        for tag in _IFD_TAGS:
            stack.extend(values.get(tag, ()))
        (nxt,) = struct.unpack_from(order + "I", data, off + 2 + 12 * n)
        stack.append(nxt)
    return end


def data_end(data: bytes) -> int | None:
    """Where a RAW container says its data ends (may exceed ``len(data)``: cut short); None for
    a container this does not know (LibRaw then checks by unpacking)."""
    head = data[:4]
    if head in _TIFF_MAGIC:
        return _tiff_end(data, _TIFF_MAGIC[head])
    if data.startswith(b"FUJIFILM") and len(data) >= 108:
        # RAF: big-endian (offset, length) of the JPEG, the CFA header and the CFA data
        parts = struct.unpack_from(">6I", data, 84)
        return max(parts[i] + parts[i + 1] for i in (0, 2, 4))
    if data[4:8] == b"ftyp":  # ISO BMFF (CR3): top-level boxes must fit
        pos = 0
        while pos + 8 <= len(data):
            (box,) = struct.unpack_from(">I", data, pos)
            if box == 1 and pos + 16 <= len(data):
                (box,) = struct.unpack_from(">Q", data, pos + 8)
            if box == 0:  # the last box runs to the end of the file
                return len(data)
            if box < 8:
                return None
            pos += box
        return max(pos, len(data))  # past the end: a box is cut short
    return None
