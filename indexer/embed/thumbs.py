"""Where thumbnails live and how they are cleaned up: paths only, no image library (a query
process prints them without importing Pillow)."""

from __future__ import annotations

import os
from pathlib import Path


def thumbnail_file(thumb_dir: Path, digest: str) -> Path:
    """Where the thumbnail of content ``digest`` lives."""
    return thumb_dir / digest[:2] / f"{digest}.jpg"


def moment_thumbnail(digest: str, t_ms: int) -> str:
    """The :func:`thumbnail_file` name of a video's frame at ``t_ms``."""
    return f"{digest}@{int(t_ms)}"


def remove_thumbnails(thumb_dir: Path, keep: set[str] | None = None) -> int:
    """Delete half-written thumbnails (``keep`` None) or those whose content hash is not in
    ``keep``; returns how many."""
    if not thumb_dir.is_dir():
        return 0
    if keep is None:
        partial = list(thumb_dir.glob("*/.*.tmp"))
        for tmp in partial:
            tmp.unlink(missing_ok=True)
        return len(partial)
    removed = 0
    for sub in os.scandir(thumb_dir):
        if not sub.is_dir():
            continue
        for entry in os.scandir(sub.path):
            digest, ext = os.path.splitext(entry.name)
            if (
                ext == ".jpg"
                and not entry.name.startswith(".")
                and digest.split("@")[0] not in keep
            ):
                os.unlink(entry.path)
                removed += 1
    return removed
