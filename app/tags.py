"""Tags, when the library has them (issue 6 lands in parallel): feature-detected, read-only.

:func:`tag_source` returns None until tagging exists. It prefers the Library's own methods::

    lib.tag_counts() -> {tag: number of images}
    lib.image_tags(image_id) -> [(tag, score), ...]
    lib.ids_with_tags(tags) -> ids of images that carry every tag in ``tags``

and otherwise reads the ``tags(image_id, tag, score)`` table described in
``indexer/tag_commands.py`` straight from the active index database.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

_LIBRARY_METHODS = ("tag_counts", "image_tags", "ids_with_tags")


class TagSource(Protocol):
    def counts(self) -> dict[str, int]: ...

    def tags_of(self, image_id: int) -> list[tuple[str, float]]: ...

    def ids_with(self, tags: Iterable[str]) -> set[int]: ...


class LibraryTags:
    """Tags through the Library's API."""

    def __init__(self, lib: Any):
        self.lib = lib

    def counts(self) -> dict[str, int]:
        return {str(k): int(v) for k, v in dict(self.lib.tag_counts()).items()}

    def tags_of(self, image_id: int) -> list[tuple[str, float]]:
        out = []
        for item in self.lib.image_tags(image_id) or []:
            if isinstance(item, str):
                out.append((item, float("nan")))
            else:
                out.append((str(item[0]), float(item[1])))
        return out

    def ids_with(self, tags: Iterable[str]) -> set[int]:
        return {int(i) for i in self.lib.ids_with_tags(list(tags))}


class SqlTags:
    """Tags read from the ``tags`` table of the index database (read-only queries)."""

    def __init__(self, lib: Any):
        self.lib = lib

    def _rows(self, sql: str, **params: Any) -> list:
        from sqlalchemy import text

        with self.lib.store.engine.connect() as conn:
            return list(conn.execute(text(sql), params))

    def counts(self) -> dict[str, int]:
        rows = self._rows("SELECT tag, COUNT(*) FROM tags GROUP BY tag ORDER BY COUNT(*) DESC, tag")
        return {str(t): int(n) for t, n in rows}

    def tags_of(self, image_id: int) -> list[tuple[str, float]]:
        rows = self._rows(
            "SELECT tag, score FROM tags WHERE image_id = :i ORDER BY score DESC", i=int(image_id)
        )
        return [(str(t), float(s) if s is not None else float("nan")) for t, s in rows]

    def ids_with(self, tags: Iterable[str]) -> set[int]:
        result: set[int] | None = None
        for tag in tags:
            ids = {int(r[0]) for r in self._rows("SELECT image_id FROM tags WHERE tag = :t", t=tag)}
            result = ids if result is None else result & ids
        return result or set()


def _has_tags_table(lib: Any) -> bool:
    try:
        from sqlalchemy import inspect

        insp = inspect(lib.store.engine)
        if not insp.has_table("tags"):
            return False
        cols = {c["name"] for c in insp.get_columns("tags")}
        return {"image_id", "tag"} <= cols
    except Exception:  # noqa: BLE001 - no store, or an unexpected schema: no tags
        return False


def tag_source(lib: Any) -> TagSource | None:
    """How to read tags from ``lib``, or None when the library has no tags (yet)."""
    if lib is None:
        return None
    if all(callable(getattr(lib, name, None)) for name in _LIBRARY_METHODS):
        return LibraryTags(lib)
    if _has_tags_table(lib):
        return SqlTags(lib)
    return None
