"""clipsearch indexer: scanning, encoding, storage and search of the photo library.

    from indexer import Library, load_config
    with Library.open(load_config()) as lib:
        hits = lib.search("a dog on the beach").hits

Map (the data flow: photos -> scan -> decode -> encode -> store -> search / tags / UI)::

    cli/       the ``clipsearch`` command line, one module per command group
    library    Library: opens an index version, composes store, encoder, search and tags
    watch/     ``clipsearch watch``: observers, debouncing, the service loop, its status file
    ingest/    one indexing run: scan the roots, decode, encode in batches, apply changes
    search/    query syntax, ranking and cut-offs, the search engine
    tags/      vocabulary, scoring, tag sync, the tag service, XMP, duplicates, evaluation
    ocr/       text in images: RapidOCR / Tesseract engines, the background pass after encoding
    embed/     photos and text -> vectors: image decoding/thumbnails, the Encoder
    store/     the IndexStore interface; its SQLite + FAISS backend; writer lock, versions
    config, types   leaves: configuration, shared value types

Imports flow one way: cli -> library -> watch -> ingest | search | tags | ocr -> embed | store ->
config/types -> clipmodel (see docs/architecture.md; checked by tests/test_architecture.py).
Names are imported lazily, so ``import indexer`` does no work.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "Library": "indexer.library",
    "load_config": "indexer.config",
    "Config": "indexer.config",
    "ConfigError": "indexer.config",
    "IndexStore": "indexer.store",
    "Record": "indexer.store",
    "SearchHit": "indexer.search.engine",
    "SearchResults": "indexer.search.engine",
    "QueryError": "indexer.search.engine",
    "Encoder": "indexer.embed.encoder",
    "ClipEncoder": "indexer.embed.encoder",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'indexer' has no attribute {name!r}")
