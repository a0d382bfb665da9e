"""End to end: ``clipsearch ui`` serving a real index of 40 COCO photos, driven in headless
Chromium (Playwright with the system's /usr/bin/chromium).

Screenshots go to the test's tmp dir; with ``CLIPSEARCH_UPDATE_SCREENSHOTS=1`` the main views
are also copied to docs/screenshots/.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.indexer_helpers import cli_env, copy_images, run_cli, write_config

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get("CLIPSEARCH_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]  # fmt: skip
SCREENSHOTS = REPO / "docs" / "screenshots"
N_PHOTOS = 40

pytestmark = pytest.mark.timeout(240)


def _require_browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail(
            "Playwright for Python is needed for the browser test: `.venv/bin/pip install "
            "playwright` (the browser itself comes from the system; do not run `playwright "
            "install`)",
            pytrace=False,
        )
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(
            f"Chromium not found at {CHROMIUM}: install it with `sudo apt-get install chromium "
            "chromium-driver` (Debian/Ubuntu), or point $CLIPSEARCH_CHROMIUM at a Chromium "
            "binary",
            pytrace=False,
        )
    return sync_playwright


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.fixture(scope="module")
def server(tmp_path_factory, coco_images):
    """The real CLI indexes 40 photos (random tiny checkpoint), then `clipsearch ui` serves."""
    from tests.checkpoints import write_random_checkpoint

    root = tmp_path_factory.mktemp("app_e2e")
    weights = write_random_checkpoint(root / "tiny-vit.pt", "tiny-vit")
    photos = root / "photos"
    images = copy_images(coco_images[:N_PHOTOS], photos)
    (photos / "broken.jpg").write_bytes(b"not a photo")
    config = write_config(root / "config.yaml", [photos], root / "index", weights,
                          ui={"results_per_page": 20, "columns": 5})  # fmt: skip
    proc = run_cli(["index", "--no-progress"], config)
    assert proc.returncode == 0, proc.stderr
    port = _free_port()
    log = open(root / "ui.log", "wb")
    ui = subprocess.Popen(
        [sys.executable, "-m", "indexer.cli", "--config", os.fspath(config), "ui",
         "--port", str(port)],
        cwd=REPO, env=cli_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if ui.poll() is not None:
                pytest.fail(f"`clipsearch ui` exited: {(root / 'ui.log').read_text()[-2000:]}")
            try:
                if _get(url + "/_stcore/health")[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"`clipsearch ui` did not answer: {(root / 'ui.log').read_text()}")
            time.sleep(0.3)
        yield {"url": url, "images": images, "root": root, "photos": photos, "config": config}
    finally:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(ui.pid, sig)
                ui.wait(timeout=15)
                break
            except ProcessLookupError:
                break
            except subprocess.TimeoutExpired:
                continue
        log.close()


@pytest.fixture(scope="module")
def browser():
    sync_playwright = _require_browser()
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


def _shoot(page, tmp_path: Path, name: str, publish: bool = True) -> Path:
    page.mouse.move(0, 0)
    time.sleep(0.5)  # let the last images finish painting
    path = tmp_path / f"{name}.png"
    page.screenshot(path=path)
    if publish and os.environ.get("CLIPSEARCH_UPDATE_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, SCREENSHOTS / f"{name}.png")
    return path


# Counted in the same evaluation that checks them: a separate count afterwards could see a
# grid that Streamlit is re-rendering.
_IMAGES_LOADED = """(min) => {
    const imgs = [...document.querySelectorAll('section.main [data-testid="stImage"] img,'
                                               + ' [data-testid="stMain"] [data-testid="stImage"] img')];
    const ready = imgs.length >= min && imgs.every(i => i.complete && i.naturalWidth > 0);
    return ready ? imgs.length : false;
}"""


def _wait_idle(page) -> None:
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=60_000
    )


def _rendered_images(page, at_least: int) -> int:
    """Number of result images, once at least ``at_least`` are all loaded (60 s at most)."""
    return page.wait_for_function(_IMAGES_LOADED, arg=at_least, timeout=60_000).json_value()


def test_search_upload_more_like_this_in_chromium(server, browser, tmp_path):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(60_000)
    page.goto(server["url"])
    box = page.get_by_role("textbox", name="Search photos")
    box.wait_for()
    assert f"{N_PHOTOS} photos indexed" in page.inner_text("body")

    # 1. text query
    box.fill("a dog playing on the beach")
    box.press("Enter")
    page.get_by_text(f"searched {N_PHOTOS} in").wait_for()
    _wait_idle(page)
    assert _rendered_images(page, 20) >= 20
    assert " ms" in page.get_by_text(f"searched {N_PHOTOS} in").inner_text()
    _shoot(page, tmp_path, "search-results")

    # 2. upload query
    page.set_input_files('[data-testid="stFileUploader"] input[type="file"]',
                         os.fspath(server["images"][3]))  # fmt: skip
    page.get_by_text("Searching with your photo").wait_for()
    _wait_idle(page)
    assert _rendered_images(page, 20) >= 20
    _shoot(page, tmp_path, "upload-search", publish=False)
    page.get_by_role("button", name="Clear example").click()
    page.get_by_text("Searching with your photo").wait_for(state="detached")

    # 3. "more like this" on a result
    page.get_by_role("button", name="Similar", exact=True).first.click()
    page.get_by_text("More like").wait_for()
    _wait_idle(page)
    assert _rendered_images(page, 19) >= 19
    _shoot(page, tmp_path, "more-like-this")

    # 4. the detail view of a result
    page.get_by_role("button", name="Details", exact=True).first.click()
    page.get_by_role("button", name="Back to results").wait_for()
    _wait_idle(page)
    page.locator("th", has_text="Camera").wait_for()
    assert _rendered_images(page, 1) == 1
    body = page.inner_text("body")
    assert "Path" in body and str(server["photos"]) in body and "pixels" in body
    _shoot(page, tmp_path, "detail")

    # 5. the library panel
    page.get_by_text("Library", exact=True).click()
    page.get_by_text("Photos indexed").wait_for()
    page.get_by_text("Files that could not be indexed").wait_for()
    page.get_by_text("broken.jpg").wait_for()
    _wait_idle(page)
    body = page.inner_text("body")
    assert "not running" in body and "Files that could not be indexed" in body
    _shoot(page, tmp_path, "library")
    page.close()


def test_paths_and_ids_from_the_url_are_rejected(server, browser):
    page = browser.new_page(viewport={"width": 1200, "height": 800})
    page.set_default_timeout(60_000)
    for query, expected in (("id=../../../etc/passwd", "link parameter id"),
                            ("like=..%2F..%2Fetc%2Fpasswd", "link parameter like"),
                            ("q=img:/etc/passwd", "outside the library")):  # fmt: skip
        page.goto(f"{server['url']}/?{query}")
        page.get_by_text(expected).wait_for()
        assert "Not allowed" in page.inner_text("body")
        assert "root:x:0:0" not in page.content()
    page.close()
    for path in ("/media/../../../../etc/passwd", "/app/static/../../../../etc/passwd",
                 "/media/%2e%2e/%2e%2e/etc/passwd", f"/media/{server['photos']}/x.jpg"):  # fmt: skip
        status, body = _get(server["url"] + path)
        assert b"root:x:0:0" not in body and not (status == 200 and body[:2] == b"\xff\xd8")
