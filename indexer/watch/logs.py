"""The watch service's logging: stderr (the journal), an optional log file, recent errors."""

from __future__ import annotations

import collections
import logging
import logging.handlers
from pathlib import Path

RECENT_ERRORS = 20


class RecentErrors(logging.Handler):
    """Keeps the last warnings and errors for the status file."""

    def __init__(self, on_record) -> None:  # noqa: ANN001
        super().__init__(logging.WARNING)
        self.items: collections.deque = collections.deque(maxlen=RECENT_ERRORS)
        self.on_record = on_record

    def emit(self, record: logging.LogRecord) -> None:
        self.items.append({"time": round(record.created, 3), "level": record.levelname.lower(),
                           "message": record.getMessage()})  # fmt: skip
        self.on_record()


def setup_logging(level: str, log_file: str | None) -> None:
    """Log to stderr (the systemd journal) and, optionally, to ``log_file``."""
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    root = logging.getLogger("clipsearch")
    root.setLevel(getattr(logging, level.upper()))
    root.propagate = False
    for h in list(root.handlers):
        root.removeHandler(h)
    handlers: list[logging.Handler] = [logging.StreamHandler()]
    if log_file:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.handlers.WatchedFileHandler(log_file, encoding="utf-8"))
    for h in handlers:
        h.setFormatter(fmt)
        root.addHandler(h)
