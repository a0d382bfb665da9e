"""TagService: the configured vocabulary applied to a library's store (what the Library exposes).

Built from a store and an encoder (both as callables: the Library's active store changes when a
reindex swaps versions, and its encoder is loaded only when text must actually be encoded).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from indexer.config import Config, ConfigError
from indexer.embed.encoder import Encoder
from indexer.store import IndexStore, TagView
from indexer.tags import calibration
from indexer.tags import sync as tag_sync
from indexer.tags import vocabulary as vocab_mod
from indexer.tags.duplicates import DuplicateGroup, describe_groups, find_duplicate_groups
from indexer.tags.embeddings import EmbeddingCache
from indexer.tags.pairs import EXACT_MAX
from indexer.tags.scoring import cap_top_n
from indexer.tags.sync import Tagger, TagReport
from indexer.tags.vocabulary import SAFETY_GROUP, TagList, Vocabulary, VocabularyError
from indexer.types import ModelIdentity


def load_vocabulary(cfg: Config) -> Vocabulary:
    """The configured vocabulary (``tags.vocabulary``, ``tags.file`` or the built-in one)
    with ``tags.top_n`` applied; errors are :class:`ConfigError`."""
    t = cfg.tags
    try:
        if t.vocabulary is not None:
            vocab = Vocabulary.from_dict(t.vocabulary)
            if t.safety and SAFETY_GROUP in vocab.groups:
                vocab = vocab.with_groups_enabled([SAFETY_GROUP])
        else:
            path = cfg.resolve(t.file) if t.file else None
            vocab = vocab_mod.load_vocabulary(path, safety=t.safety)
    except VocabularyError as exc:
        where = "tags.vocabulary" if t.vocabulary is not None else "tags"
        raise ConfigError(f"{where}: {exc}") from None
    if t.top_n is not None:
        vocab.top_n = t.top_n or None
    return vocab


def tag_view(vocab: Vocabulary) -> TagView:
    """How the store reads rows for ``vocab``: its ``top_n``, exclusive groups' tags kept."""
    exclusive = tuple(t.name for t in vocab.tags.values() if vocab.is_exclusive(t))
    return TagView(vocab.top_n, exclusive)


def all_vectors(store: IndexStore) -> tuple[np.ndarray, np.ndarray]:
    """(ids, vectors) of the whole store in one array each: float32 up to ``EXACT_MAX``
    vectors, float16 beyond (half the memory: 1 GB at 1M x 512; the pair search converts a
    list at a time). Filled in place, page by page, with no second copy."""
    n = store.counts()["vectors"]
    dtype = np.float32 if n <= EXACT_MAX else np.float16
    ids, vecs, k = np.empty(n, np.int64), None, 0
    for page_ids, page in store.iter_vectors(size=20_000):
        if vecs is None:
            vecs = np.empty((n, page.shape[1]), dtype)
        if k + len(page) > len(vecs):  # rows committed since the count: grow
            extra = max(len(page), len(vecs) // 8)
            ids = np.concatenate([ids, np.empty(extra, np.int64)])
            vecs = np.concatenate([vecs, np.empty((extra, page.shape[1]), dtype)])
        ids[k : k + len(page)] = page_ids
        vecs[k : k + len(page)] = page
        k += len(page)
    if vecs is None:
        return np.zeros(0, np.int64), np.zeros((0, store.dim() or 0), np.float32)
    return ids[:k], vecs[:k]


class TagService:
    """Tagging, tag reads and near-duplicates of one library."""

    def __init__(
        self, cfg: Config, get_store: Callable[[], IndexStore], get_encoder: Callable[[], Encoder]
    ):
        self.cfg = cfg
        self._get_store = get_store
        self._get_encoder = get_encoder
        self._vocab_cache: tuple[Any, Vocabulary] | None = None
        # tags never capped by top_n (personal concepts; set by the Library)
        self.always_shown: Callable[[], set[str]] | None = None
        self._embedding_cache: EmbeddingCache | None = None

    def vocabulary(self) -> Vocabulary:
        """The configured tag vocabulary (re-read when the tags file changes)."""
        path = self.cfg.resolve(self.cfg.tags.file) if self.cfg.tags.file else None
        try:
            st = os.stat(path) if path is not None else None
            sig = (st.st_mtime_ns, st.st_size) if st is not None else None
        except OSError:
            sig = None
        if self._vocab_cache is not None and self._vocab_cache[0] == sig:
            return self._vocab_cache[1]
        vocab = load_vocabulary(self.cfg)
        self._vocab_cache = (sig, vocab)
        return vocab

    def embedding_cache(self) -> EmbeddingCache:
        if self._embedding_cache is None:
            # Shared by every index on this machine (keys name the checkpoint and the prompt
            # texts), so a new index does not re-encode the vocabulary.
            from clipmodel.download import default_cache_dir

            root = self.cfg.cache_dir or default_cache_dir()
            self._embedding_cache = EmbeddingCache(root / "tag-embeddings")
        return self._embedding_cache

    def auto_tagger(self, encoder: Encoder) -> Tagger | None:
        """The indexing hook when ``tags.auto`` is on (None otherwise)."""
        if not self.cfg.tags.auto:
            return None
        return Tagger(self.scoring_vocabulary(encoder.identity), encoder.encode_texts,
                      self.embedding_cache(), encoder.identity.checkpoint_sha256)  # fmt: skip

    def scoring_vocabulary(self, identity: ModelIdentity | None) -> Vocabulary:
        """The vocabulary with its thresholds for ``identity``'s model (indexer.tags.calibration)."""
        return calibration.for_model(self.vocabulary(), identity)

    def tag(self, progress: bool = False, rescore_all: bool = False) -> TagReport:
        """Apply the vocabulary to the stored vectors now: re-score changed tags (every tag
        with ``rescore_all``), drop removed ones, tag pending images. No image is re-encoded."""
        store = self._get_store()
        vocab = self.scoring_vocabulary(store.model_identity())
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=1, unit="pass", desc="tagging")
        model = store.meta().get("checkpoint_sha256", "")

        def encode_texts(texts: list[str]) -> np.ndarray:  # the model loads only if needed
            enc = self._get_encoder()
            store.check_model(enc.identity)
            return enc.encode_texts(texts)

        try:
            rep = tag_sync.sync(store, vocab, encode_texts, self.embedding_cache(), model,
                                rescore_all=rescore_all)  # fmt: skip
        finally:
            if bar is not None:
                bar.update(1)
                bar.close()
        return rep

    def _view(self) -> TagView:
        view = tag_view(self.vocabulary())
        extra = sorted(self.always_shown()) if self.always_shown is not None else []
        return TagView(view.top_n, view.exclusive + tuple(extra)) if extra else view

    def tag_counts(self) -> dict[str, int]:
        """{tag: images carrying it}, most frequent first (``top_n`` applied)."""
        return self._get_store().tag_counts(self._view())

    def image_tags(self, image_id: int) -> TagList:
        """[(tag, score)] of one image, best first (``top_n`` applied; concepts all shown)."""
        rows = self._get_store().image_tags(image_id)
        keep = self.always_shown() if self.always_shown is not None else set()
        tags = cap_top_n([r for r in rows if r[0] not in keep], self.vocabulary())
        tags += [r for r in rows if r[0] in keep]
        return sorted(tags, key=lambda ts: (-ts[1], ts[0]))

    def ids_with_tags(self, tags: Sequence[str]) -> np.ndarray:
        """Ids (ascending) of images that carry every tag in ``tags`` (``top_n`` applied)."""
        return self._get_store().ids_with_tags(list(tags), self._view())

    def all_image_tags(self) -> dict[int, TagList]:
        """{image_id: [(tag, score)] best first} of every tagged image (``top_n`` applied)."""
        return self._get_store().all_image_tags(self._view())

    def duplicates(self, threshold: float | None = None) -> list[DuplicateGroup]:
        """Groups of near-duplicate images (keeper first)."""
        thr = self.cfg.tags.duplicate_threshold if threshold is None else float(threshold)
        store = self._get_store()
        ids, vecs = all_vectors(store)
        if not len(ids):
            return []
        groups = find_duplicate_groups(ids, vecs, thr)
        records = store.records([i for g in groups for i in g])
        return describe_groups(groups, records.get)
