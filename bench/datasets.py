"""Benchmark inputs: 12-megapixel JPEGs made by upscaling real photos, and web-size photos."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parent.parent
COCO = REPO.parent / "shared" / "datasets" / "coco-mini"
CACHE = REPO / ".bench"  # generated inputs and checkpoints (git-ignored)


def benchmark_weights(path: str | None, arch: str = "ViT-B/32") -> Path:
    """The checkpoint to benchmark: ``path`` if given, else a cached random ``arch`` (a full-size
    ViT-B/32 by default; built with OpenAI's reference class, as the tests do)."""
    if path:
        return Path(path)
    weights = CACHE / f"{arch.lower().replace('/', '-').replace('@', '-')}-random.pt"
    if not weights.exists():
        from tests.checkpoints import write_random_checkpoint

        write_random_checkpoint(weights, arch, seed=1)
    return weights


def coco_photos(limit: int | None = None) -> list[Path]:
    """coco-mini's JPEGs (web size, <= 1 MP), sorted."""
    files = sorted((COCO / "val2017").glob("*.jpg")) + sorted((COCO / "train2017").glob("*.jpg"))
    if not files:
        raise SystemExit(f"benchmark photos not found under {COCO}")
    return files[:limit] if limit else files


def make_large_jpegs(out_dir: Path, n: int, size: tuple[int, int] = (4000, 3000)) -> list[Path]:
    """``n`` JPEGs of ``size`` (12 MP by default, quality 90), upscaled from coco-mini photos.

    Existing files are reused, so repeated benchmark runs do not pay the encoding again.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    out = []
    for i, src in enumerate(coco_photos(n)):
        dst = out_dir / f"large_{i:04d}.jpg"
        if not dst.exists():
            img = Image.open(src).convert("RGB")
            if img.width < img.height:
                size_i = (size[1], size[0])
            else:
                size_i = size
            img.resize(size_i, Image.BICUBIC).save(dst, "JPEG", quality=90)
        out.append(dst)
    return out
