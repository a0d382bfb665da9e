"""The vector index file: an envelope around FAISS's own serialisation, written atomically.

Layout: MAGIC, u32 version, u32 header length, JSON header, FAISS index bytes, then a trailer
(u64 payload length, u32 CRC32 of header+payload, END_MAGIC). A truncated or corrupt file is
a ``ValueError`` naming it, never a crash inside FAISS.
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import faiss
import numpy as np

_MAGIC = b"CSVINDEX"
_END_MAGIC = b"CSVIEND\x00"
_VERSION = 1
_PREFIX = struct.Struct("<8sII")
_TRAILER = struct.Struct("<QI8s")
_MAX_HEADER = 1 << 20
_CHUNK = 1 << 24


def write(
    path: str | Path, header: bytes, payload: Callable[[Callable[[bytes], int]], None] | None
) -> None:
    """Atomically write ``header`` and what ``payload(write)`` writes to ``path``.

    Writes a temporary file in the same directory, fsyncs it, renames it over ``path``
    and fsyncs the directory, so readers see either the old or the new file.
    """
    path = Path(path)
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(_PREFIX.pack(_MAGIC, _VERSION, len(header)))
            f.write(header)
            crc = zlib.crc32(header)
            length = 0
            if payload is not None:
                sink = _ChecksumWriter(f, crc)
                payload(sink.write)
                crc, length = sink.crc, sink.length
            f.write(_TRAILER.pack(length, crc, _END_MAGIC))
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


class _ChecksumWriter:
    """File sink for faiss.PyCallbackIOWriter that tracks CRC32 and length."""

    def __init__(self, f: BinaryIO, crc: int) -> None:
        self._f = f
        self.crc = crc
        self.length = 0

    def write(self, data: bytes) -> int:
        self._f.write(data)
        self.crc = zlib.crc32(data, self.crc)
        self.length += len(data)
        return len(data)


def read(path: Path) -> tuple[dict, faiss.Index | None]:
    """(JSON header, FAISS index or None) of a file written by :func:`write`."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        header, payload_start, payload_len = read_envelope(f, size, path)
        try:
            meta = json.loads(header)
        except ValueError as exc:
            raise ValueError(f"{path}: bad index header: {exc}") from exc
        if not isinstance(meta, dict):
            raise ValueError(f"{path}: bad index header: not a JSON object")
        if not payload_len:
            return meta, None
        f.seek(payload_start)
        try:
            return meta, faiss.read_index(faiss.PyCallbackIOReader(f.read))
        except RuntimeError as exc:
            raise ValueError(f"{path}: cannot read FAISS index: {exc}") from exc


def read_header(path: Path) -> dict:
    """The JSON header of a file written by :func:`write`, read without the payload (no
    checksum: a cheap look, e.g. for ``status``; :func:`read` verifies everything)."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size < _PREFIX.size + _TRAILER.size:
            raise ValueError(f"{path}: not a clipsearch vector index (file too short)")
        magic, version, header_len = _PREFIX.unpack(f.read(_PREFIX.size))
        if magic != _MAGIC or version != _VERSION or header_len > _MAX_HEADER:
            raise ValueError(f"{path}: not a clipsearch vector index of version {_VERSION}")
        try:
            meta = json.loads(f.read(header_len))
        except ValueError as exc:
            raise ValueError(f"{path}: bad index header: {exc}") from exc
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: bad index header: not a JSON object")
    return meta


def read_envelope(f: BinaryIO, size: int, path: Path) -> tuple[bytes, int, int]:
    """Validate prefix, trailer and checksum; return (header, payload offset, payload length)."""
    if size < _PREFIX.size + _TRAILER.size:
        raise ValueError(f"{path}: not a clipsearch vector index (file too short: {size} bytes)")
    magic, version, header_len = _PREFIX.unpack(f.read(_PREFIX.size))
    if magic != _MAGIC:
        raise ValueError(f"{path}: not a clipsearch vector index (bad magic)")
    if version != _VERSION:
        raise ValueError(f"{path}: unsupported index format version {version}")
    if header_len > _MAX_HEADER or _PREFIX.size + header_len + _TRAILER.size > size:
        raise ValueError(f"{path}: truncated or corrupt index file")
    f.seek(size - _TRAILER.size)
    payload_len, crc, end = _TRAILER.unpack(f.read(_TRAILER.size))
    payload_start = _PREFIX.size + header_len
    if end != _END_MAGIC or payload_start + payload_len + _TRAILER.size != size:
        raise ValueError(f"{path}: truncated or corrupt index file")
    f.seek(_PREFIX.size)
    actual = 0
    remaining = header_len + payload_len
    header = b""
    while remaining:
        chunk = f.read(min(_CHUNK, remaining))
        if not chunk:
            raise ValueError(f"{path}: truncated index file")
        if not header:
            header = chunk[:header_len]
        actual = zlib.crc32(chunk, actual)
        remaining -= len(chunk)
    if actual != crc:
        raise ValueError(f"{path}: index file checksum mismatch (corrupt)")
    return header, payload_start, payload_len


def _fsync_dir(directory: Path) -> None:
    if os.name != "posix":  # directories cannot be opened for fsync on Windows
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def stored_ids(index: faiss.Index | None, kind: str, dim: int, path: Path) -> np.ndarray:
    """Ids read back from a loaded FAISS index, after checking it matches ``kind``/``dim``."""
    if index is None:
        if kind in ("flat", "hnsw"):
            raise ValueError(f"{path}: {kind} index has no FAISS payload")
        return np.empty(0, dtype=np.int64)
    expected = {
        "flat": (faiss.IndexIDMap2, faiss.IndexFlatIP),
        "hnsw": (faiss.IndexIDMap2, faiss.IndexHNSWFlat),
        "ivf": (faiss.IndexIVFFlat, None),
        "ivf-sq8": (faiss.IndexIVFScalarQuantizer, None),
    }[kind]
    inner = faiss.downcast_index(index.index) if expected[1] else None
    if (
        not isinstance(index, expected[0])
        or (expected[1] and not isinstance(inner, expected[1]))
        or index.d != dim
        or index.metric_type != faiss.METRIC_INNER_PRODUCT
    ):
        raise ValueError(f"{path}: FAISS index does not match kind={kind} dim={dim}")
    if kind in ("flat", "hnsw"):
        ids = faiss.vector_to_array(index.id_map)
    else:
        ids = _ivf_ids(index)
    ids = np.sort(ids.astype(np.int64, copy=False))
    if ids.size and (ids[0] < 0 or np.any(ids[1:] == ids[:-1])):
        raise ValueError(f"{path}: index holds negative or duplicate ids")
    return ids


def _ivf_ids(index: faiss.IndexIVF) -> np.ndarray:
    """All ids stored in an IVF index's inverted lists (one call per list, not per vector)."""
    invlists = index.invlists
    parts = [np.empty(0, dtype=np.int64)]
    for lst in range(index.nlist):
        size = invlists.list_size(lst)
        if size:
            ptr = invlists.get_ids(lst)
            parts.append(faiss.rev_swig_ptr(ptr, size).copy())
            invlists.release_ids(lst, ptr)
    return np.concatenate(parts)
