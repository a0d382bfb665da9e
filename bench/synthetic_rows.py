"""Synthetic image rows written through the real store API (issue 15's 1M library).

Run as a script with ``PYTHONPATH`` naming the checkout whose code writes them (so the
baseline's library is written by the baseline's store)::

    PYTHONPATH=TREE python bench/synthetic_rows.py CONFIG SYNTH_ROOT START COUNT SEED

Rows ``START .. START+COUNT`` get plausible metadata (size, mtime, dimensions, capture date,
camera, a unique content hash) and a unit vector of the bound dimension: a real vector of the
library (the real-file part) plus noise (cosine ~0.8 to it, so the rows look like the library
without duplicating it), and 1 in 100 a planted near-duplicate (cosine ~0.97) of the row before.
Each row gets a sparse placeholder file of its size and mtime, so a no-op ``clipsearch index``
walks and stats a million files and finds them unchanged (their bytes are zeros: nothing but
the no-op scan may read them).
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from pathlib import Path

import numpy as np

BATCH = 10_000
CAMERAS = ["Pixel 7", "iPhone 13", "iPhone 15 Pro", "Canon EOS R6", "NIKON D750", None]
SIZES = [(4032, 3024), (3024, 4032), (4000, 3000), (6000, 4000), (1920, 1080), (2048, 1536)]
BASE_MTIME = 1_500_000_000


def synthetic_path(root: Path, k: int) -> Path:
    return root / f"{k // 1000:04d}" / f"IMG_{k:07d}.jpg"


def noisy(base: np.ndarray, cos: float, rng: np.random.Generator) -> np.ndarray:
    """Unit vectors at cosine ~``cos`` from each row of ``base`` (unit rows)."""
    g = rng.standard_normal(base.shape).astype(np.float32)
    g -= (g * base).sum(1, keepdims=True) * base  # orthogonal to base
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    out = cos * base + np.sqrt(1 - cos * cos) * g
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def rows(root: Path, start: int, count: int, seed: int, real: np.ndarray):
    """(metadata dicts, vectors) of rows start..start+count (deterministic per row range)."""
    rng = np.random.default_rng([seed, start, count])
    base = real[rng.integers(0, len(real), count)]
    vecs = noisy(base, 0.8, rng)
    dup = rng.random(count) < 0.01
    dup[0] = False
    idx = np.flatnonzero(dup)
    vecs[idx] = noisy(vecs[idx - 1], 0.97, rng)
    sizes = rng.integers(1_500_000, 6_000_000, count)
    dims = rng.integers(0, len(SIZES), count)
    cams = rng.integers(0, len(CAMERAS), count)
    days = rng.integers(0, 21 * 365, count)
    secs = rng.integers(0, 86_400, count)
    out = []
    for j in range(count):
        k = start + j
        w, h = SIZES[dims[j]]
        taken = time.strftime(
            "%Y-%m-%dT%H:%M:%S", time.gmtime(1_104_537_600 + int(days[j]) * 86_400 + int(secs[j]))
        )
        out.append({
            "path": os.fsencode(synthetic_path(root, k)), "root": os.fsencode(root),
            "size": int(sizes[j]), "mtime_ns": (BASE_MTIME + k) * 1_000_000_000,
            "content_hash": hashlib.sha256(b"synthetic %d" % k).hexdigest(),
            "width": w, "height": h, "taken_at": taken, "camera": CAMERAS[cams[j]],
            "status": "ok", "error": None,
        })  # fmt: skip
    return out, vecs


def placeholder(path: bytes, size: int, mtime_ns: int) -> None:
    """A sparse file of ``size`` bytes with ``mtime_ns`` (no disk blocks)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    except FileNotFoundError:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.ftruncate(fd, size)
    finally:
        os.close(fd)
    os.utime(path, ns=(mtime_ns, mtime_ns))


def main(config: str, root: str, start: int, count: int, seed: int) -> None:
    from indexer.config import load_config
    from indexer.library import Library
    from indexer.store import Changes

    cfg = load_config(config)
    synth = Path(root)
    t0 = time.monotonic()
    with Library.open(cfg, writer=True) as lib:
        store = lib.store
        real = np.concatenate([v for _ids, v in store.iter_vectors()])
        real /= np.linalg.norm(real, axis=1, keepdims=True)
        for lo in range(start, start + count, BATCH):
            n = min(BATCH, start + count - lo)
            meta, vecs = rows(synth, lo, n, seed, real)
            for m in meta:
                placeholder(m["path"], m["size"], m["mtime_ns"])
            changes = Changes.empty()
            changes.upserts = [dict(m, vector=v) for m, v in zip(meta, vecs)]
            store.apply(changes)
            print(f"synthetic rows: {lo + n - start}/{count} ({time.monotonic() - t0:.0f} s)",
                  file=sys.stderr, flush=True)  # fmt: skip
        store.maintain()  # the index kind for the new size (ivf-sq8 above 200k)
        store.save(force=True)
    print(f"{count} synthetic rows in {time.monotonic() - t0:.1f} s", file=sys.stderr)


if __name__ == "__main__":
    a = sys.argv[1:]
    main(a[0], a[1], int(a[2]), int(a[3]), int(a[4]))
