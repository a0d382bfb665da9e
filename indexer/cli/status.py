"""``clipsearch status``: what is in the index, and the watch service."""

from __future__ import annotations

import argparse

from indexer.cli.registry import command, dump, printable
from indexer.config import Config
from indexer.ingest.fastpaths import fast_path_lines


def _status_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print JSON (schema above)")
    p.add_argument("--errors", type=int, default=20, metavar="N", help="list up to N bad files")


@command("status", "show what is in the index", _status_args)
def _cmd_status(args: argparse.Namespace, cfg: Config) -> int:
    from indexer.library import Library

    with Library.open(cfg) as lib:
        doc = lib.status(max_errors=max(args.errors, 0))
    if args.json:
        dump(doc)
        return 0
    m = doc["model"]
    print(f"index:    {doc.get('database') or doc['index_dir']} ({doc['version']})")
    print(
        f"model:    {m['name']} (sha256 {str(m['checkpoint_sha256'])[:12]}, dim {m['embed_dim']})"
    )
    for line in fast_path_lines(doc.get("fast_paths")):
        print(f"{line[0] + ':':<9} {line[1]}")
    print(f"images:   {doc['indexed']} indexed, {doc['errors']} errors, {doc['images']} files")
    if (v := doc.get("videos") or {}).get("videos"):
        print(f"videos:   {v['videos']} with {v['frames']} frames searched")
    if doc.get("database"):  # PostgreSQL: the vectors table is the index
        print(f"vectors:  {doc['vectors']} in PostgreSQL ({doc['faiss']['kind']} search), "
              f"generation {doc['generation']}")  # fmt: skip
    else:
        print(f"vectors:  {doc['vectors']} in SQLite, {doc['faiss']['count']} in FAISS "
              f"({doc['faiss']['kind']}), generation {doc['generation']}")  # fmt: skip
    if (o := doc.get("ocr")) and (o["enabled"] or o["read"]):
        print(f"text:     {o['read']} photos read ({o['with_text']} with text, {o['errors']} "
              f"errors), {o['pending']} pending{'' if o['enabled'] else ' (ocr.enabled: false)'}")  # fmt: skip
    for r in doc["roots"]:
        print(f"root:     {printable(r['path'])} ({r['indexed']} indexed)")
    offline = [r["path"] for r in doc["roots"] if not r.get("online", True)]
    _print_watch(doc.get("watch") or {}, offline)
    for e in doc["error_files"]:
        print(f"error:    {printable(e['path'])}: {e['error']}")
    if doc["errors"] > len(doc["error_files"]):
        print(f"          ... and {doc['errors'] - len(doc['error_files'])} more (--errors N)")
    return 0


def _print_watch(w: dict, offline: list[str]) -> None:
    """The ``watch:`` lines of ``status``: service state, queue, last update, recent errors."""
    import time

    def when(ts: object) -> str:
        if not isinstance(ts, (int, float)):
            return str(ts)
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))

    line = w.get("detail") or ("running" if w.get("running") else "not running")
    if w.get("running"):
        line += f", queue {w.get('queue', 0)}"
    if w.get("last_update"):
        line += f", last update {when(w['last_update'])}"
    print(f"watch:    {line}")
    for path in sorted(set(offline) | set(w.get("offline_roots") or [])):
        print(f"offline:  {printable(path)} (images kept; searched again when it returns)")
    for e in (w.get("errors") or [])[-5:]:
        print(f"watch {e.get('level', 'error')}: {when(e.get('time'))} {e.get('message')}")

