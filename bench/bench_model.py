"""Model-level benchmark: image throughput, text latency and fast-path fidelity per runtime.

    .venv/bin/python -m bench.bench_model                       # random ViT-B/32 checkpoint
    .venv/bin/python -m bench.bench_model --weights ViT-B-32.pt # your real checkpoint
    .venv/bin/python -m bench.bench_model --family siglip2      # a random SigLIP2 ViT-B/16

Runtimes: torch fp32 / bf16 (eager, SDPA) and ONNX Runtime fp32 / int8 (clipmodel's
onnx_backend; its one-time export is timed separately). Reports medians (and ratios to torch
fp32) from one run; the fidelity columns compare each runtime's L2-normalised embeddings of
real photos and captions with the torch fp32 path.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import clipmodel as clip
from clipmodel.tokenizer import model_tokenizer

REPO = Path(__file__).resolve().parent.parent
PHOTOS = REPO.parent / "shared" / "datasets" / "coco-mini" / "val2017"
QUERIES = ["kids on a beach at sunset", "a dog", "a red car parked next to a river at night"]
CAPTIONS = PHOTOS.parent / "annotations" / "captions_val2017.json"


def texts(n: int = 200) -> list[str]:
    """Real captions (COCO) for the text fidelity column, plus the queries."""
    if not CAPTIONS.exists():
        return QUERIES
    return QUERIES + [a["caption"] for a in json.loads(CAPTIONS.read_text())["annotations"][:n]]


def median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def random_checkpoint(arch: str) -> Path:
    from tests.checkpoints import write_random_checkpoint

    return write_random_checkpoint(Path(tempfile.mkdtemp()) / "model.pt", arch, seed=1)


def random_family(family: str) -> Path:
    """A random model folder of transformers' default size for ``family`` (ViT-B/16)."""
    from tests.family_checkpoints import write_siglip, write_xlmr

    folder = Path(tempfile.mkdtemp()) / family
    if family == "xlm-roberta":
        write_xlmr(folder, seed=1, full=True)
    else:
        write_siglip(folder, family, seed=1, full=True)
    return folder


VARIANTS = {  # name -> clipmodel.load arguments
    "torch fp32": {"precision": "fp32"},
    "torch bf16": {"precision": "bf16"},
    "onnxruntime fp32": {"precision": "fp32", "backend": "onnxruntime"},
    "onnxruntime int8": {"precision": "int8", "backend": "onnxruntime"},
    # as `clipsearch index` runs it below 4 CPUs: one single-threaded session per thread
    "onnxruntime int8 sessions": {"precision": "int8", "backend": "onnxruntime", "split": True},
}


def load_variant(weights: Path, variant: str, threads: int, cache: Path):
    """(model, preprocess, seconds to load); ONNX variants export into ``cache`` if cold."""
    start = time.perf_counter()
    kwargs = dict(VARIANTS[variant])
    if kwargs.pop("split", False):
        kwargs["image_sessions"] = threads
    if kwargs.get("backend") == "onnxruntime":
        kwargs.update(download_root=cache, threads=threads)
    model, preprocess = clip.load(weights, device="cpu", **kwargs)
    return model, preprocess, time.perf_counter() - start


@torch.inference_mode()
def run(weights: Path, variants: list[str], batch: int, threads: int, repeats: int) -> list[dict]:
    torch.set_num_threads(threads)
    photos = sorted(PHOTOS.glob("*.jpg"))[:batch]
    rows, reference = [], None
    cache = Path(tempfile.mkdtemp(prefix="bench-onnx-"))  # cold: the export is measured
    for variant in variants:
        model, preprocess, load_s = load_variant(weights, variant, threads, cache)
        images = torch.stack([preprocess(p) for p in photos]) if photos else None
        if images is None or len(images) < batch:
            images = torch.randn(batch, 3, model.image_resolution, model.image_resolution)
        if getattr(model, "pixel_input", False):
            # what the indexer feeds an int8 ViT: 8-bit pixel patches from its decode workers
            from clipmodel.onnx_backend import image_patches, pixels_from_normalized

            patches = image_patches(pixels_from_normalized(images.numpy()), model.patch_size)
            img_s = median_time(lambda m=model, x=patches: m.encode_pixels(x), repeats)
        else:
            img_s = median_time(lambda m=model, x=images: m.encode_image(x), repeats)
        tokenize = model_tokenizer(model)
        tokens = tokenize(QUERIES[:1])
        txt_s = median_time(lambda m=model, t=tokens: m.encode_text(t), repeats * 5)
        emb_i = F.normalize(model.encode_image(images).float(), dim=-1)
        emb_t = F.normalize(model.encode_text(tokenize(texts(), truncate=True)).float(), dim=-1)
        if reference is None:
            reference = (emb_i, emb_t)
        cos_i = (emb_i * reference[0]).sum(-1)
        cos_t = (emb_t * reference[1]).sum(-1)
        rows.append(
            {
                "runtime": variant,
                "load_s": load_s,
                "images_per_s": len(images) / img_s,
                "text_ms": txt_s * 1000,
                "image_cos_min": cos_i.min().item(),
                "text_cos_min": cos_t.min().item(),
            }
        )
    base = rows[0]
    for r in rows:
        r["speedup"] = r["images_per_s"] / base["images_per_s"]
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--weights", help="checkpoint path (default: a random ViT-B/32)")
    ap.add_argument("--arch", default="ViT-B/32", help="architecture of the random checkpoint")
    ap.add_argument("--family", choices=["siglip", "siglip2", "xlm-roberta"],
                    help="a random model of this family instead (transformers' default size)")
    ap.add_argument("--variants", default=",".join(VARIANTS), help=", ".join(VARIANTS))
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", help="write the rows to this file")
    args = ap.parse_args()
    if args.weights:
        weights = Path(args.weights)
    else:
        weights = random_family(args.family) if args.family else random_checkpoint(args.arch)
    rows = run(weights, args.variants.split(","), args.batch, args.threads, args.repeats)
    print(f"checkpoint: {weights}  batch {args.batch}  threads {args.threads}")
    print("| runtime | images/s | x torch fp32 | text query ms | image cos min | text cos min "
          "| load s (first, incl. export) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['runtime']} | {r['images_per_s']:.1f} | {r['speedup']:.2f} | "
            f"{r['text_ms']:.1f} | {r['image_cos_min']:.5f} | {r['text_cos_min']:.5f} | "
            f"{r['load_s']:.1f} |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
