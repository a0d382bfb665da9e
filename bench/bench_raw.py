"""Decoding camera RAW files: the embedded-preview fast path against demosaicing.

    .venv/bin/python -m bench.bench_raw                      # 6 DNGs of 4000x3000, 3 repeats
    .venv/bin/python -m bench.bench_raw --files 12 --repeats 5 --json raw.json

The DNGs are real files made once (under .bench/) from upscaled coco-mini photos by
tests/dng.py: a 12-bit RGGB mosaic of 4000x3000 (12 MP) in a SubIFD and a full-size JPEG
preview (quality 90) in IFD0, as cameras write them; LibRaw reads both. Each variant decodes
the file's bytes (already in memory) into the upright RGB image the indexer encodes, through
the indexer's own code (indexer.embed.images.decode, indexer.embed.raw.demosaic):

- preview, draft: the preview JPEG, libjpeg-scaled to cover ViT-B/32's draft size (the
  indexer's path when the preview is large enough);
- preview, full: the same preview decoded at full size (index.jpeg_draft: false);
- half-size demosaic: each 2x2 Bayer cell one pixel (the path when the preview is too small);
- full demosaic: LibRaw's AHD interpolation at full size (what a RAW converter does).

Variants are interleaved per file; the table gives the median seconds per file.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

from PIL import Image

from indexer.embed.images import decode, draft_target
from indexer.embed.raw import demosaic, raw_support

from .datasets import CACHE, coco_photos

MAX_PIXELS = 150_000_000  # library.max_pixels's default


def make_dngs(n: int, size: tuple[int, int]) -> list[Path]:
    """``n`` DNGs of ``size`` (reused from earlier runs)."""
    from tests.dng import write_dng

    out_dir = CACHE / f"raw-dng-{size[0]}x{size[1]}"
    out_dir.mkdir(parents=True, exist_ok=True)
    out = []
    for i, src in enumerate(coco_photos(n)):
        dst = out_dir / f"photo_{i:04d}.dng"
        if not dst.exists():
            with Image.open(src) as img:
                photo = img.convert("RGB")
            landscape = size if photo.width >= photo.height else (size[1], size[0])
            tmp = dst.with_suffix(".tmp")
            write_dng(tmp, photo, size=landscape, make="Bench", model=f"DNG {i}")
            os.replace(tmp, dst)
        out.append(dst)
    return out


def variants(draft: int) -> dict:
    return {
        "preview, draft": lambda data, p: decode(data, MAX_PIXELS, draft, name=p,
                                                 min_preview=draft).image,
        "preview, full": lambda data, p: decode(data, MAX_PIXELS, None, name=p,
                                                min_preview=draft).image,
        "half-size demosaic": lambda data, p: decode(data, MAX_PIXELS, draft, name=p,
                                                     min_preview=10**6).image,
        "full demosaic": lambda data, p: Image.fromarray(demosaic(data, MAX_PIXELS, False)),
    }  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=6, help="DNG files (default 6)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--size", type=int, nargs=2, default=[4000, 3000], metavar=("W", "H"))
    ap.add_argument("--resolution", type=int, default=224, help="model input (ViT-B/32: 224)")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args(argv)
    support = raw_support()
    if support is None:
        raise SystemExit("bench_raw needs rawpy: pip install -e '.[raw]'")
    files = make_dngs(args.files, tuple(args.size))
    draft = draft_target(args.resolution)
    runs = variants(draft)
    times: dict[str, list[float]] = {name: [] for name in runs}
    sizes: dict[str, tuple[int, int]] = {}
    for r in range(args.repeats):
        for p in files:
            data = p.read_bytes()
            for name, fn in runs.items():
                start = time.perf_counter()
                img = fn(data, p)
                times[name].append(time.perf_counter() - start)
                sizes[name] = img.size
        print(f"[{r + 1}/{args.repeats}] done", file=sys.stderr, flush=True)
    med = {name: statistics.median(t) for name, t in times.items()}
    full = med["full demosaic"]
    print(f"\n{len(files)} DNGs of {args.size[0]}x{args.size[1]} (12-bit mosaic + full-size "
          f"JPEG preview, {files[0].stat().st_size / 1e6:.0f} MB each), {support}, "
          f"{os.cpu_count()} CPUs, draft size {draft}, median of {args.repeats} repeats\n")
    print("| path | output | ms per file | x faster than full demosaic |")
    print("|---|---|---|---|")
    for name, t in med.items():
        w, h = sizes[name]
        print(f"| {name} | {w}x{h} | {t * 1000:.0f} | {full / t:.1f} |")
    if args.json:
        doc = {"files": len(files), "size": args.size, "libraw": support, "draft": draft,
               "repeats": args.repeats, "cpus": os.cpu_count(),
               "rows": [{"path": n, "output": sizes[n], "seconds": t, "speedup": full / t}
                        for n, t in med.items()]}  # fmt: skip
        Path(args.json).write_text(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main()
