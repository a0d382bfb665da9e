"""Model evaluation: zero-shot classification accuracy and image/text retrieval recall.

Datasets: an ImageFolder tree (``root/<class name>/**/*.jpg``; underscores in folder names read
as spaces in prompts) and a captioned set in COCO captions JSON format (``images`` with
``id``/``file_name``, ``annotations`` with ``image_id``/``caption``; several captions per image).

Metric conventions: top-k accuracy counts a hit when the true class is among the k highest
logits (ties broken towards the lower class index). Recall@K: text->image, the fraction of
captions whose image ranks in the top K among all images; image->text, the fraction of images
with at least one of their captions in the top K among all captions. A candidate ranks ahead of
the true match only when its score is strictly higher (ties favour the true match).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
TOPK = (1, 5)
RECALL_KS = (1, 5, 10)
_CHUNK = 1024  # query rows per similarity block (bounds memory on large sets)


class DatasetError(ValueError):
    """An evaluation dataset is missing, empty or malformed."""


# --------------------------------------------------------------------------- metrics
def topk_accuracy(
    logits: np.ndarray, labels: Sequence[int], ks: Sequence[int] = TOPK
) -> dict[int, float]:
    """{k: fraction of rows whose label is among the k largest logits} (k capped at C)."""
    logits = np.asarray(logits, dtype=np.float64)
    labels_arr = np.asarray(labels, dtype=np.int64)
    if logits.ndim != 2 or len(logits) != len(labels_arr):
        raise ValueError(f"logits (N, C) and N labels expected, got {logits.shape}, {len(labels)}")
    if not len(labels_arr):
        return {int(k): float("nan") for k in ks}
    true = logits[np.arange(len(labels_arr)), labels_arr][:, None]
    cols = np.arange(logits.shape[1])[None, :]
    # rank of the true class = classes scoring higher, or equal with a lower index
    rank = ((logits > true) | ((logits == true) & (cols < labels_arr[:, None]))).sum(axis=1)
    return {int(k): float((rank < k).mean()) for k in ks}


def _ranks_of_match(queries: np.ndarray, candidates: np.ndarray, match: np.ndarray) -> np.ndarray:
    """For each query row, how many candidates score strictly higher than ``match[row]``."""
    ranks = np.empty(len(queries), dtype=np.int64)
    for s in range(0, len(queries), _CHUNK):
        sims = queries[s : s + _CHUNK] @ candidates.T
        true = sims[np.arange(len(sims)), match[s : s + _CHUNK]][:, None]
        ranks[s : s + _CHUNK] = (sims > true).sum(axis=1)
    return ranks


def retrieval_recall(
    image_emb: np.ndarray,
    text_emb: np.ndarray,
    text_to_image: Sequence[int],
    ks: Sequence[int] = RECALL_KS,
) -> dict[str, dict[int, float]]:
    """{"t2i": {k: R@k}, "i2t": {k: R@k}} for normalised embeddings; ``text_to_image[t]`` is the
    row in ``image_emb`` that caption ``t`` describes. Images without captions are left out of
    i2t (but stay candidates for t2i)."""
    img = np.asarray(image_emb, dtype=np.float32)
    txt = np.asarray(text_emb, dtype=np.float32)
    t2i = np.asarray(text_to_image, dtype=np.int64)
    if len(t2i) != len(txt):
        raise ValueError(f"{len(t2i)} text_to_image entries for {len(txt)} texts")
    if len(t2i) and (t2i.min() < 0 or t2i.max() >= len(img)):
        raise ValueError("text_to_image has an index outside the images")
    text_ranks = _ranks_of_match(txt, img, t2i)
    # i2t: rank of each caption among all captions for its own image, best caption per image.
    caption_ranks = np.empty(len(txt), dtype=np.int64)
    for s in range(0, len(txt), _CHUNK):
        q = img[t2i[s : s + _CHUNK]]  # (c, D): the image of each caption
        sims = q @ txt.T
        true = sims[np.arange(len(q)), np.arange(s, s + len(q))][:, None]
        caption_ranks[s : s + _CHUNK] = (sims > true).sum(axis=1)
    best = np.full(len(img), np.iinfo(np.int64).max)
    np.minimum.at(best, t2i, caption_ranks)
    has_caption = best < np.iinfo(np.int64).max
    nan = float("nan")
    return {
        "t2i": {int(k): float((text_ranks < k).mean()) if len(txt) else nan for k in ks},
        "i2t": {
            int(k): float((best[has_caption] < k).mean()) if has_caption.any() else nan for k in ks
        },
    }


# --------------------------------------------------------------------------- datasets
@dataclass
class ImageFolderSet:
    """Images with integer labels into ``classes`` (folder names, sorted)."""

    root: Path
    paths: list[Path]
    labels: list[int]
    classes: list[str]

    def prompt_names(self) -> list[str]:
        return [c.replace("_", " ") for c in self.classes]

    def subset(self, limit: int | None) -> ImageFolderSet:
        """At most ``limit`` images spread evenly over the sorted list (all classes kept)."""
        if limit is None or limit >= len(self.paths):
            return self
        idx = np.unique(np.linspace(0, len(self.paths) - 1, max(limit, 1)).round().astype(int))
        pick = idx.tolist()
        paths = [self.paths[i] for i in pick]
        return ImageFolderSet(self.root, paths, [self.labels[i] for i in pick], self.classes)


@dataclass
class CaptionSet:
    """Images and captions; ``text_to_image[t]`` indexes ``image_paths``."""

    source: Path
    image_paths: list[Path]
    captions: list[str]
    text_to_image: list[int]
    missing_images: int = 0

    def subset(self, limit: int | None) -> CaptionSet:
        """The first ``limit`` images with their captions."""
        if limit is None or limit >= len(self.image_paths):
            return self
        keep = [(c, i) for c, i in zip(self.captions, self.text_to_image) if i < limit]
        return CaptionSet(
            self.source,
            self.image_paths[:limit],
            [c for c, _ in keep],
            [i for _, i in keep],
            self.missing_images,
        )


def read_imagefolder(root: str | os.PathLike) -> ImageFolderSet:
    """Class = sub-folder of ``root``; images anywhere below it (sorted, hidden files skipped)."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"image folder not found: {root}")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    paths, labels = [], []
    for label, name in enumerate(classes):
        files = sorted(
            p
            for p in (root / name).rglob("*")
            if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".") and p.is_file()
        )
        paths.extend(files)
        labels.extend([label] * len(files))
    if len(classes) < 2 or not paths:
        raise DatasetError(f"{root}: expected at least two class folders with images")
    return ImageFolderSet(root, paths, labels, classes)


def read_coco_captions(json_path: str | os.PathLike, images_dir: str | os.PathLike) -> CaptionSet:
    """Images listed in a COCO captions file that exist under ``images_dir`` and have captions."""
    json_path, images_dir = Path(json_path), Path(images_dir)
    try:
        data = json.loads(json_path.read_text(encoding="utf-8"))
        images = {int(im["id"]): str(im["file_name"]) for im in data["images"]}
        anns = [(int(a["image_id"]), str(a["caption"]).strip()) for a in data["annotations"]]
    except FileNotFoundError:
        raise DatasetError(f"captions file not found: {json_path}") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DatasetError(f"{json_path}: not a COCO captions file ({exc})") from None
    captioned = sorted({i for i, _ in anns if i in images})
    row: dict[int, int] = {}
    paths: list[Path] = []
    missing = 0
    for image_id in captioned:
        path = images_dir / images[image_id]
        if not path.is_file():
            missing += 1
            continue
        row[image_id] = len(paths)
        paths.append(path)
    pairs = [(c, row[i]) for i, c in anns if i in row]
    if not pairs:
        raise DatasetError(f"{json_path}: no captioned images found under {images_dir}")
    return CaptionSet(json_path, paths, [c for c, _ in pairs], [r for _, r in pairs], missing)


# --------------------------------------------------------------------------- runners
def encode_images(
    model: Any,
    preprocess: Callable[[Any], Any],
    paths: Sequence[Path],
    batch_size: int = 32,
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """(N, D) normalised image embeddings, decoding at most ``batch_size`` images at a time."""
    import clipmodel as clip

    chunks = []
    for s in range(0, len(paths), batch_size):
        batch = [os.fspath(p) for p in paths[s : s + batch_size]]
        chunks.append(clip.embed_images(model, batch, preprocess, batch_size).cpu().numpy())
        if progress is not None:
            progress(len(batch))
    if not chunks:
        return np.zeros((0, int(model.embed_dim)), dtype=np.float32)
    return np.concatenate(chunks).astype(np.float32)


def run_zeroshot(
    model: Any,
    preprocess: Callable[[Any], Any],
    dataset: ImageFolderSet,
    templates: Sequence[str],
    batch_size: int = 32,
    ks: Sequence[int] = TOPK,
) -> dict[str, Any]:
    """Top-k zero-shot accuracy of ``model`` on an ImageFolder set."""
    import clipmodel as clip

    t0 = time.perf_counter()
    weights = clip.zeroshot_classifier(model, dataset.prompt_names(), templates or ("{}",))
    weights = weights.detach().float().cpu().numpy()  # (D, C)
    images = encode_images(model, preprocess, dataset.paths, batch_size)
    logits = images @ weights
    acc = topk_accuracy(logits, dataset.labels, ks)
    return {
        "task": "zeroshot",
        "dataset": str(dataset.root),
        "images": len(dataset.paths),
        "classes": len(dataset.classes),
        "templates": len(templates),
        "chance_top1": 1.0 / len(dataset.classes),
        **{f"top{k}": v for k, v in acc.items()},
        "seconds": round(time.perf_counter() - t0, 3),
    }


def run_retrieval(
    model: Any,
    preprocess: Callable[[Any], Any],
    dataset: CaptionSet,
    batch_size: int = 32,
    ks: Sequence[int] = RECALL_KS,
) -> dict[str, Any]:
    """Text->image and image->text Recall@K of ``model`` on a captioned set."""
    import clipmodel as clip

    t0 = time.perf_counter()
    images = encode_images(model, preprocess, dataset.image_paths, batch_size)
    texts = clip.embed_texts(model, dataset.captions).detach().float().cpu().numpy()
    rec = retrieval_recall(images, texts, dataset.text_to_image, ks)
    return {
        "task": "retrieval",
        "dataset": str(dataset.source),
        "images": len(dataset.image_paths),
        "captions": len(dataset.captions),
        "missing_images": dataset.missing_images,
        **{f"t2i_R@{k}": v for k, v in rec["t2i"].items()},
        **{f"i2t_R@{k}": v for k, v in rec["i2t"].items()},
        "seconds": round(time.perf_counter() - t0, 3),
    }


# --------------------------------------------------------------------------- output
def _metric_items(result: dict[str, Any]) -> list[tuple[str, float]]:
    return [
        (k, float(v))
        for k, v in result.items()
        if k.startswith(("top", "t2i_", "i2t_", "chance")) and isinstance(v, (int, float))
    ]


def format_table(results: Sequence[dict[str, Any]]) -> str:
    """A plain-text table: one row per metric (percentages), with each task's dataset size."""
    rows = [("task", "metric", "value", "n")]
    for r in results:
        n = f"{r.get('images', '')} img" + (f", {r['captions']} cap" if "captions" in r else "")
        if "classes" in r:
            n += f", {r['classes']} cls"
        for name, value in _metric_items(r):
            rows.append((str(r.get("task", "")), name, f"{100 * value:6.2f}%", n))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def write_json(results: Sequence[dict[str, Any]], path: str | os.PathLike, **extra: Any) -> None:
    """Write ``{"results": [...], **extra}`` as JSON (NaN written as null)."""

    def clean(v: Any) -> Any:
        if isinstance(v, float) and v != v:
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, list):
            return [clean(x) for x in v]
        return v

    doc = clean({**extra, "results": list(results)})
    Path(path).write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
