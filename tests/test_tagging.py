"""Tag vocabulary parsing, prompt ensembles and zero-shot tag scoring on constructed vectors."""

from __future__ import annotations

import math

import numpy as np
import pytest

from indexer import tags as tagging
from indexer.tags import Vocabulary, VocabularyError

D = 6
E = np.eye(D, dtype=np.float32)


def unit(*pairs: tuple[int, float]) -> np.ndarray:
    v = np.zeros(D, dtype=np.float32)
    for axis, value in pairs:
        v[axis] = value
    return v / np.linalg.norm(v)


def vocab_dict() -> dict:
    return {
        "templates": ["a photo of {}."],
        "top_n": 2,
        "default_threshold": 0.5,
        "tags": {
            "dog": ["a dog"],
            "cat": {"prompts": ["a cat", "a kitten"], "threshold": 0.7},
            "beach": "a beach",
            "snow": ["snow"],
        },
        "groups": {
            "scene": {"exclusive": True, "tags": {"indoor": ["inside"], "outdoor": ["outside"]}},
        },
    }


EMBS = {  # tag -> direction: dog e0, cat e1, beach e2, snow e3, indoor e4, outdoor e5
    name: E[i] for i, name in enumerate(["dog", "cat", "beach", "snow", "indoor", "outdoor"])
}


# --------------------------------------------------------------------------- parsing
def test_parse_shapes_and_resolved_settings():
    v = Vocabulary.from_dict(vocab_dict())
    assert list(v.tags) == ["dog", "cat", "beach", "snow", "indoor", "outdoor"]
    assert v.tags["beach"].prompts == ("a beach",)
    assert v.threshold_for(v.tags["cat"]) == 0.7
    assert v.threshold_for(v.tags["dog"]) == 0.5
    assert v.threshold_for(v.tags["indoor"]) == 0.0  # exclusive, no threshold: winner kept
    assert v.texts_for(v.tags["cat"]) == ["a photo of a cat.", "a photo of a kitten."]
    assert v.is_exclusive(v.tags["indoor"]) and not v.is_exclusive(v.tags["dog"])
    assert v.top_n == 2


def test_plain_group_settings_are_tag_defaults():
    v = Vocabulary.from_dict(
        {"groups": {"pets": {"threshold": 0.3, "templates": ["{}"], "tags": {"cat": "a cat"}}}}
    )
    cat = v.tags["cat"]
    assert not v.is_exclusive(cat) and v.threshold_for(cat) == 0.3
    assert v.texts_for(cat) == ["a cat"]


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"tags": {"dog": []}}, "tags.dog"),
        ({"tags": {"dog": {"prompt": "x"}}}, "unknown key 'prompt'"),
        ({"tags": {"dog": {"prompts": "x", "threshold": "high"}}}, "tags.dog.threshold"),
        ({"templates": ["a photo of"]}, "exactly once"),
        ({"groups": {"g": {"exclusive": True, "tags": {"a": "a"}}}}, "at least two"),
        ({"tags": {"a": "x"}, "groups": {"g": {"tags": {"a": "y"}}}}, "defined twice"),
        ({"top_n": 0}, "top_n"),
        ({"colour": 1}, "unknown key 'colour'"),
        ({"extends": "other"}, "extends"),
    ],
)
def test_invalid_vocabularies_are_rejected_with_the_key(bad, message):
    with pytest.raises(VocabularyError, match=message):
        Vocabulary.from_dict(bad)


def test_default_vocabulary_covers_personal_photos_and_safety_is_off():
    v = tagging.default_vocabulary()
    for name in ["people", "dog", "cat", "food", "landscape", "beach", "snow", "city",
                 "screenshot", "document", "text", "car", "flowers", "night", "indoor",
                 "outdoor"]:  # fmt: skip
        assert name in v.tags, name
    assert not v.groups["safety"].enabled
    active = {t.name for t in v.active_tags()}
    assert "nsfw" not in active and "nsfw" not in tagging.vocabulary_fingerprints(v)
    on = tagging.default_vocabulary(safety=True)
    assert "nsfw" in {t.name for t in on.active_tags()}
    assert all(on.texts_for(t) for t in on.tags.values())


def test_extends_default_merges_overrides_and_removals(tmp_path):
    f = tmp_path / "tags.yaml"
    f.write_text(
        "extends: default\ntop_n: 3\ntags:\n  dog: null\n  felix: ['my cat felix']\n"
        "groups:\n  safety: {enabled: true}\n"
    )
    v = tagging.load_vocabulary(f)
    assert "dog" not in v.tags and v.tags["felix"].prompts == ("my cat felix",)
    assert v.top_n == 3 and v.groups["safety"].enabled and "nsfw" in v.tags
    assert "beach" in v.tags
    f.write_text("tags: [oops]\n")
    with pytest.raises(VocabularyError, match="tags.yaml"):
        tagging.load_vocabulary(f)
    with pytest.raises(VocabularyError, match="not found"):
        tagging.load_vocabulary(tmp_path / "missing.yaml")


# --------------------------------------------------------------------------- ensembles
def test_tag_embeddings_are_normalised_prompt_template_ensembles():
    rng = np.random.default_rng(0)
    table: dict[str, np.ndarray] = {}
    calls: list[list[str]] = []

    def embed(texts: list[str]) -> np.ndarray:
        calls.append(list(texts))
        for t in texts:
            table.setdefault(t, rng.standard_normal(D).astype(np.float32))
        return np.stack([table[t] for t in texts])  # deliberately unnormalised

    v = Vocabulary.from_dict(
        {"templates": ["a photo of {}.", "art of {}."], "tags": {"cat": ["a cat", "a kitten"]}}
    )
    embs = tagging.tag_embeddings(v, embed)
    texts = ["a photo of a cat.", "art of a cat.", "a photo of a kitten.", "art of a kitten."]
    assert calls == [texts]
    parts = np.stack([table[t] / np.linalg.norm(table[t]) for t in texts])
    expected = parts.mean(0) / np.linalg.norm(parts.mean(0))
    np.testing.assert_allclose(embs["cat"], expected, rtol=1e-5, atol=1e-6)
    assert abs(np.linalg.norm(embs["cat"]) - 1) < 1e-5


# --------------------------------------------------------------------------- scoring
def test_standalone_thresholds_are_inclusive_and_per_tag():
    v = Vocabulary.from_dict({**vocab_dict(), "groups": {}, "top_n": None})
    images = np.stack(
        [
            np.array([0.5, 0, math.sqrt(0.75), 0, 0, 0], np.float32),  # dog == 0.5: kept
            unit((0, 0.49), (5, math.sqrt(1 - 0.49**2))),  # dog just below
            unit((1, 0.69), (3, math.sqrt(1 - 0.69**2))),  # cat 0.69 < 0.7, snow 0.72 >= 0.5
            unit((1, 0.71), (5, math.sqrt(1 - 0.71**2))),  # cat 0.71 >= its own 0.7
        ]
    )
    out = tagging.score_tags(images, EMBS, v)
    assert [t for t, _ in out[0]] == ["beach", "dog"]
    assert out[0][1][1] == pytest.approx(0.5)
    assert out[1] == []
    assert [t for t, _ in out[2]] == ["snow"]
    assert [t for t, _ in out[3]] == ["cat"] and out[3][0][1] == pytest.approx(0.71, abs=1e-6)


def test_exclusive_group_softmax_winner_and_threshold():
    d = vocab_dict()
    d["groups"]["scene"]["threshold"] = 0.9
    v = Vocabulary.from_dict({**d, "tags": {}})
    images = np.stack(
        [
            unit((4, 0.6), (5, 0.8)),  # outdoor wins: p = 1 / (1 + e^(-100 * 0.2))
            unit((4, 0.8), (5, 0.79)),  # indoor wins with p = 1 / (1 + e^(-1)) = 0.731 < 0.9
            unit((0, 1.0)),  # tie 0/0: p = 0.5 < 0.9
        ]
    )
    out = tagging.score_tags(images, EMBS, v)
    cos = images[0, 4:6]
    p_out = 1 / (1 + math.exp(-100 * float(cos[1] - cos[0])))
    assert out[0] == [("outdoor", pytest.approx(p_out, rel=1e-6))]
    assert out[1] == [] and out[2] == []
    # a lower temperature changes the probabilities; the second image passes a 0.5 threshold
    d["groups"]["scene"]["threshold"] = 0.5
    v = Vocabulary.from_dict({**d, "tags": {}})
    out = tagging.score_tags(images, EMBS, v, logit_scale=10.0)
    c = images[1, 4:6]
    assert out[1] == [("indoor", pytest.approx(1 / (1 + math.exp(-10 * float(c[0] - c[1])))))]
    assert out[2] == [("indoor", pytest.approx(0.5))]  # exact tie: first tag, p = 0.5


def test_hidden_tag_competes_but_is_never_emitted():
    v = Vocabulary.from_dict(
        {"groups": {"kind": {"exclusive": True, "tags": {
            "photo": {"prompts": ["a photo"], "hidden": True}, "screenshot": ["a screenshot"]}}}}
    )  # fmt: skip
    embs = {"photo": E[0], "screenshot": E[1]}
    out = tagging.score_tags(np.stack([unit((0, 1)), unit((1, 1))]), embs, v)
    assert out[0] == [] and [t for t, _ in out[1]] == ["screenshot"]
    assert "photo" not in tagging.vocabulary_fingerprints(v)


def test_top_n_caps_standalone_tags_best_first_and_groups_add_one():
    v = Vocabulary.from_dict({**vocab_dict(), "default_threshold": 0.1})
    img = np.array([[0.6, 0.0, 0.3, 0.5, 0.0, 0.55]], dtype=np.float32)  # dog .6 beach .3 snow .5
    img /= np.linalg.norm(img)
    (tags,) = tagging.score_tags(img, EMBS, v)
    assert [t for t, _ in tags] == ["dog", "snow", "outdoor"]  # top_n=2, then the group winner
    (all_tags,) = tagging.score_tags(img, EMBS, v, top_n=None)
    assert [t for t, _ in all_tags] == ["dog", "snow", "beach", "outdoor"]
    assert tagging.cap_top_n(all_tags, v) == tags
    (one,) = tagging.score_tags(img, EMBS, v, top_n=1)
    assert [t for t, _ in one] == ["dog", "outdoor"]


def test_scoring_is_per_image_so_new_images_can_be_tagged_in_batches():
    rng = np.random.default_rng(1)
    images = rng.standard_normal((200, D)).astype(np.float32)
    images /= np.linalg.norm(images, axis=1, keepdims=True)
    v = Vocabulary.from_dict({**vocab_dict(), "default_threshold": 0.2})
    full = tagging.score_tags(images, EMBS, v, top_n=None)
    batched = tagging.score_tags(images[:150], EMBS, v, top_n=None) + tagging.score_tags(
        images[150:], EMBS, v, top_n=None
    )
    assert full == batched
    assert sum(map(len, full)) > 100  # the thresholds really select something
    assert tagging.tag_counts(full) == tagging.tag_counts(batched)
    assert tagging.score_tags(np.zeros((0, D), np.float32), EMBS, v) == []


# --------------------------------------------------------------------------- incremental
def test_changed_tags_reports_only_what_affects_scores():
    base = vocab_dict()
    v0 = Vocabulary.from_dict(base)
    stored = tagging.vocabulary_fingerprints(v0)
    assert tagging.changed_tags(stored, v0) == ([], [])
    assert tagging.changed_tags({}, v0)[0] == list(stored)

    def changed(mutate) -> tuple[list[str], list[str]]:
        d = vocab_dict()
        mutate(d)
        return tagging.changed_tags(stored, Vocabulary.from_dict(d))

    assert changed(lambda d: d["tags"].update(dog=["a dog", "a puppy"])) == (["dog"], [])
    assert changed(lambda d: d["tags"].update(dog={"prompts": ["a dog"], "threshold": 0.6})) == (
        ["dog"],
        [],
    )
    assert changed(lambda d: d.update(default_threshold=0.4)) == (["dog", "beach", "snow"], [])
    assert changed(lambda d: d.update(top_n=4)) == ([], [])  # applied when reading
    assert changed(lambda d: d["tags"].pop("snow")) == ([], ["snow"])
    # an exclusive group re-scores as a whole (the softmax couples its members)
    assert changed(lambda d: d["groups"]["scene"]["tags"].update(indoor=["a room"])) == (
        ["indoor", "outdoor"],
        [],
    )
    assert changed(lambda d: d.update(templates=["{}"]))[0] == list(stored)
    # prompt order does not change the ensemble, so it does not change the fingerprint
    assert changed(lambda d: d["tags"].update(cat={"prompts": ["a kitten", "a cat"],
                                                  "threshold": 0.7})) == ([], [])  # fmt: skip


def test_rescoring_one_changed_tag_embeds_and_scores_only_that_tag():
    rng = np.random.default_rng(2)
    embedded: list[str] = []

    def embed(texts: list[str]) -> np.ndarray:
        embedded.extend(texts)
        return rng.standard_normal((len(texts), D)).astype(np.float32)

    old = Vocabulary.from_dict({**vocab_dict(), "default_threshold": 0.1})
    stored = tagging.vocabulary_fingerprints(old)
    d = vocab_dict()
    d["default_threshold"] = 0.1
    d["tags"]["beach"] = ["a beach", "the seaside"]
    new = Vocabulary.from_dict(d)
    changed, removed = tagging.changed_tags(stored, new)
    assert (changed, removed) == (["beach"], [])
    embs = tagging.tag_embeddings(new, embed, tags=changed)
    assert set(embs) == {"beach"}
    assert embedded == ["a photo of a beach.", "a photo of the seaside."]
    images = rng.standard_normal((50, D)).astype(np.float32)
    images /= np.linalg.norm(images, axis=1, keepdims=True)
    partial = tagging.score_tags(images, embs, new, top_n=None, only=changed)
    full = tagging.score_tags(images, {**EMBS, **embs}, new, top_n=None)
    assert partial == [[t for t in row if t[0] == "beach"] for row in full]
    assert any(partial)
    # a changed exclusive member: only that group is scored, every member's rows refreshed
    group_only = tagging.score_tags(images, EMBS, new, top_n=None, only=["indoor", "outdoor"])
    assert group_only == [[t for t in row if t[0] in ("indoor", "outdoor")] for row in full]
    with pytest.raises(KeyError, match="snow"):
        tagging.score_tags(images, embs, new, only=["snow"])


# --------------------------------------------------------------------------- real text encoder
def test_default_vocabulary_embeds_with_a_random_clip(tiny_checkpoint):
    import clipmodel as clip

    model, _ = clip.load(tiny_checkpoint, device="cpu")
    v = tagging.default_vocabulary()
    embs = tagging.tag_embeddings(v, lambda texts: clip.embed_texts(model, texts).numpy())
    assert set(embs) == set(v.tags)
    mat = np.stack(list(embs.values()))
    np.testing.assert_allclose(np.linalg.norm(mat, axis=1), 1.0, atol=1e-5)
    rng = np.random.default_rng(3)
    images = rng.standard_normal((20, mat.shape[1])).astype(np.float32)
    images /= np.linalg.norm(images, axis=1, keepdims=True)
    out = tagging.score_tags(images, embs, v)
    assert len(out) == 20
    for row in out:
        solo = [t for t, _ in row if not v.is_exclusive(v.tags[t])]
        assert len(solo) <= v.top_n
        assert all(t in tagging.vocabulary_fingerprints(v) for t, _ in row)
