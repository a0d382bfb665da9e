"""Relevance feedback (issue 16): Rocchio on stored vectors, ``like:``/``unlike:`` query syntax,
``Library.search(like=, unlike=)`` and ``clipsearch search --like/--unlike``.

A real SQLite/FAISS index of coco-mini photo X, 12 augmentations of it and 45 other photos,
encoded by a tiny random ViT CLIP: the copies of X cluster, so marks must pull them up.
"""

from __future__ import annotations

import numpy as np
import pytest

from indexer.config import load_config
from indexer.library import Library
from indexer.search.engine import QueryError
from indexer.search.feedback import rocchio
from indexer.search.parse import QueryTerm, parse_query

from .augment import augmented_library, precision_at
from .indexer_helpers import run_cli, run_json, write_config


def _unit(*xs: float) -> np.ndarray:
    v = np.asarray(xs, dtype=np.float32)
    return v / np.linalg.norm(v)


def test_rocchio_moves_toward_liked_and_away_from_unliked():
    q, good, bad = _unit(1, 0, 0), _unit(0, 1, 0), _unit(0, 0, 1)
    out = rocchio(q, good[None], bad[None])
    assert np.isclose(np.linalg.norm(out), 1.0)
    assert out @ good > q @ good and out @ bad < 0
    assert np.allclose(rocchio(None, good[None], np.zeros((0, 3))), good)
    assert np.allclose(rocchio(q, np.zeros((0, 3)), np.zeros((0, 3))), q)  # no marks: the query
    with pytest.raises(ValueError, match="at least one liked"):
        rocchio(None, np.zeros((0, 3)), bad[None])


def test_mark_syntax():
    assert parse_query("dog + like:12 + unlike:/a b.jpg") == [
        QueryTerm(1.0, "text", "dog"), QueryTerm(1.0, "like", "id:12"),
        QueryTerm(1.0, "unlike", "/a b.jpg"),
    ]  # fmt: skip
    assert parse_query("dog - like:id:3")[1] == QueryTerm(1.0, "unlike", "id:3")
    assert parse_query('concept:"my  cat"')[0] == QueryTerm(1.0, "concept", "my cat")
    for bad in ("like:", "dog + unlike: ", "concept:"):
        with pytest.raises(ValueError, match="without"):
            parse_query(bad)


@pytest.fixture(scope="module")
def lib_cfg(tmp_path_factory, tiny_checkpoint, coco_images):
    tmp = tmp_path_factory.mktemp("feedback")
    family, rest = augmented_library(tmp / "photos", coco_images)
    cfg_path = write_config(tmp / "c.yaml", [tmp / "photos"], tmp / "idx", tiny_checkpoint,
                            tags={"auto": False}, search={"threshold": None})  # fmt: skip
    cfg = load_config(cfg_path)
    with Library.open(cfg, writer=True) as lib:
        lib.index(progress=False)
    with Library.open(cfg) as lib:
        fam = [lib.store.record_by_path(p).id for p in family]
        other = [lib.store.record_by_path(p).id for p in rest]
    return cfg, cfg_path, fam, other


def test_two_marks_improve_precision_at_10(lib_cfg):
    cfg, _, fam, other = lib_cfg
    relevant = set(fam)
    q = fam[1]  # one augmented copy is the query
    with Library.open(cfg) as lib:
        alone = [h.id for h in lib.search(f"id:{q}", k=20).hits]
        marked = [h.id for h in lib.search(f"id:{q}", like=[fam[2], fam[3]], k=20).hits]
        syntax = [h.id for h in lib.search(f"id:{q} + like:{fam[2]} + like:{fam[3]}", k=20).hits]
        # negative control: "liking" two unrelated photos pulls the ranking away from X
        wrong = [h.id for h in lib.search(f"id:{q}", like=other[:2], k=20).hits]
    skip = {q, fam[2], fam[3]}
    before, after = precision_at(alone, relevant, skip), precision_at(marked, relevant, skip)
    print(f"feedback precision@10: query alone {before:.2f}, with two marks {after:.2f}")
    assert after > before
    assert syntax == marked  # the query syntax is the same marks
    assert precision_at(wrong, relevant, skip | set(other[:2])) < before


def test_unlike_pushes_a_photo_down(lib_cfg):
    cfg, _, fam, _ = lib_cfg
    with Library.open(cfg) as lib:
        hits = [h.id for h in lib.search(f"id:{fam[0]}", k=60).hits]
        top_other = next(i for i in hits if i not in fam)
        after = [h.id for h in lib.search(f"id:{fam[0]}", unlike=[top_other], k=60).hits]
    assert after.index(top_other) > hits.index(top_other)


def test_marks_by_path_and_bad_marks(lib_cfg):
    cfg, _, fam, _ = lib_cfg
    with Library.open(cfg) as lib:
        path = lib.get_image(fam[2]).path
        by_id = [h.id for h in lib.search(like=[fam[2]], k=5).hits]
        assert [h.id for h in lib.search(like=[path], k=5).hits] == by_id
        assert by_id[0] == fam[2]  # marks alone: the liked photo itself is the best match
        with pytest.raises(QueryError, match="image id 999999 is not in the index"):
            lib.search("id:1", like=[999999])
        with pytest.raises(QueryError, match="is not in the index"):
            lib.search("id:1", unlike=["/nowhere/x.jpg"])
        with pytest.raises(QueryError, match="at least one liked"):
            lib.search(unlike=[fam[2]])


def test_cli_like_unlike(lib_cfg):
    cfg, cfg_path, fam, other = lib_cfg
    with Library.open(cfg) as lib:
        path = lib.get_image(fam[3]).path
        expected = [h.id for h in lib.search(f"id:{fam[1]}", like=[fam[2], fam[3]],
                                             unlike=[other[0]], k=8).hits]  # fmt: skip
    out = run_json(["search", f"id:{fam[1]}", "--like", str(fam[2]), "--like", path,
                    "--unlike", f"id:{other[0]}", "-k", "8"], cfg_path)  # fmt: skip
    assert [r["id"] for r in out["results"]] == expected
    assert [t["kind"] for t in out["terms"]] == ["image", "like", "like", "unlike"]
    proc = run_cli(["search", "--like", "/nowhere/x.jpg"], cfg_path)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "clipsearch: error: photo '/nowhere/x.jpg' is not in the index (give an id or an "
        "indexed path)"
    ]


def test_ui_service_marks_and_mark_syntax(lib_cfg):
    """The UI's search (app.service) re-ranks from its marks and from like:/unlike: terms,
    without reading files named in marks (only indexed photos can be marked)."""
    from app import service

    cfg, _, fam, other = lib_cfg
    with Library.open(cfg) as lib:
        expected = [h.id for h in lib.search(f"id:{fam[1]}", like=[fam[2], fam[3]],
                                             unlike=[other[0]], k=12).hits]  # fmt: skip
        marks = service.SearchRequest(text=f"id:{fam[1]}", k=12, liked=(fam[2], fam[3]),
                                      unliked=(other[0],))  # fmt: skip
        syntax = service.SearchRequest(text=f"id:{fam[1]} + like:{fam[2]} + like:{fam[3]} "
                                            f"+ unlike:{other[0]}", k=12)  # fmt: skip
        plain = service.SearchRequest(text=f"id:{fam[1]}", k=12)
        got = [h.id for h in service.run_search(lib, marks, cfg.roots).hits]
        assert got == expected
        assert [h.id for h in service.run_search(lib, syntax, cfg.roots).hits] == expected
        assert [h.id for h in service.run_search(lib, plain, cfg.roots).hits] != expected
        assert marks.key() != plain.key()  # the marks are part of the cached request
        with pytest.raises(QueryError, match="'/etc/passwd' is not in the index"):
            service.run_search(lib, service.SearchRequest(text="dog + like:/etc/passwd"),
                               cfg.roots)  # fmt: skip
