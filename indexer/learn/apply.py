"""Concept tag rows kept in step with the vectors (the generation protocol of zero-shot tags).

Vectors with ``gen <= concepts generation`` carry the rows of every stored concept; newer ones
are pending. :func:`apply_pending` scores pending vectors with every concept and
:func:`store_concept` writes one concept and all its rows, both in one tag transaction.
:class:`ConceptTagger` is the indexing hook (after each committed batch, so ``watch`` tags new
photos as they arrive).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from indexer.learn.fit import logits, probability
from indexer.store import Concept, IndexStore, TagList, TagWriter

_CHUNK = 8192  # vectors scored at a time


def concept_rows(vectors: np.ndarray, concepts: Sequence[Concept]) -> list[TagList]:
    """[(concept, probability)] per vector for the concepts it passes (vectorised)."""
    if not concepts or len(vectors) == 0:
        return [[] for _ in range(len(vectors))]
    w = np.stack([c.weights for c in concepts])
    b = np.asarray([c.bias for c in concepts], np.float32)
    thr = np.asarray([c.threshold for c in concepts], np.float32)
    centers = None
    if any(c.center is not None for c in concepts):
        centers = np.stack([c.center if c.center is not None else np.zeros_like(c.weights)
                            for c in concepts])  # fmt: skip
    z = logits(vectors, w, b, centers)
    rows, cols = np.nonzero(z >= thr)
    probs = probability(z[rows, cols])
    out: list[TagList] = [[] for _ in range(len(vectors))]
    for r, c, p in zip(rows.tolist(), cols.tolist(), probs.tolist()):
        out[r].append((concepts[c].name, round(p, 6)))
    return out


def _pending(tx: TagWriter, concepts: list[Concept]) -> int:
    gen, done = tx.generation(), tx.concepts_generation()
    rows = 0
    if gen > done and concepts:
        names = [c.name for c in concepts]
        for ids, vecs in tx.vector_chunks(lo=done, size=_CHUNK):
            tx.delete_concept_rows(names, ids.tolist())
            rows += tx.insert_tags(ids, concept_rows(vecs, concepts))
    if gen > done:
        tx.set_concepts_generation(gen)
    return rows


def apply_pending(store: IndexStore) -> int:
    """Score vectors written since the concepts generation; returns the rows written."""
    if not store.concepts():
        return 0
    with store.tag_transaction() as tx:
        return _pending(tx, tx.concepts())


def store_concept(store: IndexStore, concept: Concept) -> int:
    """Store ``concept`` (replacing one of that name) and rewrite its rows over every vector,
    in one transaction; pending vectors get every concept's rows. Returns the rows written."""
    with store.tag_transaction() as tx:
        tx.put_concept(concept)
        tx.delete_concept_rows([concept.name])
        done = tx.concepts_generation()
        count = 0
        for ids, vecs in tx.vector_chunks(hi=done, size=_CHUNK):
            count += tx.insert_tags(ids, concept_rows(vecs, [concept]))
        others = [c for c in tx.concepts() if c.name != concept.name]
        count += _pending(tx, [concept, *others])
    return count


class ConceptTagger:
    """The indexing hook: pending vectors are scored by every concept after each commit."""

    def start(self, store: IndexStore) -> None:
        apply_pending(store)

    def after_commit(self, store: IndexStore) -> None:
        apply_pending(store)

    def finish(self, store: IndexStore) -> None:
        apply_pending(store)


class Hooks:
    """Several indexing hooks (``start``/``after_commit``/``finish``) run in order."""

    def __init__(self, *hooks: object):
        self.hooks = [h for h in hooks if h is not None]

    def start(self, store: IndexStore) -> None:
        for h in self.hooks:
            h.start(store)  # type: ignore[attr-defined]

    def after_commit(self, store: IndexStore) -> None:
        for h in self.hooks:
            h.after_commit(store)  # type: ignore[attr-defined]

    def finish(self, store: IndexStore) -> None:
        for h in self.hooks:
            h.finish(store)  # type: ignore[attr-defined]
