"""Videos: sampled frames (one per scene, and at least one every few seconds) through PyAV.

:func:`decode_video` decodes a video sequentially and keeps the frames the index embeds: the
first, every frame that differs from the last kept one by more than a scene threshold (on a
16x16 grey signature), and one at least every ``interval_s``. Every failure is a
:class:`~indexer.embed.images.BadImage` with a short reason, as for photos. PyAV is imported on
first use.

FFmpeg does not notice every damaged file: a WebM cut short opens with its full duration and
decodes without an error, so the end of the decoded stream is compared with the duration the
container announces. The VP9 decoders ignore ``skip_frame``, so ``keyframes_only`` demuxes
every packet but feeds only the keyframes to the decoder.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from PIL import Image

from indexer.config import VIDEO_EXTENSIONS as CONFIG_VIDEO_EXTENSIONS
from indexer.embed.images import BadImage, os_reason

VIDEO_EXTENSIONS: tuple[str, ...] = tuple(CONFIG_VIDEO_EXTENSIONS)
_CHUNK = 1 << 20
_SIG = 16  # side of the grey scene signature
_END_SLACK_S = 1.0  # a stream may end this much (or 3 frames) before its announced duration
# demuxers FFmpeg uses for still images (a photo renamed .mov opens as a 1-frame "video")
_IMAGE_FORMATS = frozenset({"image2", "gif", "apng", "ico", "tiff"})
_TURN = {90: Image.Transpose.ROTATE_90, -90: Image.Transpose.ROTATE_270,
         180: Image.Transpose.ROTATE_180, -180: Image.Transpose.ROTATE_180}  # fmt: skip
_MAKE_TAGS = ("com.apple.quicktime.make", "com.android.manufacturer", "make")
_MODEL_TAGS = ("com.apple.quicktime.model", "com.android.model", "model")
_TIME_TAGS = ("com.apple.quicktime.creationdate", "creation_time", "date")


def is_video(name: str | os.PathLike | bytes) -> bool:
    """Whether a file name has a video extension (case-insensitive)."""
    name = os.fsdecode(name)
    return os.path.splitext(name)[1].lower() in VIDEO_EXTENSIONS


@dataclass
class VideoFrame:
    """One sampled frame: its time from the start of the stream and the upright RGB image."""

    t_ms: int
    image: Image.Image


@dataclass
class DecodedVideo:
    """The sampled frames (in time order, at least one) plus what the index records."""

    frames: list[VideoFrame]
    width: int  # display size, after rotation
    height: int
    duration_ms: int
    taken_at: str | None
    camera: str | None


@dataclass(frozen=True)
class VideoLimits:
    """How frames are sampled and which videos are refused."""

    interval_s: float = 2.0  # at most this long between two sampled frames
    scene_threshold: float = 0.1  # mean abs difference (0..1) of the grey signature
    min_gap_s: float = 0.5  # no two samples closer than this
    max_frames: int = 120  # per video; longer videos widen the interval instead
    max_seconds: float = 3 * 3600
    max_bytes: int = 8 * 2**30
    keyframes_only: bool = False  # decode keyframes only (the fast path for long videos)


def _check_file(path: str | os.PathLike, max_bytes: int | None = None) -> int:
    """The size of a regular, non-empty file; :class:`BadImage` otherwise."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise BadImage(f"cannot open: {os_reason(exc)}") from None
    try:
        st = os.fstat(fd)
    except OSError as exc:
        raise BadImage(f"cannot read: {os_reason(exc)}") from None
    finally:
        os.close(fd)
    if not stat.S_ISREG(st.st_mode):
        raise BadImage("not a regular file")
    if st.st_size == 0:
        raise BadImage("empty file (0 bytes)")
    if max_bytes is not None and st.st_size > max_bytes:
        raise BadImage(f"file too large ({st.st_size} bytes > {max_bytes})")
    return st.st_size


def file_digest(path: str | os.PathLike) -> str:
    """``images.content_hash`` of the file's bytes, read in chunks (videos are large)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise BadImage(f"cannot open: {os_reason(exc)}") from None
    h = hashlib.blake2b(digest_size=32)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise BadImage("not a regular file")
        with os.fdopen(fd, "rb", closefd=True) as fh:
            fd = -1
            size = 0
            while chunk := fh.read(_CHUNK):
                h.update(chunk)
                size += len(chunk)
    except OSError as exc:
        raise BadImage(f"cannot read: {os_reason(exc)}") from None
    finally:
        if fd >= 0:
            os.close(fd)
    if size == 0:
        raise BadImage("empty file (0 bytes)")
    return h.hexdigest()


def _av_reason(exc: Exception) -> str:
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return text.rstrip(".")


def _open(av: Any, path: str | os.PathLike) -> Any:
    try:
        return av.open(os.fspath(path), metadata_errors="replace")
    except av.error.InvalidDataError as exc:
        raise BadImage(f"truncated or not a video: {_av_reason(exc)}") from None
    except Exception as exc:  # noqa: BLE001 - any demuxer error is a bad file
        raise BadImage(f"cannot open video: {_av_reason(exc)}") from None


def _video_stream(container: Any) -> Any:
    fmt = container.format.name
    if fmt.endswith("_pipe") or fmt in _IMAGE_FORMATS:
        raise BadImage(f"not a video (a still image: {fmt.removesuffix('_pipe')})")
    if not container.streams.video:
        kind = "audio only" if container.streams.audio else "no streams"
        raise BadImage(f"no video stream ({kind})")
    stream = container.streams.video[0]
    if stream.codec_context is None or stream.codec_context.codec is None:
        raise BadImage("unsupported video codec")
    stream.thread_type = "AUTO"
    return stream


def _duration_s(container: Any, stream: Any) -> float | None:
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    tag = stream.metadata.get("DURATION") or ""  # Matroska's per-stream length, "H:MM:SS.f"
    try:
        h, m, sec = tag.split(":")
        return int(h) * 3600 + int(m) * 60 + float(sec)
    except ValueError:
        pass  # (the container's duration is that of its longest stream, audio included)
    if container.duration:
        return container.duration / 1e6  # (AV_TIME_BASE)
    return None


def _frame_s(stream: Any) -> float:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return float(1 / rate) if rate and 0 < rate < 1000 else 1 / 30


def _clean(value: object) -> str | None:
    if not isinstance(value, str):
        return None
    return " ".join(value.replace("\x00", " ").split())[:100] or None


def _taken_at(tags: dict[str, str]) -> str | None:
    for key in _TIME_TAGS:
        value = _clean(tags.get(key))
        if not value:
            continue
        try:
            dt = datetime.strptime(value[:19].replace(" ", "T"), "%Y-%m-%dT%H:%M:%S")
        except ValueError:
            continue
        if dt.year > 1970:  # (a zero QuickTime time reads as 1904 or 1970)
            return dt.strftime("%Y-%m-%dT%H:%M:%S")
    return None


def _camera(tags: dict[str, str]) -> str | None:
    make = next((v for k in _MAKE_TAGS if (v := _clean(tags.get(k)))), None)
    model = next((v for k in _MODEL_TAGS if (v := _clean(tags.get(k)))), None)
    if make and model and model.lower().startswith(make.lower()):
        make = None
    return " ".join(p for p in (make, model) if p) or None


def _display_size(stream: Any) -> tuple[int, int]:
    w, h = stream.codec_context.width, stream.codec_context.height
    sar = stream.sample_aspect_ratio
    if sar and sar != 1:
        w = max(1, round(w * sar))
    return w, h


def _to_image(frame: Any, size: tuple[int, int], max_side: int) -> Image.Image:
    """The frame as upright RGB, longest side at most ``max_side``."""
    w, h = size
    scale = min(1.0, max_side / max(w, h))
    out_w, out_h = max(1, round(w * scale)), max(1, round(h * scale))
    img = frame.reformat(width=out_w, height=out_h, format="rgb24").to_image()
    turn = _TURN.get(_rotation(frame))
    return img.transpose(turn) if turn is not None else img


def _rotation(frame: Any) -> int:
    try:
        return round(frame.rotation / 90) * 90
    except Exception:  # noqa: BLE001 - no or unreadable display matrix: as stored
        return 0


def _signature(frame: Any) -> Any:
    """The frame's 16x16 grey thumbnail (0..1), for scene changes."""
    import numpy as np

    fmt = frame.format.name
    if fmt.startswith(("yuv", "nv12", "nv21")) and not fmt.endswith(("le", "be")):
        # 8-bit luma read in place from a ~64x64 grid: ~10x faster than swscale at 720p
        plane, h, w = frame.planes[0], frame.height, frame.width
        luma = np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)[:h, :w]
        sub = luma[:: max(1, h // 64), :: max(1, w // 64)]
        rows, cols = sub.shape[0] // _SIG * _SIG, sub.shape[1] // _SIG * _SIG
        if rows and cols:
            cells = sub[:rows, :cols].reshape(_SIG, rows // _SIG, _SIG, cols // _SIG)
            grey = cells.mean(axis=(1, 3), dtype=np.float32)
            if fmt.startswith("yuvj"):
                return grey / 255.0
            return np.clip((grey - 16.0) / 219.0, 0.0, 1.0)  # (limited-range luma)
    grey = frame.reformat(width=_SIG, height=_SIG, format="gray").to_ndarray()
    return np.asarray(grey[:_SIG, :_SIG], dtype=np.float32) / 255.0


class _Reader:
    """Demuxes one stream, decoding all packets or the keyframes only; remembers where the
    packets end (a file cut short ends early whatever is decoded)."""

    def __init__(self, container: Any, stream: Any, keyframes_only: bool) -> None:
        self.container, self.stream, self.keyframes_only = container, stream, keyframes_only
        self.start = stream.start_time or 0
        self.packets_end_s = 0.0
        self.t_s = 0.0

    def _note(self, packet: Any) -> None:
        if packet.pts is not None and self.stream.time_base:
            end = packet.pts - self.start + (packet.duration or 0)
            self.packets_end_s = max(self.packets_end_s, float(end * self.stream.time_base))

    def frames(self) -> Iterator[tuple[float, Any]]:
        """(seconds from the stream's start, frame) in decoding order."""
        codec = self.stream.codec_context
        for packet in self.container.demux(self.stream):
            self._note(packet)
            if self.keyframes_only and (not packet.is_keyframe or packet.size == 0):
                continue  # (the final empty packet flushes the decoder: done below)
            yield from self._timed(codec.decode(packet))
        if self.keyframes_only:
            yield from self._timed(codec.decode(None))

    def _timed(self, frames: list[Any]) -> Iterator[tuple[float, Any]]:
        for frame in frames:
            if frame.pts is not None and self.stream.time_base:
                # (the stream's time base: frames flushed from the decoder carry none)
                self.t_s = float((frame.pts - self.start) * self.stream.time_base)
            else:
                self.t_s += _frame_s(self.stream)
            yield self.t_s, frame

    def drain(self) -> None:
        """Demux (without decoding) to the end, to learn where the packets end."""
        for packet in self.container.demux(self.stream):
            self._note(packet)


def decode_video(
    path: str | os.PathLike, limits: VideoLimits = VideoLimits(), max_side: int = 448
) -> DecodedVideo:
    """The sampled frames of a video (RGB, upright, longest side <= ``max_side``) and its
    metadata. Raises :class:`BadImage` with the reason on any failure."""
    size = _check_file(path, limits.max_bytes)
    import av

    try:
        with _open(av, path) as container:
            return _sample(av, container, limits, max_side)
    except BadImage:
        raise
    except MemoryError:
        raise BadImage("out of memory while decoding video") from None
    except Exception as exc:  # noqa: BLE001 - any decoder error is a bad file
        raise BadImage(f"cannot decode video ({size} bytes): {_av_reason(exc)}") from None


def _sample(av: Any, container: Any, limits: VideoLimits, max_side: int) -> DecodedVideo:
    stream = _video_stream(container)
    duration = _duration_s(container, stream)
    if duration is not None and duration > limits.max_seconds:
        raise BadImage(f"video too long ({duration:.0f} s > {limits.max_seconds:.0f} s)")
    tags = {**stream.metadata, **container.metadata}
    size = _display_size(stream)
    interval = limits.interval_s
    if duration and duration / interval > limits.max_frames:
        interval = duration / limits.max_frames
    frame_s = _frame_s(stream)
    eps = min(frame_s / 2, 0.01)  # (frame times are rounded to the time base)
    reader = _Reader(container, stream, limits.keyframes_only)
    frames: list[VideoFrame] = []
    rotation = 0
    last_t, last_sig = -1.0, None
    last_seen = -1.0
    try:
        for t, frame in reader.frames():
            last_seen = max(last_seen, t)
            gap = t - last_t
            if last_sig is not None and gap < limits.min_gap_s - eps:
                continue
            sig = _signature(frame)
            if last_sig is not None and gap < interval - eps:
                if float(abs(sig - last_sig).mean()) <= limits.scene_threshold:
                    continue
            frames.append(VideoFrame(max(0, round(t * 1000)), _to_image(frame, size, max_side)))
            rotation = _rotation(frame)
            last_t, last_sig = t, sig
            if len(frames) >= limits.max_frames:
                reader.drain()
                break
    except av.error.FFmpegError as exc:
        where = f"at {reader.t_s:.1f} s" if frames else "before the first frame"
        raise BadImage(f"decode error {where}: {_av_reason(exc)}") from None
    if not frames:
        raise BadImage("no frame could be decoded")
    end = max(last_seen + frame_s, reader.packets_end_s)
    if duration and end < duration - max(_END_SLACK_S, 3 * frame_s):
        raise BadImage(f"truncated: frames end at {end:.1f} s of {duration:.1f} s")
    if rotation in (90, -90):
        size = size[::-1]
    frames.sort(key=lambda f: f.t_ms)  # (already in order unless timestamps jump back)
    return DecodedVideo(frames, size[0], size[1], round((duration or end) * 1000),
                        _taken_at(tags), _camera(tags))  # fmt: skip


def frame_at(path: str | os.PathLike, t_ms: int, max_side: int = 1024) -> Image.Image:
    """The frame shown at ``t_ms`` (upright RGB, longest side <= ``max_side``): seek to the
    keyframe before it and decode forward. Raises :class:`BadImage`."""
    _check_file(path)
    import av

    try:
        with _open(av, path) as container:
            stream = _video_stream(container)
            start = stream.start_time or 0
            target = t_ms / 1000
            if stream.time_base:
                container.seek(start + int(target / stream.time_base), stream=stream,
                               backward=True, any_frame=False)  # fmt: skip
            reader = _Reader(container, stream, keyframes_only=False)
            shown = None
            for t, frame in reader.frames():
                if shown is not None and t > target + 1e-3:
                    break
                shown = frame
            if shown is None:
                raise BadImage("no frame could be decoded")
            return _to_image(shown, _display_size(stream), max_side)
    except BadImage:
        raise
    except MemoryError:
        raise BadImage("out of memory while decoding video") from None
    except Exception as exc:  # noqa: BLE001 - any decoder error is a bad file
        raise BadImage(f"cannot decode video: {_av_reason(exc)}") from None
