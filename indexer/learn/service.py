"""ConceptService: personal concepts of one library (teach, refit, list, delete, carry over).

Built from callables like the TagService: the active store (a reindex swaps it), the encoder
(loaded only for a text hint), the resolver of photo references (ids or indexed paths) and the
names of the vocabulary's tags (a concept may not shadow one).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np

from indexer.embed.encoder import Encoder
from indexer.learn import apply
from indexer.learn.fit import MIN_EXAMPLES, NEGATIVE_SAMPLE, fit_concept
from indexer.store import Concept, IndexStore

_SAME = 0.9999  # background vectors this close to an example are the example (left out)


class ConceptError(ValueError):
    """A concept cannot be taught or found (unknown name, too few examples, bad name)."""


Resolve = Callable[[IndexStore, Sequence[int | str]], list[int]]


def check_name(name: str) -> str:
    """A concept's name, stripped; ConceptError if empty or with a comma / line break."""
    clean = " ".join(str(name).split())
    if not clean or "," in clean or len(clean) > 80:
        raise ConceptError(f"invalid concept name {name!r}: 1-80 characters, no commas")
    return clean


class ConceptService:
    """Personal concepts fitted on the stored vectors and kept applied as tags."""

    def __init__(
        self,
        get_store: Callable[[], IndexStore],
        get_encoder: Callable[[], Encoder],
        resolve: Resolve,
        vocabulary_tags: Callable[[], set[str]],
        require_writer: Callable[[], None] = lambda: None,
    ):
        self._get_store = get_store
        self._get_encoder = get_encoder
        self._resolve = resolve
        self._vocabulary_tags = vocabulary_tags
        self._require_writer = require_writer  # changing concepts needs the writer lock

    # ----------------------------------------------------------------- reading
    def list(self) -> list[Concept]:
        """Every concept, by name."""
        return self._get_store().concepts()

    def names(self) -> set[str]:
        return {c.name for c in self.list()}

    def get(self, name: str) -> Concept:
        """The concept named ``name``; ConceptError naming the known ones if there is none."""
        clean = " ".join(str(name).split())
        for c in self.list():
            if c.name == clean:
                return c
        known = ", ".join(sorted(self.names())) or "none yet"
        raise ConceptError(f"unknown concept {name!r} (concepts: {known})")

    def direction(self, names: Sequence[str]) -> np.ndarray:
        """Unit vector ranking photos by the named concepts (their normalised weights' sum)."""
        total = np.zeros(0, np.float32)
        for n in names:
            w = self.get(n).weights
            w = w / max(float(np.linalg.norm(w)), 1e-12)
            total = w if total.size == 0 else total + w
        return (total / max(float(np.linalg.norm(total)), 1e-12)).astype(np.float32)

    # ----------------------------------------------------------------- writing
    def teach(
        self,
        name: str,
        examples: Sequence[int | str],
        negatives: Sequence[int | str] = (),
        hint: str | None = None,
        replace: bool = False,
    ) -> Concept:
        """Fit concept ``name`` on >= 3 example photos (ids or indexed paths), optional
        counter-examples and text hint; store it and tag the library with it (one transaction).
        ``replace``: refit an existing concept instead of refusing the name."""
        self._require_writer()
        name = check_name(name)
        if name in self._vocabulary_tags():
            raise ConceptError(f"{name!r} is a tag of the vocabulary; pick another concept name")
        store = self._get_store()
        old = next((c for c in store.concepts() if c.name == name), None)
        if old is not None and not replace:
            raise ConceptError(f"concept {name!r} exists (add or remove examples to refit it)")
        pos = _unique(self._resolve(store, list(examples)))
        neg = [i for i in _unique(self._resolve(store, list(negatives))) if i not in set(pos)]
        hint = hint.strip() if hint and hint.strip() else None
        concept = self._fit(store, name, pos, neg, hint)
        if old is not None:
            concept.created = old.created
        apply.store_concept(store, concept)
        return concept

    def edit(
        self,
        name: str,
        add: Sequence[int | str] = (),
        remove: Sequence[int | str] = (),
        add_negatives: Sequence[int | str] = (),
        remove_negatives: Sequence[int | str] = (),
    ) -> Concept:
        """Add or remove examples (and counter-examples), then refit the concept in place."""
        c = self.get(name)
        store = self._get_store()
        drop = set(self._resolve(store, list(remove)))
        pos = _unique([i for i in c.positives if i not in drop] + self._resolve(store, list(add)))
        drop_neg = set(self._resolve(store, list(remove_negatives)))
        neg = [i for i in c.negatives if i not in drop_neg]
        neg = _unique(neg + self._resolve(store, list(add_negatives)))
        return self.teach(c.name, pos, [i for i in neg if i not in set(pos)], c.hint, True)

    def delete(self, name: str) -> None:
        """Delete a concept and its tags."""
        self._require_writer()
        c = self.get(name)
        with self._get_store().tag_transaction() as tx:
            tx.drop_concept(c.name)

    def carry_over(self, old: IndexStore, new: IndexStore) -> list[str]:
        """Refit ``old``'s concepts on ``new``'s vectors (a reindex: new model, new ids; the
        examples are found by path). Returns the names that could not be refitted (fewer than
        3 of their examples are left)."""
        lost = []
        for c in old.concepts():
            pos, neg = (_by_path(old, new, ids) for ids in (c.positives, c.negatives))
            try:
                fresh = self._fit(new, c.name, pos, neg, c.hint)
            except ConceptError:
                lost.append(c.name)
                continue
            fresh.created = c.created
            apply.store_concept(new, fresh)
        return lost

    def _fit(
        self, store: IndexStore, name: str, pos: list[int], neg: list[int], hint: str | None
    ) -> Concept:
        if len(pos) < MIN_EXAMPLES:
            raise ConceptError(
                f"concept {name!r} needs at least {MIN_EXAMPLES} example photos, got {len(pos)}"
            )
        _, pvecs = store.vectors(pos)
        _, nvecs = store.vectors(neg) if neg else (None, np.zeros((0, pvecs.shape[1]), np.float32))
        if len(pvecs) < MIN_EXAMPLES:
            raise ConceptError(f"concept {name!r}: fewer than {MIN_EXAMPLES} examples have vectors")
        background = store.sample_vectors(NEGATIVE_SAMPLE + len(pos))
        if len(background):
            same = (background @ np.concatenate([pvecs, nvecs]).T).max(axis=1) >= _SAME
            background = background[~same][:NEGATIVE_SAMPLE]
        prior = None
        if hint:
            enc = self._get_encoder()
            store.check_model(enc.identity)
            prior = enc.encode_texts([hint])[0]
        try:
            fitted = fit_concept(pvecs, nvecs, background, prior)
        except ValueError as exc:
            raise ConceptError(f"concept {name!r}: {exc}") from None
        now = time.time()
        return Concept(name, pos, neg, fitted.weights, fitted.bias, fitted.threshold, hint,
                       store.meta().get("checkpoint_sha256", ""), fitted.stats, now, now,
                       fitted.center)  # fmt: skip


def _unique(ids: Sequence[int]) -> list[int]:
    return list(dict.fromkeys(int(i) for i in ids))


def _by_path(old: IndexStore, new: IndexStore, ids: Sequence[int]) -> list[int]:
    out = []
    for rec in old.records(list(ids)).values():
        found = new.record_by_path(rec.path)
        if found is not None:
            out.append(found.id)
    return out
