"""Tags: vocabulary, zero-shot scoring, tag rows kept in step with the index, exports, duplicates.

``vocabulary`` (the YAML vocabulary and tag fingerprints), ``scoring`` (vectors -> tags),
``embeddings`` (the text-embedding cache), ``sync`` (keeping the store's tag rows current, the
indexing hook), ``service`` (:class:`TagService`, what the Library exposes), ``xmp`` (sidecars),
``duplicates`` (near-duplicate groups), ``evaluate`` (zero-shot benchmarks). May import
``indexer.store``, ``indexer.embed``, ``indexer.config``/``types`` and ``clipmodel``.

The pure vocabulary and scoring API is re-exported here (explicit ``name as name`` re-exports).
"""

from indexer.tags.scoring import cap_top_n as cap_top_n
from indexer.tags.scoring import score_tags as score_tags
from indexer.tags.scoring import tag_counts as tag_counts
from indexer.tags.scoring import tag_embeddings as tag_embeddings
from indexer.tags.vocabulary import SAFETY_GROUP as SAFETY_GROUP
from indexer.tags.vocabulary import GroupSpec as GroupSpec
from indexer.tags.vocabulary import TagList as TagList
from indexer.tags.vocabulary import TagSpec as TagSpec
from indexer.tags.vocabulary import Vocabulary as Vocabulary
from indexer.tags.vocabulary import VocabularyError as VocabularyError
from indexer.tags.vocabulary import changed_tags as changed_tags
from indexer.tags.vocabulary import default_vocabulary as default_vocabulary
from indexer.tags.vocabulary import load_vocabulary as load_vocabulary
from indexer.tags.vocabulary import tag_fingerprint as tag_fingerprint
from indexer.tags.vocabulary import vocabulary_fingerprints as vocabulary_fingerprints
