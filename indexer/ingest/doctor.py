"""``clipsearch doctor``: every path this machine can run, measured on the user's own
checkpoint, photos and prompts against the exact fp32 path with OpenAI's preprocessing.

Model paths come from ``clipmodel.fastpath`` (int8 variants, bf16, ...). The image pipeline's
fast paths (JPEG draft decoding, fast resize) are measured with the exact model, so that a row
shows what that step alone changes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from indexer.config import Config
from indexer.embed.encoder import ClipEncoder, EncoderUnavailableError, model_source
from indexer.embed.images import BadImage, decode, draft_target, read_file, setup_codecs
from indexer.embed.raw import raw_support
from indexer.embed.video import is_video
from indexer.ingest.scan import walk


@dataclass
class DoctorRow:
    """One path: its cosines to the exact path (None for the exact path itself)."""

    path: str
    images_mean: float | None
    images_min: float | None
    texts_mean: float | None
    texts_min: float | None
    passed: bool
    seconds: float

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def sample_photos(cfg: Config, n: int) -> list[Path]:
    """Up to ``n`` photos (videos left out) spread evenly over the library roots (sorted
    walk, fixed stride)."""
    roots = [r for r in cfg.roots if r.is_dir()]
    found = walk([(r, r) for r in roots], cfg.library.extensions, cfg.library.follow_symlinks,
                 raw_with_jpeg=cfg.library.raw_with_jpeg)  # fmt: skip
    files = [e.path for e in found.entries if not is_video(e.path)]
    step = max(1, len(files) // max(n, 1))
    return [Path(p) for p in files[::step][:n]]


def formats() -> dict[str, str | None]:
    """The optional photo formats this machine decodes: what provides each (None: missing)."""
    heif = None
    if setup_codecs():
        import pillow_heif  # type: ignore[import-not-found]

        heif = f"pillow-heif {pillow_heif.__version__}"
    return {"HEIF": heif, "RAW": raw_support(), "video": _video_support()}


def _video_support() -> str | None:
    """``"PyAV X (decoders ...)"`` when videos can be decoded here, else None."""
    try:
        import av
    except ImportError:
        return None
    have = [c for c in ("h264", "hevc", "vp9", "libdav1d", "mpeg4") if c in av.codecs_available]
    return f"PyAV {av.__version__} (decoders {', '.join(have)})"


def _decoded(cfg: Config, paths: list[Path], draft: int | None) -> list:
    out = []
    for p in paths:
        try:
            out.append(decode(read_file(p), cfg.library.max_pixels, draft, name=p).image)
        except (BadImage, OSError):
            continue  # doctor measures what it can read; indexing reports bad files
    return out


def run_doctor(cfg: Config, photos: int = 32, prompts: list[str] | None = None) -> dict:
    """Measure every available path on the configured checkpoint and ``photos`` library
    photos (the calibration set where the library has none); the ``doctor --json`` document."""
    import time

    import torch

    import clipmodel
    from clipmodel.fastpath import measure_paths
    from clipmodel.fidelity import calibration_files, calibration_prompts, measure

    source = model_source(cfg)
    cache = os.fspath(cfg.cache_dir) if cfg.cache_dir else None
    try:
        exact, pre = clipmodel.load(source, device="cpu", download_root=cache, precision="fp32")
    except (RuntimeError, ValueError, OSError) as exc:
        raise EncoderUnavailableError(f"cannot load model {source}: {exc}") from None
    paths = sample_photos(cfg, photos)
    own = bool(paths)
    if not own:
        paths = calibration_files()
    images = _decoded(cfg, paths, None)
    if not images:
        raise EncoderUnavailableError("no readable photos to measure on")
    texts = list(prompts) if prompts else list(calibration_prompts())
    x = torch.stack([pre(im) for im in images])
    rows = []
    for c in measure_paths(exact, cache, images=x, prompts=texts):
        i, t = c.images, c.texts
        rows.append(DoctorRow(c.path, i and i.mean, i and i.min, t and t.mean, t and t.min,
                              c.passed if i else True, round(c.seconds, 2)))  # fmt: skip
    enc = ClipEncoder(exact, pre, str(source), fast_resize=True)
    draft = max(draft_target(enc.image_resolution), cfg.index.thumbnail_size)
    drafts = _decoded(cfg, paths, draft)  # read and decoded once for both draft rows
    with torch.inference_mode():
        ref = enc.encode_images([enc.prepare(im, fast_resize=False)[0] for im in images])
        for name, use_draft, fast in (("JPEG draft decoding", True, False),
                                      ("fast resize", False, True),
                                      ("JPEG draft + fast resize", True, True)):  # fmt: skip
            start = time.perf_counter()
            got = drafts if use_draft else images
            if len(got) != len(images):
                continue
            f = measure(enc.encode_images([enc.prepare(im, fast_resize=fast)[0] for im in got]),
                        ref)  # fmt: skip
            rows.append(DoctorRow(name, f.mean, f.min, None, None, f.passed,
                                  round(time.perf_counter() - start, 2)))  # fmt: skip
    return {"checkpoint": str(source), "photos": len(images), "own_photos": own,
            "prompts": len(texts), "rows": [r.to_dict() for r in rows],
            "formats": formats()}  # fmt: skip
