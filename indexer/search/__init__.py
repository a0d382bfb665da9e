"""Search: ``parse`` (the query syntax), ``ranking`` (combining terms, cut-offs) and ``engine``
(query -> vector -> the store's vector search -> filtered, joined hits). May import
``indexer.embed``, ``indexer.store`` and the leaves; never tags (tag filters come in as a
callable from the Library)."""
