"""The search engine: query terms -> one query vector -> the store's vector search -> hits.

A query is a weighted sum of terms (``indexer.search.parse`` syntax: ``beach + sunset - people``,
``2:dog``, ``img:/path.jpg``, ``id:123``) plus an optional example image (path, bytes or an
indexed image id). Text of any length is encoded with ``clipmodel.encode_text_long``. Filters
(folder, capture-date range, tags) become an ``allowed_ids`` set computed by the store. Results are
joined with the image rows, so a vector whose row was just deleted is never returned.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np

from indexer.embed.encoder import Encoder
from indexer.search import feedback, moments, ranking, textmatch
from indexer.search import parse as query_mod
from indexer.store import IndexStore, ModelMismatchError, Record, TagView

_EXTRA = 16  # extra candidates fetched to make up for rows deleted since FAISS was synced
_LIBRARY_SAMPLE = 2000  # library vectors sampled to estimate a query's score distribution


class QueryError(ValueError):
    """The query cannot be run (empty, unknown image id, unreadable example image, bad date)."""


@dataclass
class SearchHit:
    """One result: the image record and its cosine score against the query."""

    id: int
    score: float
    record: Record
    text: str | None = None  # the matched recognised text (a query with text: terms)
    moments: list[tuple[int, float]] | None = None  # a video's best frames: (t_ms, score)

    @property
    def path(self) -> str:
        return self.record.path

    def to_dict(self) -> dict:
        r = self.record
        return {
            "id": self.id, "path": r.path, "score": round(float(self.score), 6), "root": r.root,
            "width": r.width, "height": r.height, "taken_at": r.taken_at, "camera": r.camera,
            "size": r.size, "content_hash": r.content_hash,
        } | ({"text": self.text} if self.text is not None else {}) | (
            {"duration_ms": r.duration_ms, "moments": [
                {"t": round(t / 1000, 3), "score": round(s, 6)} for t, s in self.moments or []]}
            if r.is_video else {})  # fmt: skip


@dataclass
class SearchResults:
    hits: list[SearchHit]
    candidates: int  # how many indexed images the filters allowed
    cutoff: str  # "top_k" | "threshold" | "adaptive" | "text" (text: terms only)
    terms: list[dict] = field(default_factory=list)


def parse_date(text: str | None, end: bool) -> str | None:
    """``YYYY``, ``YYYY-MM``, ``YYYY-MM-DD`` or full ISO -> comparable bound for ``taken_at``.

    An ``end`` bound covers the whole period (``--until 2020-05`` includes all of May 2020).
    """
    if text is None or text == "":
        return None
    t = text.strip().replace(" ", "T")
    for fmt, n in (("%Y", 4), ("%Y-%m", 7), ("%Y-%m-%d", 10), ("%Y-%m-%dT%H:%M", 16),
                   ("%Y-%m-%dT%H:%M:%S", 19)):  # fmt: skip
        try:
            datetime.strptime(t, fmt)
        except ValueError:
            continue
        if len(t) != n:
            continue
        return t + "~" if end else t
    raise QueryError(f"invalid date {text!r}; use YYYY, YYYY-MM, YYYY-MM-DD or YYYY-MM-DDTHH:MM:SS")


class SearchEngine:
    """Runs searches against the active store; the encoder is only loaded for text/images."""

    def __init__(
        self,
        get_store: Callable[[], IndexStore],
        get_encoder: Callable[[], Encoder],
        tag_ids: Callable[[list[str]], np.ndarray] | None = None,
        concept_direction: Callable[[list[str]], np.ndarray] | None = None,
    ):
        self._get_store = get_store
        self._get_encoder = get_encoder
        # ids of images carrying every given tag (the Library's: the vocabulary's top_n applied)
        self._tag_ids = tag_ids
        # the unit direction of named concepts (a query made of concepts only is ranked by it)
        self._concept_direction = concept_direction
        self._checked: tuple[int, str] | None = None
        self._sample_key: tuple | None = None
        self._sample = np.zeros((0, 1), np.float32)

    def _library_sample(self, store: IndexStore) -> np.ndarray:
        """Random library vectors (cached per index generation) for the adaptive cutoff."""
        state = store.vector_state()
        key = (id(store), state.generation, state.count)
        if self._sample_key != key:
            self._sample = store.sample_vectors(_LIBRARY_SAMPLE)
            self._sample_key = key
        return self._sample

    def _encoder(self, store: IndexStore) -> Encoder:
        enc = self._get_encoder()
        key = (id(store), enc.identity.checkpoint_sha256)
        if self._checked != key:
            store.check_model(enc.identity)
            self._checked = key
        return enc

    def _image_vector(self, store: IndexStore, image: str | os.PathLike | bytes) -> np.ndarray:
        from indexer.embed.images import BadImage, decode, read_file  # PIL: not for text

        try:
            data = bytes(image) if isinstance(image, (bytes, bytearray)) else read_file(image)
            dec = decode(data, max_pixels=10**9, name=None if isinstance(image, (bytes, bytearray))
                         else image)  # fmt: skip
        except BadImage as exc:
            raise QueryError(f"cannot use query image: {exc}") from None
        enc = self._encoder(store)
        # A query image takes OpenAI's exact resize: one image, speed does not matter
        prepare = getattr(enc, "prepare", None)
        x = prepare(dec.image, fast_resize=False)[0] if prepare else enc.preprocess(dec.image)
        return enc.encode_images([x])[0]

    def _id_vector(self, store: IndexStore, image_id: int) -> np.ndarray:
        ids, vecs = store.vectors([int(image_id)])
        if len(ids) == 0:
            raise QueryError(f"image id {image_id} is not in the index (or has no vector)")
        return vecs[0]

    def term_vector(self, store: IndexStore, term) -> np.ndarray:
        """The unit vector of one parsed query term."""
        kind, value = term.kind, term.value
        if kind in ("like", "unlike", "concept"):
            raise QueryError(f"{kind}: terms are marks or filters, not query vectors")
        if kind == "text":
            return self._encoder(store).encode_texts([value])[0]
        if kind == "id" or isinstance(value, int):
            return self._id_vector(store, int(value))
        if isinstance(value, str) and value.startswith("id:") and value[3:].isdigit():
            return self._id_vector(store, int(value[3:]))
        return self._image_vector(store, value)

    def query_vector(
        self,
        store: IndexStore,
        query: str | None,
        image: str | os.PathLike | bytes | int | None,
        terms: list[query_mod.QueryTerm] | None = None,
    ) -> tuple[np.ndarray, list[dict]]:
        """Combine the query's terms (and the example image) into one unit vector."""
        vectors, weights, described = [], [], []
        terms = _terms(query, terms)
        if terms:
            for t in terms:
                vectors.append(self.term_vector(store, t))
                weights.append(float(t.weight))
                described.append({"kind": t.kind, "value": str(t.value), "weight": t.weight})
        if image is not None:
            if isinstance(image, int):
                vectors.append(self._id_vector(store, image))
            else:
                vectors.append(self._image_vector(store, image))
            weights.append(1.0)
            described.append({"kind": "image", "value": _describe(image), "weight": 1.0})
        if not vectors:
            raise QueryError("empty query: give text, an image, or both")
        try:
            vec = ranking.combine(np.stack(vectors), np.asarray(weights, dtype=np.float32))
        except ValueError as exc:
            raise QueryError(str(exc)) from None
        return np.asarray(vec, dtype=np.float32).reshape(-1), described

    def search(
        self,
        query: str | None = None,
        image: str | os.PathLike | bytes | int | None = None,
        k: int = 20,
        threshold: float | None = None,
        adaptive: bool = False,
        folder: str | os.PathLike | None = None,
        since: str | None = None,
        until: str | None = None,
        vector: np.ndarray | None = None,
        terms: list[query_mod.QueryTerm] | None = None,
        tags: list[str] | tuple[str, ...] | None = None,
        like: Sequence[int | str] = (),
        unlike: Sequence[int | str] = (),
    ) -> SearchResults:
        """Top-``k`` images for a query; ``threshold`` drops low scores, ``adaptive`` cuts
        where the scores stop standing out from the library's; filters restrict candidates.

        The query is ``query`` (text in :mod:`indexer.search.parse` syntax) plus ``terms`` (already
        parsed, e.g. from ``parse.merge_terms`` for a UI's "without" box) plus ``image`` (path,
        bytes or indexed id, weight 1); or a raw unit ``vector``. ``folder`` keeps images under
        that folder; ``since``/``until`` keep images whose EXIF capture time is in the range;
        ``tags`` keeps images carrying every one of those tags. ``like``/``unlike`` are
        relevance-feedback marks (indexed ids or paths; also ``like:X`` in the query): the
        query moves toward the liked photos and away from the others (Rocchio).
        """
        if k < 1:
            raise QueryError("k must be at least 1")
        store = self._get_store()
        store.refresh()
        lo, hi = parse_date(since, False), parse_date(until, True)
        terms = _terms(query, terms)
        liked = list(like) + [t.value for t in terms if t.kind == "like"]
        unliked = list(unlike) + [t.value for t in terms if t.kind == "unlike"]
        concepts = [t.value for t in terms if t.kind == "concept"]
        ocr = [t for t in terms if t.kind == "ocr"]
        terms = [t for t in terms if t.kind in ("text", "image")]
        if concepts:
            tags = [*(tags or []), *concepts]
        if vector is not None:
            qvec, described = np.asarray(vector, dtype=np.float32).reshape(-1), []
        elif terms or image is not None or not (liked or unliked or concepts or ocr):
            qvec, described = self.query_vector(store, None, image, terms)
        else:
            qvec, described = None, []
        cvec = self._concept_vector(store, concepts) if concepts else None  # checks the names
        described += [{"kind": "concept", "value": c, "weight": 1.0} for c in concepts]
        described += [{"kind": "ocr", "value": t.value, "weight": t.weight} for t in ocr]
        if liked or unliked:
            qvec = self._feedback(store, qvec, liked, unliked, described)
        elif qvec is None:  # concepts only: rank the photos they apply to by the concept
            qvec = cvec
        state = store.vector_state()
        if state.count == 0:
            return SearchResults([], 0, "top_k", described)
        allowed = None
        if folder is not None or lo or hi:
            allowed = store.filter_ids(os.fspath(folder) if folder else None, lo, hi)
            if allowed.size == 0:
                return SearchResults([], 0, "top_k", described)
        if tags:
            tagged = self._tagged_ids(store, list(tags))
            allowed = tagged if allowed is None else np.intersect1d(allowed, tagged)
            if allowed.size == 0:
                return SearchResults([], 0, "top_k", described)
        found = textmatch.resolve(store, ocr) if ocr else None
        if found is not None:
            allowed = found.apply(allowed, store.filter_ids)
            if allowed.size == 0:
                return SearchResults([], 0, "top_k", described)
            if qvec is None:
                return self._text_only(store, found, allowed, k, described)
        candidates = state.count if allowed is None else int(allowed.size)
        scores, ids = store.search_vectors(qvec, k + _EXTRA, allowed_ids=allowed)
        keep = ids >= 0
        scores, ids, found_moments = moments.merge(
            store, qvec, scores[keep], ids[keep], k + _EXTRA, allowed
        )
        records = store.records(ids.tolist())
        present = np.fromiter((i in records for i in ids.tolist()), dtype=bool, count=len(ids))
        scores, ids = scores[present][:k], ids[present][:k]
        cutoff = "top_k"
        if threshold is not None:
            scores, ids = ranking.apply_threshold(scores, ids, threshold)
            cutoff = "threshold"
        if adaptive and len(scores):
            lib_scores = self._library_sample(store) @ qvec
            n = int(ranking.adaptive_cutoff(scores, library_scores=lib_scores))
            scores, ids = scores[:n], ids[:n]
            cutoff = "adaptive"
        hits = [
            SearchHit(int(i), float(s), records[int(i)], found and found.snippet(int(i)))
            for s, i in zip(scores, ids, strict=True)
        ]
        for hit in hits:
            if hit.record.is_video:
                hit.moments = found_moments.get(hit.id) or moments.of_video(store, hit.id, qvec)
        return SearchResults(hits, candidates, cutoff, described)

    def _text_only(self, store: IndexStore, found: textmatch.TextFilter, allowed: np.ndarray,
                   k: int, described: list[dict]) -> SearchResults:  # fmt: skip
        """A query of ``text:`` terms only: the matching photos, best match then newest
        first (no model is loaded)."""
        if found.include is None:
            raise QueryError("a query of excluded text only (- text:X) has nothing to look for")
        ranked = sorted(allowed.tolist(), key=lambda i: (-found.quality(i), -i))
        records = store.records(ranked[: k + _EXTRA])
        hits = [SearchHit(i, found.quality(i), records[i], found.snippet(i))
                for i in ranked[: k + _EXTRA] if i in records][:k]  # fmt: skip
        return SearchResults(hits, int(allowed.size), "text", described)

    def resolve_ids(self, store: IndexStore, photos: Sequence[int | str]) -> list[int]:
        """Indexed image ids of ``photos`` (ids, ``id:N`` or indexed paths); QueryError on an
        unknown one."""
        out = []
        for p in photos:
            text = str(p).strip()
            if text.lower().startswith("id:"):
                text = text[3:].strip()
            if isinstance(p, int) or text.isdigit():
                if not store.records([int(text)]):
                    raise QueryError(f"image id {text} is not in the index")
                out.append(int(text))
                continue
            rec = store.record_by_path(os.path.abspath(os.path.expanduser(text)))
            if rec is None:
                raise QueryError(
                    f"photo {text!r} is not in the index (give an id or an indexed path)"
                )
            out.append(rec.id)
        return out

    def mark_vectors(self, store: IndexStore, photos: Sequence[int | str]) -> np.ndarray:
        """(n, d) stored vectors of marked photos (ids or paths); QueryError if one has none."""
        ids = self.resolve_ids(store, photos)
        found, vecs = store.vectors(ids)
        missing = sorted(set(ids) - set(found.tolist()))
        if missing:
            raise QueryError(f"image id {missing[0]} has no vector (it could not be indexed)")
        return vecs

    def _feedback(self, store, qvec, liked, unliked, described) -> np.ndarray:
        pos, neg = self.mark_vectors(store, liked), self.mark_vectors(store, unliked)
        described += [{"kind": "like", "value": str(v), "weight": feedback.BETA} for v in liked]
        described += [{"kind": "unlike", "value": str(v), "weight": -feedback.GAMMA}
                      for v in unliked]  # fmt: skip
        try:
            return feedback.rocchio(qvec, pos, neg)
        except ValueError as exc:
            raise QueryError(str(exc)) from None

    def _concept_vector(self, store: IndexStore, concepts: list[str]) -> np.ndarray:
        if self._concept_direction is None:
            raise QueryError("concept: needs personal concepts, which this index does not have")
        try:
            vec = self._concept_direction(concepts)
        except ValueError as exc:  # an unknown concept
            raise QueryError(str(exc)) from None
        return np.asarray(vec, dtype=np.float32).reshape(-1)

    def _tagged_ids(self, store: IndexStore, tags: list[str]) -> np.ndarray:
        if self._tag_ids is not None:
            return np.asarray(self._tag_ids(tags), dtype=np.int64)
        return store.ids_with_tags(tags, TagView())  # uncapped


def _describe(image: object) -> str:
    if isinstance(image, (bytes, bytearray)):
        return f"<{len(image)} bytes>"
    return f"id:{image}" if isinstance(image, int) else os.fspath(image)  # type: ignore[arg-type]


__all__ = ["ModelMismatchError", "QueryError", "SearchEngine", "SearchHit", "SearchResults"]


def _terms(query: str | None, terms: list[query_mod.QueryTerm] | None) -> list:
    """``terms`` followed by the parsed terms of ``query`` (a syntax error: QueryError)."""
    out = list(terms or [])
    if query is not None and query.strip():
        try:
            out += query_mod.parse_query(query)
        except ValueError as exc:
            raise QueryError(str(exc)) from None
    return out
