"""Clear pages for every failure: what went wrong and what to do, never a traceback."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import streamlit as st

from indexer.config import WEIGHTS_ENV, Config, ConfigError
from indexer.embed.encoder import EncoderUnavailableError
from indexer.embed.images import BadImage
from indexer.search.engine import QueryError
from indexer.store import IndexMissingError, ModelMismatchError, SchemaError

from ..safety import UnsafePathError, UploadError

log = logging.getLogger("clipsearch.app")


@dataclass(frozen=True)
class Problem:
    """A failure as shown to the user: a title, the reason and what to do about it."""

    kind: str  # config | no-index | model | mismatch | query | path | upload | file | busy | bug
    title: str
    message: str
    advice: str = ""


def _config_flag(cfg: Config | None) -> str:
    if cfg is not None and cfg.source is not None:
        return f"--config {cfg.source} "
    return ""


def describe(exc: BaseException, cfg: Config | None = None) -> Problem:
    """Turn an exception into a :class:`Problem` (unknown ones are logged, not shown)."""
    msg = " ".join(str(exc).split()) or type(exc).__name__
    flag = _config_flag(cfg)
    if isinstance(exc, ConfigError):
        return Problem("config", "The configuration cannot be used", msg,
                       "Fix the file named above, then reload this page.")  # fmt: skip
    if isinstance(exc, IndexMissingError):
        roots = ", ".join(f"`{r}`" for r in cfg.roots) if cfg is not None else "your photo folders"
        return Problem(
            "no-index", "No index yet",
            f"There is no photo index in `{cfg.index_dir if cfg else 'index.dir'}` yet.",
            f"Build it from {roots} with `clipsearch {flag}index`, then reload this page. "
            "New photos then appear here without restarting the app.",
        )  # fmt: skip
    if isinstance(exc, EncoderUnavailableError):
        return Problem(
            "model", "The model cannot be loaded", msg,
            "Point `model.weights` in the config file at a local CLIP checkpoint, or set the "
            f"environment variable `{WEIGHTS_ENV}=/path/to/checkpoint.pt`, or allow the download "
            "of `model.name` once (internet access). Then restart `clipsearch ui`.",
        )  # fmt: skip
    if isinstance(exc, ModelMismatchError):
        return Problem("mismatch", "The index was built with another model", msg,
                       f"Run `clipsearch {flag}reindex`, or configure the model the index "
                       "was built with.")  # fmt: skip
    if isinstance(exc, QueryError):
        return Problem("query", "This search cannot run", msg,
                       "Query syntax: `beach + sunset - people`, `2:dog` (weight), "
                       "`img:/path/in/library.jpg`, `id:123`.")  # fmt: skip
    if isinstance(exc, UnsafePathError):
        return Problem("path", "Not allowed", msg,
                       "Only photos inside the library folders (`library.roots`) can be used.")  # fmt: skip
    if isinstance(exc, UploadError):
        return Problem("upload", "This photo cannot be used", msg)
    if isinstance(exc, BadImage):
        return Problem("file", "The photo cannot be read", msg,
                       "It may have been moved, deleted or damaged since it was indexed; "
                       "the index catches up on the next `clipsearch index`.")  # fmt: skip
    if isinstance(exc, SchemaError):
        return Problem("config", "The index cannot be read by this version", msg,
                       f"Run `clipsearch {flag}index` with this version.")  # fmt: skip
    if isinstance(exc, (PermissionError, OSError)):
        name = getattr(exc, "filename", None)
        where = f" ({os.fsdecode(name)})" if name else ""
        return Problem("file", "A file cannot be read", f"{exc.strerror or msg}{where}")
    log.exception("unexpected error in the app", exc_info=exc)
    return Problem("bug", "Something went wrong", f"{type(exc).__name__}: {msg}",
                   "Details are in the terminal running `clipsearch ui`.")  # fmt: skip


def show(exc: BaseException, cfg: Config | None = None, inline: bool = False) -> Problem:
    """Draw the problem: a full page (title + box) or, ``inline``, one box."""
    p = describe(exc, cfg)
    if not inline:
        st.header(p.title)
    text = f"**{p.title}:** {p.message}" if inline else p.message
    if p.kind in ("no-index", "query", "upload"):
        st.warning(text)
    else:
        st.error(text)
    if p.advice:
        st.info(p.advice)
    return p


def expected() -> tuple[type[BaseException], ...]:
    """Exceptions the views turn into pages (anything else is reported as a bug)."""
    return (ConfigError, IndexMissingError, EncoderUnavailableError, ModelMismatchError,
            QueryError, UnsafePathError, UploadError, BadImage, SchemaError, OSError)  # fmt: skip
