"""indexer.embed.video on real H.264 and VP9 files written with PyAV (tests/videos.py)."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
from PIL import Image

from indexer.embed import images
from indexer.embed.images import BadImage
from indexer.embed.video import (
    DecodedVideo,
    VideoLimits,
    decode_video,
    file_digest,
    frame_at,
    is_video,
)
from tests.videos import COCO_VAL, add_audio_track, coco_photos, cut, fit, make_audio, make_video

pytest.importorskip("av")

SIZE = (256, 192)
CODECS = {"mp4": "libx264", "webm": "libvpx-vp9"}


@pytest.fixture(scope="module")
def photos() -> list[Image.Image]:
    try:
        return [fit(p, SIZE) for p in coco_photos(5)]
    except FileNotFoundError as exc:
        pytest.skip(f"test photos missing: {exc}")


@pytest.fixture(scope="module")
def videos(photos, tmp_path_factory) -> dict[str, os.PathLike]:
    """5 photos x 2 s at 10 fps, a keyframe every 1.5 s, in H.264 .mp4 and VP9 .webm."""
    d = tmp_path_factory.mktemp("videos")
    return {ext: make_video(d / f"scenes.{ext}", photos, codec=codec, gop=15)
            for ext, codec in CODECS.items()}  # fmt: skip


def diff(a: Image.Image, b: Image.Image) -> float:
    return float(np.abs(np.asarray(a, np.float32) - np.asarray(b, np.float32)).mean())


def best_match(img: Image.Image, photos: list[Image.Image]) -> tuple[int, float]:
    """(index of the photo ``img`` is closest to, its mean abs pixel difference)."""
    d = [diff(img.resize(SIZE), p) for p in photos]
    return int(np.argmin(d)), min(d)


def test_is_video():
    assert is_video("a/B.MP4") and is_video(b"x.webm") and is_video("clip.Mov")
    assert not is_video("photo.jpg") and not is_video("mp4")


@pytest.mark.parametrize("ext", list(CODECS))
def test_one_frame_per_scene(videos, photos, ext):
    dec = decode_video(videos[ext])
    assert isinstance(dec, DecodedVideo)
    assert (dec.width, dec.height) == SIZE
    assert abs(dec.duration_ms - 10_000) <= 200
    times = [f.t_ms for f in dec.frames]
    assert times == sorted(times) and times[0] == 0
    for i, start in enumerate(range(0, 10_000, 2000)):
        near = [f for f in dec.frames if start <= f.t_ms < start + 1000]
        assert near, f"no frame within 1 s of scene {i} at {start} ms: {times}"
        assert near[0].image.mode == "RGB" and near[0].image.size == SIZE
        match, d = best_match(near[0].image, photos)
        assert match == i and d < 12, (i, match, d)


@pytest.mark.parametrize("ext", list(CODECS))
def test_max_side(videos, ext):
    dec = decode_video(videos[ext], max_side=128)
    assert all(f.image.size == (128, 96) for f in dec.frames)
    assert (dec.width, dec.height) == SIZE  # the video's own size


@pytest.mark.parametrize("ext", list(CODECS))
def test_keyframes_only_decodes_keyframes(videos, photos, ext):
    # keyframes every 15 frames (1.5 s): every sample must be one; VP9 ignores skip_frame,
    # so a decoder left to skip would hand back in-between frames here
    dec = decode_video(videos[ext], VideoLimits(keyframes_only=True, interval_s=1.0))
    times = [f.t_ms for f in dec.frames]
    assert times == [0, 1500, 3000, 4500, 6000, 7500, 9000], times
    for f in dec.frames:  # each keyframe shows the photo of its scene
        assert best_match(f.image, photos)[0] == f.t_ms // 2000
    # the default 2 s interval: 1.5 s and 7.5 s are the same scenes as 0 s and 6 s
    dec = decode_video(videos[ext], VideoLimits(keyframes_only=True, scene_threshold=0.1))
    assert [f.t_ms for f in dec.frames] == [0, 3000, 4500, 6000, 9000]


@pytest.mark.parametrize("ext", list(CODECS))
def test_scene_changes_off_the_interval(videos, photos, ext):
    # interval longer than the video: only the scene changes (every 2 s) are sampled
    dec = decode_video(videos[ext], VideoLimits(interval_s=20.0, scene_threshold=0.1))
    assert [f.t_ms for f in dec.frames] == [0, 2000, 4000, 6000, 8000]
    assert [best_match(f.image, photos)[0] for f in dec.frames] == [0, 1, 2, 3, 4]
    dec = decode_video(videos[ext], VideoLimits(interval_s=20.0, scene_threshold=0.5))
    assert [f.t_ms for f in dec.frames] == [0]  # (no cut between these photos is that big)


def test_interval_on_static_video(photos, tmp_path):
    p = make_video(tmp_path / "static.mp4", photos[:1], seconds_each=10.0, fps=5)
    dec = decode_video(p, VideoLimits(interval_s=2.0))
    assert [f.t_ms for f in dec.frames] == [0, 2000, 4000, 6000, 8000]
    dec = decode_video(p, VideoLimits(interval_s=3.0))
    assert [f.t_ms for f in dec.frames] == [0, 3000, 6000, 9000]


def test_max_frames_spreads_over_a_long_video(photos, tmp_path):
    p = make_video(tmp_path / "long.mp4", photos[:1], seconds_each=60.0, fps=2, size=(64, 48))
    dec = decode_video(p, VideoLimits(interval_s=2.0, max_frames=10))
    times = [f.t_ms for f in dec.frames]
    assert len(times) == 10 and times[-1] >= 50_000, times
    assert all(5500 <= b - a <= 6500 for a, b in zip(times, times[1:])), times


def test_scene_change_respects_min_gap(photos, tmp_path):
    p = make_video(tmp_path / "flicker.mp4", photos[:2] * 5, seconds_each=0.2, fps=10)
    dec = decode_video(p, VideoLimits(min_gap_s=0.5, interval_s=5.0, scene_threshold=0.1))
    times = [f.t_ms for f in dec.frames]
    # a change every 0.2 s; samples no closer than 0.5 s: the next other photo after 0.5 s
    assert times == [0, 600, 1200, 1800], times


def test_rotation_and_metadata(tmp_path):
    a = np.zeros((192, 256, 3), np.uint8)
    a[:, :128] = 255  # left half white
    tags = {
        "creation_time": "2021-05-06T07:08:09.000000Z",
        "com.apple.quicktime.make": "Apple",
        "com.apple.quicktime.model": "iPhone 12",
    }
    p = make_video(tmp_path / "turned.mov", [Image.fromarray(a)], seconds_each=1.0,
                   rotation=90, metadata=tags)  # fmt: skip
    dec = decode_video(p)
    assert (dec.width, dec.height) == (192, 256)
    assert dec.taken_at == "2021-05-06T07:08:09" and dec.camera == "Apple iPhone 12"
    img = np.asarray(dec.frames[0].image.convert("L"), np.float32)
    assert img.shape == (256, 192)
    # 90 degrees counter-clockwise: the left half is now the bottom half
    assert img[140:].mean() > 200 and img[:116].mean() < 50
    assert frame_at(p, 500).size == (192, 256)


def test_no_metadata(videos):
    dec = decode_video(videos["webm"])
    assert dec.camera is None and dec.taken_at is None


@pytest.mark.parametrize("ext", list(CODECS))
def test_frame_at(videos, photos, ext):
    for i in range(5):
        img = frame_at(videos[ext], i * 2000 + 1300, max_side=1024)
        assert img.size == SIZE and img.mode == "RGB"
        assert best_match(img, photos)[0] == i
    assert best_match(frame_at(videos[ext], 60_000), photos)[0] == 4  # past the end: the last


def reason(path, **limits) -> str:
    with pytest.raises(BadImage) as info:
        decode_video(path, VideoLimits(**limits))
    return str(info.value)


def test_truncated_mp4(videos, tmp_path):
    half = cut(videos["mp4"], tmp_path / "half.mp4")
    assert "truncated" in reason(half)
    with pytest.raises(BadImage, match="truncated"):
        frame_at(half, 1000)


@pytest.mark.parametrize("keyframes_only", [False, True])
def test_truncated_webm(videos, tmp_path, keyframes_only):
    # opens, reports 10 s and decodes without an error: only the frames' end tells
    half = cut(videos["webm"], tmp_path / "half.webm")
    text = reason(half, keyframes_only=keyframes_only)
    assert text.startswith("truncated: frames end at") and "of 10.0 s" in text


def test_not_a_video(tmp_path):
    (tmp_path / "noise.mp4").write_bytes(np.random.default_rng(1).bytes(20_000))
    assert "not a video" in reason(tmp_path / "noise.mp4")
    jpeg = sorted(COCO_VAL.glob("*.jpg"))
    if not jpeg:
        pytest.skip(f"missing {COCO_VAL}/*.jpg")
    shutil.copy(jpeg[0], tmp_path / "photo.mov")
    assert "not a video" in reason(tmp_path / "photo.mov")


@pytest.mark.parametrize("name,codec", [("tone.mp4", "aac"), ("tone.webm", "libopus")])
def test_audio_only(tmp_path, name, codec):
    p = make_audio(tmp_path / name, codec=codec)
    assert reason(p) == "no video stream (audio only)"


def test_not_regular_files(tmp_path):
    (tmp_path / "empty.mp4").write_bytes(b"")
    assert "empty" in reason(tmp_path / "empty.mp4")
    (tmp_path / "dir.mp4").mkdir()
    assert reason(tmp_path / "dir.mp4") == "not a regular file"
    os.mkfifo(tmp_path / "fifo.mp4")  # must not block
    assert reason(tmp_path / "fifo.mp4") == "not a regular file"
    assert reason(tmp_path / "missing.mp4").startswith("cannot open: No such file")
    for bad in ("empty.mp4", "dir.mp4", "fifo.mp4", "missing.mp4"):
        with pytest.raises(BadImage):
            frame_at(tmp_path / bad, 0)
        with pytest.raises(BadImage):
            file_digest(tmp_path / bad)


def test_limits(videos):
    assert "too large" in reason(videos["mp4"], max_bytes=1000)
    assert reason(videos["webm"], max_seconds=5) == "video too long (10 s > 5 s)"


@pytest.mark.parametrize("ext", list(CODECS))
def test_corrupt_middle_never_escapes(videos, tmp_path, ext):
    data = bytearray(open(videos[ext], "rb").read())
    n = len(data)
    data[n // 3 : n // 3 + 4000] = np.random.default_rng(2).bytes(4000)
    p = tmp_path / f"corrupt.{ext}"
    p.write_bytes(bytes(data))
    for kf in (False, True):
        if ext == "mp4":  # the H.264 decoder reports the damaged slice
            assert reason(p, keyframes_only=kf).startswith("decode error at ")
            continue
        try:  # VP9's conceals it: the rest still decodes
            assert decode_video(p, VideoLimits(keyframes_only=kf)).frames
        except BadImage:
            pass


def test_file_digest(videos):
    for p in videos.values():
        assert file_digest(p) == images.content_hash(images.read_file(p))


def test_longer_audio_is_not_truncation(videos, tmp_path):
    # a WebM's duration is its longest stream's: the video's own length is what counts
    p = add_audio_track(videos["webm"], tmp_path / "with-audio.webm", seconds=16.0)
    dec = decode_video(p)
    assert abs(dec.duration_ms - 10_000) <= 200 and len(dec.frames) >= 5
