"""The command registry: subcommands register with :func:`command`; plugins by entry point.

Core commands are listed in :data:`CORE_COMMANDS` with the module that registers each, so a
run imports only its own command's module (a cold ``search`` does not pay for the others).
Other packages (the UI) add theirs
through the ``clipsearch.commands`` entry point group (``name = "module"`` in their
``pyproject.toml``); the module registers its commands on import. In a source checkout whose
installed metadata is stale, the group is also read from the ``pyproject.toml`` beside the
package, so a new command works before ``pip install -e`` runs again.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from indexer.config import Config, ConfigError

ENTRY_POINT_GROUP = "clipsearch.commands"
CORE_COMMANDS: dict[str, str] = {  # command -> the module that registers it
    "index": "indexer.cli.index", "reindex": "indexer.cli.index", "ocr": "indexer.cli.index",
    "search": "indexer.cli.search", "status": "indexer.cli.status",
    "classify": "indexer.cli.model", "eval": "indexer.cli.model",
    "tag": "indexer.cli.tags", "tags": "indexer.cli.tags", "export": "indexer.cli.tags",
    "duplicates": "indexer.cli.tags", "watch": "indexer.cli.watch",
    "concept": "indexer.cli.concepts", "concepts": "indexer.cli.concepts",
    "albums": "indexer.cli.albums", "doctor": "indexer.cli.doctor",
    "migrate": "indexer.cli.migrate",
}  # fmt: skip
CORE_MODULES: tuple[str, ...] = tuple(dict.fromkeys(CORE_COMMANDS.values()))
_PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


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


def add_commands(subparsers: argparse._SubParsersAction, names: Iterable[str]) -> None:
    """Add the registered commands ``names`` to an argparse subparsers object, each with a
    ``handler`` default (``fn(args, cfg) -> exit code``): for programs of their own."""
    for name in names:
        cmd = COMMANDS[name]
        p = subparsers.add_parser(name, help=cmd.help, description=cmd.help)
        cmd.configure(p)
        p.set_defaults(handler=cmd.run)


def user_errors() -> tuple[type[BaseException], ...]:
    """Exception types reported as one-line user errors."""
    from indexer.embed.encoder import EncoderUnavailableError
    from indexer.ingest.pipeline import PathOutsideRootsError
    from indexer.ingest.scan import RootMissingError
    from indexer.learn.service import ConceptError
    from indexer.ocr.engines import OcrUnavailableError
    from indexer.search.albums import AlbumError
    from indexer.search.engine import QueryError
    from indexer.store import IndexBusyError, IndexMissingError, StoreError
    from indexer.watch.mailbox import RequestError

    # StoreError: also ModelMismatchError, SchemaError and an unreachable database (its
    # messages never carry a password)
    return (UserError, ConfigError, OcrUnavailableError, RootMissingError, PathOutsideRootsError, FileNotFoundError,
            StoreError, EncoderUnavailableError, IndexMissingError, IndexBusyError,
            QueryError, PermissionError, NotADirectoryError, ConceptError, AlbumError,
            RequestError)  # fmt: skip


def printable(path: str) -> str:
    """A path safe to print (undecodable bytes shown as \\xNN)."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def dump(doc: object, fh: IO[str] | None = None) -> None:
    """Print ``doc`` as indented JSON (to stdout unless ``fh``)."""
    (fh or sys.stdout).write(json.dumps(doc, indent=2, sort_keys=False) + "\n")


def _source_plugins(path: Path = _PYPROJECT) -> dict[str, str]:
    """The entry point group as declared in a source checkout's ``pyproject.toml``."""
    try:
        import tomllib
    except ImportError:  # Python 3.10: installed metadata only
        return {}
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if doc.get("project", {}).get("name") != "clipsearch":
        return {}
    group = doc["project"].get("entry-points", {}).get(ENTRY_POINT_GROUP, {})
    return {str(k): str(v) for k, v in group.items()}


def plugin_modules() -> list[str]:
    """Modules that register extra commands: installed entry points plus the source tree's."""
    from importlib import metadata  # ~25 ms: only when a command is not a core one

    found = {ep.name: ep.value for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}
    for name, value in _source_plugins().items():
        found.setdefault(name, value)
    return [value.split(":")[0] for value in found.values()]


def command_modules(name: str | None) -> list[str]:
    """The modules to import to run command ``name``: its own for a core command, else (help,
    a plugin's command, a mistyped one) every core module and plugin."""
    if name in CORE_COMMANDS:
        return [CORE_COMMANDS[name]]
    return [*CORE_MODULES, *plugin_modules()]


def load_command_modules(modules: Iterable[str] | None = None) -> None:
    """Import the modules that register subcommands (default: all of them).

    A listed module that does not exist (yet) is skipped, so one component that is not
    installed or not written yet cannot take the whole CLI down; errors inside a module that
    exists still propagate.
    """
    for module in modules if modules is not None else command_modules(None):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name is None or not (module == exc.name or module.startswith(exc.name + ".")):
                raise
