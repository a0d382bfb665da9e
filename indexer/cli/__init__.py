"""The ``clipsearch`` command line.

Usage::

    clipsearch [--config FILE] index [PATHS...] [--json] [--no-progress]
    clipsearch [--config FILE] search [QUERY] [--image PATH] [-k N] [--threshold X] [--adaptive]
                                      [--folder F] [--since DATE] [--until DATE] [--tag TAG]...
                                      [--json]
    clipsearch [--config FILE] status [--json] [--errors N]
    clipsearch [--config FILE] reindex [--json] [--no-progress]

QUERY syntax: ``beach + sunset - people``, ``2:dog``, ``img:/path.jpg``, ``id:123`` (see
``indexer.query``). DATE: ``YYYY``, ``YYYY-MM``, ``YYYY-MM-DD`` or ``YYYY-MM-DDTHH:MM:SS``
(compared with the EXIF capture time; images without one are left out by date filters).
``--tag TAG`` (repeatable) keeps images carrying every given tag (see ``clipsearch tags``).

Exit codes: 0 success; 1 an error with a one-line reason on stderr (``clipsearch: error: ...``:
missing or invalid config, missing library root, index built with another model, model
unavailable offline, another writer running, no index yet, bad query); 2 invalid command line;
130 interrupted.

JSON output (``--json``; stable: fields are only ever added; paths are strings, undecodable
bytes in file names appear as ``\\udcXX`` escapes, i.e. Python's ``os.fsdecode`` form):

``search``::

    {"query": str|null, "image": str|null, "k": int,
     "cutoff": "top_k"|"threshold"|"adaptive",   # what limited the number of results
     "candidates": int,                           # indexed images the filters allowed
     "count": int,
     "results": [{"rank": int (1 = best), "id": int, "path": str, "score": float (cosine),
                  "root": str, "width": int|null, "height": int|null,
                  "taken_at": "YYYY-MM-DDTHH:MM:SS"|null, "camera": str|null,
                  "size": int|null (bytes), "content_hash": str|null,
                  "thumbnail": str|null (path of a JPEG thumbnail)}]}

``status``::

    {"index_dir": str, "version": str|null, "model": {"name": str|null,
     "checkpoint_sha256": str|null, "embed_dim": int|null},
     "images": int (files known), "indexed": int (status ok), "errors": int, "vectors": int,
     "faiss": {"kind": str|null, "count": int, "generation": int}, "generation": int,
     "roots": [{"path": str, "indexed": int, "online": bool}],
     "error_files": [{"id": int, "path": str, "error": str}],   # at most --errors entries
     "watch": {"running": bool, "pid": int|null, "state": str|null, "queue": int,
               "last_update": float|null (epoch seconds), "offline_roots": [str],
               "errors": [{"time": float, "level": str, "message": str}], "detail": str, ...}}
                                                   # see indexer/watch_status.py

``index`` / ``reindex``::

    {"scanned": int, "unchanged": int, "added": int, "updated": int, "touched": int,
     "moved": int, "copied": int, "errors": int, "removed": int, "encoded": int,
     "seconds": float, "images_per_second": float, "unlisted_folders": [str]}

``tag`` (``indexer.tag_commands``)::

    {"changed": [str], "removed": [str],   # tags re-scored / dropped since the last pass
     "rescored": int, "pending": int,      # images scored for changed tags / with every tag
     "rows": int, "texts_encoded": int, "seconds": float}

``tags``::

    {"images": int (tagged images), "tags": [{"tag": str, "count": int}]}   # most frequent first
    {"id": int, "path": str, "tags": [{"tag": str, "score": float}]}          # with --image

``duplicates``::

    {"threshold": float, "count": int (groups),
     "groups": [{"keep": int (suggested keeper's id),
                 "members": [{"id": int, "path": str, "size": int|null, "width": int|null,
                              "height": int|null}]}]}          # keeper first in each group

``export json`` writes ``[{"path": str, "tags": [{"tag": str, "score": float}]}]``; ``export
csv`` writes ``path,tag,score`` lines; ``export xmp`` writes ``dc:subject`` sidecars.

Subcommands live in a registry (:func:`command`); later components register theirs (watch, ui,
tag, ...) by decorating a function in a module listed in :data:`COMMAND_MODULES`.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass

from indexer.config import Config, ConfigError, load_config

COMMAND_MODULES: tuple[str, ...] = (
    "app.commands",
    "indexer.tag_commands",
    "indexer.watch_commands",
)


class UserError(Exception):
    """An error to report as one line, without a traceback."""


@dataclass
class Command:
    name: str
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace, Config], int]


COMMANDS: dict[str, Command] = {}


def command(name: str, help: str, configure: Callable[[argparse.ArgumentParser], None]):
    """Register ``fn(args, cfg) -> exit code`` as subcommand ``name``."""

    def deco(fn: Callable[[argparse.Namespace, Config], int]):
        COMMANDS[name] = Command(name, help, configure, fn)
        return fn

    return deco


def _user_errors() -> tuple[type[BaseException], ...]:
    """Exception types reported as one-line user errors."""
    from indexer.store.sqlite.schema import SchemaError
    from indexer.embed.encoder import EncoderUnavailableError
    from indexer.store.lock import IndexBusyError
    from indexer.ingest.pipeline import PathOutsideRootsError
    from indexer.ingest.scan import RootMissingError
    from indexer.search.engine import QueryError
    from indexer.store.sqlite.store import IndexMissingError, ModelMismatchError

    return (UserError, ConfigError, RootMissingError, PathOutsideRootsError, FileNotFoundError,
            ModelMismatchError, EncoderUnavailableError, IndexMissingError, IndexBusyError,
            QueryError, SchemaError, PermissionError, NotADirectoryError)  # fmt: skip


def _printable(path: str) -> str:
    """A path safe to print (undecodable bytes shown as \\xNN)."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _dump(doc: object) -> None:
    sys.stdout.write(json.dumps(doc, indent=2, sort_keys=False) + "\n")


# --------------------------------------------------------------------------- index / reindex
def _index_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="*", help="only these files/folders (inside library roots)")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _report(rep, as_json: bool) -> None:
    if as_json:
        _dump(rep.to_dict())
        return
    print(
        f"scanned {rep.scanned}: {rep.added} added, {rep.updated} updated, {rep.moved} moved, "
        f"{rep.copied} copied, {rep.removed} removed, {rep.errors} errors, "
        f"{rep.unchanged} unchanged ({rep.encoded} encoded in {rep.seconds:.1f}s, "
        f"{rep.images_per_second:.1f} img/s)"
    )
    for folder in rep.unlisted_folders:
        print(f"warning: cannot list folder {_printable(folder)}", file=sys.stderr)


@command("index", "bring the index up to date with the library roots", _index_args)
def _cmd_index(args: argparse.Namespace, cfg: Config) -> int:
    from indexer.library import Library

    for path in args.paths:
        if not os.path.lexists(path):
            raise UserError(f"path not found: {path}")
    with Library.open(cfg, writer=True) as lib:
        rep = lib.index(args.paths or None, progress=not args.no_progress and sys.stderr.isatty())
    _report(rep, args.json)
    return 0


def _reindex_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


@command("reindex", "rebuild the index with the configured model, then swap it in", _reindex_args)
def _cmd_reindex(args: argparse.Namespace, cfg: Config) -> int:
    from indexer.library import Library

    with Library.open(cfg, writer=True) as lib:
        rep = lib.reindex(progress=not args.no_progress and sys.stderr.isatty())
    _report(rep, args.json)
    return 0


# --------------------------------------------------------------------------- search
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
    p.add_argument("--json", action="store_true", help="print JSON (schema above)")


@command("search", "search the index by text and/or an example image", _search_args)
def _cmd_search(args: argparse.Namespace, cfg: Config) -> int:
    from indexer.library import Library

    if not args.query and not args.image:
        raise UserError("give a QUERY, --image, or both")
    image: str | int | None = args.image
    if isinstance(image, str) and image.startswith("id:"):
        if not image[3:].isdigit():
            raise UserError(f"--image {image}: expected id:NUMBER")
        image = int(image[3:])
    kwargs = {"image": image, "folder": args.folder, "since": args.since, "until": args.until}
    if args.tags:
        kwargs["tags"] = [t.strip() for t in args.tags if t.strip()]
    for name in ("k", "threshold", "adaptive"):
        if getattr(args, name) is not None:
            kwargs[name] = getattr(args, name)
    with Library.open(cfg) as lib:
        res = lib.search(args.query, **kwargs)
        rows = []
        for rank, hit in enumerate(res.hits, 1):
            thumb = lib.thumbnail_path(hit.record)
            rows.append({"rank": rank, **hit.to_dict(),
                         "thumbnail": os.fspath(thumb) if thumb else None})  # fmt: skip
    if args.json:
        _dump({"query": args.query, "image": args.image, "k": kwargs.get("k", cfg.search.top_k),
               "cutoff": res.cutoff, "candidates": res.candidates, "count": len(rows),
               "results": rows})  # fmt: skip
    else:
        for r in rows:
            print(f"{r['score']:.4f}  {_printable(r['path'])}")
        if not rows:
            hint = " (date filters match only photos with an EXIF capture time)"
            print("no results" + (hint if args.since or args.until else ""), file=sys.stderr)
    return 0


# --------------------------------------------------------------------------- status
def _status_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print JSON (schema above)")
    p.add_argument("--errors", type=int, default=20, metavar="N", help="list up to N bad files")


@command("status", "show what is in the index", _status_args)
def _cmd_status(args: argparse.Namespace, cfg: Config) -> int:
    from indexer.library import Library

    with Library.open(cfg) as lib:
        doc = lib.status(max_errors=max(args.errors, 0))
    if args.json:
        _dump(doc)
        return 0
    m = doc["model"]
    print(f"index:    {doc['index_dir']} ({doc['version']})")
    print(
        f"model:    {m['name']} (sha256 {str(m['checkpoint_sha256'])[:12]}, dim {m['embed_dim']})"
    )
    print(f"images:   {doc['indexed']} indexed, {doc['errors']} errors, {doc['images']} files")
    print(f"vectors:  {doc['vectors']} in SQLite, {doc['faiss']['count']} in FAISS "
          f"({doc['faiss']['kind']}), generation {doc['generation']}")  # fmt: skip
    for r in doc["roots"]:
        print(f"root:     {_printable(r['path'])} ({r['indexed']} indexed)")
    offline = [r["path"] for r in doc["roots"] if not r.get("online", True)]
    _print_watch(doc.get("watch") or {}, offline)
    for e in doc["error_files"]:
        print(f"error:    {_printable(e['path'])}: {e['error']}")
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
        print(f"offline:  {_printable(path)} (images kept; searched again when it returns)")
    for e in (w.get("errors") or [])[-5:]:
        print(f"watch {e.get('level', 'error')}: {when(e.get('time'))} {e.get('message')}")


# --------------------------------------------------------------------------- main
def load_command_modules(modules: tuple[str, ...] = COMMAND_MODULES) -> None:
    """Import the modules that register extra subcommands.

    A listed module that does not exist (yet) is skipped, so one component that is not
    installed or not written yet cannot take the whole CLI down; errors inside a module that
    exists still propagate.
    """
    for module in modules:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name is None or not (module == exc.name or module.startswith(exc.name + ".")):
                raise


def build_parser() -> argparse.ArgumentParser:
    load_command_modules()
    parser = argparse.ArgumentParser(
        prog="clipsearch", description="Self-hosted semantic photo search."
    )
    parser.add_argument("--config", metavar="FILE",
                        help="config file (default: $CLIPSEARCH_CONFIG, ./config.yaml)")  # fmt: skip
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for cmd in COMMANDS.values():
        p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.help)
        cmd.configure(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``clipsearch`` console script; returns the exit code."""
    # Decode threads share the cores with torch's OpenMP team: waiting OpenMP threads must
    # sleep, not spin, or they burn the core a decoder needs (~20% faster indexing on 2
    # cores). Read when torch first loads, which happens later, inside the command.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    args = build_parser().parse_args(argv)
    errors = _user_errors()
    try:
        cfg = load_config(args.config)
        code = COMMANDS[args.command].run(args, cfg)
    except KeyboardInterrupt:
        print("clipsearch: interrupted", file=sys.stderr)
        code = 130
    except errors as exc:
        msg = " ".join(str(exc).split()) or type(exc).__name__
        print(f"clipsearch: error: {msg}", file=sys.stderr)
        code = 1
    except BrokenPipeError:  # e.g. `clipsearch search x | head`
        code = 0
    return code


if __name__ == "__main__":
    # Run the imported module's main, not this __main__ copy: command modules register into
    # ``indexer.cli.COMMANDS``, which is a different dict from this copy's.
    from indexer.cli import main as _main

    raise SystemExit(_main())
