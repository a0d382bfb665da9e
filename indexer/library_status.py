"""The ``status --json`` document of an open Library (its schema is in :mod:`indexer.cli`):
read from the store's counters and the vector file's header, never by loading the vectors."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from indexer.store import IndexStore

FAST_PATHS_KEY = "fast_paths"  # store metadata: what the last run ran and what it measured


def _json_or_none(text: str | None) -> dict | None:
    try:
        return json.loads(text) if text else None
    except ValueError:
        return None


def status_document(store: IndexStore, max_errors: int | None, *, index_dir: Path,
                    database: str | None, version: str | None, watch: Callable[[], dict],
                    ocr: Callable[[], dict]) -> dict:  # fmt: skip
    """What is in the index (``max_errors``: at most this many error files listed);
    ``watch()`` and ``ocr()`` give the watch service's and the OCR's parts."""
    vectors = store.vector_summary()  # no full load of the vector index (issue 15)
    meta = store.meta()
    counts = store.counts()
    errors = store.errors(limit=max_errors)
    return {
        "index_dir": os.fspath(index_dir),
        "database": database,
        "version": version,
        "model": {"name": meta.get("model_name"), "checkpoint_sha256": meta.get("checkpoint_sha256"),
                  "embed_dim": int(meta["embed_dim"]) if "embed_dim" in meta else None},
        "images": counts["images"],
        "indexed": counts["ok"],
        "errors": counts["errors"],
        "vectors": counts["vectors"],
        "faiss": {"kind": vectors.kind, "count": vectors.count, "generation": vectors.generation},
        "generation": store.generation(), "videos": store.frame_counts(),
        "watch": (state := watch()),
        "roots": [{"path": os.fspath(r), "indexed": n,
                   "online": os.path.isdir(r) and r not in state["offline_roots"]}
                  for r, n in sorted(store.roots().items())],
        "error_files": [{"id": r.id, "path": r.path, "error": r.error} for r in errors],
        "fast_paths": _json_or_none(meta.get(FAST_PATHS_KEY)), "ocr": ocr(),
    }  # fmt: skip
