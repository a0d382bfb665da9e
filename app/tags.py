"""Tags as the UI reads them (read-only), through the Library's API only::

    lib.tag_counts() -> {tag: number of images}
    lib.image_tags(image_id) -> [(tag, score), ...]
    lib.ids_with_tags(tags) -> ids of images that carry every tag in ``tags``

:func:`tag_source` returns None for an object without those methods (no tags to show).
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


def tag_source(lib: Any) -> TagSource | None:
    """How to read tags from ``lib``, or None when the library has no tags (yet)."""
    if lib is None:
        return None
    if all(callable(getattr(lib, name, None)) for name in _LIBRARY_METHODS):
        return LibraryTags(lib)
    return None
