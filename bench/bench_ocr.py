"""Issue 20 acceptance numbers for OCR: ``text:`` queries on real photos with words drawn on
them and on document-like pages, through the real pipeline, store and engines.

    .venv/bin/python -m bench.bench_ocr [--photos 120] [--pages 24] [--runs 3] [--weights CKPT]

Each photo (coco-mini, then the sample photos) gets two random words of 5-8 letters (no "l":
see ``tests/ocr_images.py``): one on a plain band (a sign / label / caption: a light or dark
box) in its upper half and one straight on the photo in its lower half (black or white,
whichever stands out from what lies under it), at sizes 20-48 px and angles 0, +-15 and 90
degrees. Pages are white A4 sheets (150 dpi) of 12-20 lines of 5 words at 20-36 px. A few bad
inputs join them (a truncated JPEG, an empty file, a photo removed before its text is read).

Reported: the share of words ``text:WORD`` finds the right image for (band words, on-photo
words by the brightness under them, page words), precision (returned images that contain the
word), OCR seconds per photo and per page, and indexing throughput with OCR off against
main's code on the same files (``git archive main``; runs interleaved), and with OCR on:
when the vectors were committed and how long the text took after them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import yaml

from .datasets import REPO, benchmark_weights, coco_photos

SAMPLES = REPO.parent / "shared" / "datasets" / "sample-photos"
SIZES, ANGLES = (20, 24, 32, 40, 48), (0, 0, 15, -15, 90)
BRIGHTNESS_BINS = ((0, 64, "dark (0-63)"), (64, 128, "dim (64-127)"), (128, 192, "bright (128-191)"),
                   (192, 256, "very bright (192-255)"))  # fmt: skip


def make_inputs(folder: Path, n_photos: int, n_pages: int, seed: int) -> dict:
    """The photos, pages and bad files; returns {"words": [...], "bad": [...]}."""
    from PIL import Image

    from tests.ocr_images import document_page, draw_word, fonts, random_word

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    sources = (coco_photos() + sorted(p for p in SAMPLES.iterdir() if p.suffix in (".jpg", ".png")))
    words = []
    for i, src in enumerate(sources[:n_photos]):
        img = Image.open(src).convert("RGB")
        if min(img.size) < 200:
            img = img.resize((img.width * 2, img.height * 2))
        name = f"photo_{i:03d}.jpg"
        for band, region in ((True, (0, 0, img.width, img.height // 2)),
                             (False, (0, img.height // 2, img.width, img.height))):  # fmt: skip
            font = fonts()[int(rng.integers(len(fonts())))]
            size, angle = int(rng.choice(SIZES)), float(rng.choice(ANGLES))
            d = draw_word(img, random_word(rng), font, size, angle, band, rng, region)
            words.append({"file": name, "kind": "band" if band else "photo", "word": d.word,
                          "size": size, "angle": angle, "brightness": d.brightness})  # fmt: skip
        img.save(folder / name, quality=92)
    for i in range(n_pages):
        lines = [[random_word(rng) for _ in range(5)] for _ in range(int(rng.integers(12, 21)))]
        name = f"page_{i:02d}.png"
        document_page(lines, rng, sizes=(20, 24, 28, 36)).save(folder / name)
        words += [{"file": name, "kind": "page", "word": w} for line in lines for w in line]
    (folder / "bad_truncated.jpg").write_bytes((folder / "photo_000.jpg").read_bytes()[:300])
    (folder / "bad_empty.jpg").write_bytes(b"")
    shutil.copyfile(folder / "photo_001.jpg", folder / "bad_vanishes.jpg")
    return {"words": words, "bad": ["bad_truncated.jpg", "bad_empty.jpg", "bad_vanishes.jpg"]}


def _config(path: Path, photos: Path, index: Path, weights: Path, ocr: bool) -> Path:
    path.write_text(yaml.safe_dump({
        "model": {"weights": os.fspath(weights)}, "library": {"roots": [os.fspath(photos)]},
        "index": {"dir": os.fspath(index)}, **({"ocr": {"enabled": True}} if ocr else {})}))  # fmt: skip
    return path


def _index(src: Path, config: Path, extra_env: dict | None = None) -> dict:
    env = {**os.environ, "PYTHONPATH": os.fspath(src), "PYTHONDONTWRITEBYTECODE": "1", **(extra_env or {})}
    proc = subprocess.run([sys.executable, "-m", "indexer.cli", "--config", os.fspath(config), "index",
                           "--json", "--no-progress"], capture_output=True, text=True, env=env, cwd=src)  # fmt: skip
    if proc.returncode != 0:
        raise SystemExit(f"index failed ({src}):\n{proc.stderr}")
    return json.loads(proc.stdout)


def throughput(work: Path, photos: Path, weights: Path, runs: int) -> dict:
    """images/s of `clipsearch index` with OCR off: this tree vs main's, runs interleaved."""
    main_src = work / "main-src"
    main_src.mkdir()
    archive = subprocess.run(["git", "archive", "main"], cwd=REPO, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", os.fspath(main_src)], input=archive.stdout, check=True)
    out: dict[str, list[float]] = {"this branch, OCR off": [], "main": []}
    for r in range(-1, runs):  # run -1: a warm-up of each side (model caches), not counted
        for label, src in (("this branch, OCR off", REPO), ("main", main_src)):
            idx = work / f"idx-{label.split()[0]}-{r}"
            doc = _index(src, _config(work / "c.yaml", photos, idx, weights, False))
            if r >= 0:
                out[label].append(doc["images_per_second"])
            shutil.rmtree(idx)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--photos", type=int, default=120)
    ap.add_argument("--pages", type=int, default=24)
    ap.add_argument("--runs", type=int, default=3, help="throughput runs per side")
    ap.add_argument("--seed", type=int, default=20)
    ap.add_argument("--weights", help="checkpoint (default: a cached random ViT-B/32)")
    ap.add_argument("--json", help="also write the numbers to this file")
    args = ap.parse_args()
    weights = benchmark_weights(args.weights)
    work = Path(tempfile.mkdtemp(prefix="bench-ocr-"))
    photos = work / "photos"
    inputs = make_inputs(photos, args.photos, args.pages, args.seed)
    words = inputs["words"]
    print(f"{args.photos} photos, {args.pages} pages, {len(words)} words, {len(inputs['bad'])} bad "
          f"inputs in {photos}", flush=True)  # fmt: skip
    speeds = throughput(work, photos, weights, args.runs) if args.runs else {}
    # OCR on: vectors committed first, then the text (the JSON has both reports)
    cfg_path = _config(work / "ocr.yaml", photos, work / "idx-ocr", weights, True)
    from indexer.config import load_config
    from indexer.library import Library

    cfg = load_config(cfg_path)
    with Library.open(cfg, writer=True) as lib:
        rep = lib.index(progress=False)
        (photos / "bad_vanishes.jpg").unlink()  # indexed, then gone before its text is read
        ocr = lib.ocr.run()
        errors = {os.path.basename(lib.get_image(e.image_id).path): e.error for e in lib.store.ocr_errors()}
        index_errors = {os.path.basename(r.path): r.error for r in lib.store.errors()}
    found, returned, correct = {}, 0, 0
    with Library.open(cfg) as lib:
        paths = {os.path.basename(r.path): r.id for r in (lib.get_image(i) for i in
                 lib.store.filter_ids().tolist()) if r}  # fmt: skip
        texts = lib.store.image_texts(list(paths.values()))
        for w in words:
            res = lib.search(f"text:{w['word']}", k=10_000).hits
            names = [os.path.basename(h.path) for h in res]
            found[id(w)] = w["file"] in names
            returned += len(names)
            correct += sum(n == w["file"] for n in names)
    _report(words, found, returned, correct, texts, paths, rep, ocr, errors, index_errors, speeds, args)


def _rate(ws: list[dict], found: dict) -> str:
    return f"{sum(found[id(w)] for w in ws) / len(ws):.1%} ({sum(found[id(w)] for w in ws)}/{len(ws)})" if ws else "-"


def _report(words, found, returned, correct, texts, paths, rep, ocr, errors, index_errors, speeds, args) -> None:  # noqa: ANN001
    band = [w for w in words if w["kind"] == "band"]
    photo = [w for w in words if w["kind"] == "photo"]
    page = [w for w in words if w["kind"] == "page"]
    secs = {k: [texts[i].seconds for n, i in paths.items() if n.startswith(k) and i in texts]
            for k in ("photo_", "page_")}  # fmt: skip
    engines = {k: sorted({texts[i].engine for n, i in paths.items() if n.startswith(k) and i in texts})
               for k in ("photo_", "page_")}  # fmt: skip
    print("\n| words | found by `text:WORD` |\n|---|---|")
    print(f"| on a plain band (target >= 90%) | **{_rate(band, found)}** |")
    for size in SIZES:
        print(f"| band, {size} px | {_rate([w for w in band if w['size'] == size], found)} |")
    for angle in sorted(set(ANGLES)):
        print(f"| band, {angle:+g} deg | {_rate([w for w in band if w['angle'] == angle], found)} |")
    print(f"| straight on the photo, all | **{_rate(photo, found)}** |")
    for lo, hi, label in BRIGHTNESS_BINS:
        print(f"| on the photo, background {label} | "
              f"{_rate([w for w in photo if lo <= w['brightness'] < hi], found)} |")  # fmt: skip
    for size in SIZES:
        print(f"| on the photo, {size} px | {_rate([w for w in photo if w['size'] == size], found)} |")
    print(f"| document pages (target >= 95%) | **{_rate(page, found)}** |")
    print(f"\nprecision: {correct / max(returned, 1):.2%} ({correct} of {returned} returned images "
          "contain the word)")  # fmt: skip
    for k, label in (("photo_", "photo"), ("page_", "page")):
        s = secs[k]
        if s:
            print(f"OCR seconds per {label}: median {statistics.median(s):.2f}, mean "
                  f"{statistics.mean(s):.2f}, max {max(s):.2f} (engines: {', '.join(engines[k])})")  # fmt: skip
    print(f"OCR on: {rep.encoded} vectors committed in {rep.seconds:.1f} s "
          f"({rep.images_per_second:.1f} img/s), then text: {ocr.read} images in {ocr.seconds:.1f} s "
          f"({ocr.with_text} with text, {ocr.errors} errors, engines {ocr.engines})")  # fmt: skip
    print(f"bad inputs recorded: index errors {index_errors}; OCR errors {errors}")
    for label, runs in speeds.items():
        print(f"indexing, {label}: median {statistics.median(runs):.1f} img/s (runs {runs})")
    if args.json:
        Path(args.json).write_text(json.dumps({"speeds": speeds, "ocr": ocr.to_dict()}, indent=1))


if __name__ == "__main__":
    main()
