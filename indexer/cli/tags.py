"""CLI commands of tagging: ``classify``, ``eval``, ``tag``, ``tags``, ``export``, ``duplicates``.

    clipsearch classify IMAGE... --labels "a dog,a cat,a bird" [--templates none] [--json]
    clipsearch eval [--imagefolder DIR] [--coco JSON --images DIR] [--templates imagenet]
                    [--batch-size N] [--limit N] [--json-out FILE]
    clipsearch tag [--all] [--json] [--no-progress]
    clipsearch tags [--image PATH|ID] [--json]
    clipsearch export xmp|csv|json [--out FILE] [--naming append|replace]
    clipsearch duplicates [--threshold X] [--json]

Wiring: ``"indexer.tag_commands"`` is in ``indexer.cli.COMMAND_MODULES`` (the commands register
themselves through ``indexer.cli.command`` on import), or call :func:`register` on a
subparsers object of your own (it sets ``handler`` to ``fn(args, cfg) -> exit code``).

Storage (:mod:`indexer.tag_store`, schema 2 of :mod:`indexer.db`): ``tags(image_id, tag,
score)`` holds every tag that passes its threshold *uncapped* and ``top_n`` is applied when
reading, so editing one tag never changes other tags' rows; ``tag_defs(tag, fingerprint)``
records each tag's definition. ``clipsearch tag`` re-scores only the tags whose fingerprint
changed (all with ``--all``) from the stored vectors -- text encoding of the changed prompts
only, no image decoding -- deletes the rows of removed tags and tags images indexed while
``tags.auto`` was off. With ``tags.auto`` (default) ``clipsearch index`` tags each committed
batch, and runs the full pass at the end of the run when the vocabulary changed. Deleting an
image (or its vector) deletes its rows in the same transaction. ``search --tag`` filters by
tags; ``duplicates`` groups near-duplicate vectors (``duplicates.find_duplicate_groups``).
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

from indexer.cli import UserError, command
from indexer.config import Config

TEMPLATE_CHOICES = ("imagenet", "default", "none")
CLASSIFY_HELP = "zero-shot probabilities of labels for image files"
EVAL_HELP = "zero-shot accuracy and retrieval recall of the configured model"


def templates_for(choice: str) -> tuple[str, ...]:
    """The prompt templates named on the command line."""
    import clipmodel as clip

    if choice == "imagenet":
        return tuple(clip.IMAGENET_TEMPLATES)
    if choice == "default":
        return tuple(clip.DEFAULT_TEMPLATES)
    if choice == "none":
        return ("{}",)
    raise UserError(f"--templates: expected one of {', '.join(TEMPLATE_CHOICES)}, got {choice!r}")


def _load_model(cfg: Config) -> tuple[Any, Any]:
    """(model, preprocess) of the configured model, loaded as the indexer loads it."""
    from indexer.embed.encoder import ClipEncoder

    encoder = ClipEncoder.from_config(cfg)
    return encoder.model, encoder.tensor_preprocess


# --------------------------------------------------------------------------- classify
def configure_classify(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    p.add_argument("--labels", required=True, help='comma-separated labels, e.g. "a dog,a cat"')
    p.add_argument("--templates", choices=TEMPLATE_CHOICES, default="none",
                   help="prompt templates around each label (default: the label verbatim)")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print JSON")


def parse_labels(text: str) -> list[str]:
    """Comma-separated labels, stripped, empty ones dropped, order and duplicates checked."""
    labels = [x.strip() for x in text.split(",") if x.strip()]
    if len(labels) < 2:
        raise UserError("--labels: give at least two comma-separated labels")
    if len(set(labels)) != len(labels):
        raise UserError("--labels: a label is listed twice")
    return labels


@command("classify", CLASSIFY_HELP, configure_classify)
def run_classify(args: argparse.Namespace, cfg: Config) -> int:
    import clipmodel as clip

    from indexer.embed.images import BadImage, decode, read_file, setup_codecs

    labels = parse_labels(args.labels)
    setup_codecs()
    images = []
    for path in args.images:
        try:
            images.append(decode(read_file(path), cfg.library.max_pixels).image)
        except BadImage as exc:
            raise UserError(f"{path}: {exc}") from None
    model, preprocess = _load_model(cfg)
    templates = None if args.templates == "none" else templates_for(args.templates)
    probs = clip.classify(model, images, labels, templates=templates, preprocess=preprocess)
    if args.json:
        doc = [
            {
                "path": path,
                "probabilities": {lab: round(float(p), 6) for lab, p in zip(labels, row)},
            }
            for path, row in zip(args.images, probs)
        ]
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
        return 0
    width = max(len(lab) for lab in labels)
    for path, row in zip(args.images, probs):
        print(path)
        for j in row.argsort()[::-1]:
            print(f"  {labels[j].ljust(width)}  {100 * float(row[j]):6.2f}%")
    return 0


# --------------------------------------------------------------------------- eval
def configure_eval(p: argparse.ArgumentParser) -> None:
    p.add_argument("--imagefolder", metavar="DIR", help="zero-shot: class = sub-folder name")
    p.add_argument("--coco", metavar="JSON", help="retrieval: COCO captions JSON file")
    p.add_argument("--images", metavar="DIR", help="retrieval: folder of the captioned images")
    p.add_argument("--templates", choices=TEMPLATE_CHOICES, default="imagenet",
                   help="zero-shot prompt templates (default: imagenet, 80 templates)")  # fmt: skip
    p.add_argument("--batch-size", type=int, default=None, metavar="N",
                   help="images per batch (default: index.batch_size)")  # fmt: skip
    p.add_argument("--limit", type=int, default=None, metavar="N",
                   help="evaluate at most N images per dataset")  # fmt: skip
    p.add_argument("--json-out", metavar="FILE", help="also write the results as JSON")


@command("eval", EVAL_HELP, configure_eval)
def run_eval(args: argparse.Namespace, cfg: Config) -> int:
    from indexer.tags import evaluate as ev

    if not args.imagefolder and not args.coco:
        raise UserError("eval: give --imagefolder DIR and/or --coco JSON --images DIR")
    if args.coco and not args.images:
        raise UserError("eval: --coco needs --images DIR")
    for name in ("batch_size", "limit"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UserError(f"--{name.replace('_', '-')}: must be at least 1")
    try:
        folder = ev.read_imagefolder(args.imagefolder) if args.imagefolder else None
        captions = ev.read_coco_captions(args.coco, args.images) if args.coco else None
    except ev.DatasetError as exc:
        raise UserError(str(exc)) from None
    model, preprocess = _load_model(cfg)
    from indexer.embed.encoder import thread_plan

    batch = args.batch_size or thread_plan(cfg).batch_size
    results = []
    try:
        if folder is not None:
            results.append(
                ev.run_zeroshot(
                    model,
                    preprocess,
                    folder.subset(args.limit),
                    templates_for(args.templates),
                    batch,
                )  # fmt: skip
            )
        if captions is not None:
            results.append(ev.run_retrieval(model, preprocess, captions.subset(args.limit), batch))
    except (OSError, ValueError) as exc:
        raise UserError(f"eval: cannot read an image: {exc}") from None
    print(ev.format_table(results))
    if args.json_out:
        ev.write_json(results, args.json_out, model=str(getattr(model, "model_name", "")))
    return 0


# --------------------------------------------------------------------------- tag
TAG_HELP = "apply the tag vocabulary to the indexed photos (re-scores changed tags only)"
TAGS_HELP = "list tags with their number of photos, or one photo's tags"
EXPORT_HELP = "export tags: XMP sidecars beside the photos, or a CSV/JSON file"
DUPLICATES_HELP = "find groups of near-duplicate photos, with a suggested keeper"


def _printable(path: str) -> str:
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _dump(doc: object, fh: IO[str] | None = None) -> None:
    (fh or sys.stdout).write(json.dumps(doc, indent=2) + "\n")


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
        _dump(rep.to_dict())
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
                _dump({"id": rec.id, "path": rec.path,
                       "tags": [{"tag": t, "score": round(s, 6)} for t, s in tags]})  # fmt: skip
            else:
                print(_printable(rec.path))
                for t, sc in tags:
                    print(f"  {sc:.4f}  {t}")
                if not tags:
                    print("  (no tags)")
            return 0
        counts = lib.tag_counts()
        tagged = len(lib.all_image_tags()) if counts else 0
    if args.json:
        _dump({"images": tagged,
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
            print(f"warning: {_printable(rec.path)}: {exc}", file=sys.stderr)
            failed += 1
    # Photos that lost all their tags: drop our keywords from sidecars that already exist.
    for row_id, raw_path, *_ in lib.store.rows_for_scan():
        path = os.fsdecode(raw_path)
        if row_id not in tagged and _has_own_keywords(xmp.sidecar_path(path, naming)):
            try:
                xmp.write_sidecar(path, [], naming=naming)
                cleared += 1
            except (OSError, xmp.XmpError) as exc:
                print(f"warning: {_printable(path)}: {exc}", file=sys.stderr)
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
        _dump({"threshold": thr, "count": len(groups), "groups": [g.to_dict() for g in groups]})
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
            print(f"  {mark}  {dims:>11}  {size:>15}  {_printable(m.path or '?')}")
    return 0


# --------------------------------------------------------------------------- registration
_HANDLERS = {
    "classify": (CLASSIFY_HELP, configure_classify, run_classify),
    "eval": (EVAL_HELP, configure_eval, run_eval),
    "tag": (TAG_HELP, configure_tag, run_tag),
    "tags": (TAGS_HELP, configure_tags, run_tags),
    "export": (EXPORT_HELP, configure_export, run_export),
    "duplicates": (DUPLICATES_HELP, configure_duplicates, run_duplicates),
}


def register(subparsers: Any) -> None:
    """Add the commands of this module to an argparse subparsers object (``handler`` default)."""
    for name, (help_text, configure, handler) in _HANDLERS.items():
        p = subparsers.add_parser(name, help=help_text, description=help_text)
        configure(p)
        p.set_defaults(handler=handler)


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
