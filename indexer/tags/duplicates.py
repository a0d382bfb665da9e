"""Near-duplicate photos: groups of images whose vectors' cosine similarity reaches a threshold.

Pairs come from a FAISS range search (exact inner product on L2-normalised vectors), groups are
their connected components (union-find), so a chain a~b~c is one group even when a and c are
below the threshold on their own. ``describe_groups`` adds sizes and dimensions and orders each
group best first (most pixels, then largest file) so the user can keep the first one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

DEFAULT_THRESHOLD = 0.95
_QUERY_CHUNK = 4096  # query rows per range search (bounds the result buffers)


def similar_pairs(vectors: np.ndarray, threshold: float) -> np.ndarray:
    """(P, 2) int64 row-index pairs ``i < j`` with cosine(vectors[i], vectors[j]) >= threshold."""
    import faiss

    x = np.ascontiguousarray(vectors, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"vectors must be (N, D), got shape {x.shape}")
    if len(x) < 2:
        return np.zeros((0, 2), dtype=np.int64)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
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


def _components(n: int, pairs: np.ndarray) -> list[int]:
    """Component label of each of ``n`` nodes linked by ``pairs`` (union-find, path halving)."""
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b in pairs.tolist():
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return [find(i) for i in range(n)]


def find_duplicate_groups(
    ids: Sequence[int], vectors: np.ndarray, threshold: float = DEFAULT_THRESHOLD
) -> list[list[int]]:
    """Groups (two or more ids) of near-duplicates; ids ascending in a group, groups by size
    (largest first) then by smallest id."""
    ids_arr = np.asarray(ids, dtype=np.int64)
    if len(ids_arr) != len(vectors):
        raise ValueError(f"{len(ids_arr)} ids for {len(vectors)} vectors")
    if not -1.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be a cosine in [-1, 1], got {threshold}")
    pairs = similar_pairs(vectors, threshold)
    if not len(pairs):
        return []
    # Only images with at least one partner take part (compact indices 0..len(nodes)-1).
    nodes, compact = np.unique(pairs, return_inverse=True)
    labels = _components(len(nodes), compact.reshape(-1, 2))
    groups: dict[int, list[int]] = {}
    for label, node in zip(labels, ids_arr[nodes].tolist()):
        groups.setdefault(label, []).append(int(node))
    out = [sorted(g) for g in groups.values()]
    return sorted(out, key=lambda g: (-len(g), g[0]))


@dataclass
class DuplicateMember:
    """One image of a group with what helps choosing which copy to keep."""

    id: int
    path: str | None = None
    size: int | None = None  # bytes
    width: int | None = None
    height: int | None = None

    @property
    def pixels(self) -> int:
        return (self.width or 0) * (self.height or 0)


@dataclass
class DuplicateGroup:
    """Near-duplicates, best first (``members[0]`` is the suggested keeper)."""

    members: list[DuplicateMember] = field(default_factory=list)

    @property
    def keep(self) -> DuplicateMember:
        return self.members[0]

    def to_dict(self) -> dict[str, Any]:
        return {"keep": self.keep.id, "members": [asdict(m) for m in self.members]}


def _field(meta: Any, name: str) -> Any:
    if meta is None:
        return None
    if isinstance(meta, Mapping):
        return meta.get(name)
    return getattr(meta, name, None)


def describe_groups(
    groups: Sequence[Sequence[int]], lookup: Callable[[int], Any]
) -> list[DuplicateGroup]:
    """Attach path/size/width/height from ``lookup(id)`` (a mapping or an object such as the
    store's ``Record``; None if unknown) and order each group: most pixels, then largest file,
    then smallest id."""
    out = []
    for group in groups:
        members = []
        for i in group:
            meta = lookup(i)
            members.append(
                DuplicateMember(
                    int(i),
                    _field(meta, "path"),
                    _field(meta, "size"),
                    _field(meta, "width"),
                    _field(meta, "height"),
                )
            )
        members.sort(key=lambda m: (-m.pixels, -(m.size or 0), m.id))
        out.append(DuplicateGroup(members))
    return out
