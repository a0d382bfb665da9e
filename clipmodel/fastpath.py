"""Which path runs a checkpoint on this machine, self-checked (issue 13): the one place where
the backend is chosen and where a path that fails its check falls back.

Paths, fastest first: "onnxruntime int8" (SmoothQuant + dynamic int8, clipmodel.onnx_export),
"onnxruntime int8-mild" (the products that cannot be smoothed kept in float), "torch bf16"
(where the CPU computes bf16 natively), "torch fp32" (the exact path). Also measurable:
"onnxruntime int8-dynamic" (the plain int8 of before) and "onnxruntime fp32".

``select`` builds the first path of a chain, measures it against the exact path on the
calibration set (clipmodel.fidelity) and runs it if faithful; otherwise it goes on down the
chain. Every refusal of one load is told in one WARNING line of the ``clipmodel.fidelity``
logger, e.g.::

    refused onnxruntime int8 for the texts (texts mean 0.98463 min 0.95070; bars mean >=
    0.999, min >= 0.99); refused torch bf16 for the texts (texts mean 0.99542 min 0.98123;
    bars mean >= 0.999, min >= 0.99); running onnxruntime int8 (texts: torch fp32) (images
    mean 0.99984 min 0.99975)

Measurements are cached as JSON: an ONNX path's beside its export
(``<cache>/onnx/<key>-fidelity.json``), a torch path's in ``<cache>/fidelity/``, with the exact
embeddings of the calibration set (``<cache>/fidelity/<sha256>-exact-v<N>.npz``). A later
start reads them (no measuring); a different version of the code (``code_version()``)
measures again.
"""

from __future__ import annotations

import copy
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from .fidelity import (
    CHECK_VERSION,
    MEAN_BAR,
    MIN_BAR,
    FidelityReport,
    PathCheck,
    embed_calibration,
    measure,
    model_calibration,
    read_check,
    write_check,
)

__all__ = ["EXACT", "all_paths", "auto_chain", "code_version", "measure_paths", "select"]

LOG = logging.getLogger("clipmodel.fidelity")
EXACT = "torch fp32"
ORT_PREFIX = "onnxruntime "
ORT_AUTO = ("int8", "int8-mild")


def code_version() -> str:
    """What a cached measurement must have been made by to be reused."""
    from . import onnx_common
    from .onnx_export import EXPORT_VERSION

    return onnx_common.code_version(EXPORT_VERSION)


def _ort_ok() -> bool:
    from .onnx_export import onnxruntime_available

    return onnxruntime_available()


def auto_chain(device: str = "cpu") -> list[str]:
    """The paths ``backend="auto"`` tries on ``device``, in order (the exact path last)."""
    from .api import cpu_has_int8_dot, cpu_has_native_bf16

    if str(device).startswith("cuda"):
        return ["torch fp16", EXACT]
    chain = [ORT_PREFIX + q for q in ORT_AUTO] if _ort_ok() and cpu_has_int8_dot() else []
    if cpu_has_native_bf16():
        chain.append("torch bf16")
    return chain + [EXACT]


def all_paths() -> list[str]:
    """Every path this machine can run on the CPU (for ``doctor``), the exact one last."""
    from .api import cpu_has_native_bf16
    from .onnx_export import QUANTIZATIONS

    paths = [ORT_PREFIX + q for q in QUANTIZATIONS] if _ort_ok() else []
    return paths + ["torch bf16"] * cpu_has_native_bf16() + [EXACT]


def _cache_root(cache_dir) -> Path:
    if cache_dir is None:
        from .download import default_cache_dir

        cache_dir = default_cache_dir()
    return Path(cache_dir).expanduser()


def _model_id(model) -> str:
    """The checkpoint and the settings that change its function (e.g. the activation)."""
    import dataclasses
    import hashlib
    import json

    from .onnx_export import checkpoint_id

    blob = json.dumps([checkpoint_id(model), dataclasses.asdict(model.config)], default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def check_file(model, path: str, cache_dir) -> Path:
    """Where the measurement of ``path`` for ``model`` (the fp32 CLIP) is cached."""
    from .onnx_export import cache_key

    root = _cache_root(cache_dir)
    if path.startswith(ORT_PREFIX):
        return root / "onnx" / f"{cache_key(model, path[len(ORT_PREFIX) :])}-fidelity.json"
    import torch

    name = path.replace(" ", "-")
    return root / "fidelity" / f"{_model_id(model)}-{name}-torch{torch.__version__}.json"


def exact_embeddings(model, cache_dir) -> tuple[np.ndarray, np.ndarray]:
    """The exact (fp32 torch) embeddings of the calibration set, computed once per checkpoint."""
    file = _cache_root(cache_dir) / "fidelity" / f"{_model_id(model)}-exact-v{CHECK_VERSION}.npz"
    try:
        with np.load(file) as z:
            return z["images"], z["texts"]
    except (OSError, ValueError, KeyError):
        pass
    images, texts = embed_calibration(model)
    file.parent.mkdir(parents=True, exist_ok=True)
    tmp = file.with_name(f".{file.stem}.{os.getpid()}.tmp.npz")
    np.savez(tmp, images=images, texts=texts)
    tmp.replace(file)
    return images, texts


def build(model, path: str, cache_dir=None, threads: int | None = None, image_sessions: int = 1):
    """A runner for ``path`` from the fp32 ``model`` (which it leaves unchanged)."""
    import torch

    if path.startswith(ORT_PREFIX):
        from .onnx_backend import load_onnx

        return load_onnx(model, cache_dir, path[len(ORT_PREFIX):], threads=threads,
                         image_sessions=image_sessions)  # fmt: skip
    dtypes = {
        "torch fp32": torch.float32,
        "torch bf16": torch.bfloat16,
        "torch fp16": torch.float16,
    }
    if path not in dtypes:
        raise ValueError(f"unknown path {path!r}")
    if path == EXACT:
        return model
    runner = copy.deepcopy(model).to(dtypes[path])
    for attr in ("model_name", "checkpoint_sha256", "checkpoint_format", "checkpoint_path",
                 "architecture"):  # fmt: skip
        setattr(runner, attr, getattr(model, attr, None))
    return runner


def check(model, path: str, runner, cache_dir=None, use_cache: bool = True) -> PathCheck:
    """``runner`` (the ``path`` built from ``model``) measured on the calibration set, or the
    cached measurement made by this version of the code."""
    version = code_version()
    file = check_file(model, path, cache_dir)
    if use_cache and (cached := read_check(file, version)) is not None:
        return cached
    start = time.perf_counter()
    exact_img, exact_txt = exact_embeddings(model, cache_dir)
    img, txt = embed_calibration(runner)
    result = PathCheck(path, measure(img, exact_img), measure(txt, exact_txt),
                       time.perf_counter() - start, False, version)  # fmt: skip
    if use_cache:
        write_check(file, result)
    return result


def _refusal_line(report: FidelityReport) -> str:
    bars = f"bars mean >= {MEAN_BAR}, min >= {MIN_BAR}"
    parts = []
    for refused in report.refused:
        path = refused.removesuffix(" (texts)")
        c = next(c for c in report.checks if c.path == path)
        if path == refused:
            parts.append(f"refused {path} ({c.summary()}; {bars})")
        else:
            parts.append(f"refused {path} for the texts (texts {c.texts}; {bars})")
    running = [f"images {report.images}" if report.images else "",
               f"texts {report.texts}" if report.texts else ""]  # fmt: skip
    tail = ", ".join(r for r in running if r) or "exact"
    return "; ".join(parts) + f"; running {report.path} ({tail})"


def select(model, chain: list[str], cache_dir=None, requested: str = "auto",
           threads: int | None = None, image_sessions: int = 1, selfcheck: bool = True):  # fmt: skip
    """The first faithful path of ``chain`` built from the fp32 ``model``, with its
    :class:`FidelityReport` (also set as the runner's ``fidelity`` and ``fast_path``).

    Towers are judged apart: when an ONNX Runtime path passes for the images but not for the
    texts, it keeps the images and the texts go on down the chain (to a milder int8 text graph,
    or to torch). A chain of one path (an explicit request) runs that path whatever it
    measures; when it fails the check, one WARNING line says so. ``selfcheck=False`` takes the
    first path unmeasured.
    """
    report = FidelityReport(chain[0], requested)
    if not selfcheck or chain[0] in (EXACT, "torch fp16"):
        return _finish(build(model, chain[0], cache_dir, threads, image_sessions), report)
    if len(chain) == 1:  # explicit: run it, checked
        runner = build(model, chain[0], cache_dir, threads, image_sessions)
        report.checks.append(check(model, chain[0], runner, cache_dir))
        if not report.checks[0].passed:
            LOG.warning("%s is below the bars (%s; bars mean >= %s, min >= %s); running it as "
                        "requested", chain[0], report.checks[0].summary(), MEAN_BAR, MIN_BAR)  # fmt: skip
        return _finish(runner, report)
    image_runner, text_file = None, None
    rest = list(chain)
    while rest and rest[0].startswith(ORT_PREFIX):  # ONNX Runtime: images and texts apart
        path = rest.pop(0)
        runner = build(model, path, cache_dir, threads, image_sessions)
        result = check(model, path, runner, cache_dir)
        report.checks.append(result)
        if image_runner is None:
            if not result.images.passed:
                report.refused.append(path)
                continue
            image_runner, report.image_path = runner, path
        if result.texts.passed:
            report.text_path, text_file = path, runner.paths[1]
            break
        report.refused.append(f"{path} (texts)")  # the images run an earlier variant
    text_runner = None
    if image_runner is None or text_file is None:  # torch, for both or for the texts
        for path in rest:
            text_runner = build(model, path, cache_dir, threads, image_sessions)
            if path == EXACT:
                break
            result = check(model, path, text_runner, cache_dir)
            report.checks.append(result)
            if result.passed if image_runner is None else result.texts.passed:
                break
            report.refused.append(path if image_runner is None else f"{path} (texts)")
        report.text_path = path
        if image_runner is None:
            report.image_path = path
    if image_runner is None:
        runner = text_runner
        report.path = report.image_path
    else:
        runner = image_runner
        if text_file is not None and text_file != runner.paths[1]:
            runner.use_text(text_path=text_file)
        elif text_file is None:
            runner.use_text(text_model=text_runner)
        same = report.text_path == report.image_path
        report.path = (
            report.image_path if same else f"{report.image_path} (texts: {report.text_path})"
        )
    if report.refused:
        LOG.warning("%s", _refusal_line(report))
    return _finish(runner, report)


def _finish(runner, report: FidelityReport):
    report.image_path = report.image_path or report.path
    report.text_path = report.text_path or report.path
    runner.fast_path = report.path
    runner.fidelity = report
    return runner, report


def measure_paths(model, cache_dir=None, paths: list[str] | None = None, images=None,
                  prompts: list[str] | None = None) -> list[PathCheck]:  # fmt: skip
    """Every available path (or ``paths``) measured on ``model`` (the fp32 CLIP), for
    ``doctor``: on the calibration set (cached like a load's checks), or on the user's own
    ``images`` (normalised (N, 3, R, R), as preprocess makes them) and ``prompts``."""
    from .tokenizer import model_tokenizer

    own = images is not None or prompts is not None
    if own:
        cal_images, cal_tokens = model_calibration(model)
        images = cal_images if images is None else images
        tokens = cal_tokens if prompts is None else model_tokenizer(model)(list(prompts))
        exact = embed_calibration(model, images, tokens)
    out = []
    for path in paths or all_paths():
        if path == EXACT:
            out.append(PathCheck(EXACT, None, None, 0.0, False, code_version()))
            continue
        runner = build(model, path, cache_dir)
        if not own:
            out.append(check(model, path, runner, cache_dir))
            continue
        start = time.perf_counter()
        img, txt = embed_calibration(runner, images, tokens)
        out.append(PathCheck(path, measure(img, exact[0]), measure(txt, exact[1]),
                             time.perf_counter() - start, False, code_version()))  # fmt: skip
        del runner
    return out


def describe(runner: Any) -> dict:
    """What runs and how faithful it measured (JSON-ready), for status displays."""
    report = getattr(runner, "fidelity", None)
    if report is None:
        return {"path": getattr(runner, "fast_path", None), "checked": False}
    return report.to_dict()
