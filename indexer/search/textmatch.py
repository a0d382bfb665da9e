"""``text:`` terms: the photos whose recognised text (OCR) contains a phrase, how well it
matches, and the snippet a result shows.

Matching is the store's (:meth:`indexer.store.IndexStore.search_text`: a substring of the
``compact_text`` form, so RapidOCR's dropped spaces and any case or punctuation match). A
phrase found as whole words ranks above one found inside a longer word or across dropped
spaces.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from indexer.store import IndexStore, compact_text

SNIPPET_CHARS = 160
WHOLE_WORDS, INSIDE = 1.0, 0.5  # match quality (the score of a text-only result)


@dataclass
class TextFilter:
    """The ``text:`` terms of one query, resolved against the store."""

    include: np.ndarray | None = None  # ids matching every positive phrase (None: no such term)
    exclude: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    phrases: list[str] = field(default_factory=list)  # the positive phrases
    texts: dict[int, str] = field(default_factory=dict)  # id -> its text (matching images)

    def apply(self, allowed: np.ndarray | None, everything: Callable[[], np.ndarray]) -> np.ndarray:
        """``allowed`` (None: ``everything()``) narrowed to the included, less the excluded."""
        if allowed is None:
            out = self.include if self.include is not None else everything()
        else:
            out = allowed if self.include is None else np.intersect1d(allowed, self.include)
        if self.exclude.size:
            out = np.setdiff1d(out, self.exclude)
        return out

    def quality(self, image_id: int) -> float:
        """Mean match quality of the positive phrases in the image's text (0..1)."""
        text = self.texts.get(int(image_id), "")
        if not self.phrases:
            return 0.0
        return float(np.mean([match_quality(text, p) for p in self.phrases]))

    def snippet(self, image_id: int) -> str | None:
        """The lines of the image's text where a positive phrase was found."""
        text = self.texts.get(int(image_id))
        return None if text is None or not self.phrases else snippet(text, self.phrases)


def resolve(store: IndexStore, terms: list) -> TextFilter:  # noqa: ANN001 - QueryTerms
    """Look up every ``text:`` term (kind ``ocr``) of a query in the store."""
    out = TextFilter()
    excluded: list[np.ndarray] = []
    for t in terms:
        matches = store.search_text(t.value)
        ids = np.unique(np.asarray([m.image_id for m in matches], dtype=np.int64))
        if t.weight < 0:
            excluded.append(ids)
            continue
        out.phrases.append(t.value)
        out.texts.update({m.image_id: m.text for m in matches})
        out.include = ids if out.include is None else np.intersect1d(out.include, ids)
    if excluded:
        out.exclude = np.unique(np.concatenate(excluded))
    return out


def match_quality(text: str, phrase: str) -> float:
    """:data:`WHOLE_WORDS` when ``phrase`` stands in ``text`` as whole words (any case and
    spacing), :data:`INSIDE` when only its compact form does, else 0."""
    words = [re.escape(w) for w in phrase.casefold().split() if w]
    if words and re.search(r"(?<!\w)" + r"\W*".join(words) + r"(?!\w)", text.casefold()):
        return WHOLE_WORDS
    return INSIDE if compact_text(phrase) and compact_text(phrase) in compact_text(text) else 0.0


def snippet(text: str, phrases: list[str], limit: int = SNIPPET_CHARS) -> str:
    """The lines of ``text`` containing a phrase (compact forms compared), joined with
    `` / ``, cut to ``limit`` characters; the whole text when a match spans lines."""
    wanted = [compact_text(p) for p in phrases if compact_text(p)]
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    hit = [ln for ln in lines if any(w in compact_text(ln) for w in wanted)]
    out = " / ".join(hit or lines)
    return out if len(out) <= limit else out[: limit - 1] + "…"
