"""The issue-13 acceptance table: on stress checkpoints (tests/stress_checkpoints.py) of every
kind and strength, the path the default config ends up using (``backend: auto``,
``precision: auto``: clipmodel.load(backend="auto"), its self-check and fallbacks) against the
exact path (fp32 torch, official preprocessing), on coco-mini's photos and captions.

    .venv/bin/python -m bench.bench_fidelity --stress                   # ViT-B/32, all kinds
    .venv/bin/python -m bench.bench_fidelity --stress --arch RN50 --strengths 100

Images/s: the chosen path encoding the photos as the indexer runs it on this machine (batches of
32; ONNX Runtime: two single-threaded sessions, calls of 8 images; torch: 2 threads).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

import clipmodel as clip
from clipmodel.fidelity import measure

from .datasets import CACHE


def _encode(model, x: torch.Tensor, pixels=None) -> torch.Tensor:
    """Embeddings in batches of 32, as the indexer hands them over (an OnnxCLIP splits each
    over its sessions in calls of 8)."""
    with torch.inference_mode():
        if pixels is not None:
            return torch.cat(
                [model.encode_pixels(pixels[i : i + 32]) for i in range(0, len(pixels), 32)]
            )
        dtype = getattr(model, "dtype", torch.float32)
        return torch.cat(
            [model.encode_image(x[i : i + 32].to(dtype)).float() for i in range(0, len(x), 32)]
        )


def stress_rows(arch: str, cases: list[tuple[str, int]], photos: list[Path], captions: list[str],
                timing: int = 0) -> list[dict]:  # fmt: skip
    """One row per (kind, strength): the chosen path, its cosines to exact fp32 on ``photos``
    and ``captions``, its self-check, and images/s (on the first ``timing`` photos, 0: all)."""
    from clipmodel.onnx_backend import image_patches, pixels_from_normalized
    from tests.stress_checkpoints import write_stress_checkpoint

    torch.set_num_threads(2)
    root = CACHE / "stress"
    cache = Path(tempfile.mkdtemp(prefix="stress-cache-"))
    tokens = clip.tokenize(captions, truncate=True)
    rows = []
    x = None
    for kind, s in cases:
        tag = arch.replace("/", "-")
        ckpt = root / f"{tag}-{kind}-{s}.pt"
        if not ckpt.exists():
            write_stress_checkpoint(ckpt, arch, "ln" if kind == "plain" else kind, s)
        exact, pre = clip.load(ckpt, device="cpu", precision="fp32")
        if x is None:
            x = torch.stack([pre(Image.open(p)) for p in photos])
        ref_img = _encode(exact, x)
        with torch.inference_mode():
            ref_txt = torch.cat(
                [exact.encode_text(tokens[i : i + 64]) for i in range(0, len(tokens), 64)]
            )
        del exact
        start = time.perf_counter()
        model, _ = clip.load(ckpt, device="cpu", backend="auto", precision="auto",
                             download_root=cache, threads=2, image_sessions=2)  # fmt: skip
        load_s = time.perf_counter() - start
        pixels = None
        if getattr(model, "pixel_input", False):
            pixels = image_patches(pixels_from_normalized(x.numpy()), model.patch_size)
        img = _encode(model, x, pixels)
        with torch.inference_mode():
            txt = torch.cat([model.encode_text(tokens[i : i + 64]).float()
                             for i in range(0, len(tokens), 64)])  # fmt: skip
        n = timing or len(x)
        t = time.perf_counter()
        _encode(model, x[:n], None if pixels is None else pixels[:n])
        ips = n / (time.perf_counter() - t)
        report = model.fidelity
        rows.append({
            "arch": arch, "kind": kind, "strength": s, "path": model.fast_path,
            "refused": report.refused, "images": measure(img, ref_img), "texts": measure(txt, ref_txt),
            "n_images": len(x), "n_texts": len(captions), "images_per_s": ips,
            "selfcheck_s": sum(c.seconds for c in report.checks), "load_s": load_s,
            "calibration": report.check.summary() if report.check else "exact",
        })  # fmt: skip
        print(format_row(rows[-1]), flush=True)
        del model
    return rows


HEADER = ("| model | kind | strength | chosen path (refused) | images mean / min | texts mean / min"
          " | images/s | self-check s |\n|---|---|---|---|---|---|---|---|")  # fmt: skip


def format_row(r: dict) -> str:
    refused = (
        f" ({', '.join(p.removeprefix('onnxruntime ') for p in r['refused'])} refused)"
        if r["refused"]
        else ""
    )
    i, t = r["images"], r["texts"]
    return (f"| {r['arch']} | {r['kind']} | {r['strength']} | {r['path']}{refused} | "
            f"{i.mean:.5f} / {i.min:.5f} | {t.mean:.5f} / {t.min:.5f} | {r['images_per_s']:.1f} | "
            f"{r['selfcheck_s']:.1f} |")  # fmt: skip
