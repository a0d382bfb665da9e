"""Text in images (OCR): the engines (``engines``) and the background pass (``service``).

The text lives in the store (:meth:`indexer.store.IndexStore.put_texts`, searched with
``text:"..."`` terms, :mod:`indexer.search.parse`). May import ``indexer.embed``,
``indexer.store``, ``indexer.config`` and the OCR libraries (lazily); never the layers above.
"""
