"""Issue 20, OCR end to end with the real engines (RapidOCR, Tesseract) on real photos with
words drawn on them: the ``text:`` query syntax, indexing then reading text on SQLite and
PostgreSQL, bad inputs recorded, the CLI (no torch for a text-only query) and the watch
daemon reading a newly copied photo."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from indexer.config import load_config
from indexer.library import Library
from indexer.ocr.engines import OcrUnavailableError, TesseractEngine, is_document
from indexer.search.engine import QueryError
from indexer.search.parse import QueryTerm, parse_query
from indexer.search.textmatch import match_quality, snippet

from .indexer_helpers import REPO, cli_env, run_cli, write_config
from .ocr_images import document_page, photo_with_word, random_word

pytest.importorskip("rapidocr_onnxruntime", reason="OCR tests need pip install 'clipsearch[ocr]'")
if shutil.which("tesseract") is None:
    pytest.skip("OCR tests need Tesseract: apt-get install tesseract-ocr", allow_module_level=True)


def test_parse_text_terms():
    assert parse_query('text:"invoice 2023"') == [QueryTerm(1.0, "ocr", "invoice 2023")]
    assert parse_query("TEXT: sale") == [QueryTerm(1.0, "ocr", "sale")]
    assert parse_query('a dog + text:"no  parking" - text:closed') == [
        QueryTerm(1.0, "text", "a dog"), QueryTerm(1.0, "ocr", "no parking"),
        QueryTerm(-1.0, "ocr", "closed")]  # fmt: skip
    assert parse_query("2:text:exit")[0] == QueryTerm(1.0, "ocr", "exit")  # weights do not apply
    assert parse_query("context: beach")[0].kind == "text"  # only the text: prefix
    for bad in ("text:", 'text:""', "text: !!"):
        with pytest.raises(ValueError, match="text:"):
            parse_query(bad)


def test_match_quality_and_snippet():
    assert match_quality("Invoice 2023\nTotal", "invoice 2023") == 1.0
    assert match_quality("INVOICE-2023", "invoice 2023") == 1.0
    assert match_quality("Invoice2023", "invoice 2023") == 1.0  # RapidOCR dropped the space
    assert match_quality("reinvoice2023x", "invoice") == 0.5
    assert match_quality("other", "invoice") == 0.0
    assert snippet("line one\nInvoice2023 due\nlast", ["invoice 2023"]) == "Invoice2023 due"
    assert len(snippet("word " * 100, ["word"], limit=40)) == 40


def _make_library(folder: Path, rng: np.random.Generator, photos: list[Path]) -> dict:
    """Photos with a word on a band each, one page of lines; returns {word or phrase: file}."""
    folder.mkdir(parents=True)
    out = {}
    for i, (src, size, angle) in enumerate(zip(photos, (24, 32, 40), (0, 15, -12))):
        word = random_word(rng, 6, 8)
        img, _ = photo_with_word(src, word, rng, size=size, angle=angle, band=True)
        img.save(folder / f"sign{i}.jpg", quality=95)
        out[word] = folder / f"sign{i}.jpg"
    lines = [[random_word(rng) for _ in range(5)] for _ in range(8)]
    document_page(lines, rng, sizes=(28, 36)).save(folder / "page.png")
    out[" ".join(lines[2][1:3])] = folder / "page.png"  # two words of one line: a phrase
    out[lines[6][0]] = folder / "page.png"
    return out


def test_index_then_read_text_and_search(tmp_path, coco_images, tiny_checkpoint, database):
    rng = np.random.default_rng(20)
    words = _make_library(tmp_path / "photos", rng, coco_images[:3])
    shutil.copyfile(coco_images[3], tmp_path / "photos" / "gone.jpg")  # vanishes before OCR
    (tmp_path / "photos" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    cfg = load_config(write_config(tmp_path / "c.yaml", [tmp_path / "photos"], tmp_path / "idx",
                                   tiny_checkpoint, database=database, ocr={"enabled": True}))  # fmt: skip
    with Library.open(cfg, writer=True) as lib:
        rep = lib.index(progress=False)
        assert rep.errors == 1 and rep.added == 5
        assert lib.status()["ocr"] == {"enabled": True, "read": 0, "with_text": 0, "errors": 0,
                                       "pending": 5}  # indexing alone reads no text
        (tmp_path / "photos" / "gone.jpg").unlink()
        ocr = lib.ocr.run()
        assert (ocr.read, ocr.errors, ocr.pending) == (5, 1, 0), ocr
        assert ocr.engines.get("tesseract+rapidocr") == 1, ocr.engines  # the page: both
        assert lib.ocr.run().read == 0  # nothing pending any more
        errors = lib.store.ocr_errors()
        assert len(errors) == 1 and "gone.jpg" in lib.get_image(errors[0].image_id).path
        assert "No such file" in errors[0].error or "not found" in errors[0].error.lower()
    with Library.open(cfg) as lib:
        for phrase, path in words.items():
            res = lib.search(f'text:"{phrase}"')
            assert [h.path for h in res.hits] == [os.fspath(path)], (phrase, res.hits)
            assert res.cutoff == "text" and res.hits[0].text
            assert "".join(phrase.split()) in "".join(res.hits[0].text.lower().split())
            # mixed with a semantic term: a filter of the candidates; excluded by - text:
            mixed = lib.search(f'a photo + text:"{phrase}"', k=10)
            assert [h.path for h in mixed.hits] == [os.fspath(path)] and mixed.candidates == 1
            assert mixed.hits[0].to_dict()["text"] == mixed.hits[0].text
            rest = lib.search(f'a photo - text:"{phrase}"', k=10).hits
            assert os.fspath(path) not in {h.path for h in rest} and len(rest) == 4
        sign = next(iter(words))
        assert lib.search(f"text:{sign.upper()}").hits[0].path == os.fspath(words[sign])
        assert lib.search(f"text:{sign}", folder=tmp_path / "elsewhere").hits == []
        assert lib.search("text:qqqqqqqqzzz").hits == []
        with pytest.raises(QueryError, match="excluded text only"):
            lib.search(f"- text:{sign}")
        assert lib.ocr.image_text(lib.search(f"text:{sign}").hits[0].id).engine == "rapidocr"


def test_cli_index_ocr_and_text_search_without_torch(tmp_path, coco_images, tiny_checkpoint):
    rng = np.random.default_rng(7)
    words = _make_library(tmp_path / "photos", rng, coco_images[4:7])
    cfg = write_config(tmp_path / "c.yaml", [tmp_path / "photos"], tmp_path / "idx",
                       tiny_checkpoint, ocr={"enabled": True})  # fmt: skip
    proc = run_cli(["index", "--json"], cfg)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["added"] == 4 and doc["ocr"]["read"] == 4 and doc["ocr"]["pending"] == 0
    word = next(iter(words))
    code = ("import json, sys; from indexer.cli import main; rc = main(sys.argv[1:]); "
            "print(json.dumps({'rc': rc, 'torch': 'torch' in sys.modules}), file=sys.stderr)")  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", code, "--config", os.fspath(cfg), "search",
                           f"text:{word}", "--json"], capture_output=True, text=True,
                          env=cli_env(), cwd=REPO, timeout=120)  # fmt: skip
    tail = json.loads(proc.stderr.strip().splitlines()[-1])
    assert tail == {"rc": 0, "torch": False}, proc.stderr
    out = json.loads(proc.stdout)
    assert [r["path"] for r in out["results"]] == [os.fspath(words[word])]
    assert word in out["results"][0]["text"].lower() and out["cutoff"] == "text"
    plain = run_cli(["search", f"text:{word}"], cfg)
    assert "[text: " in plain.stdout and word in plain.stdout.lower()
    status = run_cli(["status"], cfg).stdout
    assert "text:     4 photos read" in status
    again = run_cli(["ocr", "--json", "--errors"], cfg)
    assert json.loads(again.stdout)["read"] == 0 and json.loads(again.stdout)["error_files"] == []


def test_missing_engine_names_the_install(monkeypatch):
    with pytest.raises(OcrUnavailableError, match="apt-get install tesseract-ocr-xyz"):
        TesseractEngine("eng+xyz")
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(OcrUnavailableError, match="apt-get install tesseract-ocr"):
        TesseractEngine("eng")
    monkeypatch.setitem(sys.modules, "rapidocr_onnxruntime", None)  # an import that fails
    from indexer.ocr.engines import RapidOcrEngine, make_engine

    with pytest.raises(OcrUnavailableError, match=r"pip install 'clipsearch\[ocr\]'"):
        RapidOcrEngine()
    with pytest.raises(OcrUnavailableError, match="no OCR engine is installed"):
        make_engine("auto")


def test_page_detector(coco_images):
    from PIL import Image

    rng = np.random.default_rng(3)
    assert is_document(document_page([[random_word(rng) for _ in range(6)]] * 12, rng))
    photos = [Image.open(p) for p in coco_images[:40]]
    assert sum(is_document(p) for p in photos) <= 2  # a pale photo may pass: auto falls back


def test_watch_reads_text_of_a_new_photo(tmp_path, coco_images, tiny_checkpoint):
    rng = np.random.default_rng(11)
    (tmp_path / "photos").mkdir()
    cfg_path = write_config(tmp_path / "c.yaml", [tmp_path / "photos"], tmp_path / "idx",
                            tiny_checkpoint, ocr={"enabled": True},
                            watch={"debounce_seconds": 0.5, "stable_checks": 2})  # fmt: skip
    cmd = [sys.executable, "-m", "indexer.cli", "--config", str(cfg_path), "watch", "--log-file",
           str(tmp_path / "watch.log")]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=REPO, env=cli_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        from indexer.watch.status import read_status

        cfg = load_config(cfg_path)
        deadline = time.monotonic() + 90
        while (read_status(cfg.index_dir) or {}).get("state") != "watching":
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
            time.sleep(0.1)
        word = random_word(rng, 7, 8)
        img, _ = photo_with_word(coco_images[8], word, rng, size=36, band=True)
        img.save(tmp_path / "new.jpg", quality=95)
        os.replace(tmp_path / "new.jpg", tmp_path / "photos" / "new.jpg")
        with Library.open(cfg) as lib:
            while not lib.search(f"text:{word}").hits:
                assert proc.poll() is None, proc.stderr.read()
                assert time.monotonic() < deadline + 60, (tmp_path / "watch.log").read_text()
                time.sleep(0.2)
            assert lib.search(f"text:{word}").hits[0].path == os.fspath(tmp_path / "photos" / "new.jpg")
        log = (tmp_path / "watch.log").read_text()
        assert "text: 1 photos read (1 with text, 0 errors)" in log
        assert log.index("batch 1:") < log.index("text: 1 photos read")  # vectors first
    finally:
        proc.terminate()
        assert proc.wait(timeout=60) == 0
        proc.stderr.close()
