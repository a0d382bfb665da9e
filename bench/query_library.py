"""Synthetic query-benchmark libraries: n image rows written through the real store API.

    lib = query_library(100_000, weights)      # built once, cached under ~/.cache/clipsearch-bench

Rows get plausible metadata and clustered random unit vectors of the bound model's dimension
(``bench_query.clustered``: one Gaussian cluster per ~500 images), applied in batches with
``IndexStore.apply`` by a writer Library whose model is ``weights`` (so the index is bound to
it and its export is made and recorded); the store then picks the index kind for the size
(flat below 200k, ivf-sq8 above) and saves FAISS. Every figure that uses these libraries
comes from synthetic rows; a library of real files (issue 15's, ``bench/library_1m.py`` on
the other branch) can take their place: :func:`query_library` only has to return a config.

``baseline_copy`` makes a copy readable by code from before the FAISS file format 2 (the
SQLite file as is, the FAISS file rewritten in format 1, a ``flat16`` index as ``flat``), for
``--baseline`` variants.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import struct
import time
import zlib
from pathlib import Path

import yaml

ROOT = Path(os.environ.get("CLIPSEARCH_BENCH_CACHE", "~/.cache/clipsearch-bench")).expanduser()
BATCH = 20_000
# Above this many rows the library is bulk-loaded with SQL as bench_query does (rows in the
# store's schema, FAISS built by the store's start-up repair): through IndexStore.apply, 100k
# rows took 6.4 min on this (busy) 2-core machine, so 1M would take over an hour.
APPLY_MAX = 200_000


def write_config(work: Path, weights: Path, index_dir: Path) -> Path:
    cfg = {"model": {"weights": os.fspath(weights)}, "library": {"roots": [os.fspath(work / "lib")]},
           "index": {"dir": os.fspath(index_dir)}, "tags": {"auto": False}}  # fmt: skip
    path = work / f"config-{index_dir.name}.yaml"
    work.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg))
    return path


def _rows(root: bytes, lo: int, hi: int) -> list[dict]:
    return [{"path": root + b"/%04d/IMG_%07d.jpg" % (i // 1000, i), "root": root,
             "size": 2_000_000 + i, "mtime_ns": (1_500_000_000 + i) * 10**9,
             "content_hash": "%064x" % (i + 1), "width": 4032, "height": 3024,
             "taken_at": f"20{10 + i % 15}-0{1 + i % 9}-1{i % 10}T12:00:00",
             "camera": "Pixel 7", "status": "ok", "error": None} for i in range(lo, hi)]  # fmt: skip


def query_library(n: int, weights: Path, log=print) -> Path:
    """The config of a library of ``n`` synthetic rows for model ``weights`` (built once)."""
    from clipmodel.download import sha256_file

    from .bench_query import clustered

    tag = sha256_file(weights)[:12]
    work = ROOT / f"query-{n}-{tag}"
    config = write_config(work, weights, work / "index")
    if (work / "complete").exists():
        return config
    from indexer.config import load_config
    from indexer.library import Library
    from indexer.store import Changes

    shutil.rmtree(work / "index", ignore_errors=True)
    (work / "lib").mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    if n > APPLY_MAX:  # bulk SQL, then the store's own start-up repair builds FAISS
        from .bench_query import build

        build(config, clustered(n, _dim(weights), seed=n))
        (work / "complete").write_text(json.dumps({"rows": n, "method": "bulk SQL",
                                                   "seconds": time.perf_counter() - start}))  # fmt: skip
        return config
    with Library.open(load_config(config), writer=True) as lib:
        identity = lib.encoder().identity  # the normal load: exports, checks, records
        lib.store.bind_model(identity)
        vectors = clustered(n, identity.embed_dim, seed=n)
        root = os.fsencode(work / "lib")
        for lo in range(0, n, BATCH):
            hi = min(n, lo + BATCH)
            changes = Changes.empty()
            changes.upserts = [dict(r, vector=v) for r, v in zip(_rows(root, lo, hi), vectors[lo:hi])]
            lib.store.apply(changes)
            log(f"  {hi:,}/{n:,} rows ({time.perf_counter() - start:.0f} s)")
        del vectors
        lib.store.maintain()
        lib.store.save(force=True)
        kind = lib.store.vector_state().kind
    (work / "complete").write_text(json.dumps({"rows": n, "kind": kind,
                                               "seconds": time.perf_counter() - start}))  # fmt: skip
    return config


def _dim(weights: Path) -> int:
    import torch

    import clipmodel

    sd = torch.load(weights, map_location="cpu", weights_only=True)
    return clipmodel.infer_config(sd).embed_dim


def baseline_copy(config: Path) -> Path:
    """A copy of the library's index whose FAISS file is in format 1 (read by older code)."""
    cfg = yaml.safe_load(config.read_text())
    src = Path(cfg["index"]["dir"])
    dst = src.with_name("index-format1")
    out = write_config(config.parent, Path(cfg["model"]["weights"]), dst)
    if (dst / "complete").exists():
        return out
    shutil.rmtree(dst, ignore_errors=True)
    version = (src / "CURRENT").read_text().strip()
    (dst / version).mkdir(parents=True)
    shutil.copyfile(src / "CURRENT", dst / "CURRENT")
    db = src / version / "index.sqlite"
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    shutil.copyfile(db, dst / version / "index.sqlite")
    _format1(src / version / "vectors.faiss", dst / version / "vectors.faiss")
    (dst / "complete").write_text("")
    return out


def _format1(src: Path, dst: Path) -> None:
    """Rewrite a format 2 vector file (payload, header, trailer) in format 1."""
    data = src.read_bytes()
    payload_len, header_len, _crc, end = struct.unpack("<QII8s", data[-24:])
    assert end == b"CSVIEND2", f"{src} is not a format 2 vector file"
    payload, header = data[:payload_len], data[payload_len : payload_len + header_len]
    meta = json.loads(header)
    if meta["kind"] == "flat16":  # older code knows float32 flat only: the same vectors as that
        payload = _as_flat(payload)
        header = json.dumps({**meta, "kind": "flat"}, sort_keys=True).encode()
    crc = zlib.crc32(payload, zlib.crc32(header))
    with open(dst, "wb") as f:
        f.write(struct.pack("<8sII", b"CSVINDEX", 1, len(header)) + header + payload)
        f.write(struct.pack("<QI8s", len(payload), crc, b"CSVIEND\x00"))


def _as_flat(payload: bytes) -> bytes:
    """A serialised ``IDMap2(IndexScalarQuantizer fp16)`` as ``IDMap2(IndexFlatIP)``."""
    import faiss
    import numpy as np

    index = faiss.deserialize_index(np.frombuffer(payload, dtype=np.uint8))
    ids = faiss.vector_to_array(index.id_map)
    x = faiss.downcast_index(index.index).reconstruct_n(0, index.ntotal)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    flat = faiss.IndexIDMap2(faiss.IndexFlatIP(index.d))
    flat.add_with_ids(x, ids)
    return faiss.serialize_index(flat).tobytes()
