"""``clipsearch albums``: smart albums, saved searches that stay current as photos arrive.

    clipsearch albums [list] [--json]
    clipsearch albums create NAME [QUERY] [--like PHOTO]... [--unlike PHOTO]... [--concept C]...
                             [--tag TAG]... [--folder F] [--since D] [--until D] [-k N]
                             [--threshold X] [--adaptive] [--json]
    clipsearch albums show NAME [--json]
    clipsearch albums export NAME (--links DIR | --paths FILE|-)
    clipsearch albums delete NAME

PHOTO: an image id or an indexed path. ``create`` replaces an album of that name; while ``watch``
runs (it holds the writer lock) the daemon saves it for the command (:mod:`indexer.cli.writes`). JSON (fields only ever added): an album is ``{"name": str,
"spec": {...} (see indexer.search.albums), "created": float, "updated": float, "count": int,
"results": [{"rank", "id", "path", "score"}]}`` (``show``) and ``{"albums": [{"name", "spec",
"created", "updated", "count"}]}`` (``list``).
"""

from __future__ import annotations

import argparse
import os
import sys

from indexer.cli.concepts import photo_args
from indexer.cli.registry import UserError, command, dump, printable
from indexer.cli.writes import album_doc, write
from indexer.config import Config


def _configure(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action")
    ls = sub.add_parser("list", help="list the albums with their number of photos")
    ls.add_argument("--json", action="store_true")
    c = sub.add_parser("create", help="save a search as an album")
    c.add_argument("name")
    c.add_argument("query", nargs="?", help="text query (the search syntax)")
    c.add_argument("--like", action="append", default=[], metavar="PHOTO")
    c.add_argument("--unlike", action="append", default=[], metavar="PHOTO")
    c.add_argument("--concept", action="append", default=[], metavar="NAME")
    c.add_argument("--tag", action="append", default=[], dest="tags", metavar="TAG")
    c.add_argument("--folder")
    c.add_argument("--since")
    c.add_argument("--until")
    c.add_argument("-k", "--top-k", type=int, dest="k", default=None)
    c.add_argument("--threshold", type=float)
    c.add_argument("--adaptive", action="store_true")
    c.add_argument("--json", action="store_true")
    s = sub.add_parser("show", help="the album's photos now")
    s.add_argument("name")
    s.add_argument("--json", action="store_true")
    e = sub.add_parser("export", help="a folder of links to the photos, or a list of paths")
    e.add_argument("name")
    how = e.add_mutually_exclusive_group(required=True)
    how.add_argument("--links", metavar="DIR", help="folder of symbolic links (kept current)")
    how.add_argument("--paths", metavar="FILE", help="file of paths, one a line (- : stdout)")
    d = sub.add_parser("delete", help="delete an album (not its photos)")
    d.add_argument("name")
    p.set_defaults(json=False)


@command("albums", "smart albums: saved searches that stay current (list, create, show, "
         "export, delete)", _configure)  # fmt: skip
def run_albums(args: argparse.Namespace, cfg: Config) -> int:
    from indexer.library import Library
    from indexer.search.albums import DEFAULT_K

    action = args.action or "list"
    if action == "create":
        doc = write(cfg, "album.save", name=args.name, query=args.query,
                    like=photo_args(args.like), unlike=photo_args(args.unlike), concepts=args.concept,
                    tags=args.tags, folder=args.folder, since=args.since, until=args.until,
                    k=args.k or DEFAULT_K, threshold=args.threshold, adaptive=args.adaptive)  # fmt: skip
        dump(doc) if args.json else print(f"{doc['name']}: {doc['count']} photos")
        return 0
    if action == "delete":
        write(cfg, "album.delete", name=args.name)
        print(f"deleted album {args.name!r}")
        return 0
    with Library.open(cfg) as lib:
        if action == "list":
            docs = [album_doc(lib, a) for a in lib.albums.list()]
            if args.json:
                dump({"albums": docs})
            for d in [] if args.json else docs:
                print(f"{d['name']}: {d['count']} photos")
            if not docs and not args.json:
                print("no albums yet: clipsearch albums create NAME QUERY")
        elif action == "show":
            album = lib.albums.get(args.name)
            hits = lib.albums.run(album).hits
            rows = [{"rank": n, "id": h.id, "path": h.path, "score": round(h.score, 6)}
                    for n, h in enumerate(hits, 1)]  # fmt: skip
            if args.json:
                dump({"name": album.name, "spec": album.spec, "created": album.created,
                      "updated": album.updated, "count": len(rows), "results": rows})  # fmt: skip
            for r in [] if args.json else rows:
                print(f"{r['score']:.4f}  {printable(r['path'])}")
        elif action == "export":
            if args.links:
                linked, removed = lib.albums.export_links(args.name, args.links)
                print(f"{linked} links in {args.links} ({removed} stale removed)", file=sys.stderr)
            else:
                text = "".join(p + "\n" for p in lib.albums.paths(args.name))
                if args.paths == "-":
                    sys.stdout.write(text)
                else:
                    with open(os.path.expanduser(args.paths), "w", encoding="utf-8",
                              errors="surrogateescape") as fh:  # fmt: skip
                        fh.write(text)
        else:  # pragma: no cover - argparse limits the choices
            raise UserError(f"unknown albums action {action!r}")
    return 0
