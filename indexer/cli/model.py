"""``clipsearch classify`` and ``clipsearch eval``: the model itself, without an index.

    clipsearch classify IMAGE... --labels "a dog,a cat,a bird" [--templates none] [--json]
    clipsearch eval [--imagefolder DIR] [--coco JSON --images DIR] [--templates imagenet]
                    [--batch-size N] [--limit N] [--json-out FILE]
"""

from __future__ import annotations

import argparse
from typing import Any

from indexer.cli.registry import UserError, add_commands, command, dump
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
            images.append(decode(read_file(path), cfg.library.max_pixels, name=path).image)
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
        dump(doc)
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


def register(subparsers: Any) -> None:
    """Add ``classify`` and ``eval`` to an argparse subparsers object (``handler`` default)."""
    add_commands(subparsers, ("classify", "eval"))
