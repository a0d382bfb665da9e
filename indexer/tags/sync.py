"""Keeping the store's tag rows in step with the vectors and the vocabulary.

The store (:class:`indexer.store.IndexStore`) holds every tag that passes its threshold,
*uncapped*, plus the fingerprint of each tag's definition, and its *tagged generation*:

* vectors with ``gen <= tagged generation`` carry rows for every stored tag, scored with the
  definition whose fingerprint is stored;
* vectors with ``gen >`` it (written since, or left untagged by a crash) are *pending*.

:func:`sync` restores the invariant for a vocabulary in one transaction: rows of changed and
removed tags are deleted and the changed tags re-scored over the tagged vectors (text encoding
of the changed prompts only -- images are never re-encoded), then pending vectors are scored
with every tag. Reading applies the vocabulary's ``top_n``, so editing one tag never rewrites
other tags' rows. :class:`Tagger` is the indexing hook.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass

from indexer.store import IndexStore
from indexer.tags.embeddings import EmbeddingCache, EmbedTexts
from indexer.tags.scoring import score_tags
from indexer.tags.vocabulary import Vocabulary, changed_tags, vocabulary_fingerprints

_CHUNK = 4096  # vectors scored at a time (bounded memory on large libraries)


@dataclass
class TagReport:
    """What one :func:`sync` did (also the ``tag --json`` output)."""

    changed: list[str]  # tags (re-)scored over the already tagged images
    removed: list[str]  # tags whose rows were deleted
    rescored: int = 0  # already tagged images scored for the changed tags
    pending: int = 0  # newly indexed (or untagged) images scored with every tag
    rows: int = 0  # tag rows written
    texts_encoded: int = 0  # prompt texts sent to the text encoder
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def needed_tags(vocab: Vocabulary, only: Iterable[str] | None = None) -> list[str]:
    """Tags whose embeddings scoring ``only`` (None: every active tag) needs: exclusive groups
    need all their members, hidden ones included."""
    active = vocab.active_tags()
    if only is None:
        return [t.name for t in active]
    wanted = set(only)
    groups = {t.group for t in active if t.name in wanted and vocab.is_exclusive(t)}
    return [t.name for t in active if t.name in wanted or (t.group in groups and t.group)]


def is_current(store: IndexStore, vocab: Vocabulary) -> bool:
    """True when the stored fingerprints match the vocabulary (no tag changed or removed)."""
    changed, removed = changed_tags(store.tag_fingerprints(), vocab)
    return not changed and not removed


def sync(
    store: IndexStore,
    vocab: Vocabulary,
    embed: EmbedTexts,
    cache: EmbeddingCache | None = None,
    model: str = "",
    rescore_all: bool = False,
    pending_only: bool = False,
    fingerprints: dict[str, str] | None = None,
) -> TagReport:
    """Bring the store's tag rows up to ``vocab`` in one transaction (see the module docstring).

    ``rescore_all``: treat every tag as changed. ``pending_only``: only score pending vectors
    (the per-batch indexing hook, when the stored definitions are known to be current).
    ``fingerprints``: ``vocabulary_fingerprints(vocab)`` when the caller already has them.
    """
    t0 = time.monotonic()
    cache = cache if cache is not None else EmbeddingCache()
    encoded_before = cache.texts_encoded
    current = fingerprints if fingerprints is not None else vocabulary_fingerprints(vocab)
    with store.tag_transaction() as tx:
        gen = tx.generation()
        done = tx.tagged_generation()
        if pending_only:
            changed, removed = [], []
        elif rescore_all:
            stored = tx.fingerprints()
            changed, removed = list(current), [t for t in stored if t not in current]
        else:
            changed, removed = changed_tags(tx.fingerprints(), vocab, current)
        rep = TagReport(changed=changed, removed=removed)
        if changed or removed:
            tx.delete_tags(changed + removed)
            if changed:
                embs = cache.get(vocab, embed, needed_tags(vocab, changed), model)
                for ids, vecs in tx.vector_chunks(hi=done, size=_CHUNK):
                    got = score_tags(vecs, embs, vocab, top_n=None, only=changed)
                    rep.rows += tx.insert_tags(ids, got)
                    rep.rescored += len(ids)
            tx.drop_fingerprints(removed)
            tx.set_fingerprints({name: current[name] for name in changed})
        if gen > done:
            embs = None
            for ids, vecs in tx.vector_chunks(lo=done, size=_CHUNK):
                if embs is None:
                    embs = cache.get(vocab, embed, needed_tags(vocab), model)
                tx.delete_image_tags(ids.tolist())
                got = score_tags(vecs, embs, vocab, top_n=None)
                rep.rows += tx.insert_tags(ids, got)
                rep.pending += len(ids)
            tx.set_tagged_generation(gen)
    rep.texts_encoded = cache.texts_encoded - encoded_before
    rep.seconds = round(time.monotonic() - t0, 3)
    return rep


class Tagger:
    """Tags newly indexed vectors after each committed batch (``tags.auto``).

    When the stored definitions are stale (the vocabulary changed since the last pass) and some
    images are already tagged, the batches are left pending and :meth:`finish` runs the full pass.
    """

    def __init__(
        self,
        vocab: Vocabulary,
        embed: EmbedTexts,
        cache: EmbeddingCache | None = None,
        model: str = "",
    ):
        self.vocab, self.embed, self.model = vocab, embed, model
        self.cache = cache if cache is not None else EmbeddingCache()
        self.deferred = False
        self.reports: list[TagReport] = []
        self._fingerprints: dict[str, str] | None = None  # of self.vocab, made once per run

    def _sync(self, store: IndexStore, pending_only: bool) -> None:
        if self._fingerprints is None:
            self._fingerprints = vocabulary_fingerprints(self.vocab)
        rep = sync(store, self.vocab, self.embed, self.cache, self.model,
                   pending_only=pending_only, fingerprints=self._fingerprints)  # fmt: skip
        if rep.rows or rep.pending or rep.rescored or rep.changed or rep.removed:
            self.reports.append(rep)

    def start(self, store: IndexStore) -> None:
        if is_current(store, self.vocab):
            self.deferred = False
            return
        done, _pending = store.tag_progress()
        # Nothing tagged yet (new or migrated index): adopting the definitions costs nothing.
        self.deferred = done > 0
        if not self.deferred:
            self._sync(store, pending_only=False)

    def after_commit(self, store: IndexStore) -> None:
        if not self.deferred:
            self._sync(store, pending_only=True)

    def finish(self, store: IndexStore) -> None:
        self._sync(store, pending_only=False)
        self.deferred = False

    @property
    def images_tagged(self) -> int:
        return sum(r.pending + r.rescored for r in self.reports)
