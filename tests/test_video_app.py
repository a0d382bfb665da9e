"""Issue 20, video in the UI: an image query finds the video at its moment, the grid shows that
frame, and the video plays from there (``clipsearch ui`` in headless Chromium, Playwright)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from PIL import Image, ImageOps

from tests.indexer_helpers import cli_env, copy_images, run_cli, write_config
from tests.test_app_browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    REPO,
    _free_port,
    _get,
    _rendered_images,
    _require_browser,
    _shoot,
    _wait_idle,
)

pytest.importorskip("av", reason="video tests need PyAV (pip install -e '.[video]')")
from tests.videos import make_video  # noqa: E402 - after the skip: it needs PyAV

pytest_plugins = ["tests.test_app_support"]  # its fixtures: app_config_env
pytestmark = pytest.mark.timeout(240)
SCENE_S = 2


def _serve(config, log_path):  # noqa: ANN001, ANN202
    port = _free_port()
    log = open(log_path, "wb")
    ui = subprocess.Popen(
        [sys.executable, "-m", "indexer.cli", "--config", os.fspath(config), "ui",
         "--port", str(port)],
        cwd=REPO, env=cli_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        assert ui.poll() is None, log_path.read_text()[-2000:]
        try:
            if _get(url + "/_stcore/health")[0] == 200:
                return ui, log, url
        except OSError:
            pass
        assert time.monotonic() < deadline, log_path.read_text()
        time.sleep(0.3)


def test_a_video_plays_from_the_moment_a_photo_finds(tmp_path, coco_images):
    from tests.checkpoints import write_random_checkpoint

    sync_playwright = _require_browser()
    weights = write_random_checkpoint(tmp_path / "tiny-vit.pt", "tiny-vit")
    photos = tmp_path / "photos"
    copy_images(coco_images[:6], photos)
    scenes = []
    for p in coco_images[20:25]:  # the video's 4:3 frame: the photos cut to it
        with Image.open(p) as img:
            scenes.append(ImageOps.fit(img.convert("RGB"), (640, 480)))
    query = tmp_path / "scene2.jpg"
    scenes[2].save(query, quality=92)
    make_video(photos / "holiday.webm", scenes, seconds_each=SCENE_S, codec="libvpx-vp9")
    config = write_config(tmp_path / "config.yaml", [photos], tmp_path / "index", weights)
    proc = run_cli(["index", "--no-progress"], config)
    assert proc.returncode == 0, proc.stderr
    ui, log, url = _serve(config, tmp_path / "ui.log")
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(60_000)
            page.goto(url)
            page.get_by_role("textbox", name="Search photos").wait_for()
            # the photo of the third scene (4-6 s) as the query
            page.set_input_files('[data-testid="stFileUploader"] input[type="file"]',
                                 os.fspath(query))  # fmt: skip
            page.get_by_text("Searching with your photo").wait_for()
            _wait_idle(page)
            assert _rendered_images(page, 7) >= 7
            play = page.get_by_role("button", name="▶ Play at").first
            label = play.inner_text()
            assert "0:04" in label or "0:05" in label, label  # the best moment, in its scene
            body = page.inner_text("body")
            assert "holiday.webm" in body and "Video 0:10 · at 0:0" in body, body
            _shoot(page, tmp_path, "video-results")
            play.click()
            page.get_by_role("button", name="Back to results").wait_for()
            video = page.locator("video")
            video.wait_for()
            # Streamlit seeks to start_time once the metadata is in: the player stands there
            page.wait_for_function(
                "() => { const v = document.querySelector('video');"
                " return v && v.readyState >= 1 && v.currentTime >= 3.5; }", timeout=30_000,
            )  # fmt: skip
            at = page.evaluate("() => document.querySelector('video').currentTime")
            duration = page.evaluate("() => document.querySelector('video').duration")
            assert 4 - 1 <= at <= 6 + 1 and abs(duration - 5 * SCENE_S) < 0.5, (at, duration)
            page.evaluate("() => document.querySelector('video').play()")
            page.wait_for_function(
                f"() => document.querySelector('video').currentTime > {at} + 0.3", timeout=30_000
            )  # it really plays
            body = page.inner_text("body")
            assert "Playing from 0:0" in body and "video" in body
            _shoot(page, tmp_path, "video-detail")
            # a frame button jumps elsewhere in the video
            page.get_by_role("button", name="0:08", exact=True).first.click()
            page.wait_for_function(
                "() => { const v = document.querySelector('video');"
                " return v && v.readyState >= 1 && v.currentTime >= 7.5; }", timeout=30_000,
            )  # fmt: skip
            browser.close()
    finally:
        os.killpg(ui.pid, signal.SIGTERM)
        try:
            ui.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(ui.pid, signal.SIGKILL)
        log.close()


def test_a_video_too_large_to_play_shows_its_frame(tmp_path, coco_images, tiny_checkpoint,
                                                   app_config_env, monkeypatch):  # fmt: skip
    """Over the size Streamlit would load into memory, the detail view shows the frame at the
    moment (decoded from the file) and the path to open instead of a player (AppTest)."""
    from app.views import detail

    from .test_app_page import no_traceback, page, texts

    scenes = [ImageOps.fit(Image.open(p).convert("RGB"), (640, 480)) for p in coco_images[20:23]]
    make_video(tmp_path / "photos" / "clip.mp4", scenes, seconds_each=SCENE_S)
    config = write_config(tmp_path / "c.yaml", [tmp_path / "photos"], tmp_path / "idx",
                          tiny_checkpoint)  # fmt: skip
    proc = run_cli(["index", "--no-progress"], config)
    assert proc.returncode == 0, proc.stderr
    at = page(config, app_config_env, {"id": "1", "t": "2000"})
    no_traceback(at)
    assert "Playing from 0:02 of 0:06" in texts(at)  # small: it plays
    thumbs = len(at.image)  # the sampled frames' thumbnails
    assert thumbs >= 3
    monkeypatch.setattr(detail, "_PLAYABLE_BYTES", 1)
    at = page(config, app_config_env, {"id": "1", "t": "2000"})
    no_traceback(at)
    assert "too large to play here" in texts(at) and "at 0:02" in texts(at), texts(at)
    assert len(at.image) == thumbs + 1 and all(i.proto.imgs[0].url for i in at.image)
