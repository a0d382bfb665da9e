"""Per-process resources of the app: the config, the Library, the model (loaded once), images.

Streamlit reruns the page script on every interaction; ``st.cache_resource`` keeps one Library
and one model per process, shared by all browser sessions. Failures are not cached, so a page
reload retries (e.g. after ``clipsearch index`` created the index).
"""

from __future__ import annotations

import io
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import streamlit as st
from PIL import Image, ImageOps

from indexer.config import Config, load_config
from indexer.embed.encoder import ClipEncoder, Encoder, thread_plan
from indexer.embed.images import decode, read_file
from indexer.embed.query import reader_encoder
from indexer.library import Library
from indexer.store import map_vector_files

DETAIL_MAX_SIDE = 1600  # the detail view shows the photo scaled down to this


def config_path_from_argv(argv: list[str] | None = None) -> str | None:
    """``--config FILE`` / ``--config=FILE`` from the script's arguments (None: not given)."""
    argv = sys.argv[1:] if argv is None else argv
    for i, arg in enumerate(argv):
        if arg == "--config" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--config="):
            return arg.split("=", 1)[1]
    return None


def get_config() -> Config:
    """The configuration: ``--config`` after ``--`` on the streamlit command line, else the
    usual lookup ($CLIPSEARCH_CONFIG, ./config.yaml, defaults). Raises ConfigError."""
    return load_config(config_path_from_argv())


def _config_key(cfg: Config) -> tuple:
    src = cfg.source
    try:
        mtime = os.stat(src).st_mtime_ns if src is not None else 0
    except OSError:
        mtime = 0
    return (os.fspath(src) if src else os.getcwd(), mtime, os.environ.get("CLIPSEARCH_WEIGHTS"))


def _model_key(cfg: Config) -> tuple:
    w = cfg.weights_path
    try:
        wstat = os.stat(w).st_mtime_ns if w is not None else 0
    except OSError:
        wstat = -1
    return (cfg.model.name, os.fspath(w) if w else None, wstat, cfg.model.device,
            cfg.model.precision, cfg.model.backend,
            os.fspath(cfg.cache_dir) if cfg.cache_dir else None)  # fmt: skip


def _new_encoder(cfg: Config) -> Encoder:
    """The query encoder: the model's torch-free ONNX towers where they can run, else the
    full model (indexer.embed.query)."""
    return reader_encoder(cfg, lambda: ClipEncoder.from_config(cfg, thread_plan(cfg).model_threads))


# What the server process loaded at start (start_preload), handed to the first page run.
_PRELOADED: dict[tuple, Any] = {}
_PRELOAD: list[threading.Thread] = []


def start_preload(config_path: str | None) -> threading.Thread:
    """Load the Library and the query encoder of the config at ``config_path`` in a thread,
    and run one query (index pages, tokenizer tables): what ``app.serve`` does as the server
    starts, so that the first search of the page finds them loaded. Failures (no index yet,
    no model) are left for the page to show."""

    def run() -> None:
        start = time.perf_counter()
        map_vector_files(False)  # a long-lived reader: FAISS scans faster in memory
        try:
            cfg = load_config(config_path)
            enc = _new_encoder(cfg)
            _PRELOADED["encoder", _model_key(cfg)] = enc
            lib = Library.open(cfg, encoder=enc)
            _PRELOADED["library", _config_key(cfg)] = lib
            lib.search("a photo", k=1)
        except Exception as exc:  # noqa: BLE001 - the page reports it with its reason
            print(f"clipsearch: preload: {type(exc).__name__}: {exc}", file=sys.stderr)
            return
        print(f"clipsearch: model and index loaded in {time.perf_counter() - start:.2f} s",
              file=sys.stderr, flush=True)  # fmt: skip

    thread = threading.Thread(target=run, name="clipsearch-preload", daemon=True)
    _PRELOAD.append(thread)
    thread.start()
    return thread


def _preloaded(key: tuple) -> Any:
    for thread in _PRELOAD:
        thread.join()
    return _PRELOADED.pop(key, None)


@st.cache_resource(show_spinner=False, max_entries=4)
def _load_encoder(key: tuple, _cfg: Config) -> Encoder:
    return _preloaded(("encoder", key)) or _new_encoder(_cfg)


def get_encoder(cfg: Config) -> Encoder:
    """The configured model, loaded once per process. Raises EncoderUnavailableError."""
    return _load_encoder(_model_key(cfg), cfg)


class LazyEncoder:
    """The Encoder protocol over :func:`get_encoder`: the model loads on first use, once."""

    def __init__(self, cfg: Config):
        self._cfg = cfg

    @property
    def _enc(self) -> Encoder:
        return get_encoder(self._cfg)

    @property
    def identity(self):  # noqa: ANN201 - ModelIdentity
        return self._enc.identity

    @property
    def image_resolution(self) -> int:
        return self._enc.image_resolution

    def preprocess(self, image: Any) -> Any:
        return self._enc.preprocess(image)

    def encode_images(self, batch: list[Any]) -> Any:
        return self._enc.encode_images(batch)

    def encode_texts(self, texts: list[str]) -> Any:
        return self._enc.encode_texts(texts)


@st.cache_resource(show_spinner=False, max_entries=4)
def _open_library(key: tuple, _cfg: Config) -> Library:
    map_vector_files(False)  # a long-lived reader: FAISS scans faster in memory
    lib = _preloaded(("library", key))
    return lib or Library.open(_cfg, encoder=LazyEncoder(_cfg))  # type: ignore[arg-type]


def get_library(cfg: Config) -> Library:
    """The read-only Library (one per process). Raises IndexMissingError before indexing."""
    return _open_library(_config_key(cfg), cfg)


@st.cache_resource(show_spinner=False)
def library_lock() -> threading.RLock:
    """Serialises use of the shared Library (its FAISS index refreshes in place)."""
    return threading.RLock()


@st.cache_data(show_spinner=False, max_entries=5000)
def square_thumbnail(path: str, mtime_ns: int, size: int = 256) -> bytes:
    """A centre-cropped square JPEG of a thumbnail file, for an even results grid."""
    with Image.open(path) as img:
        square = ImageOps.fit(img.convert("RGB"), (size, size), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    square.save(buf, "JPEG", quality=85)
    return buf.getvalue()


@st.cache_data(show_spinner=False, max_entries=64)
def display_image(path: str, mtime_ns: int, size: int, max_pixels: int) -> bytes:
    """The photo at ``path`` (already validated), upright and scaled down, as JPEG bytes.

    Raises indexer.embed.images.BadImage with the reason when it cannot be read or decoded.
    """
    data = read_file(path)
    img = decode(data, max_pixels=max_pixels, name=path).image
    img.thumbnail((DETAIL_MAX_SIDE, DETAIL_MAX_SIDE), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    img.convert("RGB").save(buf, "JPEG", quality=90)
    return buf.getvalue()


@st.cache_data(show_spinner=False, max_entries=64)
def video_frame(path: str, mtime_ns: int, t_ms: int) -> bytes:
    """The frame a video (already validated) shows at ``t_ms``, as JPEG bytes.

    Raises indexer.embed.images.BadImage with the reason when it cannot be decoded.
    """
    from indexer.embed.video import frame_at

    buf = io.BytesIO()
    frame_at(path, t_ms, max_side=DETAIL_MAX_SIDE).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def file_stamp(path: str | Path) -> tuple[int, int]:
    """(mtime_ns, size) of a file, for cache keys; (0, 0) when it cannot be stat'ed."""
    try:
        st_ = os.stat(path)
    except OSError:
        return (0, 0)
    return (st_.st_mtime_ns, st_.st_size)
