"""Combine weighted query vectors and decide how many search results to show."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SearchResult:
    """One hit: the image id and its cosine similarity to the query."""

    image_id: int
    score: float


def combine(vectors: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Unit vector of the weighted sum of the L2-normalised term vectors ``(t, d)``.

    Negative weights push results away from a term; an all-negative query is allowed.
    Raises ValueError on shape mismatch, a zero/non-finite term or a zero sum.
    """
    v = np.asarray(vectors, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    if v.ndim != 2 or v.shape[0] != w.size or v.shape[0] == 0:
        raise ValueError(f"need (t, d) vectors and t weights, got {v.shape} and {w.shape}")
    if not (np.all(np.isfinite(v)) and np.all(np.isfinite(w))):
        raise ValueError("term vectors and weights must be finite")
    norms = np.linalg.norm(v, axis=1)
    if np.any(norms == 0):
        raise ValueError("a query term has an all-zero vector")
    total = (w / norms) @ v
    length = np.linalg.norm(total)
    if length <= 1e-6 * np.abs(w).sum():
        raise ValueError("query terms cancel out: the combined query vector is zero")
    return (total / length).astype(np.float32)


def apply_threshold(
    scores: np.ndarray, ids: np.ndarray, threshold: float | None
) -> tuple[np.ndarray, np.ndarray]:
    """One query's results without padding (id < 0) and, if given, below ``threshold``."""
    s, i = np.asarray(scores).reshape(-1), np.asarray(ids).reshape(-1)
    if s.shape != i.shape:
        raise ValueError(f"scores and ids differ in shape: {s.shape} vs {i.shape}")
    keep = (i >= 0) & np.isfinite(s)
    if threshold is not None:
        keep &= s >= threshold
    return s[keep], i[keep]


def adaptive_cutoff(
    scores: np.ndarray,
    library_scores: np.ndarray | None = None,
    *,
    relative: float = 0.85,
    z: float = 1.5,
    gap: float = 0.25,
) -> int:
    """How many of the best-first ``scores`` to keep.

    Let b be the baseline (median of ``library_scores``, the query's similarities to a
    sample of the whole library; else the lowest score given) and m = best - b the best
    hit's margin. If one drop between consecutive scores dominates the upper half of the
    list (its upper score >= b + m/2, the drop >= ``gap`` * m and >= twice any other drop
    there), keep everything above that gap. Otherwise keep the scores s with
    s - b >= ``relative`` * m. With ``library_scores``, also drop any score below
    mean + ``z`` * std of the library sample. The best hit is always kept, so a non-empty
    list gives >= 1; -inf/NaN padding at the end is ignored.
    """
    if not 0.0 <= relative <= 1.0:
        raise ValueError(f"relative must be in [0, 1], got {relative}")
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    finite = np.isfinite(s)
    if not finite.all():
        s = s[: int(np.argmin(finite))]  # padding sits at the end
    if s.size == 0:
        return 0
    if np.any(np.diff(s) > 1e-6):
        raise ValueError("scores must be sorted best first")
    lib = None
    if library_scores is not None:
        lib = np.asarray(library_scores, dtype=np.float64).reshape(-1)
        lib = lib[np.isfinite(lib)]
        if lib.size == 0:
            lib = None
    best = s[0]
    base = float(np.median(lib)) if lib is not None else float(s[-1])
    margin = best - base
    if margin <= 0:
        return 1

    keep = _gap_cut(s, base, margin, gap)
    if keep is None:
        keep = int(np.count_nonzero(s - base >= relative * margin))
    if lib is not None:
        keep = min(keep, int(np.count_nonzero(s >= lib.mean() + z * lib.std())))
    return max(1, keep)


def _gap_cut(s: np.ndarray, base: float, margin: float, gap: float) -> int | None:
    """Results above the single dominant drop in the upper half of the list, or None."""
    drops = s[:-1] - s[1:]
    upper = drops[s[:-1] - base >= margin / 2]  # s is sorted, so these come first
    if upper.size == 0:
        return None
    i = int(np.argmax(upper))
    others = np.delete(upper, i)
    if upper[i] < gap * margin or (others.size and upper[i] < 2 * others.max()):
        return None
    return i + 1


def to_results(scores: np.ndarray, ids: np.ndarray) -> list[SearchResult]:
    """One query's ``(scores, ids)`` row as SearchResults, padding dropped."""
    s, i = apply_threshold(scores, ids, None)
    return [SearchResult(int(a), float(b)) for a, b in zip(i.tolist(), s.tolist())]


def rank(
    scores: np.ndarray,
    ids: np.ndarray,
    *,
    threshold: float | None = None,
    adaptive: bool = False,
    library_scores: np.ndarray | None = None,
    limit: int | None = None,
) -> list[SearchResult]:
    """One query's best-first results after the threshold, optional adaptive cutoff and limit."""
    s, i = apply_threshold(scores, ids, threshold)
    n = adaptive_cutoff(s, library_scores) if adaptive else s.size
    if limit is not None:
        n = min(n, max(0, limit))
    return to_results(s[:n], i[:n])
