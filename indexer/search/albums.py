"""Smart albums: saved searches (text, marked photos, concepts, filters, cut-off) that are run
again whenever they are read, so they stay current as photos arrive.

A spec (stored as JSON by the store; fields only ever added)::

    {"query": str|null, "like": [int], "unlike": [int], "concepts": [str], "tags": [str],
     "folder": str|null, "since": str|null, "until": str|null,
     "k": int, "threshold": float|null, "adaptive": bool}

Export: a folder of symbolic links to the photos (stale links removed, other files left
alone) or a list of paths.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from indexer.search.engine import QueryError, SearchResults
from indexer.store import Album, IndexStore

DEFAULT_K = 500  # an album's photos when the spec sets no other limit


class AlbumError(ValueError):
    """An album cannot be saved or found (unknown name, empty search, bad name)."""


def make_spec(
    query: str | None = None,
    like: Sequence[int] = (),
    unlike: Sequence[int] = (),
    concepts: Sequence[str] = (),
    tags: Sequence[str] = (),
    folder: str | None = None,
    since: str | None = None,
    until: str | None = None,
    k: int = DEFAULT_K,
    threshold: float | None = None,
    adaptive: bool = False,
) -> dict:
    """A validated album spec; AlbumError when there is nothing to search for."""
    query = query.strip() if query and query.strip() else None
    if not (query or like or concepts):
        raise AlbumError("an album needs a query, liked photos or a concept")
    if k < 1:
        raise AlbumError("an album's -k must be at least 1")
    return {"query": query, "like": [int(i) for i in like], "unlike": [int(i) for i in unlike],
            "concepts": list(concepts), "tags": list(tags),
            "folder": os.path.abspath(folder) if folder else None, "since": since,
            "until": until, "k": int(k), "threshold": threshold, "adaptive": bool(adaptive)}  # fmt: skip


def _quoted(name: str) -> str:
    return f'"{name}"' if any(ch in name for ch in '+-"') else name


class AlbumService:
    """Smart albums of one library: save, list, run, export, delete."""

    def __init__(
        self,
        get_store: Callable[[], IndexStore],
        search: Callable[..., SearchResults],
        require_writer: Callable[[], None],
    ):
        self._get_store = get_store
        self._search = search
        self._require_writer = require_writer

    def list(self) -> list[Album]:
        return self._get_store().albums()

    def get(self, name: str) -> Album:
        """The album named ``name``; AlbumError naming the known ones if there is none."""
        albums = self.list()
        for a in albums:
            if a.name == name.strip():
                return a
        known = ", ".join(a.name for a in albums) or "none yet"
        raise AlbumError(f"unknown album {name!r} (albums: {known})")

    def save(self, name: str, spec: dict, replace: bool = True) -> Album:
        """Store album ``name`` (writers only); the search is run once to check it."""
        self._require_writer()
        clean = " ".join(str(name).split())
        if not clean or len(clean) > 80:
            raise AlbumError(f"invalid album name {name!r}: 1-80 characters")
        old = next((a for a in self.list() if a.name == clean), None)
        if old is not None and not replace:
            raise AlbumError(f"album {clean!r} exists")
        now = time.time()
        album = Album(clean, dict(spec), old.created if old else now, now)
        self.run(album)  # raises QueryError on unknown photos / concepts / bad dates
        self._get_store().put_album(album)
        return album

    def delete(self, name: str) -> None:
        self._require_writer()
        self._get_store().drop_album(self.get(name).name)

    def run(self, album: Album | str) -> SearchResults:
        """The album's photos now (its saved search run against the current index)."""
        a = self.get(album) if isinstance(album, str) else album
        s = a.spec
        parts = [s["query"]] if s.get("query") else []
        parts += [f"concept:{_quoted(c)}" for c in s.get("concepts", [])]
        try:
            return self._search(" + ".join(parts) or None, like=s.get("like", []),
                                unlike=s.get("unlike", []), tags=s.get("tags") or None,
                                folder=s.get("folder"), since=s.get("since"),
                                until=s.get("until"), k=int(s.get("k", DEFAULT_K)),
                                threshold=s.get("threshold"),
                                adaptive=bool(s.get("adaptive")))  # fmt: skip
        except QueryError as exc:
            raise QueryError(f"album {a.name!r}: {exc}") from None

    def paths(self, album: Album | str) -> list[str]:
        """The album's photo paths, best first."""
        return [h.path for h in self.run(album).hits]

    def export_links(self, album: Album | str, folder: str | os.PathLike) -> tuple[int, int]:
        """Make ``folder`` a folder of symbolic links to the album's photos; links to photos
        no longer in it are removed, other files are left alone. Returns (linked, removed)."""
        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        wanted: dict[str, str] = {}
        for path in self.paths(album):
            name = os.path.basename(path)
            if name in wanted:
                stem, ext = os.path.splitext(name)
                name = f"{stem}-{len(wanted)}{ext}"
            wanted[name] = path
        removed = 0
        for entry in os.scandir(out):
            if entry.is_symlink() and os.readlink(entry.path) != wanted.get(entry.name):
                os.unlink(entry.path)
                removed += 1
        for name, target in wanted.items():
            link = out / name
            if not link.is_symlink():
                if link.exists():
                    raise AlbumError(f"{link} exists and is not a link; export into an empty folder")
                os.symlink(target, link)
        return len(wanted), removed
