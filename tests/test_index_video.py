"""Issue 20, video: videos made in the test from 5 known photos (2 s scenes, H.264 and VP9,
encoded by PyAV) index on both stores, and an image query with each photo returns its video
first with the moment of its scene; moves, copies, deletes and bad files behave like photos'."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from indexer.config import load_config
from indexer.embed.encoder import ClipEncoder
from indexer.library import Library

from .indexer_helpers import copy_images, run_json, write_config

pytest.importorskip("av", reason="video tests need PyAV (pip install -e '.[video]')")
from .test_watch import DEBOUNCE, Watcher, _config, wait_for  # noqa: E402
from .test_watch import watchers as watchers  # noqa: E402, F401 - the fixture
from .videos import make_video  # noqa: E402 - after the skip: it needs PyAV

SCENE_MS = 2000


def _photos(paths: list[Path]) -> list[Image.Image]:
    """The photos cut to the videos' 4:3 frame (centre crop), as the scenes show them."""
    out = []
    for p in paths:
        with Image.open(p) as img:
            out.append(ImageOps.fit(img.convert("RGB"), (640, 480), Image.Resampling.BICUBIC))
    return out


def _scene_files(images: list[Image.Image], folder: Path) -> list[Path]:
    """The scenes' photos as JPEG files (outside the library): the image queries."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for n, img in enumerate(images):
        img.save(folder / f"scene{n}.jpg", quality=92)
        out.append(folder / f"scene{n}.jpg")
    return out


def _index(cfg, enc=None):
    enc = enc or ClipEncoder.from_config(cfg)
    with Library.open(cfg, writer=True, encoder=enc) as lib:
        return lib.index(progress=False), enc


def _library(tmp_path: Path, coco_images: list[Path]) -> dict:
    lib_dir = tmp_path / "photos"
    copy_images(coco_images[:8], lib_dir / "stills")  # photos that are not in the videos
    scenes = {"trip.mp4": coco_images[10:15], "party.webm": coco_images[15:20]}
    videos = {}
    for name, sources in scenes.items():
        codec = "libx264" if name.endswith(".mp4") else "libvpx-vp9"
        images = _photos(sources)
        scenes[name] = _scene_files(images, tmp_path / "queries" / name)
        videos[name] = make_video(lib_dir / "videos" / name, images,
                                  seconds_each=SCENE_MS / 1000, codec=codec)  # fmt: skip
    bad = lib_dir / "bad"
    bad.mkdir()
    for name, src in (("cut.mp4", videos["trip.mp4"]), ("cut.webm", videos["party.webm"])):
        data = src.read_bytes()
        (bad / name).write_bytes(data[: len(data) // 2])
    (bad / "noise.mp4").write_bytes(np.random.default_rng(0).bytes(50_000))
    return {"dir": lib_dir, "scenes": scenes, "videos": videos, "bad": bad}


def test_videos_index_and_their_moments_are_found(tmp_path, coco_images, tiny_checkpoint,
                                                  database):  # fmt: skip
    lib = _library(tmp_path, coco_images)
    cfg_path = write_config(tmp_path / "c.yaml", [lib["dir"]], tmp_path / "idx",
                            tiny_checkpoint, database=database)  # fmt: skip
    cfg = load_config(cfg_path)
    rep, enc = _index(cfg)
    assert (rep.added, rep.errors, rep.encoded) == (10, 3, 10), rep
    with Library.open(cfg, encoder=enc) as reader:
        status = reader.status()
        assert status["videos"]["videos"] == 2 and status["videos"]["frames"] >= 10, status
        reasons = {Path(e["path"]).name: e["error"] for e in status["error_files"]}
        assert set(reasons) == {"cut.mp4", "cut.webm", "noise.mp4"}, reasons
        assert "truncated" in reasons["cut.webm"], reasons
        assert all(r for r in reasons.values())
        for name, sources in lib["scenes"].items():
            video = os.fspath(lib["videos"][name])
            for j, src in enumerate(sources):
                hit = reader.search(image=src, k=5).hits[0]
                assert hit.path == video, (name, j, [(h.path[-20:], h.score, h.moments) for h in reader.search(image=src, k=5).hits])
                t = hit.moments[0][0]
                assert j * SCENE_MS - 1000 <= t <= (j + 1) * SCENE_MS + 1000, (name, j, hit.moments)
                assert abs(hit.score - hit.moments[0][1]) < 1e-6  # it ranked by that frame
                print(f"{name} scene {j} ({j * SCENE_MS / 1000:.0f}-{(j + 1) * SCENE_MS / 1000:.0f} s): "
                      f"first, at {t / 1000:.1f} s, score {hit.score:.4f}")  # fmt: skip
                doc = hit.to_dict()
                assert abs(doc["duration_ms"] - 5 * SCENE_MS) <= 200 and doc["moments"]
                frame = reader.thumbnail_path(hit.record, t)
                assert frame is not None and "@" in frame.name  # the moment's own frame
            rec = reader.store.record_by_path(video)
            assert rec.is_video and (rec.width, rec.height) == (256, 192)
            times, vecs = reader.store.frames(rec.id)
            assert len(times) >= 5 and vecs.shape == (len(times), reader.store.dim())
        # a text query ranks videos with the photos, each video named with its moments
        hits = reader.search("a photo", k=20).hits
        assert len(hits) == 10 and all(h.moments for h in hits if h.record.is_video)
    # unchanged on a second run; a rename moves the row, frames kept; a copy copies them
    assert _index(cfg, enc)[0].unchanged == 13
    videos = lib["dir"] / "videos"
    with Library.open(cfg, encoder=enc) as reader:
        old_id = reader.store.record_by_path(videos / "trip.mp4").id
        old_frames = reader.store.frames(old_id)
    os.rename(videos / "trip.mp4", videos / "trip-renamed.mp4")
    shutil.copyfile(videos / "party.webm", videos / "party-copy.webm")
    rep, _ = _index(cfg, enc)
    assert (rep.moved, rep.copied, rep.encoded) == (1, 1, 0), rep
    with Library.open(cfg, encoder=enc) as reader:
        rec = reader.store.record_by_path(videos / "trip-renamed.mp4")
        assert rec.id == old_id and np.array_equal(reader.store.frames(rec.id)[0], old_frames[0])
        top = [h.path for h in reader.search(image=lib["scenes"]["party.webm"][2], k=2).hits]
        assert set(top) == {os.fspath(videos / "party.webm"), os.fspath(videos / "party-copy.webm")}
        assert reader.status()["videos"]["videos"] == 3
    # deleted: its frames go with it
    (videos / "party-copy.webm").unlink()
    (videos / "trip-renamed.mp4").unlink()
    assert _index(cfg, enc)[0].removed == 2
    with Library.open(cfg, encoder=enc) as reader:
        assert reader.status()["videos"]["videos"] == 1
        assert reader.search(image=lib["scenes"]["trip.mp4"][0], k=1).hits[0].path != os.fspath(
            videos / "trip-renamed.mp4")


def test_cli_names_the_moments_and_limits_are_reasons(tmp_path, coco_images, tiny_checkpoint):
    lib = _library(tmp_path, coco_images)
    shutil.rmtree(lib["bad"])
    cfg_path = write_config(tmp_path / "c.yaml", [lib["dir"]], tmp_path / "idx", tiny_checkpoint,
                            video={"max_seconds": 8})  # both videos last 10 s
    rep = run_json(["index", "--no-progress"], cfg_path)
    assert rep["errors"] == 2 and rep["added"] == 8, rep
    status = run_json(["status"], cfg_path)
    assert all("long" in e["error"] for e in status["error_files"]), status["error_files"]
    cfg_path = write_config(tmp_path / "c.yaml", [lib["dir"]], tmp_path / "idx", tiny_checkpoint)
    for f in (lib["dir"] / "videos").iterdir():
        os.utime(f)  # changed: retried under the new limits
    rep = run_json(["index", "--no-progress"], cfg_path)
    assert rep["errors"] == 0 and rep["updated"] == 2, rep
    src = lib["scenes"]["party.webm"][3]
    found = run_json(["search", "--image", os.fspath(src), "-k", "3"], cfg_path)
    top = found["results"][0]
    assert top["path"].endswith("party.webm") and top["moments"], top
    assert 3 * SCENE_MS / 1000 - 1 <= top["moments"][0]["t"] <= 4 * SCENE_MS / 1000 + 1
    assert top["thumbnail"] and "@" in Path(top["thumbnail"]).name


def test_watch_indexes_a_video_once_it_is_completely_written(tmp_path, coco_images,
                                                             tiny_checkpoint, watchers):  # noqa: F811 - fmt: skip
    photos = tmp_path / "photos"
    copy_images(coco_images[:3], photos)
    images = _photos(coco_images[10:15])
    queries = _scene_files(images, tmp_path / "queries")
    made = make_video(tmp_path / "made" / "clip.mp4", images, seconds_each=SCENE_MS / 1000)
    cfg_path = _config(tmp_path, [photos], tiny_checkpoint)
    w = Watcher(cfg_path, tmp_path / "watch.log")
    watchers.append(w)
    w.wait_state("watching")
    target = photos / "clip.mp4"
    data = made.read_bytes()
    with Library.open(load_config(cfg_path)) as lib:
        with open(target, "wb") as fh:  # copied in slowly, the file kept open
            for i in range(3):
                fh.write(data[i * len(data) // 3 : (i + 1) * len(data) // 3])
                fh.flush()
                os.fsync(fh.fileno())
                time.sleep(DEBOUNCE * 2)
                assert lib.store.record_by_path(target) is None, "indexed while half-written"
        wait_for(lambda: (r := lib.store.record_by_path(target)) is not None and r.status == "ok",
                 20, "the video")  # fmt: skip
        rec = lib.store.record_by_path(target)
        assert rec.is_video and rec.size == len(data)
        hit = lib.search(image=queries[3], k=1).hits[0]
        assert hit.id == rec.id and 3 * SCENE_MS - 1000 <= hit.moments[0][0] <= 4 * SCENE_MS + 1000
    assert w.stop() == 0
