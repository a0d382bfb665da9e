"""Issue 15: queries without torch (clipmodel.query, indexer.embed.query).

A reader Library runs the cached ONNX towers the self-check chose, read from the load's
manifest, and must give the hits and scores of the full model; it falls back to the full
model when the export is missing, the checkpoint changed or a check was re-measured; the CLI's
text and image search never import torch once the export exists.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from clipmodel.onnx_common import onnxruntime_available
from clipmodel.query import QueryModel, QueryModelUnavailable
from indexer.config import load_config
from indexer.embed.encoder import ClipEncoder
from indexer.embed.query import QueryEncoder
from indexer.library import Library
from indexer.store import ModelMismatchError

from .checkpoints import write_random_checkpoint
from .indexer_helpers import REPO, cli_env, copy_images, write_config

pytestmark = pytest.mark.skipif(not onnxruntime_available(), reason="needs clipsearch[onnx]")

TEXTS = ["a dog", "two people on a beach at sunset", "a red bus " * 40]  # the last: > 77 tokens


@pytest.fixture(scope="module")
def library(tmp_path_factory, coco_images, tiny_checkpoint):
    """A tiny-ViT index built by the normal (torch) path, with a model cache of its own (the
    tests below damage it), seeded with the session's export of the same checkpoint if any."""
    work = tmp_path_factory.mktemp("query-path")
    weights = shutil.copyfile(tiny_checkpoint, work / "tiny.pt")
    photos = copy_images(coco_images[:10], work / "photos")
    cache = work / "cache"
    session = os.environ.get("CLIPSEARCH_CACHE_DIR")
    for sub in ("onnx", "fidelity"):
        if session and os.path.isdir(os.path.join(session, sub)):
            shutil.copytree(os.path.join(session, sub), cache / sub)
    cfg_file = write_config(work / "c.yaml", [work / "photos"], work / "idx", weights,
                            model={"device": "cpu", "cache_dir": os.fspath(cache)},
                            tags={"auto": False})  # fmt: skip
    cfg = load_config(cfg_file)
    with Library.open(cfg, writer=True) as lib:  # exports, self-checks, records the manifest
        lib.index(progress=False)
    return {"cfg": cfg, "file": cfg_file, "photos": photos, "weights": weights, "cache": cache}


def _query_model(lib_info) -> QueryModel:
    return QueryModel.open(lib_info["weights"], "auto auto", lib_info["cache"])


def _results(lib: Library, **query) -> list[tuple[int, float]]:
    return [(h.id, h.score) for h in lib.search(k=8, **query).hits]


def _same(a: list[tuple[int, float]], b: list[tuple[int, float]]) -> None:
    assert [i for i, _ in a] == [i for i, _ in b]
    np.testing.assert_allclose([s for _, s in a], [s for _, s in b], atol=2e-5)


def test_torch_free_queries_match_the_full_model(library):
    cfg = library["cfg"]
    full = ClipEncoder.from_config(cfg, 1)
    with Library.open(cfg) as fast, Library.open(cfg, encoder=full) as normal:
        enc = fast.encoder()
        assert isinstance(enc, QueryEncoder), "the reader should run the recorded ONNX towers"
        assert enc.identity == full.identity
        assert enc.model.text_path == full.model.fidelity.text_path
        assert enc.model.image_path == full.model.fidelity.image_path
        for text in TEXTS:
            _same(_results(fast, query=text), _results(normal, query=text))
        for photo in library["photos"][:3]:
            _same(_results(fast, image=photo), _results(normal, image=photo))
        mixed = f"beach - dog + img:{library['photos'][4]}"
        _same(_results(fast, query=mixed), _results(normal, query=mixed))
    # a batch of texts (dynamic int8 quantizes each call's activations: same batch, same numbers)
    batch = ["a cat", "snow on a mountain", "a birthday cake " * 30]
    np.testing.assert_allclose(enc.encode_texts(batch), full.encode_texts(batch), atol=2e-5)


def test_the_token_table_is_memory_mapped_and_made_again_when_lost(library, monkeypatch):
    """The optimized text graph keeps its large tables (the token embedding) in a file of
    their own that ONNX Runtime maps: the same numbers, and a lost table file is made again."""
    from pathlib import Path

    import onnx

    import clipmodel.onnx_common as onnx_common
    from clipmodel.query import manifest_path, source_path

    monkeypatch.setattr(onnx_common, "EXTERNAL_MIN_BYTES", 1 << 20)  # the tiny model's table
    folder = library["cache"] / "query"
    for old in [*folder.glob("*.mmap.onnx"), *folder.glob("*.data")]:
        old.unlink()
    manifest = manifest_path(source_path(library["weights"]), "auto auto", library["cache"])
    doc = json.loads(manifest.read_text())
    name = f"{Path(doc['text']['file']).stem}-ort{doc['tools']['onnxruntime']}.opt.onnx"
    superseded = folder / name  # the form earlier versions kept: removed
    superseded.write_bytes(b"old")
    first = _query_model(library)  # optimizes the export and writes the mapped form
    assert not superseded.exists()
    ref = first.encode_texts(TEXTS)
    (table,) = folder.glob("*-text-*.data")
    (graph,) = folder.glob("*-text-*.mmap.onnx")
    inits = onnx.load(os.fspath(graph), load_external_data=False).graph.initializer
    external = {t.name for t in inits if t.data_location == onnx.TensorProto.EXTERNAL}
    assert any("token_embedding" in name for name in external), external
    mapped = _query_model(library)  # loads the mapped form
    assert os.fspath(table) in open("/proc/self/maps").read()
    np.testing.assert_array_equal(mapped.encode_texts(TEXTS), ref)
    del first, mapped
    table.unlink()  # a damaged cache: the optimized form is made again from the export
    again = _query_model(library)
    np.testing.assert_array_equal(again.encode_texts(TEXTS), ref)
    assert len(list(folder.glob("*-text-*.data"))) == 1


# what a query process must not load: torch (the export runs), SQLAlchemy (the light SQLite
# reader, indexer.store.sqlite.reader), the other commands' modules, the indexing pipeline
HEAVY = ("torch", "sqlalchemy", "indexer.cli.tags", "indexer.cli.index", "indexer.ingest.pipeline")


def _cli(library, *args: str, command: str = "search") -> tuple[dict, list[str]]:
    """``clipsearch COMMAND ARGS --json`` in a fresh process: (its JSON, the HEAVY modules
    it imported)."""
    code = ("import json, sys; from indexer.cli import main; rc = main(sys.argv[1:]); "
            f"print(json.dumps({{'rc': rc, 'heavy': [m for m in {HEAVY!r} if m in sys.modules]}}), "
            "file=sys.stderr)")  # fmt: skip
    env = cli_env()
    extra = ["-k", "5"] if command == "search" else []
    proc = subprocess.run(
        [sys.executable, "-c", code, "--config", os.fspath(library["file"]), command, *args,
         "--json", *extra], capture_output=True, text=True, env=env, cwd=REPO, timeout=120,
    )  # fmt: skip
    tail = json.loads(proc.stderr.strip().splitlines()[-1])
    assert tail["rc"] == 0, proc.stderr
    return json.loads(proc.stdout), tail["heavy"]


def test_cli_text_and_image_search_do_not_import_torch(library):
    photo = library["photos"][2]
    text_doc, text_heavy = _cli(library, "a dog on a beach")
    image_doc, image_heavy = _cli(library, "--image", os.fspath(photo))
    status_doc, status_heavy = _cli(library, command="status")
    assert text_heavy == image_heavy == status_heavy == []
    assert status_doc["indexed"] == len(library["photos"]) and status_doc["faiss"]["kind"] == "flat16"
    assert image_doc["results"][0]["path"] == os.fspath(photo)
    # the in-process reader's results (equal to the full model's: the test above)
    with Library.open(library["cfg"]) as lib:
        assert isinstance(lib.encoder(), QueryEncoder)
        for doc, query in (
            (text_doc, {"query": "a dog on a beach"}),
            (image_doc, {"image": photo}),
        ):
            want = [(h.id, h.score) for h in lib.search(k=5, **query).hits]
            _same([(r["id"], round(r["score"], 6)) for r in doc["results"]],
                  [(i, round(s, 6)) for i, s in want])  # fmt: skip


def test_falls_back_when_the_export_is_missing_or_the_checkpoint_changed(library):
    cfg, weights = library["cfg"], library["weights"]
    doc = _query_model(library).doc
    # the export is gone (a cleared cache): refused, saying why
    aside = library["cache"] / "aside"
    aside.mkdir()
    for name in (doc["text"]["file"], doc["image"]["file"]):
        shutil.move(name, aside / os.path.basename(name))
    with pytest.raises(QueryModelUnavailable, match="missing"):
        _query_model(library)
    assert QueryEncoder.from_config(cfg)[0] is None
    for name in (doc["text"]["file"], doc["image"]["file"]):
        shutil.move(aside / os.path.basename(name), name)
    assert _query_model(library).checkpoint_sha256 == doc["sha256"]

    # the checkpoint file was rewritten (here with the same bytes): refused; the reader loads
    # the full model, which hashes it again and records the manifest again
    weights.write_bytes(weights.read_bytes())
    with pytest.raises(QueryModelUnavailable, match="changed"):
        _query_model(library)
    with Library.open(cfg) as lib:
        assert isinstance(lib.encoder(), ClipEncoder)
        assert lib.search("a dog", k=3).hits
    assert _query_model(library).checkpoint_sha256 == doc["sha256"]


@pytest.mark.slow
def test_another_checkpoint_at_the_same_path_is_refused_loudly(library):
    cfg, weights = library["cfg"], library["weights"]
    original = weights.read_bytes()
    write_random_checkpoint(weights, "tiny-vit", seed=7)
    try:
        with pytest.raises(QueryModelUnavailable, match="changed"):
            _query_model(library)
        with Library.open(cfg) as lib:
            with pytest.raises(ModelMismatchError):
                lib.search("a dog", k=3)
            assert isinstance(lib.encoder(), ClipEncoder)
    finally:
        weights.write_bytes(original)


@pytest.mark.slow
def test_runs_the_text_tower_the_verdict_chose(library):
    """When the int8 text graph fails its self-check (its cached measurement says so), the
    recorded verdict moves the texts down the chain, and the torch-free path follows it."""
    cfg = library["cfg"]
    ClipEncoder.from_config(cfg, 1)  # (re)records the manifest
    model = _query_model(library)
    assert model.text_path == "onnxruntime int8"
    check_file = next(f for f in model.doc["checks"] if f.endswith("-fidelity.json"))
    original = open(check_file).read()
    check = json.loads(original)
    check["texts"] = {"mean": 0.5, "min": 0.2, "n": check["texts"]["n"]}  # a failed text check
    with open(check_file, "w") as f:
        json.dump(check, f)
    try:
        with pytest.raises(QueryModelUnavailable, match="self-check"):
            _query_model(library)  # the verdict it recorded no longer holds
        full = ClipEncoder.from_config(cfg, 1)  # int8 images, the texts further down the chain
        assert full.model.fidelity.text_path != "onnxruntime int8"
        enc, why = QueryEncoder.from_config(cfg)
        if full.model.fidelity.text_path.startswith("onnxruntime"):
            assert enc is not None and enc.model.text_path == full.model.fidelity.text_path
            batch = ["a dog", "a red bus " * 40]
            np.testing.assert_allclose(enc.encode_texts(batch), full.encode_texts(batch),
                                       atol=2e-5)  # fmt: skip
        else:  # texts on torch: queries need the torch path, and say so
            assert enc is None and "need torch" in why
    finally:
        with open(check_file, "w") as f:
            f.write(original)


def test_ui_server_preloads_the_library_and_the_query_encoder(library):
    """``app.serve`` loads both before Streamlit serves the page; the page takes them over."""
    from app import state

    cfg_file = os.fspath(library["file"])
    state.start_preload(cfg_file).join()
    cfg = load_config(cfg_file)
    lib = state._PRELOADED[("library", state._config_key(cfg))]
    enc = state._PRELOADED[("encoder", state._model_key(cfg))]
    assert isinstance(enc, QueryEncoder) and lib.encoder() is enc
    assert state.get_library(cfg) is lib and state.get_encoder(cfg) is enc
    assert not state._PRELOADED  # handed over once
    assert lib.search("a dog", k=3).hits
