"""Real video files made with PyAV, for tests/test_video_decode.py and bench/bench_video.py."""

from __future__ import annotations

import os
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image

SHARED = Path(__file__).resolve().parent.parent.parent / "shared"
COCO_VAL = SHARED / "datasets" / "coco-mini" / "val2017"


def fit(img: Image.Image, size: tuple[int, int]) -> Image.Image:
    """``img`` resized (stretched) to exactly ``size``, RGB."""
    return img.convert("RGB").resize(size, Image.Resampling.BICUBIC)


def make_video(
    path: str | os.PathLike,
    images: Sequence[Image.Image],
    seconds_each: float = 2.0,
    fps: int = 10,
    codec: str = "libx264",
    size: tuple[int, int] = (256, 192),
    gop: int | None = None,
    rotation: int | None = None,
    metadata: dict[str, str] | None = None,
) -> Path:
    """Encode ``images`` shown one after another, ``seconds_each`` each, into ``path``.

    The container follows the suffix (.mp4/.mov for H.264, .webm/.mkv for VP9); yuv420p at
    ``size`` (even sides). ``gop``: frames between keyframes (a fixed GOP, no scene-cut
    keyframes). ``rotation``: a display matrix (degrees counter-clockwise); ``metadata``:
    container tags (kept in .mov/.mp4 with ``use_metadata_tags``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    w, h = size
    options = {"movflags": "use_metadata_tags"} if path.suffix in (".mp4", ".mov") else {}
    with av_open_write(path, options) as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        opts: dict[str, str] = {}
        if codec == "libx264":
            opts = {"preset": "ultrafast", "crf": "23"}
            if gop:
                opts["x264-params"] = f"keyint={gop}:min-keyint={gop}:scenecut=0"
        elif codec == "libvpx-vp9":
            opts = {"deadline": "realtime", "cpu-used": "8", "crf": "32", "b": "0",
                    "row-mt": "1"}  # fmt: skip
            if gop:
                opts.update({"g": str(gop), "keyint_min": str(gop)})
        stream.options = opts
        if gop:
            stream.codec_context.gop_size = gop
        if rotation:
            stream.set_display_rotation(rotation)
        for key, value in (metadata or {}).items():
            out.metadata[key] = value
        stream.codec_context.time_base = Fraction(1, fps)
        n = round(seconds_each * fps)
        pts = 0
        for img in images:
            frame = av_frame(fit(img, size))
            for _ in range(n):
                frame.pts = pts
                pts += 1
                for packet in stream.encode(frame):
                    out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def av_open_write(path: Path, options: dict[str, str]):
    import av

    return av.open(str(path), "w", options=options)


def av_frame(img: Image.Image):
    import av

    return av.VideoFrame.from_ndarray(np.asarray(img), format="rgb24")


def make_audio(path: str | os.PathLike, seconds: float = 2.0, codec: str = "aac") -> Path:
    """An audio-only file (a 440 Hz tone) in the container of ``path``'s suffix."""
    import av

    path = Path(path)
    fmt = {".mp4": "mp4", ".m4a": "mp4", ".webm": "webm", ".mka": "matroska"}[path.suffix]
    rate = 48000
    with av.open(str(path), "w", format=fmt) as out:
        stream = out.add_stream(codec, rate=rate)
        stream.layout = "mono"
        fmt_name = stream.codec_context.codec.audio_formats[0].name
        step = stream.codec_context.frame_size or 1024
        t = np.arange(int(seconds * rate)) / rate
        pcm = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
        for i in range(0, len(pcm) - step + 1, step):
            chunk = pcm[i : i + step].reshape(1, -1)
            if fmt_name == "s16":
                chunk = (chunk * 32767).astype(np.int16)
            frame = av.AudioFrame.from_ndarray(chunk, format=fmt_name, layout="mono")
            frame.sample_rate, frame.pts = rate, i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def cut(src: str | os.PathLike, dst: str | os.PathLike, fraction: float = 0.5) -> Path:
    """A copy of the first ``fraction`` of ``src``'s bytes (a truncated download)."""
    data = Path(src).read_bytes()
    Path(dst).write_bytes(data[: int(len(data) * fraction)])
    return Path(dst)


def synthetic_photos(n: int, size: tuple[int, int] = (256, 192)) -> list[Image.Image]:
    """``n`` clearly different images (gradients and blocks of distinct colours)."""
    rng = np.random.default_rng(7)
    out = []
    w, h = size
    for i in range(n):
        base = rng.integers(0, 256, size=3)
        yy, xx = np.mgrid[0:h, 0:w]
        a = np.empty((h, w, 3), np.float32)
        for c in range(3):
            a[..., c] = (base[c] + (xx if (i + c) % 2 else yy) * (1 + i) * 0.7) % 256
        a[(yy // 32 + xx // 32 + i) % 3 == 0] = 255 - base
        out.append(Image.fromarray(a.astype(np.uint8)))
    return out


def coco_photos(n: int) -> list[Image.Image]:
    """The first ``n`` coco-mini val photos; raises FileNotFoundError naming what is missing."""
    files = sorted(COCO_VAL.glob("*.jpg"))[:n]
    if len(files) < n:
        raise FileNotFoundError(f"{COCO_VAL} ({n} JPEGs needed)")
    photos = []
    for f in files:
        with Image.open(f) as img:
            photos.append(img.convert("RGB"))
    return photos


def add_audio_track(src: str | os.PathLike, dst: str | os.PathLike, seconds: float) -> Path:
    """``src``'s video stream copied into ``dst`` with a silent Opus track of ``seconds``."""
    import av

    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        vin = inp.streams.video[0]
        vout = out.add_stream_from_template(vin)
        aout = out.add_stream("libopus", rate=48000)
        aout.layout = "mono"
        for packet in inp.demux(vin):
            if packet.dts is not None:
                packet.stream = vout
                out.mux(packet)
        step = 960
        for i in range(0, int(seconds * 48000), step):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, step), np.int16), format="s16",
                                               layout="mono")  # fmt: skip
            frame.sample_rate, frame.pts = 48000, i
            for packet in aout.encode(frame):
                out.mux(packet)
        for packet in aout.encode():
            out.mux(packet)
    return Path(dst)
