"""The app's logic without Streamlit: build a query, run it, sort and page the results.

Everything here takes a :class:`indexer.library.Library` (or anything with its methods) and
plain values, so it is unit-tested without a browser.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import numpy as np

from indexer.search import parse as query_mod
from indexer.search import ranking
from indexer.search.engine import QueryError, SearchHit

from .safety import UnsafePathError, resolve_inside_roots

SORTS = ("relevance", "newest first", "oldest first")
_TAG_FILTER_GROWTH = 4  # fetch this many times more candidates per round when filtering by tag


@dataclass(frozen=True)
class SearchRequest:
    """Everything one search depends on (the UI's controls)."""

    text: str = ""
    without: str = ""
    image: bytes | None = None  # an uploaded example photo, already checked
    image_name: str | None = None
    like_id: int | None = None  # "more like this": an indexed image
    k: int = 20
    threshold: float | None = None
    adaptive: bool = False
    folder: str | None = None  # as returned by safety.folder_filter
    since: str | None = None
    until: str | None = None
    tags: tuple[str, ...] = ()
    sort: str = "relevance"
    liked: tuple[int, ...] = ()  # relevance feedback: results marked good
    unliked: tuple[int, ...] = ()  # and bad

    def has_query(self) -> bool:
        return bool(
            self.text.strip() or self.without.strip() or self.image or self.like_id is not None
            or self.liked
        )

    def key(self, generation: object = None) -> str:
        """A digest identifying this request (and the index generation it ran against)."""
        parts = [
            self.text, self.without, self.image_name, self.like_id, self.k, self.threshold,
            self.adaptive, self.folder, self.since, self.until, self.tags, self.sort, generation,
            self.liked, self.unliked,
            hashlib.sha256(self.image).hexdigest() if self.image else None,
        ]  # fmt: skip
        return hashlib.sha256(repr(parts).encode()).hexdigest()


@dataclass
class SearchOutcome:
    hits: list[SearchHit]
    seconds: float
    candidates: int
    cutoff: str
    terms: list[dict] = field(default_factory=list)


def build_terms(text: str, without: str, roots: Sequence[str | os.PathLike]) -> list:
    """Parsed query terms of the text box plus the "without" box, image terms checked.

    ``img:`` terms must name a file inside the library roots; they are replaced by its real
    path. Raises :class:`QueryError` for bad syntax and :class:`UnsafePathError` for paths.
    """
    if not text.strip() and not without.strip():
        return []
    try:
        terms = query_mod.merge_terms(text, without)
    except ValueError as exc:
        raise QueryError(str(exc)) from None
    checked = []
    for t in terms:
        if t.kind == "image" and not t.value.startswith("id:"):
            real = resolve_inside_roots(t.value, roots, what=f"img:{t.value}")
            t = query_mod.QueryTerm(t.weight, t.kind, os.fspath(real))
        checked.append(t)
    return checked


def query_vector(lib: Any, terms: list, image: bytes | None, like_id: int | None) -> np.ndarray:
    """One unit query vector for the terms plus the example photo and/or indexed image."""
    store = lib.store
    engine = lib.search_engine
    vectors, weights = [], []
    for t in terms:
        vectors.append(engine.term_vector(store, t))
        weights.append(float(t.weight))
    for example in (image, like_id):
        if example is not None:
            vec, _ = engine.query_vector(store, None, example)
            vectors.append(vec)
            weights.append(1.0)
    if not vectors:
        raise QueryError("empty query: type what to search for, or give an example photo")
    try:
        return ranking.combine(np.stack(vectors), np.asarray(weights, dtype=np.float32))
    except ValueError as exc:
        raise QueryError(str(exc)) from None


class _TagIds:
    def __init__(self, lib: Any):
        self.lib = lib

    def ids_with(self, tags: Sequence[str]) -> set[int]:
        return {int(i) for i in self.lib.ids_with_tags(list(tags))}


def feedback_vector(
    lib: Any, vec: np.ndarray | None, liked: Sequence[int], unliked: Sequence[int]
) -> np.ndarray:
    """The query vector moved toward the photos marked good and away from the bad ones."""
    from indexer.search.feedback import rocchio

    engine, store = lib.search_engine, lib.store
    pos, neg = engine.mark_vectors(store, list(liked)), engine.mark_vectors(store, list(unliked))
    try:
        return rocchio(vec, pos, neg)
    except ValueError as exc:
        raise QueryError(str(exc)) from None


def _describe(terms: list, req: SearchRequest) -> list[dict]:
    out = [{"kind": t.kind, "value": t.value, "weight": t.weight} for t in terms]
    if req.image is not None:
        out.append({"kind": "upload", "value": req.image_name or "photo", "weight": 1.0})
    if req.like_id is not None:
        out.append({"kind": "like", "value": f"id:{req.like_id}", "weight": 1.0})
    return out


def run_search(
    lib: Any,
    req: SearchRequest,
    roots: Sequence[str | os.PathLike],
    tag_source: Any = None,
) -> SearchOutcome:
    """Run ``req`` against ``lib``; raises QueryError / UnsafePathError / the Library's errors."""
    start = time.perf_counter()
    terms = build_terms(req.text, req.without, roots)
    # like:/unlike: name indexed photos (ids or indexed paths: no file is read), concept: a tag
    liked = (*req.liked, *(t.value for t in terms if t.kind == "like"))
    unliked = (*req.unliked, *(t.value for t in terms if t.kind == "unlike"))
    concepts = [t.value for t in terms if t.kind == "concept"]
    ocr = [t for t in terms if t.kind == "ocr"]  # text: filters, applied by the Library
    terms = [t for t in terms if t.kind in ("text", "image")]
    vec = None
    if terms or req.image is not None or req.like_id is not None or not (liked or concepts or ocr):
        vec = query_vector(lib, terms, req.image, req.like_id)
    if concepts:
        try:
            cvec = lib.concepts.direction(concepts)
        except ValueError as exc:  # an unknown concept
            raise QueryError(str(exc)) from None
        vec = cvec if vec is None and not liked else vec
        req = replace(req, tags=(*req.tags, *concepts))
    if liked or unliked:  # the marks re-rank the query (Rocchio on stored vectors)
        vec = feedback_vector(lib, vec, liked, unliked)
    kwargs = dict(threshold=req.threshold, adaptive=req.adaptive, folder=req.folder,
                  since=req.since, until=req.until)  # fmt: skip
    extra = 1 if req.like_id is not None else 0  # the example itself is left out
    allowed = None
    if req.tags and tag_source is None and concepts:
        tag_source = _TagIds(lib)
    if req.tags and tag_source is not None:
        allowed = tag_source.ids_with(req.tags)
    k = req.k + extra
    while True:
        res = lib.search(None, vector=vec, terms=ocr, k=k, **kwargs)
        hits = [h for h in res.hits if h.id != req.like_id]
        if allowed is not None:
            hits = [h for h in hits if h.id in allowed]
        exhausted = len(res.hits) < k or res.cutoff != "top_k" or k >= res.candidates
        if len(hits) >= req.k or allowed is None or exhausted:
            break
        k *= _TAG_FILTER_GROWTH
    hits = sort_hits(hits[: req.k], req.sort)
    seconds = time.perf_counter() - start
    return SearchOutcome(hits, seconds, res.candidates, res.cutoff, _describe(terms + ocr, req))


def browse_tags(lib: Any, tag_source: Any, req: SearchRequest) -> SearchOutcome:
    """Photos carrying all of ``req.tags`` (no query: newest first), filters applied."""
    from indexer.search.engine import parse_date

    start = time.perf_counter()
    ids = tag_source.ids_with(req.tags)
    if req.folder or req.since or req.until:
        allowed = lib.store.filter_ids(
            req.folder, parse_date(req.since, False), parse_date(req.until, True)
        )
        ids &= set(allowed.tolist())
    records = lib.store.records(sorted(ids))
    hits = [SearchHit(i, float("nan"), r) for i, r in records.items() if r.status == "ok"]
    hits.sort(key=lambda h: (h.record.taken_at or "", h.id), reverse=True)
    hits = sort_hits(hits, "newest first" if req.sort == "relevance" else req.sort)
    return SearchOutcome(hits[: req.k], time.perf_counter() - start, len(ids), "tags", [])


def sort_hits(hits: list[SearchHit], sort: str) -> list[SearchHit]:
    """Relevance order as returned, or by capture date (photos without a date last)."""
    if sort == "relevance":
        return list(hits)
    dated = [h for h in hits if h.record.taken_at]
    undated = [h for h in hits if not h.record.taken_at]
    dated.sort(key=lambda h: h.record.taken_at, reverse=(sort == "newest first"))
    return dated + undated


def page_count(n: int, per_page: int) -> int:
    return max(1, math.ceil(n / max(1, per_page)))


def page_slice(items: list, page: int, per_page: int) -> list:
    """Items of 1-based ``page`` (clamped to the valid range)."""
    page = min(max(1, page), page_count(len(items), per_page))
    return items[(page - 1) * per_page : page * per_page]


def human_size(n: int | None) -> str:
    if n is None:
        return "unknown"
    size = float(n)
    for unit in ("bytes", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{int(size)} bytes" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} bytes"  # pragma: no cover


def human_date(taken_at: str | None) -> str:
    if not taken_at:
        return "unknown"
    try:
        return datetime.fromisoformat(taken_at).strftime("%d %b %Y, %H:%M")
    except ValueError:
        return taken_at


def human_time(ts: float | None) -> str:
    if not ts:
        return "never"
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def clock(ms: int | None) -> str:
    """A time in a video as m:ss (h:mm:ss from an hour)."""
    secs = max(0, int(ms or 0) // 1000)
    h, m, sec = secs // 3600, secs // 60 % 60, secs % 60
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


def latency_text(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 10 else f"{seconds:.1f} s"


def watch_status(lib: Any, status: dict) -> dict:
    """Whether the watch service runs and when it last updated the index.

    Feature-detected: ``lib.watch_status()`` or a ``"watch"`` entry in ``lib.status()``
    (a dict with ``running`` and ``last_update`` / ``updated_at``). Else "not running".
    """
    info: Any = status.get("watch")
    fn = getattr(lib, "watch_status", None)
    if info is None and callable(fn):
        try:
            info = fn()
        except Exception:  # noqa: BLE001 - a broken watch status must not break the page
            info = None
    if not isinstance(info, dict):
        return {"running": False, "last_update": None, "detail": "not running"}
    running = bool(info.get("running"))
    last = info.get("last_update") or info.get("updated_at") or info.get("last_run")
    detail = "running" if running else "not running"
    if info.get("pid") and running:
        detail += f" (pid {info['pid']})"
    return {"running": running, "last_update": last, "detail": detail}


def index_updated_at(lib: Any) -> float | None:
    """When the index's stored data last changed (epoch seconds; None if unknown)."""
    try:
        return lib.store.last_modified()
    except Exception:  # noqa: BLE001 - no index (yet): nothing to show
        return None


__all__ = [
    "SORTS", "QueryError", "SearchOutcome", "SearchRequest", "UnsafePathError", "browse_tags",
    "build_terms",
    "page_count", "page_slice", "query_vector", "run_search", "sort_hits", "watch_status",
]  # fmt: skip
