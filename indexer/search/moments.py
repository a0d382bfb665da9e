"""Video moments: the frames a query matches, merged into the photo-level hits.

A video's own vector is the mean of its frames (tags, concepts and duplicates see one item);
a query also searches the frames, and a video scores its best frame when that beats its mean.
Each video hit names its best moments: frames at least :data:`MIN_APART_MS` apart, best first.
"""

from __future__ import annotations

import numpy as np

from indexer.store import IndexStore

MOMENTS = 3  # moments named per video hit
MIN_APART_MS = 1000
_FRAMES_PER_HIT = 8  # frames fetched per requested hit (a video's frames crowd the top)


def merge(
    store: IndexStore, query: np.ndarray, scores: np.ndarray, ids: np.ndarray, k: int,
    allowed: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray, dict[int, list[tuple[int, float]]]]:  # fmt: skip
    """(scores, ids) best first with each video at its best frame's score where higher, and
    {video id: [(t_ms, score)] best first}; unchanged when the store has no frames."""
    fs, fids, ft = store.search_frames(query, max(k, 1) * _FRAMES_PER_HIT, allowed)
    if not len(fs):
        return scores, ids, {}
    moments: dict[int, list[tuple[int, float]]] = {}
    for s, i, t in zip(fs.tolist(), fids.tolist(), ft.tolist(), strict=True):  # <= 8k frames
        found = moments.setdefault(i, [])
        if len(found) < MOMENTS and all(abs(t - u) >= MIN_APART_MS for u, _ in found):
            found.append((t, s))
    best = dict(zip(ids.tolist(), scores.tolist(), strict=True))
    for i, found in moments.items():
        best[i] = max(best.get(i, -np.inf), found[0][1])
    order = sorted(best, key=lambda i: -best[i])
    merged_ids = np.asarray(order, dtype=np.int64)
    merged = np.asarray([best[i] for i in order], dtype=np.float32)
    return merged, merged_ids, moments


def of_video(store: IndexStore, image_id: int, query: np.ndarray) -> list[tuple[int, float]]:
    """The best moments of one video for ``query`` (e.g. a video that ranked by its mean)."""
    times, vecs = store.frames(image_id)
    if not len(times):
        return []
    scores = vecs @ query
    found: list[tuple[int, float]] = []
    for j in np.argsort(-scores)[: 16 * MOMENTS].tolist():
        t = int(times[j])
        if len(found) < MOMENTS and all(abs(t - u) >= MIN_APART_MS for u, _ in found):
            found.append((t, float(scores[j])))
    return found
