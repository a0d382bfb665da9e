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


def _report(rep, as_json: bool, ocr=None) -> None:  # noqa: ANN001 - IndexReport, OcrReport
    if as_json:
        dump(rep.to_dict() | ({"ocr": ocr.to_dict()} if ocr is not None else {}))
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
    if ocr is not None:
        print(ocr_line(ocr))


def ocr_line(rep) -> str:  # noqa: ANN001 - an OcrReport
    """One line about an OCR pass."""
    engines = ", ".join(f"{n} {name}" for name, n in sorted(rep.engines.items()))
    return (f"text: {rep.read} photos read ({rep.with_text} with text, {rep.errors} errors"
            f"{'; ' + engines if engines else ''}) in {rep.seconds:.1f}s, {rep.pending} pending")  # fmt: skip


def _then_ocr(lib, stop=None):  # noqa: ANN001, ANN202 - Library; OcrReport | None
    """With ``ocr.enabled``: read the text of what the run indexed, its vectors committed (a
    missing engine is a warning here: the index is up to date; `clipsearch ocr` fails on it)."""
    from indexer.ocr.engines import OcrUnavailableError

    try:
        return lib.ocr.run(stop=stop) if lib.ocr.enabled else None
    except OcrUnavailableError as exc:
        print(f"warning: ocr.enabled, but {exc}; the text stays pending", file=sys.stderr)
        return None


@command("index", "bring the index up to date with the library roots", _index_args)
def _cmd_index(args: argparse.Namespace, cfg: Config) -> int:
    from indexer.library import Library

    for path in args.paths:
        if not os.path.lexists(path):
            raise UserError(f"path not found: {path}")
    _use_ray(args, cfg)
    with Library.open(cfg, writer=True) as lib:
        rep = lib.index(args.paths or None, progress=not args.no_progress and sys.stderr.isatty())
        ocr = _then_ocr(lib)
    _report(rep, args.json, ocr)
    return 0


def _ocr_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    p.add_argument("--limit", type=int, default=None, metavar="N",
                   help="read at most N photos (the rest stays pending)")  # fmt: skip
    p.add_argument("--errors", action="store_true",
                   help="list the photos OCR could not read, with the reason")  # fmt: skip


@command("ocr", "read the text in the photos indexed since the last pass (text: queries)", _ocr_args)
def _cmd_ocr(args: argparse.Namespace, cfg: Config) -> int:
    from indexer.library import Library

    with Library.open(cfg, writer=True) as lib:
        rep = lib.ocr.run(limit=args.limit)
        bad = [(e, lib.get_image(e.image_id)) for e in lib.store.ocr_errors()] if args.errors else []
    if args.json:
        dump(rep.to_dict() | ({"error_files": [{"id": e.image_id, "path": r.path if r else None,
                                                "error": e.error} for e, r in bad]} if args.errors else {}))  # fmt: skip
        return 0
    print(ocr_line(rep))
    for e, r in bad:
        print(f"error:    {printable(r.path) if r else e.image_id}: {e.error}")
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
        ocr = _then_ocr(lib)
    _report(rep, args.json, ocr)
    return 0
