"""The page, driven by ``streamlit.testing.v1.AppTest`` against a real index of real photos.

Each control and each empty / failing state: no index yet, empty results, missing weights,
unreadable file, bad query syntax, bad paths and ids, oversized uploads, the password gate.
"""

from __future__ import annotations

import io
import os
import shutil
import sqlite3

import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from tests.test_app_support import MAIN

pytest_plugins = ["tests.test_app_support"]  # its fixtures: app_env, app_config_env

pytestmark = pytest.mark.timeout(300)


def page(config, use, query_params: dict | None = None) -> AppTest:
    use(config)
    at = AppTest.from_file(os.fspath(MAIN), default_timeout=60)
    if query_params:
        at.query_params.update(query_params)
    return at.run()


def texts(at: AppTest) -> str:
    """All text the page shows (markdown, captions, alerts, headers), for assertions."""
    parts = []
    for kind in ("markdown", "caption", "error", "warning", "info", "success", "header",
                 "subheader", "title"):  # fmt: skip
        parts += [str(e.value) for e in getattr(at, kind)]
    return "\n".join(parts)


def no_traceback(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def result_ids(at: AppTest) -> list[int]:
    return [int(b.key.split("_")[1]) for b in at.button if b.key and b.key.startswith("open_")]


def search(at: AppTest, text: str) -> AppTest:
    at.text_input(key="q").input(text).run()
    no_traceback(at)
    return at


def jpeg(size=(64, 48), color=(200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "JPEG")
    return buf.getvalue()


# ----------------------------------------------------------------------------- empty / failing
def test_no_index_yet(tmp_path, app_env, app_config_env):
    cfg = app_env.variant("noindex", index={"dir": os.fspath(tmp_path / "none")})
    at = page(cfg, app_config_env)
    no_traceback(at)
    assert "No index yet" in texts(at)
    assert "clipsearch --config" in texts(at) and "index" in texts(at)


def test_bad_config_file(tmp_path, app_config_env):
    bad = tmp_path / "bad.yaml"
    bad.write_text("ui: {port: 99999}\n")
    at = page(bad, app_config_env)
    no_traceback(at)
    assert "configuration cannot be used" in texts(at) and "ui.port" in texts(at)


def test_missing_weights_says_what_to_do(tmp_path, app_env, app_config_env):
    cfg = app_env.variant("noweights", model={"weights": os.fspath(tmp_path / "missing.pt")})
    at = search(page(cfg, app_config_env), "a dog")
    shown = texts(at)
    assert "The model cannot be loaded" in shown and "missing.pt" in shown
    assert "model.weights" in shown and "CLIPSEARCH_WEIGHTS" in shown


def test_empty_index(tmp_path, app_env, app_config_env, tiny_checkpoint):
    from tests.test_app_support import build_env

    env = build_env(tmp_path, [], tiny_checkpoint, n_sub=0)  # only the broken file
    at = page(env.config, app_config_env)
    no_traceback(at)
    assert "no photos yet" in texts(at) and "1 files could not be read" in texts(at)


def test_start_page_and_text_search(app_env, app_config_env):
    at = page(app_env.config, app_config_env)
    no_traceback(at)
    assert "15 photos indexed" in texts(at)
    search(at, "a dog on the beach")
    shown = texts(at)
    assert "15 photos" in shown and " ms**" in shown  # the count and the query latency
    assert len(at.image) == 6  # first page of cached thumbnails (results_per_page: 6)
    assert all(img.proto.imgs[0].url for img in at.image)
    assert len(result_ids(at)) == 6


def test_empty_results(app_env, app_config_env):
    at = search(page(app_env.config, app_config_env), "a dog")
    at.checkbox(key="use_threshold").check().run()
    at.slider(key="threshold").set_value(0.99).run()
    no_traceback(at)
    assert "No photos match" in texts(at)
    assert not at.image


@pytest.mark.parametrize(
    "query, message",
    [("dog + + cat", "empty term"), ("0:dog", "must not be 0"), ("id:abc", "image id must be")],
)
def test_bad_query_syntax(app_env, app_config_env, query, message):
    at = search(page(app_env.config, app_config_env), query)
    assert "This search cannot run" in texts(at) and message in texts(at)
    assert not at.image


def test_unreadable_file_detail(app_env, app_config_env):
    at = search(page(app_env.config, app_config_env), "a photo")
    first = result_ids(at)[0]
    from indexer.config import load_config
    from indexer.library import Library

    with Library.open(load_config(app_env.config)) as lib:
        path = lib.get_image(first).path
    saved = open(path, "rb").read()
    os.remove(path)
    try:
        at.button(key=f"open_{first}").click().run()
        no_traceback(at)
        shown = texts(at)
        assert "The photo cannot be read" in shown and "cannot open" in shown
        assert os.path.basename(path) in shown  # metadata still shown, thumbnail instead
        assert any("Thumbnail" in (img.proto.imgs[0].caption or "") for img in at.image)
    finally:
        with open(path, "wb") as fh:
            fh.write(saved)


# ----------------------------------------------------------------------------- controls
def test_number_of_results_sort_and_paging(app_env, app_config_env):
    at = search(page(app_env.config, app_config_env), "a photo")
    at.slider(key="k").set_value(4).run()
    assert len(result_ids(at)) == 4 and "4 photos" in texts(at)
    at.slider(key="k").set_value(15).run()
    assert "Page (of 3)" in [n.label for n in at.number_input]
    first_page = result_ids(at)
    at.number_input(key="page").set_value(3).run()
    no_traceback(at)
    assert len(result_ids(at)) == 3 and not set(result_ids(at)) & set(first_page)
    at.selectbox(key="sort").set_value("newest first").run()
    no_traceback(at)
    assert len(result_ids(at)) == 6  # sorting returns to page 1


def test_adaptive_cutoff(app_env, app_config_env):
    at = search(page(app_env.config, app_config_env), "a photo")
    at.toggle(key="adaptive").set_value(True).run()
    no_traceback(at)
    assert ("adaptive cutoff" in texts(at)) or ("No photos match" in texts(at))


def test_without_field(app_env, app_config_env):
    at = page(app_env.config, app_config_env)
    at.text_input(key="without").input("people, cars").run()
    no_traceback(at)
    assert result_ids(at)  # a negative-only query is allowed
    search(at, "a dog")
    assert "15 photos" in texts(at)


def test_folder_filter(app_env, app_config_env):
    at = search(page(app_env.config, app_config_env), "a photo")
    at.text_input(key="folder").input("sub").run()
    no_traceback(at)
    assert "3 photos" in texts(at) and len(result_ids(at)) == 3
    at.text_input(key="folder").input(os.fspath(app_env.photos / "sub")).run()
    assert "3 photos" in texts(at)


def test_date_filter(app_env, app_config_env):
    at = search(page(app_env.config, app_config_env), "a photo")
    at.text_input(key="since").input("not a date").run()
    no_traceback(at)
    assert "invalid date" in texts(at)
    at.text_input(key="since").input("2001-01").run()
    at.text_input(key="until").input("2030").run()
    no_traceback(at)
    assert "No photos match" in texts(at)  # COCO photos carry no capture date


def test_upload_search_and_combined(app_env, app_config_env):
    at = page(app_env.config, app_config_env)
    at.file_uploader[0].upload("query.jpg", app_env.images[0].read_bytes(), "image/jpeg").run()
    no_traceback(at)
    assert "Searching with your photo **query.jpg**" in texts(at)
    assert result_ids(at)
    search(at, "a dog")  # text and photo combined
    assert "Searching with your photo" in texts(at) and result_ids(at)
    at.button(key="clear_example").click().run()
    no_traceback(at)
    assert "Searching with your photo" not in texts(at) and result_ids(at)


def test_more_like_this_and_detail(app_env, app_config_env):
    at = search(page(app_env.config, app_config_env), "a photo")
    target = result_ids(at)[1]
    at.button(key=f"like_{target}").click().run()
    no_traceback(at)
    assert at.session_state.like_id == target and at.text_input(key="q").value == ""
    assert f"(id {target})" in texts(at)
    assert target not in result_ids(at) and result_ids(at)  # the example itself is left out
    other = result_ids(at)[0]
    at.button(key=f"open_{other}").click().run()
    no_traceback(at)
    assert at.query_params.get("id") in (str(other), [str(other)])
    shown = texts(at)
    assert "Path" in shown and "Taken" in shown and "Camera" in shown and "pixels" in shown
    assert len(at.image) == 1
    at.button(key="detail_like").click().run()
    assert at.session_state.like_id == other and f"(id {other})" in texts(at)
    at.button(key=f"open_{result_ids(at)[0]}").click().run()
    at.button(key="back").click().run()
    no_traceback(at)
    assert result_ids(at)


def test_library_panel(app_env, app_config_env):
    at = page(app_env.config, app_config_env)
    at.radio(key="view").set_value("Library").run()
    no_traceback(at)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Photos indexed"] == "15" and metrics["Photos with errors"] == "1"
    assert metrics["Watch service"] == "not running"
    assert "tiny" in texts(at).lower() or "Model:" in texts(at)
    errors_table = at.table[1].value
    assert "broken.jpg" in errors_table["file"].iloc[0]
    assert "not a recognised image" in errors_table["reason"].iloc[0]
    at.button(key="refresh_library").click().run()
    no_traceback(at)


def test_new_photos_appear_without_restart(tmp_path, app_env, app_config_env, tiny_checkpoint):
    from indexer.config import load_config
    from indexer.library import Library
    from tests.test_app_support import build_env

    env = build_env(tmp_path, [app_env.images[0]], tiny_checkpoint, n_sub=0)
    at = search(page(env.config, app_config_env), "a photo")
    assert len(result_ids(at)) == 1
    for src in app_env.images[1:3]:
        shutil.copyfile(src, env.photos / src.name)
    with Library.open(load_config(env.config), writer=True) as lib:
        lib.index(progress=False)
    at.run()
    assert len(result_ids(at)) == 3
    at.radio(key="view").set_value("Library").run()
    assert {m.label: m.value for m in at.metric}["Photos indexed"] == "3"


# ----------------------------------------------------------------------------- security
def test_password_gate(app_env, app_config_env):
    cfg = app_env.variant("password", ui={"password": "correct horse"})
    at = page(cfg, app_config_env)
    no_traceback(at)
    assert "protected by a password" in texts(at)
    assert not [t for t in at.text_input if t.key == "q"]  # nothing of the library is shown
    at.text_input(key="password").input("wrong")
    at.button[0].click().run()
    assert "Wrong password" in texts(at)
    assert not [t for t in at.text_input if t.key == "q"]
    at.text_input(key="password").input("correct horse")
    at.button[0].click().run()
    no_traceback(at)
    assert "15 photos indexed" in texts(at)


@pytest.mark.parametrize(
    "params",
    [{"id": "../../etc/passwd"}, {"id": "/etc/passwd"}, {"like": "-1"}, {"like": "1e3"},
     {"id": "１２"}, {"like": "9" * 30}],
)  # fmt: skip
def test_query_params_reject_paths(app_env, app_config_env, params):
    at = page(app_env.config, app_config_env, params)
    no_traceback(at)
    assert "Not allowed" in texts(at) and "link parameter" in texts(at)
    assert "root:" not in texts(at)


def test_query_params_open_detail_and_like(app_env, app_config_env):
    at = search(page(app_env.config, app_config_env), "a photo")
    some = result_ids(at)[0]
    at = page(app_env.config, app_config_env, {"id": str(some)})
    no_traceback(at)
    assert [b for b in at.button if b.key == "back"] and len(at.image) == 1
    at = page(app_env.config, app_config_env, {"id": "987654"})
    assert "no photo with id 987654" in texts(at)
    at = page(app_env.config, app_config_env, {"like": "987654"})
    assert "not in the index" in texts(at)


@pytest.mark.parametrize(
    "query",
    ["img:/etc/passwd", "img:../../../../etc/passwd", "dog + img:/etc/hostname",
     'img:"/etc/passwd"', "img:sub/../../../outside.jpg"],
)  # fmt: skip
def test_img_terms_outside_roots_rejected(app_env, app_config_env, query):
    outside = app_env.dir / "outside.jpg"
    outside.write_bytes(jpeg())
    at = search(page(app_env.config, app_config_env), query)
    assert "Not allowed" in texts(at) and "outside the library" in texts(at)
    assert not at.image


def test_img_term_inside_roots(app_env, app_config_env):
    at = search(page(app_env.config, app_config_env), f"img:{app_env.images[2]} + sunset")
    assert result_ids(at)
    at = search(at, f"img:sub/{app_env.sub[0].name}")
    assert result_ids(at)


def test_folder_filter_outside_roots_rejected(app_env, app_config_env):
    at = search(page(app_env.config, app_config_env), "a photo")
    for folder in ("../", "/etc", "sub/../../.."):
        at.text_input(key="folder").input(folder).run()
        no_traceback(at)
        assert "Not allowed" in texts(at), folder
        assert not at.image


def test_oversized_uploads_rejected(app_env, app_config_env):
    cfg = app_env.variant("limits", ui={"max_upload_mb": 1, "max_upload_pixels": 10_000})
    at = page(cfg, app_config_env)
    at.file_uploader[0].upload("big.jpg", b"\xff" * (1024 * 1024 + 1), "image/jpeg").run()
    no_traceback(at)
    assert "largest photo accepted is 1 MB" in texts(at) and not at.image
    at.file_uploader[0].clear().upload("wide.jpg", jpeg((200, 100)), "image/jpeg").run()
    assert "20,000 pixels" in texts(at) and "ui.max_upload_pixels" in texts(at)
    at.file_uploader[0].clear().upload("fake.jpg", b"GIF89a not really", "image/jpeg").run()
    assert "not an image" in texts(at)


# ----------------------------------------------------------------------------- tags
def test_tags_view_when_the_library_has_tags(tmp_path, app_env, app_config_env, tiny_checkpoint):
    from tests.test_app_support import build_env

    env = build_env(tmp_path, app_env.images[:4], tiny_checkpoint, n_sub=0)
    db = next((env.dir / "index").glob("v*/index.sqlite"))
    with sqlite3.connect(db) as conn:  # the random model's own tags: replaced by known ones
        conn.execute("DELETE FROM tags")
    at = page(env.config, app_config_env)
    at.radio(key="view").set_value("Tags").run()  # the tags API exists: the view is offered
    no_traceback(at)
    assert "No photo has a tag yet" in texts(at)
    with sqlite3.connect(db) as conn:
        a, b = [r[0] for r in conn.execute("SELECT id FROM images WHERE status = 'ok' LIMIT 2")]
        conn.executemany("INSERT INTO tags VALUES (?, ?, ?)",
                         [(a, "dog", 0.3), (b, "dog", 0.28), (b, "beach", 0.27)])  # fmt: skip
    at = page(env.config, app_config_env)
    at.radio(key="view").set_value("Tags").run()
    no_traceback(at)
    labels = [b.label for b in at.button]
    assert "dog (2)" in labels and "beach (1)" in labels
    at.button(key="tag_dog").click().run()
    no_traceback(at)
    assert at.radio(key="view").value == "Search"
    assert sorted(result_ids(at)) == sorted([a, b])
    at.button(key=f"open_{b}").click().run()
    assert "beach, dog" in texts(at) or "dog, beach" in texts(at)
