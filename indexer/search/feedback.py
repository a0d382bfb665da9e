"""Relevance feedback: re-rank a query from photos the user marked good (like) or bad (unlike).

Rocchio on the L2-normalised vectors: ``q' = a*q + b*mean(liked) - c*mean(unliked)``, then
normalised. Without a query the liked photos alone define it. Works on stored vectors, so it
costs one matrix product and no model call.
"""

from __future__ import annotations

import numpy as np

ALPHA, BETA, GAMMA = 1.0, 0.75, 0.25


def rocchio(
    query: np.ndarray | None,
    liked: np.ndarray,
    unliked: np.ndarray,
    alpha: float = ALPHA,
    beta: float = BETA,
    gamma: float = GAMMA,
) -> np.ndarray:
    """The unit query vector moved toward ``liked`` (n, d) and away from ``unliked`` (m, d).

    Raises ValueError when there is nothing to search for (no query and no liked photo) or
    the result is the zero vector.
    """
    parts = []
    if query is not None:
        q = np.asarray(query, dtype=np.float64).reshape(-1)
        parts.append(alpha * q / max(np.linalg.norm(q), 1e-12))
    for vecs, w in ((liked, beta), (unliked, -gamma)):
        v = np.asarray(vecs, dtype=np.float64)
        if v.size:
            v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
            parts.append(w * v.mean(axis=0))
    if query is None and not np.asarray(liked).size:
        raise ValueError("relevance feedback needs a query or at least one liked photo")
    total = np.sum(parts, axis=0)
    length = float(np.linalg.norm(total))
    if length < 1e-9:
        raise ValueError("the marks cancel the query out: the combined vector is zero")
    return (total / length).astype(np.float32)
