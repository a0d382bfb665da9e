"""Ingest: ``scan`` (walk the roots) and ``pipeline`` (one indexing run: decode in threads,
encode in batches, hand :class:`~indexer.store.Changes` to the store, tag each batch).
May import ``indexer.embed``, ``indexer.store`` and the leaves (config, types)."""
