"""Near-duplicate photos: groups of images whose vectors' cosine similarity reaches a threshold.

Pairs come from :mod:`indexer.tags.pairs` (an exact FAISS range search on small libraries,
approximate neighbours from an inverted-file partition on large ones), groups are their
connected components, so a chain a~b~c is one group even when a and c are below the
threshold on their own. ``describe_groups`` adds sizes and dimensions and orders each
group best first (most pixels, then largest file) so the user can keep the first one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from indexer.tags.pairs import similar_pairs

__all__ = ["DEFAULT_THRESHOLD", "DuplicateGroup", "DuplicateMember", "describe_groups",
           "find_duplicate_groups", "similar_pairs"]  # fmt: skip

DEFAULT_THRESHOLD = 0.95


def _components(n: int, pairs: np.ndarray) -> np.ndarray:
    """Component label of each of ``n`` nodes linked by ``pairs`` (scipy's connected
    components: linear in the pairs, no Python loop over them)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    graph = coo_matrix((np.ones(len(pairs), dtype=np.int8), (pairs[:, 0], pairs[:, 1])),
                       shape=(n, n))  # fmt: skip
    return connected_components(graph, directed=False)[1]


def find_duplicate_groups(
    ids: Sequence[int],
    vectors: np.ndarray,
    threshold: float = DEFAULT_THRESHOLD,
    exact: bool | None = None,
) -> list[list[int]]:
    """Groups (two or more ids) of near-duplicates; ids ascending in a group, groups by size
    (largest first) then by smallest id. ``exact``: force (True) or refuse (False) the exact
    pair search; None picks by size (:func:`indexer.tags.pairs.similar_pairs`)."""
    ids_arr = np.asarray(ids, dtype=np.int64)
    if len(ids_arr) != len(vectors):
        raise ValueError(f"{len(ids_arr)} ids for {len(vectors)} vectors")
    if not -1.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be a cosine in [-1, 1], got {threshold}")
    pairs = similar_pairs(vectors, threshold, exact)
    if not len(pairs):
        return []
    # Only images with at least one partner take part (compact indices 0..len(nodes)-1).
    nodes, compact = np.unique(pairs, return_inverse=True)
    labels = _components(len(nodes), compact.reshape(-1, 2))
    order = np.lexsort((ids_arr[nodes], labels))  # by component, ids ascending within
    cuts = np.flatnonzero(np.diff(labels[order])) + 1
    out = [g.tolist() for g in np.split(ids_arr[nodes][order], cuts)]
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
