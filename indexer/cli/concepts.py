"""CLI commands of personal concepts: ``concept`` (teach, add, remove, show, delete), ``concepts``.

    clipsearch concept teach NAME PHOTO PHOTO PHOTO... [--negative PHOTO]... [--hint TEXT]
    clipsearch concept add NAME [PHOTO...] [--negative PHOTO]...     # refits in place
    clipsearch concept remove NAME [PHOTO...] [--negative PHOTO]...  # refits in place
    clipsearch concept show|delete NAME
    clipsearch concepts [--json]

PHOTO is an image id or an indexed path. A concept is fitted on the stored vectors
(:mod:`indexer.learn`), stored in the index and applied as a tag named NAME to every photo it
matches, now and as photos are indexed (``watch`` too): ``search --tag NAME``,
``concept:NAME`` in a query, ``tags`` and ``export`` show it. ``reindex`` refits concepts on
the new model's vectors. While ``watch`` runs (it holds the writer lock), the daemon runs the
change for the command (:mod:`indexer.cli.writes`).

JSON (``--json``; fields only ever added): a concept is ``{"name": str, "examples": [int],
"negatives": [int], "hint": str|null, "threshold": float (logit), "photos": int (tagged),
"model": str (checkpoint sha256), "created": float, "updated": float, "stats": {...}}``;
``concepts --json`` is ``{"concepts": [concept]}``.
"""

from __future__ import annotations

import argparse
import os

from indexer.cli.registry import UserError, command, dump
from indexer.cli.writes import concept_doc, write
from indexer.config import Config

ACTIONS = ("teach", "add", "remove", "show", "delete")


def _line(doc: dict) -> str:
    hint = f", hint {doc['hint']!r}" if doc["hint"] else ""
    return (f"{doc['name']}: {doc['photos']} photos ({len(doc['examples'])} examples, "
            f"{len(doc['negatives'])} negatives{hint})")  # fmt: skip


def configure_concept(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=ACTIONS, help="what to do")
    p.add_argument("name", help="the concept's name (also its tag)")
    p.add_argument("photos", nargs="*", metavar="PHOTO", help="example photos (ids or paths)")
    p.add_argument("--negative", action="append", default=[], metavar="PHOTO",
                   help="a counter-example (repeat)")  # fmt: skip
    p.add_argument("--hint", help="teach: a text describing the concept")
    p.add_argument("--json", action="store_true", help="print the concept as JSON")


@command("concept", "teach a personal concept by example photos, refit, show or delete it",
         configure_concept)  # fmt: skip
def run_concept(args: argparse.Namespace, cfg: Config) -> int:
    from indexer.library import Library

    if args.action in ("show", "delete") and (args.photos or args.negative):
        raise UserError(f"concept {args.action} takes a NAME only")
    if args.action in ("add", "remove") and not (args.photos or args.negative):
        raise UserError(f"concept {args.action}: give photos (or --negative photos)")
    photos, negatives = photo_args(args.photos), photo_args(args.negative)
    if args.action == "show":
        with Library.open(cfg) as lib:
            doc = concept_doc(lib, lib.concepts.get(args.name))
    elif args.action == "teach":
        doc = write(cfg, "concept.teach", name=args.name, photos=photos, negatives=negatives,
                    hint=args.hint)  # fmt: skip
    elif args.action == "add":
        doc = write(cfg, "concept.edit", name=args.name, add=photos, add_negatives=negatives)
    elif args.action == "remove":
        doc = write(cfg, "concept.edit", name=args.name, remove=photos,
                    remove_negatives=negatives)  # fmt: skip
    else:
        doc = write(cfg, "concept.delete", name=args.name)
        print(f"deleted concept {doc['deleted']!r}") if not args.json else dump(doc)
        return 0
    dump(doc) if args.json else print(_line(doc))
    return 0


def photo_args(values: list[str]) -> list[int | str]:
    """Ids as ints, paths made absolute (the watch daemon may run them from another folder)."""
    return [int(v) if v.isdigit() else v if v.lower().startswith("id:")
            else os.path.abspath(os.path.expanduser(v)) for v in values]  # fmt: skip


def configure_concepts(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print JSON")


@command("concepts", "list the personal concepts with their number of photos", configure_concepts)
def run_concepts(args: argparse.Namespace, cfg: Config) -> int:
    from indexer.library import Library

    with Library.open(cfg) as lib:
        counts = lib.tag_counts()
        docs = [concept_doc(lib, c, counts) for c in lib.concepts.list()]
    if args.json:
        dump({"concepts": docs})
    else:
        for d in docs:
            print(_line(d))
        if not docs:
            print("no concepts yet: clipsearch concept teach NAME PHOTO PHOTO PHOTO")
    return 0
