"""The versions of one index directory: ``CURRENT`` names the active ``v<n>`` folder.

``reindex`` builds ``v<n+1>`` beside the active version and switches ``CURRENT`` atomically
(temporary file, fsync, rename, fsync of the directory) only when it is complete; readers
notice the switch by the file's signature and reopen on their next query.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

CURRENT_NAME = "CURRENT"


def file_signature(path: Path) -> tuple | None:
    """(inode, mtime_ns, size) of ``path``: changes whenever the file is replaced (None: none)."""
    with contextlib.suppress(FileNotFoundError):
        st = os.stat(path)
        return (st.st_ino, st.st_mtime_ns, st.st_size)
    return None


class IndexVersions:
    """The ``CURRENT`` file and the version folders of an index directory."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.file = self.root / CURRENT_NAME

    def path(self, name: str) -> Path:
        return self.root / name

    def current(self) -> str | None:
        """The active version's folder name (None: no index yet)."""
        try:
            name = self.file.read_text().strip()
        except FileNotFoundError:
            return None
        return name or None

    def set_current(self, name: str) -> None:
        """Make ``name`` the active version, atomically and durably."""
        tmp = self.root / f".{CURRENT_NAME}.{os.getpid()}.tmp"
        with open(tmp, "w") as fh:
            fh.write(name + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.file)
        fd = os.open(self.root, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def signature(self) -> tuple | None:
        """Changes whenever ``CURRENT`` is replaced (None while there is none)."""
        return file_signature(self.file)

    @staticmethod
    def next_name(current: str | None) -> str:
        """The folder name of the version after ``current``."""
        old = current or "v0"
        return f"v{int(old[1:]) + 1 if old[1:].isdigit() else 1}"

    def remove(self, name: str) -> None:
        shutil.rmtree(self.path(name), ignore_errors=True)

    def remove_stale(self) -> None:
        """Remove version folders other than the active one (an interrupted reindex's);
        writers only, holding the lock."""
        current = self.current()
        if current is None:
            return
        for stale in self.root.glob("v*"):
            if stale.is_dir() and stale.name != current and stale.name[1:].isdigit():
                shutil.rmtree(stale, ignore_errors=True)
