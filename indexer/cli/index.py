"""``clipsearch index`` and ``clipsearch reindex``."""

from __future__ import annotations

import argparse
import os
import sys

from indexer.cli.registry import UserError, command, dump, printable
from indexer.config import Config


def _index_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="*", help="only these files/folders (inside library roots)")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                   help="decode and encode on a Ray cluster (no ADDRESS: a local one; "
                        "config index.engine / index.ray_address)")  # fmt: skip


def _use_ray(args: argparse.Namespace, cfg: Config) -> None:
    if getattr(args, "ray", None) is not None:
        cfg.index.engine = "ray"
        cfg.index.ray_address = args.ray or cfg.index.ray_address


def _report(rep, as_json: bool) -> None:
    if as_json:
        dump(rep.to_dict())
        return
    print(
        f"scanned {rep.scanned}: {rep.added} added, {rep.updated} updated, {rep.moved} moved, "
        f"{rep.copied} copied, {rep.removed} removed, {rep.errors} errors, "
        f"{rep.unchanged} unchanged ({rep.encoded} encoded in {rep.seconds:.1f}s, "
        f"{rep.images_per_second:.1f} img/s)"
    )
    if rep.unreachable:
        print(f"warning: {rep.unreachable} files no Ray worker could read, left for the next run",
              file=sys.stderr)  # fmt: skip
    for folder in rep.unlisted_folders:
        print(f"warning: cannot list folder {printable(folder)}", file=sys.stderr)


@command("index", "bring the index up to date with the library roots", _index_args)
def _cmd_index(args: argparse.Namespace, cfg: Config) -> int:
    from indexer.library import Library

    for path in args.paths:
        if not os.path.lexists(path):
            raise UserError(f"path not found: {path}")
    _use_ray(args, cfg)
    with Library.open(cfg, writer=True) as lib:
        rep = lib.index(args.paths or None, progress=not args.no_progress and sys.stderr.isatty())
    _report(rep, args.json)
    return 0


def _reindex_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                   help="decode and encode on a Ray cluster (no ADDRESS: a local one)")


@command("reindex", "rebuild the index with the configured model, then swap it in", _reindex_args)
def _cmd_reindex(args: argparse.Namespace, cfg: Config) -> int:
    from indexer.library import Library

    _use_ray(args, cfg)
    with Library.open(cfg, writer=True) as lib:
        rep = lib.reindex(progress=not args.no_progress and sys.stderr.isatty())
    _report(rep, args.json)
    return 0
