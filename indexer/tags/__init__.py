"""Tags: vocabulary, zero-shot scoring, tag rows kept in step with the index, exports, duplicates.

``vocabulary`` (the YAML vocabulary and tag fingerprints), ``scoring`` (vectors -> tags),
``embeddings`` (the text-embedding cache), ``sync`` (keeping the store's tag rows current, the
indexing hook), ``service`` (:class:`TagService`, what the Library exposes), ``xmp`` (sidecars),
``duplicates`` (near-duplicate groups), ``evaluate`` (zero-shot benchmarks). May import
``indexer.store``, ``indexer.embed``, ``indexer.config``/``types`` and ``clipmodel``.

The pure vocabulary and scoring API is re-exported here.
"""

from indexer.tags.scoring import cap_top_n, score_tags, tag_counts, tag_embeddings
from indexer.tags.vocabulary import (
    SAFETY_GROUP,
    GroupSpec,
    TagList,
    TagSpec,
    Vocabulary,
    VocabularyError,
    changed_tags,
    default_vocabulary,
    load_vocabulary,
    tag_fingerprint,
    vocabulary_fingerprints,
)

__all__ = [
    "SAFETY_GROUP", "GroupSpec", "TagList", "TagSpec", "Vocabulary", "VocabularyError",
    "cap_top_n", "changed_tags", "default_vocabulary", "load_vocabulary", "score_tags",
    "tag_counts", "tag_embeddings", "tag_fingerprint", "vocabulary_fingerprints",
]  # fmt: skip
