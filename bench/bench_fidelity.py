"""Fidelity of the indexing fast paths against the exact path, on real photos.

    .venv/bin/python -m bench.bench_fidelity                       # random ViT-B/32
    .venv/bin/python -m bench.bench_fidelity --weights ViT-B-32.pt # the same check on real weights
    .venv/bin/python -m bench.bench_fidelity --stress              # stress checkpoints (issue 13)

Exact path: full JPEG decode + clipmodel's official preprocessing, model in fp32 (torch).
Fast paths: JPEG draft decoding (libjpeg DCT scaling) before the same preprocessing, the
resize done by torch's antialiased bicubic instead of Pillow's (``index.fast_resize``:
clipmodel.preprocess.resize_fast), the model in bf16 (torch), and the int8 ONNX Runtime
encoders (clipmodel.onnx_backend, the default on CPU when installed). Reports the model
input's mean/max absolute pixel difference and the embedding cosine (min and median) to the
exact path, for images and for real captions (the text encoder serves queries and tags),
and the pixel difference of the UI thumbnails the indexer makes. Fast paths are on by
default only where cosine >= 0.999.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

import clipmodel as clip
from clipmodel.preprocess import (
    center_crop,
    open_image,
    resize_short_side_fast,
    to_supported_mode,
    to_tensor,
)
from indexer.embed.images import decode, draft_target, thumbnail_image, thumbnail_source

from .datasets import CACHE, benchmark_weights, coco_photos, make_large_jpegs

THUMB = 256  # index.thumbnail_size's default


def inputs(paths: list[Path], preprocess, draft: int | None) -> torch.Tensor:
    out = []
    for p in paths:
        if draft is None:
            out.append(preprocess(Image.open(p)))
        else:
            out.append(preprocess(decode(p.read_bytes(), 10**9, draft).image))
    return torch.stack(out)


def fast_resize_preprocess(n_px: int):
    """The official preprocessing with the resize done by ``resize_short_side_fast``."""

    def preprocess(image) -> torch.Tensor:
        img = to_supported_mode(open_image(image))
        return to_tensor(center_crop(resize_short_side_fast(img, n_px), n_px))

    return preprocess


@torch.inference_mode()
def embed(model, x: torch.Tensor) -> torch.Tensor:
    chunks = [model.encode_image(x[i : i + 32]) for i in range(0, len(x), 32)]
    return F.normalize(torch.cat(chunks).float(), dim=-1)


@torch.inference_mode()
def embed_texts(model, captions: list[str]) -> torch.Tensor:
    tokens = clip.tokenize(captions, truncate=True)
    chunks = [model.encode_text(tokens[i : i + 64]) for i in range(0, len(tokens), 64)]
    return F.normalize(torch.cat(chunks).float(), dim=-1)


def run(weights: Path, datasets: dict[str, list[Path]], captions: list[str]) -> list[dict]:
    m32, preprocess = clip.load(weights, device="cpu", precision="fp32")
    m16, _ = clip.load(weights, device="cpu", precision="bf16")
    cache = Path(tempfile.mkdtemp(prefix="bench-onnx-"))
    # As `clipsearch index` runs it on 2 CPUs: two single-threaded sessions, calls of 8 images
    # (dynamic quantization scales activations per call).
    m8, _ = clip.load(weights, backend="onnxruntime", precision="int8", download_root=cache,
                      threads=2, image_sessions=2)  # fmt: skip
    draft = max(draft_target(m32.image_resolution), THUMB)  # as the indexing pipeline does
    fast_pre = fast_resize_preprocess(m32.image_resolution)
    # Pixel differences in 0..255 units of the un-normalised image.
    std255 = torch.tensor(clip.preprocess.STD).view(1, 3, 1, 1) * 255
    rows = []
    for name, paths in datasets.items():
        exact_x = inputs(paths, preprocess, None)
        fast_x = inputs(paths, preprocess, draft)
        resize_x = inputs(paths, fast_pre, None)
        draft_resize_x = inputs(paths, fast_pre, draft)
        ref = embed(m32, exact_x)
        for variant, model, x in [
            ("bf16 model", m16, exact_x),
            ("draft decode", m32, fast_x),
            ("draft + bf16", m16, fast_x),
            ("int8 onnxruntime model", m8, exact_x),
            ("draft + int8 onnxruntime", m8, fast_x),
            ("fast resize", m32, resize_x),
            ("draft + fast resize", m32, draft_resize_x),
            ("draft + fast resize + int8 onnxruntime (default)", m8, draft_resize_x),
        ]:
            cos = (embed(model, x) * ref).sum(-1)
            diff255 = (x - exact_x).abs() * std255
            rows.append(
                {
                    "dataset": name,
                    "images": len(paths),
                    "fast path": variant,
                    "pixel_mean_abs": float(diff255.mean()),
                    "pixel_max_abs": float(diff255.max()),
                    "cos_min": float(cos.min()),
                    "cos_median": float(statistics.median(cos.tolist())),
                }
            )
        rows.append(thumbnail_row(name, paths, m32.image_resolution, draft))
    if captions:
        ref = embed_texts(m32, captions)
        for variant, model in [("bf16 text encoder", m16), ("int8 onnxruntime text (default)", m8)]:
            cos = (embed_texts(model, captions) * ref).sum(-1)
            rows.append({"dataset": "COCO captions", "images": len(captions), "fast path": variant,
                         "pixel_mean_abs": 0.0, "pixel_max_abs": 0.0, "cos_min": float(cos.min()),
                         "cos_median": float(statistics.median(cos.tolist()))})  # fmt: skip
    return rows


def thumbnail_row(name: str, paths: list[Path], n_px: int, draft: int) -> dict:
    """The UI thumbnails (256 px) the indexer makes by default (draft decode, cut from the
    model-size fast resize) against Pillow's bicubic from the full decode."""
    diffs, worst = [], 0
    for p in paths:
        data = p.read_bytes()
        full = decode(data, 10**9).image
        exact = np.asarray(thumbnail_image(full, THUMB), dtype=np.int16)
        dec = decode(data, 10**9, draft).image
        src = thumbnail_source(dec, resize_short_side_fast(dec, n_px), THUMB, fast=True)
        fast = np.asarray(thumbnail_image(src, THUMB, fast=True, full_size=full.size))
        d = np.abs(exact - fast)
        diffs.append(float(d.mean()))
        worst = max(worst, int(d.max()))
    return {"dataset": name, "images": len(paths), "fast path": "thumbnail (default)",
            "pixel_mean_abs": statistics.mean(diffs), "pixel_max_abs": float(worst),
            "cos_min": None, "cos_median": None}  # fmt: skip


def coco_captions(n: int) -> list[str]:
    from .datasets import COCO

    path = COCO / "annotations" / "captions_val2017.json"
    if not path.exists():
        return []
    return [a["caption"] for a in json.loads(path.read_text())["annotations"][:n]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--weights", help="checkpoint (default: a random ViT-B/32)")
    ap.add_argument("--web", type=int, default=100)
    ap.add_argument("--large", type=int, default=40)
    ap.add_argument("--captions", type=int, default=500)
    ap.add_argument("--json")
    ap.add_argument(
        "--stress",
        action="store_true",
        help="the stress checkpoints (bench/stress_fidelity.py) beside a plain one",
    )
    ap.add_argument("--arch", default="ViT-B/32", help="--stress: the architecture")
    ap.add_argument("--kinds", default="", help="--stress: kinds (default: all for --arch)")
    ap.add_argument("--strengths", default="10,30,100", help="--stress: strengths")
    ap.add_argument("--photos", type=int, default=0, help="--stress: photos (0: all coco-mini)")
    ap.add_argument("--timing", type=int, default=0, help="--stress: photos timed (0: all)")
    args = ap.parse_args()
    if args.stress:
        stress_main(args)
        return
    weights = benchmark_weights(args.weights)
    datasets = {"web size (coco-mini)": coco_photos(args.web)}
    if args.large:
        datasets["12 MP JPEG"] = make_large_jpegs(CACHE / "large-12mp", args.large)
    rows = run(weights, datasets, coco_captions(args.captions))
    print(f"checkpoint: {weights}; exact path = full decode + official preprocessing + fp32")
    print("| dataset | fast path | pixel diff mean / max (0-255) | cosine min / median |")
    print("|---|---|---|---|")
    for r in rows:
        cos = "-" if r["cos_min"] is None else f"{r['cos_min']:.5f} / {r['cos_median']:.5f}"
        print(
            f"| {r['dataset']} ({r['images']}) | {r['fast path']} | "
            f"{r['pixel_mean_abs']:.3f} / {r['pixel_max_abs']:.1f} | {cos} |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    worst = min(r["cos_min"] for r in rows if r["cos_min"] is not None)
    print(f"worst cosine {worst:.5f}: {'meets' if worst >= 0.999 else 'FAILS'} the 0.999 bar")


def stress_main(args) -> None:
    from tests.stress_checkpoints import RESNET_KINDS, TRANSFORMER_KINDS

    from .stress_fidelity import HEADER, format_row, stress_rows

    resnet = args.arch.startswith("RN")
    kinds = (
        args.kinds.split(",")
        if args.kinds
        else ([*RESNET_KINDS, *TRANSFORMER_KINDS] if resnet else list(TRANSFORMER_KINDS))
    )
    strengths = [int(s) for s in args.strengths.split(",")]
    cases = [("plain", 1)] + [(k, s) for k in kinds for s in strengths]
    photos = coco_photos(args.photos or None)
    captions = coco_captions(args.captions)
    print(
        f"{args.arch}: {len(photos)} coco-mini photos, {len(captions)} captions; exact = fp32 "
        "torch, official preprocessing; path = clipmodel.load(backend='auto', precision='auto')"
    )
    print(HEADER, flush=True)
    rows = stress_rows(args.arch, cases, photos, captions, args.timing)
    print("\n" + HEADER)
    for r in rows:
        print(format_row(r))
    bad = [r for r in rows if not (r["images"].passed and r["texts"].passed)]
    print(f"{len(rows) - len(bad)}/{len(rows)} meet mean >= 0.999 and min >= 0.99")
    if args.json:
        for r in rows:
            r["images"], r["texts"] = vars(r["images"]), vars(r["texts"])
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
