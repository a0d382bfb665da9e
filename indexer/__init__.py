"""clipsearch indexer: scanning, encoding, storage and search of the photo library.

    from indexer import Library, load_config
    with Library.open(load_config()) as lib:
        hits = lib.search("a dog on the beach").hits

Names are imported lazily, so ``import indexer`` does no work.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "Library": "library",
    "load_config": "config",
    "Config": "config",
    "ConfigError": "config",
    "IndexStore": "store",
    "Record": "store",
    "SearchHit": "search",
    "SearchResults": "search",
    "QueryError": "search",
    "Encoder": "encoder",
    "ClipEncoder": "encoder",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'indexer' has no attribute {name!r}")
