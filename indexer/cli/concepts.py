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
the new model's vectors. Teaching needs the writer lock (stop ``watch`` first).

JSON (``--json``; fields only ever added): a concept is ``{"name": str, "examples": [int],
"negatives": [int], "hint": str|null, "threshold": float (logit), "photos": int (tagged),
"model": str (checkpoint sha256), "created": float, "updated": float, "stats": {...}}``;
``concepts --json`` is ``{"concepts": [concept]}``.
"""

from __future__ import annotations

import argparse

from indexer.cli.registry import UserError, command, dump
from indexer.config import Config

ACTIONS = ("teach", "add", "remove", "show", "delete")


def concept_doc(c, photos: int) -> dict:  # noqa: ANN001 - an indexer.store.Concept
    """The JSON document of one concept."""
    return {"name": c.name, "examples": list(c.positives), "negatives": list(c.negatives),
            "hint": c.hint, "threshold": round(float(c.threshold), 6), "photos": photos,
            "model": c.model, "created": c.created, "updated": c.updated, "stats": c.stats}  # fmt: skip


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

    writer = args.action in ("teach", "add", "remove", "delete")
    if args.action in ("show", "delete") and (args.photos or args.negative):
        raise UserError(f"concept {args.action} takes a NAME only")
    if args.action in ("add", "remove") and not (args.photos or args.negative):
        raise UserError(f"concept {args.action}: give photos (or --negative photos)")
    with Library.open(cfg, writer=writer) as lib:
        svc = lib.concepts
        if args.action == "teach":
            c = svc.teach(args.name, args.photos, args.negative, args.hint)
        elif args.action == "add":
            c = svc.edit(args.name, add=args.photos, add_negatives=args.negative)
        elif args.action == "remove":
            c = svc.edit(args.name, remove=args.photos, remove_negatives=args.negative)
        elif args.action == "delete":
            c = svc.get(args.name)
            svc.delete(c.name)
            print(f"deleted concept {c.name!r}") if not args.json else dump({"deleted": c.name})
            return 0
        else:
            c = svc.get(args.name)
        doc = concept_doc(c, lib.tag_counts().get(c.name, 0))
    dump(doc) if args.json else print(_line(doc))
    return 0


def configure_concepts(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print JSON")


@command("concepts", "list the personal concepts with their number of photos", configure_concepts)
def run_concepts(args: argparse.Namespace, cfg: Config) -> int:
    from indexer.library import Library

    with Library.open(cfg) as lib:
        counts = lib.tag_counts()
        docs = [concept_doc(c, counts.get(c.name, 0)) for c in lib.concepts.list()]
    if args.json:
        dump({"concepts": docs})
    else:
        for d in docs:
            print(_line(d))
        if not docs:
            print("no concepts yet: clipsearch concept teach NAME PHOTO PHOTO PHOTO")
    return 0
