"""FAISS store for L2-normalised embeddings keyed by int64 image id (inner product = cosine).

Kinds:
  * ``flat``    exact search (``IndexIDMap2(IndexFlatIP)``), 4*d bytes per vector.
  * ``flat16``  exact search over float16 codes (``IndexIDMap2(IndexScalarQuantizer(QT_fp16))``),
    2*d bytes per vector; what "auto" picks below ``FLAT_MAX`` (see ``params``).
  * ``ivf``     ``IndexIVFFlat``; approximate, 4*d bytes per vector, faster on large libraries.
  * ``ivf-sq8`` ``IndexIVFScalarQuantizer(QT_8bit)``; approximate, d bytes per vector.
  * ``hnsw``    ``IDMap2(IndexHNSWFlat)``; fast approximate search, but removing or replacing
    vectors rebuilds the graph (O(n)), so it suits libraries that rarely change.

IVF kinds store ids natively (``add_with_ids``) with a hashtable direct map so vectors can
be read back and removed by id. An IVF index from ``create`` is trained on its first
``add`` batch; prefer ``build`` with the whole library so the quantiser sees all the data.

Writes are not thread-safe; concurrent ``search`` calls on an unchanging index are.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from indexer.store.vectors import file as file_format
from indexer.store.vectors.checks import as_ids, as_matrix, check_kind, merge_sorted, prepare
from indexer.store.vectors.params import (  # noqa: F401 - re-exported
    DEFAULT_EF_CONSTRUCTION,
    DEFAULT_EF_SEARCH,
    DEFAULT_HNSW_M,
    EXACT_KIND,
    FLAT_MAX,
    TRAIN_POINTS_PER_LIST,
    _Params,
    choose_kind,
    default_nlist,
    default_nprobe,
    set_threads,
    start_kind,
)


class VectorIndex:
    """Vectors keyed by non-negative int64 ids; scores are inner products of unit vectors."""

    def __init__(self, dim: int, kind: str, params: _Params, index: faiss.Index | None) -> None:
        """Internal: use ``create``, ``build`` or ``load``."""
        self.dim = dim
        self.kind = kind
        self._params = params
        self._index = index
        self._id_cache: np.ndarray | None = np.empty(0, dtype=np.int64)  # the stored ids, sorted
        self._path: Path | None = None  # of a loaded index (whose ids are read on first use)
        # FAISS maps the file (load(mmap=True)): its arrays are views that cannot grow, so a
        # change first copies the index into memory (_own)
        self._mapped = False
        self.file_signature: dict = {}  # of the file this was loaded from or saved to

    # ----------------------------------------------------------------- construction

    @classmethod
    def create(cls, dim: int, kind: str = "flat", **params: Any) -> VectorIndex:
        """An empty index. IVF kinds are trained on their first ``add`` batch.

        Parameters: ``nlist``, ``nprobe`` (IVF), ``m``, ``ef_construction``, ``ef_search`` (HNSW).
        """
        if isinstance(dim, bool) or int(dim) != dim or dim < 1:
            raise ValueError(f"dim must be a positive integer, got {dim!r}")
        kind = choose_kind(0, kind)
        self = cls(int(dim), kind, _Params.from_kwargs(params), None)
        if kind in ("flat", "flat16", "hnsw"):
            self._index = self._new_idmap()
        return self

    @classmethod
    def build(
        cls, ids: np.ndarray, vectors: np.ndarray, kind: str = "auto", **params: Any
    ) -> VectorIndex:
        """An index holding ``vectors`` under ``ids``; IVF quantisers are trained on them."""
        x = as_matrix(vectors)
        self = cls.create(x.shape[1], choose_kind(len(x), kind), **params)
        self.add(ids, x)
        return self

    def _new_idmap(self) -> faiss.Index:
        if self.kind == "flat":
            inner = faiss.IndexFlatIP(self.dim)
        elif self.kind == "flat16":
            inner = faiss.IndexScalarQuantizer(
                self.dim, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT
            )
        else:
            inner = faiss.IndexHNSWFlat(self.dim, self._params.m, faiss.METRIC_INNER_PRODUCT)
            inner.hnsw.efConstruction = self._params.ef_construction
            inner.hnsw.efSearch = self._params.ef_search
        return faiss.IndexIDMap2(inner)

    def _train_ivf(self, x: np.ndarray) -> None:
        nlist = self._params.nlist or default_nlist(len(x))
        if len(x) < nlist:
            raise ValueError(f"training an IVF index with nlist={nlist} needs >= {nlist} vectors")
        quantizer = faiss.IndexFlatIP(self.dim)
        if self.kind == "ivf":
            index = faiss.IndexIVFFlat(quantizer, self.dim, nlist, faiss.METRIC_INNER_PRODUCT)
        else:
            index = faiss.IndexIVFScalarQuantizer(
                quantizer,
                self.dim,
                nlist,
                faiss.ScalarQuantizer.QT_8bit,
                faiss.METRIC_INNER_PRODUCT,
            )
        cap = TRAIN_POINTS_PER_LIST * nlist
        if len(x) > cap:
            pick = np.random.default_rng(0).choice(len(x), cap, replace=False)
            x = x[np.sort(pick)]
        index.train(x)
        index.nprobe = self._nprobe(nlist)
        index.set_direct_map_type(faiss.DirectMap.Hashtable)  # reconstruct/remove by id
        self._params = replace(self._params, nlist=nlist)
        self._index = index

    # ----------------------------------------------------------------- mutation

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Store ``vectors`` (normalised on the way in) under ``ids``, replacing existing ids."""
        x = prepare(vectors, self.dim)
        keys = as_ids(ids, unique=True)
        if len(keys) != len(x):
            raise ValueError(f"{len(keys)} ids for {len(x)} vectors")
        if len(keys) == 0:
            return
        self._own()
        existing = keys[self.contains(keys)]
        if self.kind == "hnsw" and existing.size:
            self._rebuild_hnsw(existing, keys, x)
            return
        if existing.size:
            self.remove(existing)
        if self._index is None:
            self._train_ivf(x)
        self._index.add_with_ids(x, keys)
        self._ids = merge_sorted(self._ids, np.sort(keys))

    def remove(self, ids: np.ndarray) -> int:
        """Remove ``ids`` (unknown ids are ignored); returns how many were removed."""
        keys = np.unique(as_ids(ids, unique=False))
        present = keys[self.contains(keys)]
        if present.size == 0:
            return 0
        self._own()
        if self.kind == "hnsw":
            self._rebuild_hnsw(present)  # also refreshes self._ids
            return int(present.size)
        if self.kind in ("flat", "flat16"):
            self._index.remove_ids(present)
        else:
            # The hashtable direct map only accepts IDSelectorArray (O(len(ids)), no scan).
            removed = self._index.remove_ids(
                faiss.IDSelectorArray(len(present), faiss.swig_ptr(present))
            )
            if removed != present.size:
                raise RuntimeError(f"FAISS removed {removed} of {present.size} ids")
        self._ids = np.delete(self._ids, np.searchsorted(self._ids, present))
        return int(present.size)

    def _own(self) -> None:
        """Copy a memory-mapped index into memory before changing it (FAISS aborts the
        process when a mapped array is resized)."""
        if self._mapped:
            self._index = faiss.deserialize_index(faiss.serialize_index(self._index))
            self._mapped = False

    def _rebuild_hnsw(
        self, drop: np.ndarray, new_ids: np.ndarray | None = None, new_x: np.ndarray | None = None
    ) -> None:
        """HNSW cannot delete: rebuild the graph from the kept vectors (plus any new ones)."""
        old = self._index
        old_ids = faiss.vector_to_array(old.id_map)
        keep = ~np.isin(old_ids, drop)
        kept_ids = old_ids[keep]
        kept_x = faiss.downcast_index(old.index).reconstruct_batch(np.flatnonzero(keep))
        if new_ids is not None:
            kept_ids = np.concatenate([kept_ids, new_ids])
            kept_x = np.concatenate([kept_x, new_x])
        index = self._new_idmap()
        if len(kept_ids):
            index.add_with_ids(kept_x, kept_ids)
        self._index = index
        self._ids = np.sort(kept_ids)

    # ----------------------------------------------------------------- inspection

    @property
    def _ids(self) -> np.ndarray:
        if self._id_cache is None:  # a loaded index: read when first needed
            self._id_cache = file_format.stored_ids(self._index, self.kind, self._path)
        return self._id_cache

    @_ids.setter
    def _ids(self, ids: np.ndarray) -> None:
        self._id_cache = ids

    def __len__(self) -> int:
        if self._id_cache is None:
            return int(self._index.ntotal) if self._index is not None else 0
        return int(self._id_cache.size)

    def __repr__(self) -> str:
        return f"VectorIndex(kind={self.kind!r}, dim={self.dim}, n={len(self)})"

    def ids(self) -> np.ndarray:
        """All stored ids, int64, sorted ascending (a copy)."""
        return self._ids.copy()

    def contains(self, ids: np.ndarray) -> np.ndarray:
        """Boolean mask: which of ``ids`` are stored."""
        keys = as_ids(ids, unique=False)
        if self._ids.size == 0 or keys.size == 0:
            return np.zeros(keys.size, dtype=bool)
        pos = np.minimum(np.searchsorted(self._ids, keys), self._ids.size - 1)
        return self._ids[pos] == keys

    def get_vectors(self, ids: np.ndarray) -> np.ndarray:
        """Stored vectors for ``ids`` (float32, (n, dim)); ivf-sq8 returns the decoded 8-bit
        approximation. Raises KeyError for ids not in the index."""
        keys = as_ids(ids, unique=False)
        missing = keys[~self.contains(keys)]
        if missing.size:
            raise KeyError(f"ids not in index: {missing[:10].tolist()}")
        if keys.size == 0:
            return np.empty((0, self.dim), dtype=np.float32)
        return self._index.reconstruct_batch(keys)

    def sample(self, n: int, seed: int = 0) -> np.ndarray:
        """Up to ``n`` stored vectors chosen at random, e.g. to estimate a query's score
        distribution over the library (``ranking.adaptive_cutoff``'s ``library_scores``)."""
        rng = np.random.default_rng(seed)
        chosen = rng.choice(self._ids, size=min(n, len(self)), replace=False)
        return self.get_vectors(chosen)

    # ----------------------------------------------------------------- search

    def set_search_params(self, nprobe: int | None = None, ef_search: int | None = None) -> None:
        """Set the IVF ``nprobe`` / HNSW ``ef_search`` used by ``search`` (saved with the index).

        A parameter that does not apply to this kind is stored but has no effect.
        """
        changes = {k: v for k, v in (("nprobe", nprobe), ("ef_search", ef_search)) if v is not None}
        _Params.from_kwargs(changes)  # validation
        self._params = replace(self._params, **{k: int(v) for k, v in changes.items()})

    def _nprobe(self, nlist: int) -> int:
        return min(nlist, self._params.nprobe or default_nprobe(nlist))

    def search(
        self, queries: np.ndarray, k: int, allowed_ids: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` ids by cosine for each query row (a 1-D query counts as one row).

        Returns ``(scores float32 (q, k), ids int64 (q, k))``, best first; missing results
        (fewer than k stored/allowed vectors) are padded with score -inf and id -1.
        ``allowed_ids`` restricts the results to those ids via a FAISS ID selector; the
        IVF ``nprobe`` / HNSW ``ef_search`` are scaled up by 1/(allowed fraction) so a
        narrow filter still finds its matches, and HNSW switches to an exact scan of the
        allowed vectors when that is cheaper (len(allowed)^2 <= m * ef_search * n).
        An empty ``allowed_ids`` gives all-padding results.
        """
        q = prepare(np.atleast_2d(queries), self.dim)
        if isinstance(k, bool) or int(k) != k or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        k = int(k)
        scores = np.full((len(q), k), -np.inf, dtype=np.float32)
        labels = np.full((len(q), k), -1, dtype=np.int64)
        n = len(self)
        if n == 0 or len(q) == 0:
            return scores, labels

        selector = None
        fraction = 1.0
        if allowed_ids is not None:
            allowed = np.unique(as_ids(allowed_ids, unique=False))
            allowed = allowed[self.contains(allowed)]
            if allowed.size == 0:
                return scores, labels
            if allowed.size < n:
                fraction = allowed.size / n
                if self.kind == "hnsw" and allowed.size**2 <= self._hnsw_exact_limit(n):
                    return self._exact_subset(q, k, allowed, scores, labels)
                selector = faiss.IDSelectorBatch(allowed.size, faiss.swig_ptr(allowed))
            n = int(allowed.size)

        kk = min(k, n)
        params = self._search_parameters(selector, fraction)
        d, i = self._index.search(q, kk, params=params)
        scores[:, :kk] = d
        labels[:, :kk] = i
        scores[labels < 0] = -np.inf
        return scores, labels

    def _search_parameters(
        self, selector: faiss.IDSelector | None, fraction: float
    ) -> faiss.SearchParameters:
        # The caller keeps `selector` alive: SearchParameters only holds a raw pointer to it.
        if self.kind in ("ivf", "ivf-sq8"):
            nlist = self._index.nlist
            nprobe = min(nlist, math.ceil(self._nprobe(nlist) / fraction))
            return faiss.SearchParametersIVF(sel=selector, nprobe=nprobe)
        if self.kind == "hnsw":
            ef = min(len(self), math.ceil(self._params.ef_search / fraction))
            return faiss.SearchParametersHNSW(sel=selector, efSearch=max(ef, 1))
        return faiss.SearchParameters(sel=selector)

    def _hnsw_exact_limit(self, n: int) -> int:
        # A filtered HNSW search visits ~ef/fraction nodes with ~m distances each; scanning
        # the allowed vectors directly costs len(allowed). Equal when len(allowed)^2 = this.
        return self._params.m * self._params.ef_search * n

    def _exact_subset(
        self, q: np.ndarray, k: int, allowed: np.ndarray, scores: np.ndarray, labels: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Brute-force top-k over the (few) allowed vectors."""
        sims = q @ self._index.reconstruct_batch(allowed).T
        kk = min(k, allowed.size)
        top = np.argpartition(-sims, kk - 1, axis=1)[:, :kk]
        top_scores = np.take_along_axis(sims, top, axis=1)
        order = np.argsort(-top_scores, axis=1, kind="stable")
        scores[:, :kk] = np.take_along_axis(top_scores, order, axis=1)
        labels[:, :kk] = allowed[np.take_along_axis(top, order, axis=1)]
        return scores, labels

    # ----------------------------------------------------------------- persistence

    def save(self, path: str | Path, generation: int) -> dict:
        """Atomically write the index and ``generation`` to ``path`` (:func:`file.write`);
        returns the file's signature (``load``'s ``trusted``)."""
        if isinstance(generation, bool) or int(generation) != generation:
            raise ValueError(f"generation must be an integer, got {generation!r}")
        header = json.dumps(
            {
                "dim": self.dim,
                "kind": self.kind,
                "generation": int(generation),
                "count": len(self),
                "params": asdict(self._params),
            },
            sort_keys=True,
        ).encode()

        def payload(write: Callable[[bytes], int]) -> None:
            writer = faiss.PyCallbackIOWriter(write)
            faiss.write_index(self._index, writer)
            del writer

        sig = file_format.write(path, header, payload if self._index is not None else None)
        self.file_signature = sig
        return sig

    @classmethod
    def load(
        cls, path: str | Path, mmap: bool = False, trusted: dict | None = None
    ) -> tuple[VectorIndex, int]:
        """Read an index written by ``save``; returns ``(index, generation)``.

        ``mmap``: FAISS maps the file instead of reading it (milliseconds at any size; pages
        are read as searches touch them and shared with other processes); the first change
        copies it into memory. ``trusted``: the signature ``save`` returned; the checksum is
        skipped while the file still has it (see indexer.store.vectors.file).

        Raises FileNotFoundError if ``path`` is missing and ValueError naming the file if
        it is truncated, corrupt (checksum) or not an index file.
        """
        path = Path(path)
        meta, index, sig, mapped = file_format.read(path, mmap=mmap, trusted=trusted)
        try:
            dim, kind = int(meta["dim"]), str(meta["kind"])
            generation, count = int(meta["generation"]), int(meta["count"])
            params = _Params.from_kwargs(meta["params"])
            check_kind(kind)
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}: bad index header: {exc}") from exc
        self = cls(dim, kind, params, index)
        self._mapped, self.file_signature = mapped, sig
        file_format.check_index(self._index, self.kind, self.dim, path)
        held = int(self._index.ntotal) if self._index is not None else 0
        if held != count:
            raise ValueError(f"{path}: header says {count} vectors, index holds {held}")
        self._id_cache, self._path = None, path
        return self, generation
