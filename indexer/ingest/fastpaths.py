"""The self-check of the image pipeline's fast paths: JPEG draft decoding and fast resize.

Both change the model's input pixels a little (bench/bench_fidelity.py measures by how much).
Before a run uses them with a model, the same model embeds the shipped calibration photos
(clipmodel/calibration), enlarged to 4x the model's resolution and saved as JPEGs so that draft
decoding applies, through the exact pipeline (full decode, Pillow's resize) and through the
configured one. Below clipmodel's bars (mean cosine >= 0.999, min >= 0.99) the fast path is
refused for the run, with one log line that names the numbers. The measurement is cached (JSON
under the model cache's ``fidelity/``) per checkpoint, model path and code version: it costs
about a second once, nothing on later runs.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from indexer.config import Config
from indexer.embed.images import decode, draft_target

LOG = logging.getLogger("clipmodel.fidelity")  # the one logger of every fast-path check
CHECK_VERSION = 1
ENLARGE = 4  # calibration photos are enlarged to this many times the model's resolution


@dataclass
class PipelineCheck:
    """What the configured image pipeline measured against the exact one, and what runs."""

    jpeg_draft: bool  # configured
    fast_resize: bool  # configured
    images_mean: float
    images_min: float
    n: int
    passed: bool
    version: str

    def runs(self) -> dict[str, bool]:
        """The settings a run uses: the configured ones, or none of them when refused."""
        ok = self.passed
        return {"jpeg_draft": self.jpeg_draft and ok, "fast_resize": self.fast_resize and ok}

    def to_dict(self) -> dict:
        return dict(asdict(self), runs=self.runs())


def _code_version() -> str:
    from clipmodel.fastpath import code_version

    return f"{code_version()}, pipeline {CHECK_VERSION}"


def calibration_jpegs(resolution: int) -> list[bytes]:
    """The calibration photos, enlarged to ``ENLARGE`` x ``resolution`` and saved as JPEGs."""
    from PIL import Image

    from clipmodel.fidelity import calibration_files

    out = []
    side = ENLARGE * resolution
    for path in calibration_files():
        with Image.open(path) as img:
            big = img.convert("RGB").resize((side, side), Image.Resampling.BICUBIC)
        buf = io.BytesIO()
        big.save(buf, "JPEG", quality=92)
        out.append(buf.getvalue())
    return out


def measure_pipeline(encoder: Any, jpegs: list[bytes], max_pixels: int, jpeg_draft: bool,
                     fast_resize: bool, draft_size: int) -> tuple[float, float, int]:  # fmt: skip
    """(mean, min, n) cosine of ``encoder``'s embeddings of ``jpegs`` through the given
    pipeline to those through the exact one (full decode, Pillow's resize)."""
    from clipmodel.fidelity import measure

    exact, fast = [], []
    for data in jpegs:
        exact.append(encoder.prepare(decode(data, max_pixels).image, fast_resize=False)[0])
        image = decode(data, max_pixels, draft_size if jpeg_draft else None).image
        fast.append(encoder.prepare(image, fast_resize=fast_resize)[0])
    f = measure(encoder.encode_images(fast), encoder.encode_images(exact))
    return f.mean, f.min, f.n


def _cache_file(encoder: Any, cfg: Config) -> Path:
    from clipmodel.download import default_cache_dir

    root = Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dir()
    ident = encoder.identity
    key = json.dumps([ident.checkpoint_sha256, ident.preprocess, encoder.runtime,
                      cfg.index.jpeg_draft, cfg.index.fast_resize, cfg.index.thumbnail_size,
                      _code_version()])  # fmt: skip
    return root / "fidelity" / f"pipeline-{hashlib.sha256(key.encode()).hexdigest()[:32]}.json"


def check_pipeline(encoder: Any, cfg: Config, use_cache: bool = True,
                   bars: tuple[float, float] | None = None) -> PipelineCheck | None:  # fmt: skip
    """Measure (or read the cached measurement of) the configured image fast paths for
    ``encoder``; None when none is configured or the encoder cannot run the check (a model-free
    test encoder). ``bars`` (mean, min) default to clipmodel's."""
    if not (cfg.index.jpeg_draft or cfg.index.fast_resize):
        return None
    if not hasattr(encoder, "prepare") or not hasattr(encoder, "runtime"):
        return None
    from clipmodel.fidelity import MEAN_BAR, MIN_BAR

    mean_bar, min_bar = bars or (MEAN_BAR, MIN_BAR)
    file = _cache_file(encoder, cfg)
    version = _code_version()
    if use_cache and bars is None:
        try:
            cached = json.loads(file.read_text())
            cached.pop("runs", None)
            if cached.get("version") == version:
                return PipelineCheck(**cached)
        except (OSError, ValueError, TypeError):
            pass
    res = encoder.image_resolution
    draft = max(draft_target(res), cfg.index.thumbnail_size)
    mean, low, n = measure_pipeline(encoder, calibration_jpegs(res), cfg.library.max_pixels,
                                    cfg.index.jpeg_draft, cfg.index.fast_resize, draft)  # fmt: skip
    result = PipelineCheck(cfg.index.jpeg_draft, cfg.index.fast_resize, round(mean, 6),
                           round(low, 6), n, mean >= mean_bar and low >= min_bar, version)  # fmt: skip
    if not result.passed:
        names = [n for n, on in (("JPEG draft decoding", cfg.index.jpeg_draft),
                                 ("fast resize", cfg.index.fast_resize)) if on]  # fmt: skip
        LOG.warning("refused %s (images mean %.5f min %.5f; bars mean >= %s, min >= %s); "
                    "running the exact image pipeline", " + ".join(names), mean, low,
                    mean_bar, min_bar)  # fmt: skip
    if use_cache and bars is None:
        file.parent.mkdir(parents=True, exist_ok=True)
        tmp = file.with_name(f".{file.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(result.to_dict(), indent=1))
        tmp.replace(file)
    return result


def apply_check(encoder: Any, check: PipelineCheck | None) -> bool:
    """Set ``encoder``'s fast resize to what ``check`` allows; returns whether JPEG draft
    decoding may run."""
    if check is None:
        return True
    runs = check.runs()
    if hasattr(encoder, "fast_resize"):
        encoder.fast_resize = runs["fast_resize"]
    return runs["jpeg_draft"]


def fast_paths_doc(encoder: Any, check: PipelineCheck | None) -> dict:
    """The ``fast_paths`` document of ``status --json``: the model path and the image pipeline."""
    model = encoder.fidelity() if hasattr(encoder, "fidelity") else None
    return {"runtime": getattr(encoder, "runtime", None), "model": model,
            "image_pipeline": check.to_dict() if check is not None else None}  # fmt: skip


def _fid(d: dict | None) -> str:
    return f"mean {d['mean']:.5f} min {d['min']:.5f}" if d else "exact"


def fast_path_lines(fp: dict | None) -> list[tuple[str, str]]:
    """(label, text) lines saying which model path and image pipeline the last run used and
    what their self-checks measured (``status``; the UI shows the same)."""
    if not fp:
        return [("runs", "not recorded yet (index once)")]
    model = fp.get("model") or {}
    if model.get("checked", True) and model.get("path"):
        refused = model.get("refused") or []
        text = (f"{model['path']} (images {_fid(model.get('images'))}, texts "
                f"{_fid(model.get('texts'))})")  # fmt: skip
        if refused:
            text += f"; refused: {', '.join(refused)}"
    else:
        text = f"{fp.get('runtime') or '?'} (not self-checked: chosen explicitly)"
    lines = [("runs", text)]
    pipe = fp.get("image_pipeline")
    if pipe:
        on = [n for n, k in (("JPEG draft", "jpeg_draft"), ("fast resize", "fast_resize"))
              if pipe.get(k)]  # fmt: skip
        verdict = "running" if pipe.get("passed") else "refused, exact pipeline runs"
        lines.append(("decoding", f"{' + '.join(on)} ({verdict}; images mean "
                                  f"{pipe['images_mean']:.5f} min {pipe['images_min']:.5f})"))  # fmt: skip
    return lines
