"""One writer per index: an exclusive ``flock`` on ``<index.dir>/writer.lock``.

The kernel releases the lock when the process dies (even by SIGKILL), so a crash never leaves
a stale lock behind. The holder's pid is written into the file for the error message.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from indexer.store.errors import IndexBusyError

LOCK_NAME = "writer.lock"


class WriterLock:
    """Non-blocking exclusive lock; use as a context manager or call acquire/release."""

    def __init__(self, index_dir: Path):
        self.path = Path(index_dir) / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> WriterLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                holder = os.pread(fd, 32, 0).decode("ascii", "ignore").strip() or "?"
            finally:
                os.close(fd)
            raise IndexBusyError(
                f"another clipsearch process (pid {holder}) is writing to the index in "
                f"{self.path.parent}; wait for it to finish or stop it"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> WriterLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
