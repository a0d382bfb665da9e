"""Input checks and small array helpers of the vector index (ids, unit vectors, kinds)."""

from __future__ import annotations

import numpy as np

KINDS = ("flat", "flat16", "ivf", "ivf-sq8", "hnsw")
EXACT_KINDS = ("flat", "flat16")  # every vector scanned: exact up to the storage rounding
_UNIT_TOL = 1e-3  # |norm - 1| below this counts as already normalised


def check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown index kind {kind!r}; expected 'auto' or one of {KINDS}")


def as_matrix(vectors: np.ndarray) -> np.ndarray:
    x = np.asarray(vectors)
    if x.ndim != 2 or x.shape[1] < 1:
        raise ValueError(f"expected a 2-D array of vectors, got shape {x.shape}")
    return x


def prepare(vectors: np.ndarray, dim: int) -> np.ndarray:
    """float32 C-contiguous unit rows; avoids copying input that already is."""
    x = as_matrix(vectors)
    if x.shape[1] != dim:
        raise ValueError(f"vectors have dimension {x.shape[1]}, index has {dim}")
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"vectors must be floating point, got {x.dtype}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    sq = np.einsum("ij,ij->i", x, x)
    if not np.all(np.isfinite(sq)):
        raise ValueError("vectors contain NaN or infinite values")
    if np.any(sq == 0):
        raise ValueError("vectors contain all-zero rows")
    if np.any(np.abs(sq - 1) > _UNIT_TOL):
        x = x / np.sqrt(sq)[:, None]
    return x


def as_ids(ids: np.ndarray, *, unique: bool) -> np.ndarray:
    a = np.asarray(ids)
    if a.ndim != 1:
        raise ValueError(f"ids must be 1-D, got shape {a.shape}")
    if a.size and not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"ids must be integers, got {a.dtype}")
    a = np.ascontiguousarray(a, dtype=np.int64)
    if a.size and a.min() < 0:
        raise ValueError("ids must be >= 0 (-1 marks missing results)")
    if unique and np.unique(a).size != a.size:
        raise ValueError("duplicate ids in one call")
    return a


def merge_sorted(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Merge two sorted disjoint id arrays in O(len(a) + len(b) log len(a))."""
    if a.size == 0:
        return b.copy()
    return np.insert(a, np.searchsorted(a, b), b)


def normalize(vectors: np.ndarray) -> np.ndarray:
    """Return a float32 C-contiguous copy with L2-normalised rows (zero rows stay zero)."""
    x = np.array(vectors, dtype=np.float32, order="C", copy=True)
    if x.ndim != 2:
        raise ValueError(f"expected a 2-D array of vectors, got shape {x.shape}")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    np.divide(x, norms, out=x, where=norms > 0)
    return x


def as_frames(frames: object) -> tuple[np.ndarray, np.ndarray]:
    """``(times, vectors)`` of an upsert's ``frames`` as (int64 (n,), unit float32 (n, d));
    no frames at all is allowed (either backend then stores none)."""
    times, vecs = frames  # type: ignore[misc]
    times = np.asarray(times, dtype=np.int64).reshape(-1)
    vecs = np.asarray(vecs, dtype=np.float32)
    if not len(times):
        return times, np.zeros((0, vecs.shape[-1] if vecs.ndim == 2 else 0), np.float32)
    vecs = normalize(vecs.reshape(len(times), -1))
    if len(np.unique(times)) != len(times):
        raise ValueError("a video's frames need distinct times")
    return times, vecs
