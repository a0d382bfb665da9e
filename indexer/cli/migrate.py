"""``clipsearch migrate --to URL`` / ``--from URL``: the index between SQLite and PostgreSQL."""

from __future__ import annotations

import argparse
import sys

from indexer.cli.registry import UserError, command, dump
from indexer.config import Config


def _migrate_args(p: argparse.ArgumentParser) -> None:
    way = p.add_mutually_exclusive_group(required=True)
    way.add_argument("--to", metavar="URL",
                     help="copy the SQLite index in index.dir into this PostgreSQL database")  # fmt: skip
    way.add_argument("--from", dest="source", metavar="URL",
                     help="copy the index in this PostgreSQL database into index.dir (SQLite)")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print a JSON summary")


@command("migrate", "copy the index between SQLite (index.dir) and PostgreSQL", _migrate_args)
def _cmd_migrate(args: argparse.Namespace, cfg: Config) -> int:
    from indexer.store import mask_url, migrate_from_postgres, migrate_to_postgres

    url = args.to or args.source
    if not url.startswith(("postgresql:", "postgres:")):
        raise UserError(f"expected a postgresql://user@host/db URL, got {mask_url(url)}")

    def progress(n: int) -> None:
        if not args.json:
            print(f"\rcopied {n} images", end="", file=sys.stderr, flush=True)

    if args.to:
        done = migrate_to_postgres(cfg.index_dir, url, progress)
        where = f"{cfg.index_dir} -> {mask_url(url)}"
    else:
        done = migrate_from_postgres(url, cfg.index_dir, progress)
        where = f"{mask_url(url)} -> {cfg.index_dir}"
    if args.json:
        dump({"from": where.split(" -> ")[0], "to": where.split(" -> ")[1], **done})
        return 0
    print(file=sys.stderr)
    print(f"migrated version {done['version']} ({where}): {done['images']} images, "
          f"{done['vectors']} vectors, {done['tags']} tags, {done['concepts']} concepts, "
          f"{done['albums']} albums")  # fmt: skip
    if args.to:
        print("point index.database (or CLIPSEARCH_DATABASE) at it to use it")
    return 0
