"""Pairs of vectors whose cosine reaches a threshold: exact for small sets, approximate beyond.

* :func:`exact_pairs`: a FAISS range search over every vector (N^2 d work): exact, and the
  faster one up to :data:`EXACT_MAX` vectors.
* :func:`approximate_pairs`: an inverted-file partition, searched with dense matrix products.
  k-means centroids are trained on a sample, in a PCA projection of the vectors (assigning a
  vector costs ``proj_dim`` instead of ``d`` per centroid); every vector is put in its nearest
  list and *probes* its ``nprobe`` nearest lists; within each list the probing vectors are
  multiplied with the list's members in full dimension (BLAS) and the pairs at or above the
  threshold kept. A pair is missed only when neither vector probes the other's list, which
  near-duplicates (cosine >= 0.9) almost never are: ``bench/bench_scale.py`` measures the
  recall against :func:`exact_pairs` (>= 0.99 at 1M). The work is about
  ``N * nlist * proj_dim + nprobe * N * LIST_SIZE * d`` multiply-adds (nlist = N / LIST_SIZE).

:func:`similar_pairs` picks one by size. Vectors may be float16 (half the memory at 1M):
each list is converted to float32 for its product only.
"""

from __future__ import annotations

import numpy as np

EXACT_MAX = 20_000  # up to this many vectors the exact search is the faster one
# Lists each vector probes. On the 1M benchmark library (100k real files: ~400 crops, flips and
# re-encodings of each of 239 photos, dense families) the recall of the true pairs was 0.92
# at 4, 0.997 at 6 and 0.9994 at 8 (59, 68, 88 s): 8 keeps a margin for denser libraries.
DEFAULT_NPROBE = 8
DEFAULT_PROJ_DIM = 64
LIST_SIZE = 256  # vectors per list (the in-list products are (nprobe * 256) x 256 x d)
_QUERY_CHUNK = 4096  # rows per range search / product (bounds the result buffers)
_TRAIN_PER_LIST = 10  # k-means sample: points per centroid (balance, not precision, matters)


def _unit32(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _check(vectors: np.ndarray) -> np.ndarray:
    x = np.asarray(vectors)
    if x.ndim != 2:
        raise ValueError(f"vectors must be (N, D), got shape {x.shape}")
    return x


def exact_pairs(vectors: np.ndarray, threshold: float) -> np.ndarray:
    """(P, 2) int64 row-index pairs ``i < j`` with cosine(vectors[i], vectors[j]) >= threshold."""
    import faiss

    x = _check(vectors)
    if len(x) < 2:
        return np.zeros((0, 2), dtype=np.int64)
    x = np.ascontiguousarray(_unit32(x))
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    # FAISS keeps inner products strictly above the radius: step just below to include ==.
    radius = float(np.nextafter(np.float32(threshold), np.float32(-np.inf)))
    out = []
    for start in range(0, len(x), _QUERY_CHUNK):
        lims, _dist, labels = index.range_search(x[start : start + _QUERY_CHUNK], radius)
        rows = np.repeat(np.arange(start, start + len(lims) - 1), np.diff(lims).astype(np.int64))
        keep = labels > rows  # each pair once, no self-matches
        out.append(np.stack([rows[keep], labels[keep]], axis=1))
    return np.concatenate(out).astype(np.int64)


def default_nlist(n: int) -> int:
    """Lists of ~:data:`LIST_SIZE` vectors: products big enough to run at BLAS speed."""
    return int(max(1, round(n / LIST_SIZE)))


def _projection(x: np.ndarray, dim: int, rng: np.random.Generator) -> np.ndarray | None:
    """(d, dim) top principal directions (uncentred) of a sample; None when dim >= d."""
    if dim >= x.shape[1]:
        return None
    pick = np.sort(rng.choice(len(x), min(len(x), 20_000), replace=False))
    s = _unit32(x[pick]).astype(np.float64)
    _lam, vec = np.linalg.eigh(s.T @ s)
    return np.ascontiguousarray(vec[:, ::-1][:, :dim], dtype=np.float32)


def _assign(x: np.ndarray, proj: np.ndarray | None, nlist: int, nprobe: int, seed: int) -> np.ndarray:
    """(N, nprobe) nearest lists of every vector (column 0: its own list)."""
    import faiss

    rng = np.random.default_rng(seed)

    def project(part: np.ndarray) -> np.ndarray:
        u = _unit32(part)
        return np.ascontiguousarray(u @ proj if proj is not None else u)

    pick = np.sort(rng.choice(len(x), min(len(x), _TRAIN_PER_LIST * nlist), replace=False))
    sample = project(x[pick])
    km = faiss.Kmeans(sample.shape[1], nlist, niter=8, seed=seed, max_points_per_centroid=_TRAIN_PER_LIST,
                      min_points_per_centroid=1)  # fmt: skip
    km.train(sample)
    quant = faiss.IndexFlatL2(sample.shape[1])
    quant.add(km.centroids)
    out = np.empty((len(x), nprobe), dtype=np.int64)
    for start in range(0, len(x), 65_536):
        _d, lists = quant.search(project(x[start : start + 65_536]), nprobe)
        out[start : start + len(lists)] = lists
    return out


def approximate_pairs(
    vectors: np.ndarray,
    threshold: float,
    nlist: int | None = None,
    nprobe: int = DEFAULT_NPROBE,
    proj_dim: int = DEFAULT_PROJ_DIM,
    seed: int = 0,
) -> np.ndarray:
    """Like :func:`exact_pairs`, approximately (see the module docstring): (P, 2) ``i < j``."""
    x = _check(vectors)
    n, d = x.shape
    if n < 2:
        return np.zeros((0, 2), dtype=np.int64)
    nlist = nlist or default_nlist(n)
    nprobe = max(1, min(nprobe, nlist))
    proj = _projection(x, proj_dim, np.random.default_rng(seed))
    lists = _assign(x, proj, nlist, nprobe, seed)
    # members of each list (own list) and the vectors probing it (any of their nprobe lists)
    own_order = np.argsort(lists[:, 0], kind="stable")
    own_bounds = np.searchsorted(lists[own_order, 0], np.arange(nlist + 1))
    flat = lists.ravel()
    probe_order = np.argsort(flat, kind="stable")
    probe_rows = probe_order // nprobe
    probe_bounds = np.searchsorted(flat[probe_order], np.arange(nlist + 1))
    inv = np.empty(n, dtype=np.float32)  # 1/norm, so products are cosines
    for start in range(0, n, 65_536):
        part = np.asarray(x[start : start + 65_536], dtype=np.float32)
        inv[start : start + len(part)] = 1 / np.maximum(np.linalg.norm(part, axis=1), 1e-12)
    thr = np.float32(threshold)
    found = []
    for c in range(nlist):
        members = own_order[own_bounds[c] : own_bounds[c + 1]]
        if not len(members):
            continue
        probing = probe_rows[probe_bounds[c] : probe_bounds[c + 1]]
        m = np.asarray(x[members], dtype=np.float32) * inv[members, None]
        for start in range(0, len(probing), _QUERY_CHUNK):
            q_rows = probing[start : start + _QUERY_CHUNK]
            sims = np.asarray(x[q_rows], dtype=np.float32) @ m.T
            sims *= inv[q_rows, None]
            qi, mj = np.nonzero(sims >= thr)
            a, b = q_rows[qi], members[mj]
            keep = a != b
            found.append(np.stack([np.minimum(a, b)[keep], np.maximum(a, b)[keep]], axis=1))
    if not found:
        return np.zeros((0, 2), dtype=np.int64)
    pairs = np.concatenate(found)
    keys = np.unique(pairs[:, 0] * n + pairs[:, 1])  # a pair is found from both sides
    return np.stack([keys // n, keys % n], axis=1).astype(np.int64)


def similar_pairs(vectors: np.ndarray, threshold: float, exact: bool | None = None) -> np.ndarray:
    """(P, 2) int64 row-index pairs ``i < j`` with cosine >= ``threshold``: exact up to
    :data:`EXACT_MAX` vectors (or when ``exact``), approximate beyond (``exact=False``)."""
    x = _check(vectors)
    if exact is None:
        exact = len(x) <= EXACT_MAX
    return exact_pairs(x, threshold) if exact else approximate_pairs(x, threshold)
