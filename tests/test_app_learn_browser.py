"""Issue 16 in the UI, in real headless Chromium: marking results Good/Bad re-ranks them,
a concept is taught from the results marked good and refitted with one more, the search is
saved as a smart album and shown in the Albums view, the concept is listed under the tags, and
both are deleted (the `clipsearch ui` server of tests/test_app_browser.py)."""

from __future__ import annotations

import time

import pytest

from tests.indexer_helpers import run_json
from tests.test_app_browser import _rendered_images, _shoot, _wait_idle, browser, server  # noqa: F401

pytestmark = pytest.mark.timeout(300)

_NAMES = """() => [...document.querySelectorAll('[data-testid="stMain"] [data-testid="stCaptionContainer"]')]
    .filter(e => !e.closest('[data-stale="true"]'))
    .map(e => e.innerText).filter(t => t.includes(' · ')).map(t => t.split(' · ').pop())"""


# keys of the result grid's current run: a rerun leaves the previous run's elements on the
# page, marked data-stale, until it replaces them
_KEYS = """() => [...document.querySelectorAll('[class*="st-key-good_"]')]
    .filter(e => !e.closest('[data-stale="true"]'))
    .map(e => [...e.classList].find(c => c.startsWith('st-key-good_')).slice(12))"""


_LIVE = '[data-testid="stElementContainer"]:not([data-stale="true"])'


def _click(page, name: str) -> None:
    """Click the button ``name`` of the current run once the page shows exactly one (a rerun
    leaves the previous run's copy, marked stale, beside the new one until it ends)."""
    from playwright.sync_api import Error as PlaywrightError

    button = page.locator(_LIVE).get_by_role("button", name=name, exact=True)
    end = time.monotonic() + 60
    while True:
        _wait_idle(page)
        try:
            if button.count() == 1:
                button.click(timeout=5_000)
                return
        except PlaywrightError:  # detached or doubled while clicking: nothing was clicked
            if time.monotonic() > end:
                raise
        assert time.monotonic() < end, f"{button.count()} live buttons {name!r}"
        page.wait_for_timeout(200)


def _open_popover(page) -> None:
    """Open the page's one popover once the previous view's has gone (its button's name
    carries the chevron icon's text, so it is found by its test id)."""
    trigger = page.locator('[data-testid="stPopoverButton"]:not([data-stale="true"] *):visible')
    end = time.monotonic() + 60
    while trigger.count() != 1:
        assert time.monotonic() < end, f"{trigger.count()} popovers"
        page.wait_for_timeout(200)
    _wait_idle(page)
    trigger.click()


def _grid(page) -> list[str]:
    """Result ids in grid order, once two reads half a second apart agree (the grid settled)."""
    _wait_idle(page)
    last, end = None, time.monotonic() + 60
    while time.monotonic() < end:
        now = list(dict.fromkeys(page.evaluate(_KEYS)))
        if now and now == last:
            return now
        last = now
        page.wait_for_timeout(500)
    raise AssertionError(f"the result grid never settled: {last}")


def _names(page) -> list[str]:
    """Result file names in grid order, from the current run's elements once two reads half a
    second apart agree (a rerun replaces the grid piece by piece: a read in between mixed the
    new ranking's first places with the old one's)."""
    _wait_idle(page)
    last, end = None, time.monotonic() + 60
    while time.monotonic() < end:
        now = [n for n in page.evaluate(_NAMES) if n.endswith(".jpg")]
        if now and now == last:
            return now
        last = now
        page.wait_for_timeout(500)
    raise AssertionError(f"the result names never settled: {last}")


def test_marks_concept_and_album_in_chromium(server, browser, tmp_path):  # noqa: F811
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    page.set_default_timeout(60_000)
    page.goto(server["url"])
    box = page.get_by_role("textbox", name="Search photos")
    box.wait_for()
    box.fill("a red bus")
    box.press("Enter")
    page.get_by_text("searched 40 in").wait_for()
    _rendered_images(page, 20)
    before = _names(page)
    assert len(before) == 20
    page.get_by_text("Mark results Good or Bad").wait_for()

    # three Good marks and one Bad: the results re-rank at once
    ids = _grid(page)  # result ids in grid order (widget keys)
    assert len(ids) == 20
    counts = {"good": 0, "bad": 0}
    marked: list[str] = []
    for kind in ("good", "good", "good", "bad"):
        shown = [i for i in _grid(page) if i not in marked]
        image_id = shown[2] if kind == "good" else shown[-1]  # Bad: never one marked good
        marked.append(image_id)
        live = ":not([data-stale='true']):not([data-stale='true'] *)"
        page.locator(f".st-key-{kind}_{image_id}{live} button").first.click()
        counts[kind] += 1
        page.get_by_text(f"{counts['good']} good", exact=True).wait_for()
        page.get_by_text(f"{counts['bad']} bad", exact=True).wait_for()
    _wait_idle(page)
    page.get_by_text("Re-ranked from your marks").wait_for()
    after = _names(page)
    assert after != before  # the marks changed the ranking
    assert len(after) == 20
    _shoot(page, tmp_path, "relevance-feedback")

    # teach a concept from the three good ones
    page.get_by_text("Teach a concept · save as album").click()
    page.get_by_role("textbox", name="Concept name").fill("ui concept")
    page.get_by_role("textbox", name="Concept name").press("Enter")
    _wait_idle(page)
    _click(page, "Create concept from 3 good")
    page.get_by_text("Concept ui concept created").wait_for()
    concepts = run_json(["concepts"], server["config"])["concepts"]
    assert [(c["name"], len(c["examples"]), len(c["negatives"])) for c in concepts] == [
        ("ui concept", 3, 1)
    ]
    _shoot(page, tmp_path, "concept-created")

    # save the search (with its marks) as an album, then open it in the Albums view
    page.get_by_role("textbox", name="Album name").fill("buses")
    page.get_by_role("textbox", name="Album name").press("Enter")
    _wait_idle(page)
    _click(page, "Save search as album")
    page.get_by_text("Album buses saved").wait_for()
    albums = run_json(["albums", "list"], server["config"])["albums"]
    assert [(a["name"], a["spec"]["query"], len(a["spec"]["like"])) for a in albums] == [
        ("buses", "a red bus", 3)
    ]
    shown = run_json(["albums", "show", "buses"], server["config"])["results"]

    # one more Good mark, added to the existing concept: it is refitted in place
    fourth = [i for i in _grid(page) if i not in marked][0]
    live = ":not([data-stale='true']):not([data-stale='true'] *)"
    page.locator(f".st-key-good_{fourth}{live} button").first.click()
    page.get_by_text("4 good", exact=True).wait_for()
    _wait_idle(page)
    _click(page, "Add 4 good, 1 bad to it")
    page.get_by_text("Concept ui concept refitted: 4 examples, 1 counter-example;").wait_for()
    (edited,) = run_json(["concepts"], server["config"])["concepts"]
    assert edited["examples"] == concepts[0]["examples"] + [int(fourth)]
    assert edited["negatives"] == concepts[0]["negatives"]
    assert edited["created"] == concepts[0]["created"] and edited["updated"] > concepts[0]["updated"]
    _shoot(page, tmp_path, "concept-refitted")

    # clearing the marks restores the plain ranking (negative control of the re-rank)
    _click(page, "Clear marks")
    page.get_by_text("Mark results Good or Bad").wait_for()
    assert _names(page)[:10] == before[:10]  # (lower down, equal scores may swap places)

    page.get_by_text("Albums", exact=True).click()
    page.get_by_role("heading", name="Albums").wait_for()
    _rendered_images(page, 20)
    assert _names(page)[:5] == [r["path"].rsplit("/", 1)[-1] for r in shown[:5]]
    _shoot(page, tmp_path, "albums")

    # the concept is listed under the tags; both it and the album can be deleted from the UI
    page.get_by_text("Tags", exact=True).click()
    page.get_by_role("heading", name="Your concepts").wait_for()
    page.get_by_text("ui concept · 4 examples · 1 counter-example ·").wait_for()
    _shoot(page, tmp_path, "concepts")
    _open_popover(page)
    _click(page, "Delete concept ui concept")
    page.get_by_text("Concept ui concept deleted.").wait_for()
    assert run_json(["concepts"], server["config"])["concepts"] == []
    assert page.get_by_role("heading", name="Your concepts").count() == 0
    page.get_by_text("Albums", exact=True).click()
    page.get_by_role("heading", name="Albums").wait_for()
    _open_popover(page)
    _click(page, "Delete album buses")
    page.get_by_text("Album buses deleted.").wait_for()
    page.get_by_text("No albums yet").wait_for()
    assert run_json(["albums", "list"], server["config"])["albums"] == []
    page.close()
