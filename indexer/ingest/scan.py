"""Walking library roots and deciding what changed since the last run.

:func:`walk` yields one :class:`FileEntry` per candidate file (by extension). Hidden files and
folders (name starting with ``.``) and the index directory itself are skipped. With
``follow_symlinks`` symlinked folders are walked once each (loops are cut by device/inode);
without it symlinks are ignored. Files whose ``stat`` fails (broken symlinks, symlink loops) and
non-regular files (FIFOs, devices) are yielded with ``error`` set, so they get recorded.
Folders that cannot be listed are reported in ``unlisted`` so that their files are not mistaken
for deleted ones. With ``raw_with_jpeg="skip"`` a camera RAW file is left out when a JPEG of the
same name (case-insensitive, an indexed extension) sits beside it: the photo is indexed once,
from the JPEG (a RAW indexed before is then swept like a removed file).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from indexer.config import Config
from indexer.embed.images import os_reason
from indexer.embed.raw import is_raw_name

_JPEG_EXTENSIONS = (".jpg", ".jpeg")


class RootMissingError(FileNotFoundError):
    """A configured library root does not exist (unmounted disk, typo)."""


@dataclass
class FileEntry:
    """A candidate file: its path (as ``str``, possibly surrogate-escaped) and stat data."""

    path: str
    root: str
    size: int | None
    mtime_ns: int | None
    error: str | None = None


@dataclass
class WalkResult:
    """Entries found plus folders that could not be listed (their files must not be swept)."""

    entries: list[FileEntry] = field(default_factory=list)
    unlisted: list[str] = field(default_factory=list)


def _entry_for(path: str, root: str, follow: bool) -> FileEntry:
    try:
        st = os.stat(path, follow_symlinks=follow)
    except OSError as exc:
        try:  # broken symlink / loop: identify the link itself for change detection
            lst = os.lstat(path)
            size, mtime = lst.st_size, lst.st_mtime_ns
        except OSError:
            size = mtime = None
        return FileEntry(path, root, size, mtime, f"cannot stat: {os_reason(exc)}")
    if not stat.S_ISREG(st.st_mode):
        kind = "FIFO" if stat.S_ISFIFO(st.st_mode) else "special file"
        return FileEntry(path, root, 0, st.st_mtime_ns, f"not a regular file ({kind})")
    return FileEntry(path, root, st.st_size, st.st_mtime_ns)


def _has_jpeg_twin(name: str, names: set[str], exts: set[str]) -> bool:
    """Whether a JPEG named like RAW file ``name`` is among ``names`` (lower-cased)."""
    stem = os.path.splitext(name)[0].lower()
    return any(ext in exts and stem + ext in names for ext in _JPEG_EXTENSIONS)


def _folder_names(folder: str, cache: dict[str, set[str]]) -> set[str]:
    if folder not in cache:
        try:
            cache[folder] = {n.lower() for n in os.listdir(folder)}
        except OSError:
            cache[folder] = set()
    return cache[folder]


def with_raw_twins(targets: list[tuple[Path, Path]], cfg: Config) -> list[tuple[Path, Path]]:
    """``targets`` plus, with ``library.raw_with_jpeg: skip``, the RAW files named like each
    JPEG file target (``clipsearch index IMG_1.JPG``, a watch batch): a JPEG that appears hides
    its RAW (whose row is then swept), one that goes away lets it be indexed."""
    if cfg.library.raw_with_jpeg != "skip":
        return targets
    out, seen = list(targets), {start for start, _ in targets}
    stems: dict[Path, dict[str, list[str]]] = {}  # folder -> RAW stem (lower-cased) -> names
    for start, root in targets:
        stem, ext = os.path.splitext(start.name)
        if ext.lower() not in _JPEG_EXTENSIONS:
            continue
        if start.parent not in stems:
            try:
                names = os.listdir(start.parent)
            except OSError:
                names = []
            stems[start.parent] = by_stem = {}
            for n in names:
                if is_raw_name(n):
                    by_stem.setdefault(os.path.splitext(n)[0].lower(), []).append(n)
        for n in stems[start.parent].get(stem.lower(), []):
            if (twin := start.parent / n) not in seen:
                seen.add(twin)
                out.append((twin, root))
    return out


def check_roots(roots: Iterable[Path]) -> None:
    """Raise :class:`RootMissingError` unless every root is an existing folder."""
    for root in roots:
        if not root.is_dir():
            raise RootMissingError(f"library root not found or not a folder: {root}")


def walk(
    targets: Iterable[tuple[Path, Path]],
    extensions: Iterable[str],
    follow_symlinks: bool = True,
    exclude: Iterable[Path] = (),
    raw_with_jpeg: str = "index",
) -> WalkResult:
    """Find candidate files under each ``(start, root)`` target (sorted, each path once).

    ``start`` is a folder or file inside library root ``root`` (usually the root itself).
    ``raw_with_jpeg``: ``library.raw_with_jpeg`` (``skip``: RAW files beside a JPEG twin are
    left out).
    """
    exts = {e.lower() for e in extensions}
    skip_twins = raw_with_jpeg == "skip"
    listings: dict[str, set[str]] = {}  # folder -> its names, lower-cased (file targets)
    excluded = {os.path.realpath(p) for p in exclude}
    result = WalkResult()
    seen_dirs: set[tuple[int, int]] = set()
    seen_files: set[str] = set()
    for start, root in targets:
        root_s = os.fspath(root)
        start_s = os.fspath(start)
        if not os.path.isdir(start_s):
            folder, name = os.path.split(start_s)
            if (
                skip_twins
                and is_raw_name(name)
                and _has_jpeg_twin(name, _folder_names(folder, listings), exts)
            ):
                continue
            if os.path.lexists(start_s) and start_s not in seen_files:
                seen_files.add(start_s)
                result.entries.append(_entry_for(start_s, root_s, follow_symlinks))
            continue
        stack = [start_s]
        while stack:
            folder = stack.pop()
            try:
                st = os.stat(folder)
            except OSError:
                result.unlisted.append(folder)
                continue
            if (st.st_dev, st.st_ino) in seen_dirs or os.path.realpath(folder) in excluded:
                continue
            seen_dirs.add((st.st_dev, st.st_ino))
            try:
                with os.scandir(folder) as it:
                    items = sorted(it, key=lambda d: d.name)
            except OSError:
                result.unlisted.append(folder)
                continue
            subdirs = []
            names = {item.name.lower() for item in items} if skip_twins else set()
            for item in items:
                if item.name.startswith("."):
                    continue
                try:
                    is_link = item.is_symlink()
                    if is_link and not follow_symlinks:
                        continue
                    if item.is_dir(follow_symlinks=follow_symlinks):
                        subdirs.append(item.path)
                        continue
                except OSError:
                    pass  # e.g. a symlink loop: treat as a file below if its name matches
                if os.path.splitext(item.name)[1].lower() not in exts:
                    continue
                if skip_twins and is_raw_name(item.name) and _has_jpeg_twin(item.name, names, exts):
                    continue
                if item.path in seen_files:
                    continue
                seen_files.add(item.path)
                result.entries.append(_entry_for(item.path, root_s, follow_symlinks))
            stack.extend(reversed(subdirs))
    result.entries.sort(key=lambda e: os.fsencode(e.path))
    return result


def iter_paths(paths: Iterable[str | os.PathLike]) -> Iterator[str]:
    """Absolute, normalised string forms of user-given paths."""
    for p in paths:
        yield os.path.abspath(os.fspath(p))


def under_any(prefixes: list[bytes]):
    """A test whether a path is one of ``prefixes`` or under one, fast for many prefixes
    (watch batches pass hundreds): a set lookup of the path and each parent, O(depth)."""
    heads = {p.rstrip(b"/") for p in prefixes}
    if b"" in heads:
        return lambda path: True

    def match(path: bytes) -> bool:
        while path:
            if path in heads:
                return True
            cut = path.rfind(b"/")
            path = path[:cut] if cut > 0 else b""
        return False

    return match


def offline_roots(cfg: Config) -> list[bytes]:
    """Configured roots that are not there (an unplugged drive): their rows are never swept."""
    return [os.fsencode(os.path.abspath(r)) for r in cfg.roots if not os.path.isdir(r)]
