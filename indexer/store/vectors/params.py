"""Index kinds and their parameters: which kind a library of n vectors gets, IVF list counts
and probes, HNSW settings, FAISS's thread count."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import faiss

from indexer.store.vectors.checks import EXACT_KINDS, check_kind

FLAT_MAX = 200_000  # above this, "auto" picks ivf-sq8: 1M x 512 float32 is 2 GB, SQ8 is 512 MB
# Below it, "auto" is flat16: an exact scan of float16 codes. SQLite stores the vectors as
# float16 (schema 6), so the codes hold what the source of truth holds; half of flat's bytes
# (a cold query at 100k maps 100 MB, not 200) and, memory-bound, faster (5.2 ms against 9.9 ms
# a query at 100k x 512 on one core, faiss 1.15).
EXACT_KIND = "flat16"

DEFAULT_HNSW_M = 32
DEFAULT_EF_CONSTRUCTION = 40
DEFAULT_EF_SEARCH = 128


def set_threads(n: int) -> None:
    """Set the number of OpenMP threads FAISS uses (process-wide)."""
    if n < 1:
        raise ValueError(f"thread count must be >= 1, got {n}")
    faiss.omp_set_num_threads(int(n))


def choose_kind(n: int, configured: str = "auto") -> str:
    """Index kind for a library of ``n`` vectors: ``configured`` unless it is "auto"."""
    if configured != "auto":
        check_kind(configured)
        return configured
    return EXACT_KIND if n < FLAT_MAX else "ivf-sq8"


def start_kind(configured: str = "auto") -> str:
    """The kind of an index created empty (before its size is known): an exact one."""
    kind = choose_kind(0, configured)
    return kind if kind in EXACT_KINDS else EXACT_KIND


# k-means sees at most this many points per list: training time stays ~linear in nlist, not in
# the library size (1M x 512 trains in seconds instead of a quarter of an hour on 2 cores).
TRAIN_POINTS_PER_LIST = 64


def default_nlist(n: int) -> int:
    """IVF list count for ``n`` vectors: ~2*sqrt(n), with >= 39 points per list."""
    return int(max(1, min(2 * math.sqrt(n), n // 39, 65_536)))


def default_nprobe(nlist: int) -> int:
    """Lists probed per query: nlist/8 within [16, 256] (recall@20 >= 0.95 on clustered data)."""
    return int(min(nlist, max(16, min(nlist // 8, 256))))


@dataclass(frozen=True)
class _Params:
    nlist: int | None = None  # IVF; None = default_nlist(training size)
    nprobe: int | None = None  # IVF; None = default_nprobe(nlist)
    m: int = DEFAULT_HNSW_M
    ef_construction: int = DEFAULT_EF_CONSTRUCTION
    ef_search: int = DEFAULT_EF_SEARCH

    @classmethod
    def from_kwargs(cls, params: dict[str, Any]) -> _Params:
        unknown = set(params) - set(cls.__dataclass_fields__)
        if unknown:
            raise TypeError(f"unknown index parameter(s): {sorted(unknown)}")
        for name, value in params.items():
            if value is not None and (isinstance(value, bool) or int(value) != value or value < 1):
                raise ValueError(
                    f"index parameter {name} must be a positive integer, got {value!r}"
                )
        return cls(**{k: (None if v is None else int(v)) for k, v in params.items()})
