"""Scoring tags against image vectors: prompt-ensemble tag embeddings, thresholds, groups.

Storage is kept out: functions take vectors and return tag assignments ``[(tag, score)]`` per
image. Scores: a standalone tag's score is its cosine with the image; an exclusive group's
winner's score is its softmax probability. The two scales differ, so ``top_n`` ranks and caps
only the standalone tags; each exclusive group adds at most one tag on top.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from indexer.tags.vocabulary import TagList, Vocabulary


# --------------------------------------------------------------------------- embeddings
def _normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def tag_embeddings(
    vocab: Vocabulary,
    embed_texts: Callable[[list[str]], np.ndarray],
    tags: Iterable[str] | None = None,
) -> dict[str, np.ndarray]:
    """Prompt-ensemble embedding per tag: the normalised mean of its normalised text embeddings.

    ``tags`` limits the work to those tags (e.g. the ones :func:`changed_tags` reports); all
    texts are embedded in one ``embed_texts`` call.
    """
    wanted = set(tags) if tags is not None else None
    specs = [t for t in vocab.tags.values() if wanted is None or t.name in wanted]
    texts, owner = [], []
    for i, spec in enumerate(specs):
        t = vocab.texts_for(spec)
        texts.extend(t)
        owner.extend([i] * len(t))
    if not specs:
        return {}
    emb = _normalize(np.asarray(embed_texts(texts), dtype=np.float32))
    sums = np.zeros((len(specs), emb.shape[1]), dtype=np.float64)
    np.add.at(sums, np.asarray(owner), emb)
    means = _normalize(sums)
    return {spec.name: means[i] for i, spec in enumerate(specs)}


# --------------------------------------------------------------------------- scoring
@dataclass
class _Plan:
    names: list[str]
    matrix: np.ndarray  # (D, S) standalone tag embeddings
    thresholds: np.ndarray  # (S,)
    groups: list[tuple[list[str], np.ndarray, np.ndarray, np.ndarray]]  # names, (D,k), thr, hidden


def _plan(vocab: Vocabulary, tag_embs: Mapping[str, np.ndarray], only: set[str] | None) -> _Plan:
    def emb(name: str) -> np.ndarray:
        if name not in tag_embs:
            raise KeyError(f"no embedding for tag '{name}'; pass it to tag_embeddings()")
        return np.asarray(tag_embs[name], dtype=np.float32)

    active = vocab.active_tags()
    solo = [t for t in active if not vocab.is_exclusive(t) and not t.hidden]
    solo = [t for t in solo if only is None or t.name in only]
    dim = len(next(iter(tag_embs.values()))) if tag_embs else 0
    matrix = np.stack([emb(t.name) for t in solo], 1) if solo else np.zeros((dim, 0), np.float32)
    groups = []
    for g in vocab.groups.values():
        members = vocab.group_members(g.name)
        if not g.exclusive or not g.enabled:
            continue
        if only is not None and not any(m.name in only for m in members):
            continue
        groups.append(
            (
                [m.name for m in members],
                np.stack([emb(m.name) for m in members], 1),
                np.array([vocab.threshold_for(m) for m in members], dtype=np.float32),
                np.array([m.hidden or (only is not None and m.name not in only) for m in members]),
            )
        )
    thresholds = np.array([vocab.threshold_for(t) for t in solo], dtype=np.float32)
    return _Plan([t.name for t in solo], matrix, thresholds, groups)


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def score_tags(
    image_vectors: np.ndarray,
    tag_embs: Mapping[str, np.ndarray],
    vocab: Vocabulary,
    logit_scale: float | None = None,
    *,
    top_n: int | None | Literal["vocab"] = "vocab",
    only: Iterable[str] | None = None,
) -> list[TagList]:
    """Tags of each image: ``[(tag, score), ...]`` per row of ``image_vectors`` (N, D).

    Standalone tags are kept when cosine >= threshold and the best ``top_n`` of them (default:
    the vocabulary's; None: all) are returned, best first; each enabled exclusive group then
    adds its softmax winner (``logit_scale`` * cosine, default the vocabulary's) when its
    probability reaches the threshold and it is not hidden. ``only`` restricts scoring to those
    tags (the incremental re-scoring path; store results uncapped with ``top_n=None``).
    """
    vectors = np.asarray(image_vectors, dtype=np.float32)
    if vectors.ndim != 2:
        raise ValueError(f"image_vectors must be (N, D), got shape {vectors.shape}")
    n = len(vectors)
    cap = vocab.top_n if top_n == "vocab" else top_n
    scale = vocab.logit_scale if logit_scale is None else float(logit_scale)
    plan = _plan(vocab, tag_embs, set(only) if only is not None else None)
    out: list[TagList] = [[] for _ in range(n)]
    if plan.names and n:
        sims = vectors @ plan.matrix  # (N, S)
        rows, cols = np.nonzero(sims >= plan.thresholds)
        scores = sims[rows, cols]
        order = np.lexsort((cols, -scores, rows))  # per image: best first, ties by tag order
        rows, cols, scores = rows[order], cols[order], scores[order]
        if cap is not None:  # rank within the image: position minus the image's first
            starts = np.searchsorted(rows, rows, side="left")
            keep = np.arange(len(rows)) - starts < cap
            rows, cols, scores = rows[keep], cols[keep], scores[keep]
        names = plan.names
        for r, c, v in zip(rows.tolist(), cols.tolist(), scores.tolist()):
            out[r].append((names[c], v))
    for names, mat, thr, hidden in plan.groups:
        if not n:
            break
        probs = _softmax(scale * (vectors @ mat))  # (N, k)
        win = probs.argmax(axis=1)
        best = probs[np.arange(n), win]
        keep = np.nonzero((best >= thr[win]) & ~hidden[win])[0]
        for r, w, b in zip(keep.tolist(), win[keep].tolist(), best[keep].tolist()):
            out[r].append((names[w], b))
    return out


def cap_top_n(tags: TagList, vocab: Vocabulary) -> TagList:
    """Apply the vocabulary's ``top_n`` to one image's stored (uncapped) tags."""
    if vocab.top_n is None:
        return list(tags)

    def exclusive(name: str) -> bool:
        spec = vocab.tags.get(name)
        return spec is not None and vocab.is_exclusive(spec)

    solo = sorted((t for t in tags if not exclusive(t[0])), key=lambda t: -t[1])
    return solo[: vocab.top_n] + [t for t in tags if exclusive(t[0])]


def tag_counts(assignments: Sequence[TagList]) -> dict[str, int]:
    """How many images carry each tag, most frequent first."""
    counts: dict[str, int] = {}
    for tags in assignments:
        for name, _ in tags:
            counts[name] = counts.get(name, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
