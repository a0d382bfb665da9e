"""Queries without torch: the cached ONNX text (and image) tower alone, on ONNX Runtime.

A load by :func:`clipmodel.load` on the CPU with a self-checked backend ("auto" or
"onnxruntime") records what it chose in a *query manifest*, ``<cache>/query/<key>.json``:
the checkpoint (its path, SHA256, and the state of the file it was hashed in: size, mtime,
ctime, inode), the export's files and settings (code and tool versions), which path the
self-check chose for each tower (clipmodel.fastpath) and the hashes of the check files that
verdict was read from. :meth:`QueryModel.open` reads it back without importing torch and runs
exactly the towers the verdict chose, when everything it names is unchanged; otherwise it
raises :class:`QueryModelUnavailable` saying why (no export yet, the checkpoint changed,
another version of the code or of a tool, a check re-measured, the texts run on torch), and
the caller loads the model the normal way, which exports, checks and records again.

    model = QueryModel.open("ViT-B-32.pt", "auto auto", cache_dir)
    vecs = model.encode_texts(["a dog on a beach"])      # (1, d) float32, unit rows
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .onnx_common import code_version, image_patches, session, text_feed

__all__ = ["MANIFEST_VERSION", "QueryModel", "QueryModelUnavailable", "manifest_path",
           "source_path", "write_manifest"]  # fmt: skip

MANIFEST_VERSION = 1
ORT = "onnxruntime "


class QueryModelUnavailable(RuntimeError):
    """The torch-free query path cannot run this model here (the message says why)."""


def _cache_root(cache_dir: str | os.PathLike | None) -> Path:
    if cache_dir is None:
        from .download import default_cache_dir

        return default_cache_dir()
    return Path(cache_dir).expanduser()


def source_path(name: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> Path:
    """The file (or folder) ``clipmodel.load(name)`` reads: a published model's cached file,
    or the path itself."""
    from .download import MODELS

    if str(name) in MODELS:
        return _cache_root(cache_dir) / MODELS[str(name)].filename
    return Path(name).expanduser()


def manifest_path(source: Path, requested: str, cache_dir: str | os.PathLike | None) -> Path:
    """Where the manifest of checkpoint ``source`` loaded as ``requested`` is kept."""
    key = json.dumps([os.path.realpath(source), requested])
    digest = hashlib.sha256(key.encode()).hexdigest()[:24]
    return _cache_root(cache_dir) / "query" / f"{digest}.json"


def source_state(path: Path) -> list[list]:
    """What identifies a checkpoint's bytes without reading them: size, mtime, ctime, inode
    and device of the file (of each file in a folder). Rewriting a file changes its ctime,
    which no program can set back, so an unchanged state means unchanged bytes."""
    path = Path(path)
    files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    out = []
    for f in files:
        st = os.stat(f)
        out.append([f.name, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev])
    return out


def _file_digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _versions() -> dict[str, str | None]:
    """The tool versions an export depends on, read without importing torch."""
    from importlib import metadata

    out: dict[str, str | None] = {}
    for dist in ("torch", "onnxruntime"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def write_manifest(runner: Any, source: Path, requested: str, cache_dir, check_files: list[Path],
                   machine: dict) -> Path | None:  # fmt: skip
    """Record what a self-checked load chose (``runner``: its OnnxCLIP or torch model), for
    :meth:`QueryModel.open`. ``check_files``: the cached measurements the verdict was read
    from; ``machine``: what the chain of paths depended on. Returns the manifest's path, or
    None where it cannot be written (a read-only cache: queries then load torch)."""
    report = getattr(runner, "fidelity", None)
    if report is None:
        return None
    paths = getattr(runner, "paths", None)  # an OnnxCLIP's (image, text) graphs
    text_onnx = paths is not None and getattr(runner, "_text_model", None) is None
    doc = {
        "version": MANIFEST_VERSION,
        "code": code_version(),
        "requested": requested,
        "source": os.path.realpath(source),
        "state": source_state(source),
        "sha256": runner.checkpoint_sha256,
        "model_name": runner.model_name,
        "architecture": getattr(runner, "architecture", None),
        "embed_dim": int(runner.embed_dim),
        "image_resolution": int(runner.image_resolution),
        "context_length": int(runner.context_length),
        "patch_size": getattr(runner, "patch_size", None),
        "pixel_input": bool(getattr(runner, "pixel_input", False)),
        "tools": _versions(),
        "machine": machine,
        "image": {"path": report.image_path,
                  "file": os.fspath(paths[0]) if paths is not None else None},
        "text": {"path": report.text_path,
                 "file": os.fspath(paths[1]) if text_onnx else None},
        "files": {os.fspath(p): os.stat(p).st_size for p in (paths or ())},
        "checks": {os.fspath(f): _file_digest(f) for f in check_files if Path(f).is_file()},
        "fidelity": report.to_dict(),
    }  # fmt: skip
    target = manifest_path(source, requested, cache_dir)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(doc, indent=1))
        os.replace(tmp, target)
    except OSError:
        return None
    return target


def _machine() -> dict:
    from .cpu import cpu_has_int8_dot, cpu_has_native_bf16

    return {"int8_dot": cpu_has_int8_dot(), "native_bf16": cpu_has_native_bf16()}


def _check(doc: dict, source: Path, requested: str) -> None:
    """Raise QueryModelUnavailable unless the manifest still describes what a load would run."""
    if doc.get("version") != MANIFEST_VERSION or doc.get("code") != code_version():
        raise QueryModelUnavailable("the export was made by another version of clipmodel")
    if doc.get("requested") != requested or doc.get("source") != os.path.realpath(source):
        raise QueryModelUnavailable("the manifest is for another model or setting")
    try:
        state = source_state(source)
    except OSError as exc:
        raise QueryModelUnavailable(f"cannot read the checkpoint {source}: {exc}") from None
    if state != doc.get("state"):
        raise QueryModelUnavailable(f"the checkpoint {source} changed since its export")
    if doc.get("machine") != _machine() or doc.get("tools") != _versions():
        raise QueryModelUnavailable("the CPU or the installed torch/onnxruntime changed")
    for name, size in doc.get("files", {}).items():
        try:
            if os.stat(name).st_size != size:
                raise QueryModelUnavailable(f"the exported graph {name} changed")
        except OSError:
            raise QueryModelUnavailable(f"the exported graph {name} is missing") from None
    for name, digest in doc.get("checks", {}).items():
        try:
            same = _file_digest(Path(name)) == digest
        except OSError:
            same = False
        if not same:
            raise QueryModelUnavailable(f"the self-check {name} changed or is missing")
    if not doc["text"]["file"]:
        raise QueryModelUnavailable(
            f"the self-check chose {doc['text']['path']} for the texts: queries need torch"
        )


class QueryModel:
    """The towers a self-checked load chose, on ONNX Runtime, read from its manifest.

    Carries what the index needs to know of the model (``model_name``, ``checkpoint_sha256``,
    ``embed_dim``, ``image_resolution``...). The image session opens on the first image.
    """

    def __init__(self, doc: dict, threads: int = 1):
        self.doc = doc
        self.model_name = str(doc["model_name"])
        self.checkpoint_sha256 = str(doc["sha256"])
        self.embed_dim = int(doc["embed_dim"])
        self.image_resolution = int(doc["image_resolution"])
        self.context_length = int(doc["context_length"])
        self.patch_size = doc.get("patch_size")
        self.pixel_input = bool(doc.get("pixel_input"))
        self.fast_path = str(doc["fidelity"]["path"])
        self.text_path, self.image_path = doc["text"]["path"], doc["image"]["path"]
        self._threads = threads
        # ONNX Runtime releases the GIL while it loads a graph (~0.12 s): the tokenizer's
        # tables (~0.06 s of Python) are built meanwhile, for the first query
        from .tokenizer import get_tokenizer

        threading.Thread(target=get_tokenizer, daemon=True, name="tokenizer").start()
        self._text = self._session(doc["text"]["file"])
        self._image: Any = None

    @classmethod
    def open(cls, name: str | os.PathLike, requested: str, cache_dir=None,
             threads: int = 1) -> QueryModel:  # fmt: skip
        """The recorded towers of checkpoint ``name`` loaded as ``requested`` ("auto auto",
        "onnxruntime int8", ...), or QueryModelUnavailable saying why not."""
        source = source_path(name, cache_dir)
        file = manifest_path(source, requested, cache_dir)
        try:
            doc = json.loads(file.read_text())
        except FileNotFoundError:
            raise QueryModelUnavailable("no export recorded yet for this model") from None
        except (OSError, ValueError) as exc:
            raise QueryModelUnavailable(f"unreadable manifest {file}: {exc}") from None
        try:
            _check(doc, source, requested)
            doc["manifest"] = os.fspath(file)
            return cls(doc, threads)
        except (KeyError, TypeError) as exc:
            raise QueryModelUnavailable(f"bad manifest {file}: {exc}") from None
        except Exception as exc:  # onnxruntime's own exception types for a bad graph file
            if type(exc).__module__.split(".")[0] != "onnxruntime":
                raise
            raise QueryModelUnavailable(f"cannot open the exported graph: {exc}") from None

    def _session(self, graph: str) -> Any:
        """A session of an exported graph, from its optimized form kept beside the manifest
        (made by the first load; named after the export and the ONNX Runtime version)."""
        version = self.doc["tools"]["onnxruntime"]
        opt = Path(self.doc["manifest"]).with_name(f"{Path(graph).stem}-ort{version}.mmap.onnx")
        # the form earlier versions kept, its tables inside (140 MB at ViT-B/32): superseded
        with contextlib.suppress(OSError):  # (a read-only cache keeps it)
            opt.with_name(f"{Path(graph).stem}-ort{version}.opt.onnx").unlink(missing_ok=True)
        # a query process runs a handful of inputs: no packed copies of the weights
        return session(Path(graph), self._threads, None, opt, prepack=False)

    @property
    def images_onnx(self) -> bool:
        """Whether the image tower runs here too (else it needs torch)."""
        return bool(self.doc["image"]["file"])

    def encode_tokens(self, tokens: np.ndarray) -> np.ndarray:
        """Unnormalised text embeddings of zero-padded token rows (N, context)."""
        if len(tokens) == 0:
            return np.empty((0, self.embed_dim), np.float32)
        return self._text.run(None, text_feed(np.asarray(tokens)))[0]

    def encode_texts(self, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
        """Unit embeddings of texts of any length (N, D), as ``clipmodel.encode_text_long``:
        long text is embedded by windows, averaged by window length."""
        from .tokenizer import text_windows, window_tokens

        windows, owner = text_windows(texts, self.context_length)
        sums = np.zeros((len(texts), self.embed_dim), np.float32)
        if not windows:
            return sums
        order = sorted(range(len(windows)), key=lambda j: len(windows[j]))
        emb = np.empty((len(windows), self.embed_dim), np.float32)
        for lo in range(0, len(order), batch_size):
            part = order[lo : lo + batch_size]
            out = self.encode_tokens(window_tokens([windows[j] for j in part], self.context_length))
            emb[part] = _unit(out)
        weights = np.asarray([max(len(w), 1) for w in windows], np.float32)
        np.add.at(sums, np.asarray(owner), emb * weights[:, None])
        return _unit(sums)

    def prepare(self, image: Any) -> np.ndarray:
        """The image tower's input for one image (a PIL image or a path): OpenAI's
        preprocessing (bicubic resize, centre crop), as 8-bit patches for an int8 ViT."""
        from .preprocess import Preprocess

        pre = Preprocess(self.image_resolution)
        if not self.pixel_input:
            return pre.array(image)
        img = pre.crop(image)
        rgb = img if img.mode == "RGB" else img.convert("RGB")
        return image_patches(np.asarray(rgb), int(self.patch_size))

    def encode_images(self, batch: Sequence[np.ndarray]) -> np.ndarray:
        """Unit image embeddings (N, D) of inputs made by :meth:`prepare`."""
        if not self.images_onnx:
            raise QueryModelUnavailable(f"the image tower runs {self.image_path}: needs torch")
        if self._image is None:
            self._image = self._session(self.doc["image"]["file"])
        x = np.stack(list(batch))
        name = "pixels" if self.pixel_input else "image"
        x = x.astype(np.uint8 if self.pixel_input else np.float32, copy=False)
        return _unit(self._image.run(None, {name: np.ascontiguousarray(x)})[0])


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
