"""Issue 20 in the UI: a ``text:`` search shows the matched text under each result, and the
detail view shows all the text recognised in the photo (real index, real OCR, AppTest)."""

from __future__ import annotations

import numpy as np
import pytest

from indexer.config import load_config
from indexer.library import Library

from .indexer_helpers import write_config
from .ocr_images import photo_with_word, random_word
from .test_app_page import no_traceback, page, result_ids, search, texts

pytest.importorskip("rapidocr_onnxruntime", reason="OCR tests need pip install 'clipsearch[ocr]'")
pytest_plugins = ["tests.test_app_support"]  # its fixtures: app_config_env
pytestmark = pytest.mark.timeout(300)


def test_text_search_shows_the_matched_text(tmp_path, coco_images, tiny_checkpoint, app_config_env):
    rng = np.random.default_rng(4)
    (tmp_path / "photos").mkdir()
    words = []
    for i, src in enumerate(coco_images[10:12]):
        words.append(random_word(rng, 7, 8))
        img, _ = photo_with_word(src, words[-1], rng, size=36)
        img.save(tmp_path / "photos" / f"sign{i}.jpg", quality=95)
    config = write_config(tmp_path / "c.yaml", [tmp_path / "photos"], tmp_path / "idx",
                          tiny_checkpoint, ocr={"enabled": True, "engine": "rapidocr"})  # fmt: skip
    with Library.open(load_config(config), writer=True) as lib:
        lib.index(progress=False)
        assert lib.ocr.run().with_text == 2
    at = search(page(config, app_config_env), f"text:{words[0]}")
    ids = result_ids(at)
    assert len(ids) == 1, texts(at)
    assert f"Text: {words[0]}" in texts(at).replace("\\", "")
    at.button(key=f"open_{ids[0]}").click().run()
    no_traceback(at)
    assert words[0] in texts(at) and "sign0.jpg" in texts(at)
