"""The ``clipsearch`` command line.

Usage::

    clipsearch [--config FILE] index [PATHS...] [--json] [--no-progress]
    clipsearch [--config FILE] search [QUERY] [--image PATH] [-k N] [--threshold X] [--adaptive]
                                      [--folder F] [--since DATE] [--until DATE] [--tag TAG]...
                                      [--like PHOTO]... [--unlike PHOTO]... [--json]
    clipsearch [--config FILE] status [--json] [--errors N]
    clipsearch [--config FILE] reindex [--json] [--no-progress]
    clipsearch [--config FILE] ocr [--limit N] [--errors] [--json]

QUERY syntax: ``beach + sunset - people``, ``2:dog``, ``img:/path.jpg``, ``id:123``,
``text:"invoice 2023"`` (text in the photo, read by ``clipsearch ocr``) (see
``indexer.search.parse``). DATE: ``YYYY``, ``YYYY-MM``, ``YYYY-MM-DD`` or ``YYYY-MM-DDTHH:MM:SS``
(compared with the EXIF capture time; images without one are left out by date filters).
``--tag TAG`` (repeatable) keeps images carrying every given tag (see ``clipsearch tags``).
``--like``/``--unlike PHOTO`` (ids or indexed paths; or ``like:X``/``unlike:X`` in QUERY) re-rank
the query from marked results (relevance feedback, ``indexer.search.feedback``).

Exit codes: 0 success; 1 an error with a one-line reason on stderr (``clipsearch: error: ...``:
missing or invalid config, missing library root, index built with another model, model
unavailable offline, another writer running, no index yet, bad query); 2 invalid command line;
130 interrupted.

JSON output (``--json``; stable: fields are only ever added; paths are strings, undecodable
bytes in file names appear as ``\\udcXX`` escapes, i.e. Python's ``os.fsdecode`` form):

``search``::

    {"query": str|null, "image": str|null, "k": int,
     "cutoff": "top_k"|"threshold"|"adaptive"|"text",   # what limited the number of results
     "candidates": int,                           # indexed images the filters allowed
     "count": int,
     "terms": [{"kind": "text"|"image"|"like"|"unlike"|"concept"|"ocr", "value": str,
                "weight": float}],
     "results": [{"rank": int (1 = best), "id": int, "path": str, "score": float (cosine),
                  "root": str, "width": int|null, "height": int|null,
                  "taken_at": "YYYY-MM-DDTHH:MM:SS"|null, "camera": str|null,
                  "size": int|null (bytes), "content_hash": str|null,
                  "thumbnail": str|null (path of a JPEG thumbnail),
                  "text": str (only with text: terms: the matched recognised text)}]}

``status``::

    {"index_dir": str, "version": str|null, "model": {"name": str|null,
     "checkpoint_sha256": str|null, "embed_dim": int|null},
     "images": int (files known), "indexed": int (status ok), "errors": int, "vectors": int,
     "faiss": {"kind": str|null, "count": int, "generation": int}, "generation": int,
     "roots": [{"path": str, "indexed": int, "online": bool}],
     "error_files": [{"id": int, "path": str, "error": str}],   # at most --errors entries
     "ocr": {"enabled": bool, "read": int, "with_text": int, "errors": int, "pending": int},
     "watch": {"running": bool, "pid": int|null, "state": str|null, "queue": int,
               "last_update": float|null (epoch seconds), "offline_roots": [str],
               "errors": [{"time": float, "level": str, "message": str}], "detail": str, ...}}
                                                   # see indexer/watch/status.py

``index`` / ``reindex``::

    {"scanned": int, "unchanged": int, "added": int, "updated": int, "touched": int,
     "moved": int, "copied": int, "errors": int, "removed": int, "encoded": int,
     "unreachable": int,   # --ray: files a worker could not read (left for the next run)
     "seconds": float, "images_per_second": float, "unlisted_folders": [str],
     "ocr": {"read": int, "with_text": int, "errors": int, "stale": int, "pending": int,
             "engines": {str: int}, "seconds": float}}   # only with ocr.enabled; also `ocr --json`

``tag`` (``indexer.cli.tags``)::

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

Subcommands live in a registry (:mod:`indexer.cli.registry`): one module per command group
(``index``, ``search``, ``status``, ``model``, ``tags``, ``watch``) registers its commands by
decorating functions with :func:`command`; other packages (the UI's ``ui``) add theirs through
the ``clipsearch.commands`` entry point group.
"""

from __future__ import annotations

import argparse
import os
import sys

from indexer.cli.registry import (
    COMMANDS,
    UserError,
    command,
    command_modules,
    load_command_modules,
    user_errors,
)
from indexer.config import load_config

__all__ = ["COMMANDS", "UserError", "build_parser", "command", "main"]


def _command_word(argv: list[str]) -> str | None:
    """The subcommand named in ``argv`` (None when an option other than ``--config`` comes
    first, e.g. ``--help``: then every command is loaded)."""
    words = iter(argv)
    for word in words:
        if word == "--config":
            next(words, None)
        elif not word.startswith("--config="):
            return None if word.startswith("-") else word
    return None


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser; given ``argv``, only the named command's module is imported (cold start)."""
    load_command_modules(command_modules(_command_word(argv) if argv is not None else None))
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
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(argv).parse_args(argv)
    try:
        cfg = load_config(args.config)
        code = COMMANDS[args.command].run(args, cfg)
    except KeyboardInterrupt:
        print("clipsearch: interrupted", file=sys.stderr)
        code = 130
    except BrokenPipeError:  # e.g. `clipsearch search x | head`
        code = 0
    except Exception as exc:
        # the user-error types are imported only when one is raised (cold start)
        if not isinstance(exc, user_errors()):
            raise
        msg = " ".join(str(exc).split()) or type(exc).__name__
        print(f"clipsearch: error: {msg}", file=sys.stderr)
        code = 1
    return code
