"""The vector index file: FAISS's own serialisation inside a checked envelope, written atomically.

Layout (version 2): the FAISS index bytes from offset 0, so that FAISS can memory-map the file
itself (readers then load a library of any size in milliseconds and share the page cache), then
the JSON header and a trailer (u64 payload length, u32 header length, u32 CRC32 of
payload+header, END_MAGIC_2). Version 1 files (MAGIC, u32 version, u32 header length, header,
payload, trailer u64 length, u32 CRC32, END_MAGIC) are still read. A truncated or corrupt file
is a ``ValueError`` naming it, never a crash inside FAISS.

Checking the CRC reads the whole file. :func:`write` returns the file's *signature* (inode,
device, size, mtime, ctime and the CRC); a reader given that signature (the store keeps the
last one it wrote) skips the CRC when the file still has it: the bytes are the ones written
and checked, as nothing can rewrite a file without changing its ctime.
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
_END_MAGIC_2 = b"CSVIEND2"
_VERSION = 1
_PREFIX = struct.Struct("<8sII")
_TRAILER = struct.Struct("<QI8s")
_TRAILER_2 = struct.Struct("<QII8s")
_MAX_HEADER = 1 << 20
_CHUNK = 1 << 24


def write(
    path: str | Path, header: bytes, payload: Callable[[Callable[[bytes], int]], None] | None
) -> dict:
    """Atomically write what ``payload(write)`` writes and ``header`` to ``path``; returns the
    new file's signature (see the module docs).

    Writes a temporary file in the same directory, fsyncs it, renames it over ``path``
    and fsyncs the directory, so readers see either the old or the new file.
    """
    path = Path(path)
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            sink = _ChecksumWriter(f, 0)
            if payload is not None:
                payload(sink.write)
            length = sink.length
            f.write(header)
            crc = zlib.crc32(header, sink.crc)
            f.write(_TRAILER_2.pack(length, len(header), crc, _END_MAGIC_2))
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return signature(os.stat(path), crc)


def signature(st: os.stat_result, crc: int) -> dict:
    """What identifies one written file: a replaced or rewritten file has another."""
    return {"ino": st.st_ino, "dev": st.st_dev, "size": st.st_size, "mtime_ns": st.st_mtime_ns,
            "ctime_ns": st.st_ctime_ns, "crc": crc}  # fmt: skip


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


def read(
    path: Path, mmap: bool = False, trusted: dict | None = None
) -> tuple[dict, faiss.Index | None, dict, bool]:
    """(JSON header, FAISS index or None, the file's signature, whether FAISS maps it) of a
    file written by :func:`write`. ``mmap``: FAISS maps the file instead of copying it (the
    index is then read-only: see ``VectorIndex``). ``trusted``: a signature from
    :func:`write`; the CRC is not computed again when the file still has it."""
    with open(path, "rb") as f:
        st = os.fstat(f.fileno())
        f.seek(max(0, st.st_size - 8))
        if f.read(8) == _END_MAGIC_2:
            header, payload_start, payload_len, crc = _read_v2(f, st, path, trusted)
        else:
            f.seek(0)
            header, payload_start, payload_len = read_envelope(f, st.st_size, path)
            crc, mmap = None, False  # version 1: the payload does not start the file
        try:
            meta = json.loads(header)
        except ValueError as exc:
            raise ValueError(f"{path}: bad index header: {exc}") from exc
        if not isinstance(meta, dict):
            raise ValueError(f"{path}: bad index header: not a JSON object")
        sig = signature(st, crc) if crc is not None else {}
        if not payload_len:
            return meta, None, sig, False
        f.seek(payload_start)
        mmap = mmap and os.path.isdir("/proc/self/fd")
        try:
            if mmap:
                # the file we checked, even if a writer has replaced the path since
                index = faiss.read_index(f"/proc/self/fd/{f.fileno()}", faiss.IO_FLAG_MMAP_IFC)
            else:
                index = faiss.read_index(faiss.PyCallbackIOReader(f.read))
        except RuntimeError as exc:
            raise ValueError(f"{path}: cannot read FAISS index: {exc}") from exc
        return meta, index, sig, mmap


def _read_v2(f: BinaryIO, st: os.stat_result, path: Path, trusted: dict | None):
    """Check a version 2 file; returns (header, payload offset, payload length, CRC)."""
    size = st.st_size
    if size < _TRAILER_2.size:
        raise ValueError(f"{path}: truncated or corrupt index file")
    f.seek(size - _TRAILER_2.size)
    payload_len, header_len, crc, _ = _TRAILER_2.unpack(f.read(_TRAILER_2.size))
    if header_len > _MAX_HEADER or payload_len + header_len + _TRAILER_2.size != size:
        raise ValueError(f"{path}: truncated or corrupt index file")
    f.seek(payload_len)
    header = f.read(header_len)
    if trusted != signature(st, crc):
        f.seek(0)
        actual = _crc_of(f, payload_len, path)
        if zlib.crc32(header, actual) != crc:
            raise ValueError(f"{path}: index file checksum mismatch (corrupt)")
    return header, 0, payload_len, crc


def _crc_of(f: BinaryIO, length: int, path: Path) -> int:
    """CRC32 of the next ``length`` bytes, read through one reused buffer."""
    buf = bytearray(min(_CHUNK, max(length, 1)))
    view = memoryview(buf)
    crc, remaining = 0, length
    while remaining:
        n = f.readinto(view[: min(len(buf), remaining)])
        if not n:
            raise ValueError(f"{path}: truncated index file")
        crc = zlib.crc32(view[:n], crc)
        remaining -= n
    return crc


def read_header(path: Path) -> dict:
    """The JSON header of a file written by :func:`write` (either version), read without the
    payload (no checksum: a cheap look, e.g. for ``status``; :func:`read` verifies it all)."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        f.seek(max(0, size - 8))
        if f.read(8) == _END_MAGIC_2 and size >= _TRAILER_2.size:
            f.seek(size - _TRAILER_2.size)
            payload_len, header_len, _, _ = _TRAILER_2.unpack(f.read(_TRAILER_2.size))
            if header_len > _MAX_HEADER or payload_len + header_len + _TRAILER_2.size != size:
                raise ValueError(f"{path}: truncated or corrupt index file")
            f.seek(payload_len)
        else:
            f.seek(0)
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


def check_index(index: faiss.Index | None, kind: str, dim: int, path: Path) -> None:
    """Raise ValueError unless a loaded FAISS index matches ``kind`` and ``dim``."""
    if index is None:
        if kind in ("flat", "flat16", "hnsw"):
            raise ValueError(f"{path}: {kind} index has no FAISS payload")
        return
    expected = {
        "flat": (faiss.IndexIDMap2, faiss.IndexFlatIP),
        "flat16": (faiss.IndexIDMap2, faiss.IndexScalarQuantizer),
        "hnsw": (faiss.IndexIDMap2, faiss.IndexHNSWFlat),
        "ivf": (faiss.IndexIVFFlat, None),
        "ivf-sq8": (faiss.IndexIVFScalarQuantizer, None),
    }[kind]
    inner = faiss.downcast_index(index.index) if expected[1] else None
    if (
        not isinstance(index, expected[0])
        or (expected[1] and not isinstance(inner, expected[1]))
        or (kind == "flat16" and inner.sq.qtype != faiss.ScalarQuantizer.QT_fp16)
        or index.d != dim
        or index.metric_type != faiss.METRIC_INNER_PRODUCT
    ):
        raise ValueError(f"{path}: FAISS index does not match kind={kind} dim={dim}")


def stored_ids(index: faiss.Index | None, kind: str, path: Path | None) -> np.ndarray:
    """The ids a (checked) FAISS index holds, sorted (~0.07 s at 1M ivf-sq8: read when first
    needed, not at load)."""
    if index is None:
        return np.empty(0, dtype=np.int64)
    if kind in ("flat", "flat16", "hnsw"):
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
