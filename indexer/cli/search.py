"""``clipsearch search``: text, example images, filters (see the schema in :mod:`indexer.cli`)."""

from __future__ import annotations

import argparse
import os
import sys

from indexer.cli.registry import UserError, command, dump, printable
from indexer.config import Config


def _search_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("query", nargs="?", help="text query (see syntax above)")
    p.add_argument("--image", help="example image: a file path, or id:N for an indexed image")
    p.add_argument("-k", "--top-k", type=int, dest="k", help="number of results")
    p.add_argument("--threshold", type=float, help="drop results scoring below this cosine")
    p.add_argument("--adaptive", action="store_true", default=None,
                   help="cut where scores stop standing out from the library's")  # fmt: skip
    p.add_argument("--folder", help="only images under this folder")
    p.add_argument("--since", help="only images captured on/after DATE")
    p.add_argument("--until", help="only images captured on/before DATE")
    p.add_argument("--tag", action="append", dest="tags", metavar="TAG",
                   help="only images with this tag (repeat: all of them)")  # fmt: skip
    p.add_argument("--like", action="append", default=[], metavar="PHOTO",
                   help="relevance feedback: a good result (id or indexed path; repeat)")
    p.add_argument("--unlike", action="append", default=[], metavar="PHOTO",
                   help="relevance feedback: a bad result (id or indexed path; repeat)")
    p.add_argument("--json", action="store_true", help="print JSON (schema above)")


@command("search", "search the index by text and/or an example image", _search_args)
def _cmd_search(args: argparse.Namespace, cfg: Config) -> int:
    from indexer.library import Library

    if not args.query and not args.image and not args.like:
        raise UserError("give a QUERY, --image or --like")
    image: str | int | None = args.image
    if isinstance(image, str) and image.startswith("id:"):
        if not image[3:].isdigit():
            raise UserError(f"--image {image}: expected id:NUMBER")
        image = int(image[3:])
    kwargs = {"image": image, "folder": args.folder, "since": args.since, "until": args.until,
              "like": args.like, "unlike": args.unlike}  # fmt: skip
    if args.tags:
        kwargs["tags"] = [t.strip() for t in args.tags if t.strip()]
    for name in ("k", "threshold", "adaptive"):
        if getattr(args, name) is not None:
            kwargs[name] = getattr(args, name)
    with Library.open(cfg) as lib:
        res = lib.search(args.query, **kwargs)
        rows = []
        for rank, hit in enumerate(res.hits, 1):
            thumb = lib.thumbnail_path(hit.record, hit.moments[0][0] if hit.moments else None)
            rows.append({"rank": rank, **hit.to_dict(),
                         "thumbnail": os.fspath(thumb) if thumb else None})  # fmt: skip
    if args.json:
        dump({"query": args.query, "image": args.image, "k": kwargs.get("k", cfg.search.top_k),
               "cutoff": res.cutoff, "terms": res.terms, "candidates": res.candidates, "count": len(rows),
               "results": rows})  # fmt: skip
    else:
        for r in rows:
            text = f"  [text: {' '.join(r['text'].split())}]" if r.get("text") else ""
            if r.get("moments"):  # a video: where in it
                text += "  [at " + ", ".join(f"{m['t']:.1f} s" for m in r["moments"]) + "]"
            print(f"{r['score']:.4f}  {printable(r['path'])}{text}")
        if not rows:
            hint = " (date filters match only photos with an EXIF capture time)"
            print("no results" + (hint if args.since or args.until else ""), file=sys.stderr)
    return 0
