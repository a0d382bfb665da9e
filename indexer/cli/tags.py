"""CLI commands of tags: ``tag``, ``tags``, ``export``, ``duplicates``.

    clipsearch tag [--all] [--json] [--no-progress]
    clipsearch tags [--image PATH|ID] [--json]
    clipsearch export xmp|csv|json [--out FILE] [--naming append|replace]
    clipsearch duplicates [--threshold X] [--json]

Storage (:mod:`indexer.tags.sync`, through the store interface): tag rows hold every tag that
passes its threshold *uncapped* and ``top_n`` is applied when reading, so editing one tag never
changes other tags' rows; each tag's definition is recorded by fingerprint. ``clipsearch tag``
re-scores only the tags whose fingerprint changed (all with ``--all``) from the stored vectors
-- text encoding of the changed prompts only, no image decoding -- deletes the rows of removed
tags and tags images indexed while ``tags.auto`` was off. With ``tags.auto`` (default)
``clipsearch index`` tags each committed batch, and runs the full pass at the end of the run
when the vocabulary changed. Deleting an image (or its vector) deletes its rows in the same
transaction. ``search --tag`` filters by tags; ``duplicates`` groups near-duplicate vectors
(``indexer.tags.duplicates.find_duplicate_groups``).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import sys
from collections.abc import Iterable
from typing import IO, Any

from indexer.cli.registry import UserError, add_commands, command, dump, printable
from indexer.config import Config

# --------------------------------------------------------------------------- tag
TAG_HELP = "apply the tag vocabulary to the indexed photos (re-scores changed tags only)"
TAGS_HELP = "list tags with their number of photos, or one photo's tags"
EXPORT_HELP = "export tags: XMP sidecars beside the photos, or a CSV/JSON file"
DUPLICATES_HELP = "find groups of near-duplicate photos, with a suggested keeper"


def configure_tag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--all", action="store_true", help="re-score every tag, changed or not")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


@command("tag", TAG_HELP, configure_tag)
def run_tag(args: argparse.Namespace, cfg: Config) -> int:
    from indexer.library import Library

    with Library.open(cfg, writer=True) as lib:
        lib.vocabulary()  # a bad vocabulary fails before anything else
        rep = lib.tag(progress=not args.no_progress and sys.stderr.isatty(), rescore_all=args.all)
    if args.json:
        dump(rep.to_dict())
        return 0
    print(
        f"{len(rep.changed)} tags (re-)scored over {rep.rescored} photos, {len(rep.removed)} "
        f"removed, {rep.pending} new photos tagged; {rep.rows} tag rows written, "
        f"{rep.texts_encoded} prompts encoded in {rep.seconds:.1f}s"
    )
    return 0


# --------------------------------------------------------------------------- tags
def configure_tags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--image", metavar="PATH|ID", help="the tags of one photo (a path or its id)")
    p.add_argument("--json", action="store_true", help="print JSON")


def _find_image(lib: Any, ref: str) -> Any:
    ref = ref.strip()
    key = ref[3:] if ref.startswith("id:") else ref
    rec = lib.get_image(int(key)) if key.isdigit() else None
    if rec is None:
        rec = lib.store.record_by_path(ref)
    if rec is None:
        raise UserError(f"--image {ref}: not in the index")
    return rec


@command("tags", TAGS_HELP, configure_tags)
def run_tags(args: argparse.Namespace, cfg: Config) -> int:
    from indexer.library import Library

    with Library.open(cfg) as lib:
        if args.image:
            rec = _find_image(lib, args.image)
            tags = lib.image_tags(rec.id)
            if args.json:
                dump({"id": rec.id, "path": rec.path,
                       "tags": [{"tag": t, "score": round(s, 6)} for t, s in tags]})  # fmt: skip
            else:
                print(printable(rec.path))
                for t, sc in tags:
                    print(f"  {sc:.4f}  {t}")
                if not tags:
                    print("  (no tags)")
            return 0
        counts = lib.tag_counts()
        tagged = len(lib.all_image_tags()) if counts else 0
    if args.json:
        dump({"images": tagged,
               "tags": [{"tag": t, "count": n} for t, n in counts.items()]})  # fmt: skip
        return 0
    if not counts:
        print("no tags yet: run `clipsearch tag` (or `clipsearch index` with tags.auto on)",
              file=sys.stderr)  # fmt: skip
        return 0
    width = max(len(t) for t in counts)
    for t, n in counts.items():
        print(f"{t.ljust(width)}  {n}")
    return 0


# --------------------------------------------------------------------------- export
def configure_export(p: argparse.ArgumentParser) -> None:
    p.add_argument("format", choices=("xmp", "csv", "json"), help="what to write")
    p.add_argument("--out", metavar="FILE", help="csv/json: output file (default: stdout)")
    p.add_argument("--naming", choices=("append", "replace"), default=None,
                   help="xmp: photo.jpg.xmp (append) or photo.xmp (replace); "
                        "default: tags.xmp_naming")  # fmt: skip


def _tag_rows(lib: Any) -> list[tuple[Any, list[tuple[str, float]]]]:
    """(record, tags) of every indexed photo with tags, by path."""
    by_id = lib.all_image_tags()
    records = lib.store.records(sorted(by_id))
    return sorted(((records[i], t) for i, t in by_id.items() if i in records),
                  key=lambda rt: os.fsencode(rt[0].path))  # fmt: skip


def _has_own_keywords(sidecar: Any) -> bool:
    """Whether a sidecar exists and lists keywords clipsearch wrote (its own namespace)."""
    from indexer.tags.xmp import NS

    try:
        return NS["clipsearch"].encode() in sidecar.read_bytes()
    except OSError:
        return False


def _export_xmp(lib: Any, naming: str) -> int:
    from indexer.tags import xmp

    rows = _tag_rows(lib)
    tagged = {rec.id for rec, _ in rows}
    written = failed = cleared = 0
    for rec, tags in rows:
        try:
            xmp.write_sidecar(rec.path, [t for t, _ in tags], naming=naming)
            written += 1
        except (OSError, xmp.XmpError) as exc:
            print(f"warning: {printable(rec.path)}: {exc}", file=sys.stderr)
            failed += 1
    # Photos that lost all their tags: drop our keywords from sidecars that already exist.
    for row_id, raw_path, *_ in lib.store.rows_for_scan():
        path = os.fsdecode(raw_path)
        if row_id not in tagged and _has_own_keywords(xmp.sidecar_path(path, naming)):
            try:
                xmp.write_sidecar(path, [], naming=naming)
                cleared += 1
            except (OSError, xmp.XmpError) as exc:
                print(f"warning: {printable(path)}: {exc}", file=sys.stderr)
                failed += 1
    print(f"{written} sidecars written, {cleared} cleared, {failed} failed", file=sys.stderr)
    return 1 if failed else 0


@command("export", EXPORT_HELP, configure_export)
def run_export(args: argparse.Namespace, cfg: Config) -> int:
    from indexer.library import Library

    if args.format == "xmp" and args.out:
        raise UserError("export xmp: sidecars are written beside the photos; --out is for csv/json")
    with Library.open(cfg) as lib:
        if args.format == "xmp":
            return _export_xmp(lib, args.naming or cfg.tags.xmp_naming)
        rows = [(rec.path, tags) for rec, tags in _tag_rows(lib)]
    writer = write_tags_csv if args.format == "csv" else write_tags_json
    if not args.out:
        writer(rows, sys.stdout)
        return 0
    tmp = f"{args.out}.{os.getpid()}.tmp"
    try:
        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            n = writer(rows, fh)
        os.replace(tmp, args.out)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise UserError(f"--out {args.out}: {exc.strerror or exc}") from None
    print(f"{len(rows)} photos ({n} {'lines' if args.format == 'csv' else 'entries'}) "
          f"written to {args.out}", file=sys.stderr)  # fmt: skip
    return 0


# --------------------------------------------------------------------------- duplicates
def configure_duplicates(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threshold", type=float, metavar="X",
                   help="cosine similarity from which photos are duplicates "
                        "(default: tags.duplicate_threshold)")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print JSON")


@command("duplicates", DUPLICATES_HELP, configure_duplicates)
def run_duplicates(args: argparse.Namespace, cfg: Config) -> int:
    from indexer.library import Library

    thr = cfg.tags.duplicate_threshold if args.threshold is None else args.threshold
    if not -1.0 <= thr <= 1.0:
        raise UserError(f"--threshold: expected a cosine in [-1, 1], got {thr}")
    with Library.open(cfg) as lib:
        groups = lib.duplicates(thr)
    if args.json:
        dump({"threshold": thr, "count": len(groups), "groups": [g.to_dict() for g in groups]})
        return 0
    if not groups:
        print(f"no near-duplicates at threshold {thr}", file=sys.stderr)
        return 0
    for n, g in enumerate(groups, 1):
        print(f"group {n} ({len(g.members)} photos):")
        for j, m in enumerate(g.members):
            dims = f"{m.width}x{m.height}" if m.width and m.height else "?x?"
            size = f"{m.size:,} bytes" if m.size is not None else "? bytes"
            mark = "keep" if j == 0 else "    "
            print(f"  {mark}  {dims:>11}  {size:>15}  {printable(m.path or '?')}")
    return 0


def register(subparsers: Any) -> None:
    """Add this module's commands to an argparse subparsers object (``handler`` default)."""
    add_commands(subparsers, ("tag", "tags", "export", "duplicates"))


# --------------------------------------------------------------------------- exports
TagRows = Iterable[tuple[str, list[tuple[str, float]]]]


def write_tags_csv(rows: TagRows, fh: IO[str]) -> int:
    """CSV ``path,tag,score`` (one line per image and tag); returns the number of lines."""
    writer = csv.writer(fh)
    writer.writerow(["path", "tag", "score"])
    n = 0
    for path, tags in rows:
        for tag, score in tags:
            writer.writerow([path, tag, f"{score:.6f}"])
            n += 1
    return n


def write_tags_json(rows: TagRows, fh: IO[str]) -> int:
    """JSON ``[{"path": str, "tags": [{"tag": str, "score": float}]}]``; returns images."""
    doc = [
        {"path": path, "tags": [{"tag": t, "score": round(float(s), 6)} for t, s in tags]}
        for path, tags in rows
    ]
    fh.write(json.dumps(doc, indent=2) + "\n")
    return len(doc)
