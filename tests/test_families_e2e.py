"""Issue 19 end to end: index, search (text in several languages, image), tags, duplicates,
status and the UI page with a random SigLIP and a random multilingual (XLM-R) checkpoint."""

from __future__ import annotations

import math
import os

import pytest
from streamlit.testing.v1 import AppTest

from indexer.config import load_config
from indexer.library import Library
from tests.test_app_support import MAIN, build_env

from .family_checkpoints import write_siglip, write_xlmr

pytest.importorskip("transformers")
pytestmark = pytest.mark.timeout(300)


@pytest.mark.parametrize("family", ["siglip2", "xlm-roberta"])
def test_pipeline_end_to_end(tmp_path, coco_images, family, monkeypatch):
    weights = tmp_path / "model"
    write_siglip(weights, family) if family != "xlm-roberta" else write_xlmr(weights)
    env = build_env(tmp_path / "lib", coco_images[:10], weights)
    cfg = load_config(env.config)
    with Library.open(cfg) as lib:
        assert len(lib.search("photo", k=50).hits) == 10  # every photo, the broken file not
        for query in ("a dog on the beach", "ein Hund am Strand", "海滩上的小狗"):
            assert len(lib.search(query, k=5).hits) == 5
        photo = env.images[2]
        hit = lib.search(image=photo, k=2).hits[0]
        # the int8 fast path runs here: dynamic quantization scales each call's activations
        # together, so a photo encoded alone differs a little from the same one in a batch
        assert hit.path == os.fspath(photo) and hit.score == pytest.approx(1.0, abs=5e-4)
        assert lib.status()["fast_paths"]["model"]["path"].startswith("onnxruntime int8")
        long_text = " ".join(["eine rote Straßenbahn vor dem Bahnhof"] * 30)
        assert len(lib.search(long_text, k=3).hits) == 3
        # tags: a sigmoid model's thresholds sit at its own 50% point, -bias / scale
        vocab = lib.tags.scoring_vocabulary(lib.store.model_identity())
        want = 4.0 / math.exp(2.3) if family == "siglip2" else 0.25
        assert vocab.default_threshold == pytest.approx(want, abs=1e-5)
        standalone = {t.name: vocab.threshold_for(t) for t in vocab.active_tags()
                      if not vocab.is_exclusive(t)}  # fmt: skip
        for tags in lib.all_image_tags().values():
            assert all(score >= standalone[t] - 1e-6 for t, score in tags if t in standalone)
        assert isinstance(lib.tag_counts(), dict)
        lib.image_tags(hit.id)
        assert isinstance(lib.duplicates(0.99), list)
    with Library.open(cfg, writer=True) as lib:
        lib.tag(rescore_all=True)
    if family != "siglip2":
        return  # the UI once (its page does not depend on the family beyond the encoder)
    # the UI: a query shows results
    for key in [k for k in os.environ if k.startswith("CLIPSEARCH_") and k != "CLIPSEARCH_CACHE_DIR"]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("CLIPSEARCH_CONFIG", os.fspath(env.config))
    at = AppTest.from_file(os.fspath(MAIN), default_timeout=90).run()
    at.text_input(key="q").input("Hund am Strand").run()
    assert not at.exception, [e.value for e in at.exception]
    assert any(b.key and b.key.startswith("open_") for b in at.button)
