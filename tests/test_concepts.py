"""Personal concepts (issue 16): taught by example on stored vectors, stored in the index,
applied to the library and to newly indexed photos, refitted on example changes and reindex.

A real SQLite/FAISS index of two coco-mini photos X and Y with 12 augmentations each (crops,
flips, colour changes, resizes) and 40 other photos, encoded by a tiny random ViT CLIP. The
copies of a photo cluster, so a concept taught from 3 copies of X must find the other copies.
"""

from __future__ import annotations

import shutil
import sqlite3

import numpy as np
import pytest

from indexer.config import load_config
from indexer.learn.apply import concept_rows
from indexer.learn.service import ConceptError
from indexer.library import Library
from indexer.search.engine import QueryError
from indexer.store.sqlite import schema as db

from .augment import augmented_copies, augmented_library, precision_at
from .indexer_helpers import run_cli, run_json, version_dir, write_config

X, Y = 20, 30  # coco-mini photos (sorted val2017 order) whose augmentations are the concepts
VOCAB = {"templates": ["{}"], "tags": {"dog": {"prompts": ["a dog"], "threshold": -1.0}}}


def _setup(tmp, coco, checkpoint):
    family, rest = augmented_library(tmp / "photos", coco, copies=12, others=40, x=X)
    src_y = coco[Y]
    shutil.copyfile(src_y, tmp / "photos" / src_y.name)
    fam_y = [tmp / "photos" / src_y.name, *augmented_copies(src_y, tmp / "photos", 12)]
    rest = [p for p in rest if p.name != src_y.name]
    cfg_path = write_config(tmp / "c.yaml", [tmp / "photos"], tmp / "idx", checkpoint,
                            tags={"vocabulary": VOCAB}, search={"threshold": None})  # fmt: skip
    return cfg_path, family, fam_y, rest


@pytest.fixture(scope="module")
def lib_env(tmp_path_factory, tiny_checkpoint, coco_images):
    tmp = tmp_path_factory.mktemp("concepts")
    cfg_path, fam_x, fam_y, rest = _setup(tmp, coco_images, tiny_checkpoint)
    cfg = load_config(cfg_path)
    with Library.open(cfg, writer=True) as lib:
        lib.index(progress=False)
        ids = {p: lib.store.record_by_path(p).id for p in [*fam_x, *fam_y, *rest]}
    return cfg, cfg_path, [ids[p] for p in fam_x], [ids[p] for p in fam_y], [ids[p] for p in rest]


def _ranking(lib, vector, k=200) -> list[int]:
    return [h.id for h in lib.search(vector=vector, k=k).hits]


def test_concept_from_three_copies_finds_the_others(lib_env):
    cfg, _, fx, fy, _ = lib_env
    with Library.open(cfg, writer=True) as lib:
        for name, fam in (("photo x", fx), ("photo y", fy)):
            examples = fam[1:4]
            c = lib.concepts.teach(name, examples)
            ranked = _ranking(lib, lib.concepts.direction([name]))
            rel = set(fam) - set(examples)
            p10 = precision_at(ranked, rel, set(examples))
            single = max(precision_at(_ranking(lib, lib.store.vectors([i])[1][0]), set(fam) - {i},
                                      {i}) for i in fam)  # fmt: skip
            print(f"{name}: concept precision@10 {p10:.2f}, best single-example query {single:.2f}")
            assert p10 >= 0.9
            rest_ranked = [i for i in ranked if i not in examples]
            assert set(rest_ranked[: len(rel)]) == rel  # every other copy above every other photo
            tagged = set(lib.ids_with_tags([name]).tolist())
            assert set(examples) <= tagged and len(rel & tagged) >= len(rel) - 2
            other = set(fy if fam is fx else fx)
            assert len(tagged & other) <= 2  # negative control: the other photo's copies
            assert c.stats["positives"] == 3 and c.model == lib.store.meta()["checkpoint_sha256"]
        counts = lib.tag_counts()
        assert counts["photo x"] == len(lib.ids_with_tags(["photo x"])) and counts["dog"] > 0
        assert [c.name for c in lib.concepts.list()] == ["photo x", "photo y"]
    with Library.open(cfg) as lib:  # readers: search by tag and by query syntax
        by_tag = {h.id for h in lib.search(f"id:{fx[0]}", tags=["photo x"], k=100).hits}
        assert by_tag == set(lib.ids_with_tags(["photo x"]).tolist())
        hits = lib.search("concept:photo x", k=100).hits
        assert {h.id for h in hits} == by_tag and hits[0].id in set(fx)
        assert any(t == "photo x" for t, _ in lib.image_tags(fx[5]))
        with pytest.raises(QueryError, match="unknown concept 'cats'"):
            lib.search("concept:cats")


def test_bad_concepts_are_clear_errors(lib_env):
    cfg, _, fx, _, rest = lib_env
    with Library.open(cfg, writer=True) as lib:
        with pytest.raises(ConceptError, match="at least 3 example photos, got 2"):
            lib.concepts.teach("two", fx[:2])
        with pytest.raises(ConceptError, match="at least 3 example photos, got 2"):
            lib.concepts.teach("dupes", [fx[0], fx[0], fx[1]])
        with pytest.raises(QueryError, match="image id 99999 is not in the index"):
            lib.concepts.teach("ghost", [fx[0], fx[1], 99999])
        with pytest.raises(ConceptError, match="is a tag of the vocabulary"):
            lib.concepts.teach("dog", fx[:3])
        with pytest.raises(ConceptError, match="invalid concept name"):
            lib.concepts.teach("a,b", fx[:3])
        with pytest.raises(ConceptError, match="unknown concept 'nope'"):
            lib.concepts.edit("nope", add=[fx[0]])
        lib.concepts.teach("tmp", fx[:3], negatives=rest[:2])
        with pytest.raises(ConceptError, match="exists"):
            lib.concepts.teach("tmp", fx[:3])
        lib.concepts.delete("tmp")
        assert "tmp" not in lib.tag_counts() and "tmp" not in lib.concepts.names()


def test_editing_examples_refits_in_place(lib_env):
    cfg, _, fx, _, rest = lib_env
    with Library.open(cfg, writer=True) as lib:
        first = lib.concepts.teach("edit me", fx[:3])
        before = set(lib.ids_with_tags(["edit me"]).tolist())
        added = lib.concepts.edit("edit me", add=fx[3:6], add_negatives=rest[:3])
        assert added.positives == fx[:6] and added.negatives == rest[:3]
        assert added.created == first.created and added.updated >= first.updated
        assert not np.allclose(added.weights, first.weights)
        after = set(lib.ids_with_tags(["edit me"]).tolist())
        assert set(fx[:6]) <= after and not set(rest[:3]) & after and after != before
        with pytest.raises(ConceptError, match="at least 3"):
            lib.concepts.edit("edit me", remove=fx[:4])
        assert lib.concepts.get("edit me").positives == fx[:6]  # unchanged by the failed refit
        lib.concepts.delete("edit me")


def test_new_photos_are_tagged_as_they_are_indexed(tmp_path, tiny_checkpoint, coco_images):
    cfg_path, fx, _, rest = _setup(tmp_path, coco_images, tiny_checkpoint)
    later = fx[4:]
    hold = tmp_path / "later"
    hold.mkdir()
    for p in later:
        shutil.move(p, hold / p.name)
    cfg = load_config(cfg_path)
    with Library.open(cfg, writer=True) as lib:
        lib.index(progress=False)
        lib.concepts.teach("x", [lib.store.record_by_path(p).id for p in fx[1:4]])
        tagged_before = set(lib.ids_with_tags(["x"]).tolist())
        for p in later:
            shutil.move(hold / p.name, p)
        lib.index([str(p) for p in later], progress=False)
        new_ids = {lib.store.record_by_path(p).id for p in later}
        tagged = set(lib.ids_with_tags(["x"]).tolist())
        assert len(new_ids & tagged) >= len(new_ids) - 1 and tagged_before <= tagged
        # the zero-shot pass of the same batches left the concept rows alone
        assert lib.tag_counts()["dog"] == len(fx) + 13 + len(rest)
        # XMP export carries the concept with the other tags
        proc = run_cli(["export", "xmp"], cfg_path)
    assert proc.returncode == 1 and "writer" in proc.stderr or proc.returncode == 0
    if proc.returncode:  # our writer Library still held the lock: export again
        proc = run_cli(["export", "xmp"], cfg_path)
    assert proc.returncode == 0, proc.stderr
    xmp = (fx[5].parent / (fx[5].name + ".xmp")).read_text()
    assert "<rdf:li>x</rdf:li>" in xmp and "<rdf:li>dog</rdf:li>" in xmp
    assert "<rdf:li>x</rdf:li>" not in (rest[0].parent / (rest[0].name + ".xmp")).read_text()


def test_reindex_refits_concepts_on_the_new_model(tmp_path, tiny_checkpoint, coco_images):
    from .checkpoints import write_random_checkpoint

    cfg_path, fx, _, rest = _setup(tmp_path, coco_images, tiny_checkpoint)
    cfg = load_config(cfg_path)
    with Library.open(cfg, writer=True) as lib:
        lib.index(progress=False)
        old = lib.concepts.teach("x", [lib.store.record_by_path(p).id for p in fx[1:4]])
    other = write_random_checkpoint(tmp_path / "other.pt", "tiny-vit", seed=1)
    cfg2 = load_config(write_config(tmp_path / "c2.yaml", [tmp_path / "photos"], tmp_path / "idx",
                                    other, tags={"vocabulary": VOCAB}))  # fmt: skip
    with Library.open(cfg2, writer=True) as lib:
        rep = lib.reindex(progress=False)
        assert rep.concepts_lost == []
        new = lib.concepts.get("x")
        assert new.model == lib.store.meta()["checkpoint_sha256"] != old.model
        assert [lib.get_image(i).path for i in new.positives] == [str(p) for p in fx[1:4]]
        assert not np.allclose(new.weights, old.weights)
        assert set(new.positives) <= set(lib.ids_with_tags(["x"]).tolist())


def test_cli_concepts(lib_env):
    cfg, cfg_path, fx, fy, _ = lib_env
    with Library.open(cfg) as lib:
        path = lib.get_image(fy[2]).path
    doc = run_json(["concept", "teach", "cli y", str(fy[0]), f"id:{fy[1]}", path,
                    "--hint", "a photo"], cfg_path)  # fmt: skip
    assert doc["name"] == "cli y" and doc["examples"] == fy[:3] and doc["hint"] == "a photo"
    assert doc["photos"] >= 3
    doc = run_json(["concept", "add", "cli y", str(fy[3])], cfg_path)
    assert doc["examples"] == fy[:4]
    listed = run_json(["concepts"], cfg_path)["concepts"]
    assert "cli y" in [c["name"] for c in listed]
    tags = run_cli(["tags"], cfg_path)
    assert tags.returncode == 0 and "cli y" in tags.stdout
    out = run_json(["search", "--tag", "cli y", "-k", "100", f"id:{fy[0]}"], cfg_path)
    assert {r["id"] for r in out["results"]} >= set(fy[:4])
    for args, msg in (
        (["concept", "teach", "few", str(fy[0])], "needs at least 3 example photos, got 1"),
        (["concept", "show", "nope"], "unknown concept 'nope'"),
        (["concept", "teach", "z", "1", "2", "/no/such.jpg"], "'/no/such.jpg' is not in the index"),
    ):
        proc = run_cli(args, cfg_path)
        assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert msg in proc.stderr
    assert run_json(["concept", "delete", "cli y"], cfg_path) == {"deleted": "cli y"}


def test_schema_2_index_migrates_to_concepts_and_albums(tmp_path, sample_images):
    from indexer.embed.encoder import HashEncoder

    from .indexer_helpers import as_schema_5, copy_images

    copy_images(sample_images[:4], tmp_path / "photos")
    cfg = load_config(write_config(tmp_path / "c.yaml", [tmp_path / "photos"], tmp_path / "idx",
                                   tags={"vocabulary": VOCAB}))  # fmt: skip
    with Library.open(cfg, writer=True, encoder=HashEncoder()) as lib:
        lib.index(progress=False)
    con = sqlite3.connect(version_dir(cfg.index_dir) / "index.sqlite")
    con.execute("DROP TABLE concepts")
    con.execute("DROP TABLE albums")
    as_schema_5(con)  # then the tables of schemas 3-4 go (5 added a column only)
    con.execute("UPDATE schema_version SET version = 2")
    con.commit()
    con.close()
    with pytest.raises(db.SchemaError, match=f"schema 2; run `clipsearch index` to migrate it to {db.SCHEMA_VERSION}"):
        Library.open(cfg, encoder=HashEncoder())
    with Library.open(cfg, writer=True, encoder=HashEncoder()) as lib:
        assert lib.concepts.list() == []
        lib.concepts.teach("four", list(range(1, 4)))
        assert lib.tag_counts()["dog"] == 4
    con = sqlite3.connect(version_dir(cfg.index_dir) / "index.sqlite")
    assert con.execute("SELECT version FROM schema_version").fetchone()[0] == db.SCHEMA_VERSION
    assert [r[0] for r in con.execute("SELECT name FROM concepts")] == ["four"]
    assert con.execute("SELECT COUNT(*) FROM albums").fetchone()[0] == 0
    con.close()


def test_centred_logits_are_the_definition():
    from indexer.learn.fit import centred, fit_concept, logits

    rng = np.random.default_rng(3)
    x = rng.standard_normal((50, 16)).astype(np.float32) + 2.0
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    c = fit_concept(x[:3] + 0.01, np.zeros((0, 16), np.float32), x[3:])
    assert c.center is not None and np.allclose(c.center, x[3:].mean(axis=0), atol=1e-6)
    w = np.stack([c.weights, c.weights])
    got = logits(x, w, np.array([c.bias, c.bias]), np.stack([c.center, np.zeros(16)]))
    assert np.allclose(got[:, 0], centred(x, c.center) @ c.weights + c.bias, atol=1e-5)
    assert np.allclose(got[:, 1], x @ c.weights + c.bias, atol=1e-5)  # zero centre: uncentred


def test_schema_4_concepts_migrate_and_keep_scoring(tmp_path, sample_images):
    """A concept stored before schema 5 (no centre) keeps its rows and scores new photos as
    before; a refit stores the centre."""
    from indexer.embed.encoder import HashEncoder

    from .indexer_helpers import as_schema_5, copy_images

    copy_images(sample_images[:6], tmp_path / "photos")
    cfg = load_config(write_config(tmp_path / "c.yaml", [tmp_path / "photos"], tmp_path / "idx"))
    with Library.open(cfg, writer=True, encoder=HashEncoder()) as lib:
        lib.index(progress=False)
        lib.concepts.teach("old", [1, 2, 3])
        before = lib.tag_counts()["old"]
    path = version_dir(cfg.index_dir) / "index.sqlite"
    con = sqlite3.connect(path)
    as_schema_5(con)
    con.execute("ALTER TABLE concepts DROP COLUMN center")
    con.execute("UPDATE schema_version SET version = 4")
    con.commit()
    con.close()
    with Library.open(cfg, writer=True, encoder=HashEncoder()) as lib:
        (old,) = lib.concepts.list()
        assert old.center is None and lib.tag_counts()["old"] == before
        lib.concepts.teach("old", [1, 2, 3], replace=True)
        assert lib.concepts.get("old").center is not None
    con = sqlite3.connect(path)
    assert con.execute("SELECT version FROM schema_version").fetchone()[0] == db.SCHEMA_VERSION
    con.close()


def test_concepts_and_albums_on_postgres(tmp_path, tiny_checkpoint, coco_images, pg_url):
    """The same concept on the PostgreSQL store: fitted, stored with its centre, tags applied,
    read back by a reader; an album saved and read back."""
    family, rest = augmented_library(tmp_path / "photos", coco_images, copies=8, others=12, x=X)
    cfg = load_config(write_config(tmp_path / "c.yaml", [tmp_path / "photos"], tmp_path / "idx",
                                   tiny_checkpoint, pg_url, tags={"vocabulary": VOCAB},
                                   search={"threshold": None}))  # fmt: skip
    with Library.open(cfg, writer=True) as lib:
        lib.index(progress=False)
        fx = [lib.store.record_by_path(p).id for p in family]
        taught = lib.concepts.teach("photo x", fx[1:4])
        lib.albums.save("x album", {"query": "concept:photo x"})
    assert taught.center is not None
    with Library.open(cfg) as lib:
        (c,) = lib.concepts.list()
        assert np.array_equal(c.center, taught.center) and np.array_equal(c.weights, taught.weights)
        tagged = set(lib.ids_with_tags(["photo x"]).tolist())
        # the stored rows are the read-back concept's scores over the stored vectors
        ids, vecs = lib.store.vectors(sorted(set(fx) | set(lib.ids_with_tags(["dog"]).tolist())))
        expect = {int(i) for i, r in zip(ids, concept_rows(vecs, [c])) if r}
        assert tagged == expect and len(tagged & set(fx)) >= len(fx) - 2
        assert not tagged - set(fx)  # negative control: the other photos
        assert [a.name for a in lib.albums.list()] == ["x album"]
