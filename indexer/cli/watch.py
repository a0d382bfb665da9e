"""``clipsearch watch``: the folder-watching service (see :mod:`indexer.watch.service`)."""

from __future__ import annotations

import argparse

from indexer.cli import UserError, command
from indexer.config import LOG_LEVELS, WATCH_OBSERVERS, Config


def _watch_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--log-file", metavar="FILE",
                   help="also log to FILE (default: watch.log_file; stderr always)")  # fmt: skip
    p.add_argument("--log-level", choices=LOG_LEVELS,
                   help="debug, info, warning or error (default: watch.log_level)")  # fmt: skip
    p.add_argument("--observer", choices=WATCH_OBSERVERS,
                   help="how changes are detected (default: watch.observer)")  # fmt: skip


@command(
    "watch",
    "index once, then follow changes under the library roots until stopped (SIGTERM/Ctrl-C)",
    _watch_args,
)
def _cmd_watch(args: argparse.Namespace, cfg: Config) -> int:
    from indexer.cli import writes
    from indexer.library import Library
    from indexer.watch.logs import setup_logging
    from indexer.watch.service import WatchError, WatchService

    log_file = args.log_file or (
        str(cfg.resolve(cfg.watch.log_file)) if cfg.watch.log_file else None
    )
    try:
        setup_logging(args.log_level or cfg.watch.log_level, log_file)
    except OSError as exc:
        raise UserError(f"cannot open log file {log_file}: {exc.strerror or exc}") from None
    # Watch batches are small: starting a Ray cluster for each would cost more than it saves.
    cfg.index.engine = "local"
    try:
        service = WatchService(cfg, lambda c: Library.open(c, writer=True), args.observer,
                               handle_request=writes.handle)  # fmt: skip
        return service.run()
    except WatchError as exc:
        raise UserError(str(exc)) from None
