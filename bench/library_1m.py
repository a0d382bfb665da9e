"""The 1M-photo benchmark library of issue 15, built once and cached.

    .venv/bin/python -m bench.library_1m                     # 100k real files + synthetic to 1M
    .venv/bin/python -m bench.library_1m --real 20000 --total 200000
    .venv/bin/python -m bench.library_1m --tree /work/main   # written by another checkout's code

:func:`library` returns the ``config.yaml`` of a library (building it if needed) for other
benchmarks. Layout under ``$CLIPSEARCH_BENCH_DIR`` (default ``/tmp/clipsearch-bench``):

* ``files-<real>/``: **real files**, unique small JPEGs (160-320 px, quality 55-95) made from
  coco-mini's 239 photos by random crops (50-100% of each side), flips and JPEG quality,
  deterministic by seed; one file in four is a near-duplicate of the one before (same crop,
  another size and quality). Indexed for real by ``clipsearch index`` (a subprocess).
* **synthetic rows** for the rest up to ``total``, written through the real store API
  (``bench/synthetic_rows.py``) with sparse placeholder files (see there).
* the model: a random checkpoint made as ``tests/checkpoints.py`` does (``tiny-vit-512``: 2-layer
  towers, 64 px input, 512-d embedding, so encoding is fast), whose image projection is then
  partly whitened on the coco photos (second moment to the power -1/4): a raw random ViT maps
  every photo to nearly the same direction (mean cosine 0.94), this one gives 0.45 between
  photos, as a real ViT-B/32 does, so duplicates, tags and search see a plausible geometry.

Each library folder is ``lib-<real>-<total>-<tag>`` (``tag``: the code that wrote it) and holds
``build.json`` (what was built and how long each step took).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parent.parent
BENCH_DIR = Path(os.environ.get("CLIPSEARCH_BENCH_DIR", "/tmp/clipsearch-bench"))
SEED = 15
PER_FOLDER = 1000


def bench_env(tree: Path | None = None) -> dict:
    """Environment of a subprocess running ``tree``'s code with the shared model caches; it
    may write bytecode, as an installed package has its ``.pyc`` files (see compile_tree)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    return dict(env, PYTHONPATH=str(tree or REPO),
                CLIPSEARCH_CACHE_DIR=str(BENCH_DIR / "model-cache"))  # fmt: skip


def compile_tree(tree: Path) -> None:
    """Byte-compile a checkout's packages, so no timed run pays for compiling them
    (``PYTHONDONTWRITEBYTECODE`` in this workplace's environment made every run compile)."""
    import compileall

    for pkg in ("indexer", "clipmodel", "app"):
        if (tree / pkg).is_dir():
            compileall.compile_dir(tree / pkg, quiet=1, workers=2)


# --------------------------------------------------------------------------- the model
def checkpoint() -> Path:
    """The benchmark checkpoint (built once): see the module docstring."""
    path = BENCH_DIR / "tiny-vit-512-cond.pt"
    if path.exists():
        return path
    import torch

    from clipmodel.preprocess import Preprocess
    from tests.checkpoints import reference_model

    from .datasets import coco_photos

    model = reference_model("tiny-vit-512", seed=SEED)
    pre = Preprocess(model.visual.input_resolution)
    from PIL import Image

    x = torch.stack([pre(Image.open(f).convert("RGB")) for f in coco_photos()])
    seen = {}
    hook = model.visual.ln_post.register_forward_hook(lambda _m, _i, o: seen.update(h=o))
    with torch.no_grad():
        model.encode_image(x)
    hook.remove()
    h = seen["h"].double().numpy()
    lam, u = np.linalg.eigh(h.T @ h / len(h))
    w = u @ np.diag((lam + 1e-6 * lam.max()) ** -0.25) @ u.T
    rng = np.random.default_rng(SEED)
    q = np.linalg.qr(rng.standard_normal((model.visual.proj.shape[1], len(w))))[0].T
    with torch.no_grad():
        model.visual.proj.copy_(torch.from_numpy(w @ q).float())
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(model.state_dict(), tmp)
    os.replace(tmp, path)
    return path


# --------------------------------------------------------------------------- real files
_SOURCES: list = []


def _sources() -> list:
    if not _SOURCES:
        from PIL import Image

        from .datasets import coco_photos

        for f in coco_photos():
            im = Image.open(f).convert("RGB")
            im.thumbnail((480, 480))
            _SOURCES.append(im)
    return _SOURCES


def _scene(j: int) -> tuple[int, tuple[int, int, int, int], bool]:
    """(source, crop box, flip) of scene ``j``."""
    srcs = _sources()
    rng = np.random.default_rng([SEED, j])
    s = int(rng.integers(len(srcs)))
    w, h = srcs[s].size
    cw, ch = int(w * rng.uniform(0.5, 1.0)), int(h * rng.uniform(0.5, 1.0))
    x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    return s, (x0, y0, x0 + cw, y0 + ch), bool(rng.random() < 0.5)


def real_file(i: int) -> bytes:
    """The JPEG bytes of real file ``i`` (one in four: a near-duplicate of file i-1)."""
    from PIL import Image

    s, box, flip = _scene(i - 1 if i % 4 == 3 else i)
    im = _sources()[s].crop(box)
    if flip:
        im = im.transpose(Image.FLIP_LEFT_RIGHT)
    rng = np.random.default_rng([SEED, i, 1])
    side = int(rng.integers(160, 321))
    scale = side / max(im.size)
    im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))),
                   Image.BILINEAR)  # fmt: skip
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=int(rng.integers(55, 96)))
    return buf.getvalue()


def real_path(root: Path, i: int) -> Path:
    return root / f"{i // PER_FOLDER:04d}" / f"photo_{i:07d}.jpg"


def _write_folder(args: tuple[str, int, int]) -> int:
    os.nice(10)
    root, lo, hi = Path(args[0]), args[1], args[2]
    made = 0
    for i in range(lo, hi):
        p = real_path(root, i)
        if p.exists():
            continue
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_suffix(".tmp")
        tmp.write_bytes(real_file(i))
        os.replace(tmp, p)
        made += 1
    return made


def make_real_files(n: int, workers: int = 2) -> Path:
    """``n`` real files under ``BENCH_DIR/files-<n>`` (existing ones are kept)."""
    root = BENCH_DIR / f"files-{n}"
    jobs = [(str(root), lo, min(lo + PER_FOLDER, n)) for lo in range(0, n, PER_FOLDER)]
    with ProcessPoolExecutor(workers) as pool:
        sum(pool.map(_write_folder, jobs))
    return root


# --------------------------------------------------------------------------- the library
def _tag(tree: Path | None) -> str:
    return "head" if tree is None or Path(tree).resolve() == REPO else Path(tree).name


def library_dir(real: int, total: int, tree: Path | None = None) -> Path:
    return BENCH_DIR / f"lib-{real}-{total}-{_tag(tree)}"


def _run(cmd: list[str], tree: Path | None, log: dict, step: str) -> str:
    t0 = time.monotonic()
    out = subprocess.run(["nice", "-n", "10", *cmd], capture_output=True, text=True,
                         env=bench_env(tree), cwd=tree or REPO)  # fmt: skip
    log[step] = round(time.monotonic() - t0, 1)
    if out.returncode != 0:
        raise SystemExit(f"{step} failed: {out.stderr.strip()[-2000:]}")
    return out.stdout


def library(real: int = 100_000, total: int = 1_000_000, tree: Path | None = None) -> Path:
    """The ``config.yaml`` of the benchmark library (built on first use; minutes at 1M)."""
    lib = library_dir(real, total, tree)
    config = lib / "config.yaml"
    if (lib / "build.json").exists():
        return config
    if lib.exists():
        shutil.rmtree(lib)  # an interrupted build
    lib.mkdir(parents=True)
    log: dict = {"real_files": real, "synthetic_rows": total - real, "tree": str(tree or REPO)}
    t0 = time.monotonic()
    files = make_real_files(real)
    log["make_real_files_s"] = round(time.monotonic() - t0, 1)
    synth = lib / "synthetic"
    synth.mkdir()
    cfg = {"model": {"weights": str(checkpoint())},
           "library": {"roots": [str(files), str(synth)]},
           "index": {"dir": str(lib / "index")}}  # fmt: skip
    config.write_text(yaml.safe_dump(cfg))
    py = sys.executable
    report = _run([py, "-m", "indexer.cli", "--config", str(config), "index", "--json",
                   "--no-progress"], tree, log, "index_real_s")  # fmt: skip
    log["index_real"] = json.loads(report)
    if total > real:
        _run([py, str(REPO / "bench" / "synthetic_rows.py"), str(config), str(synth), str(real),
              str(total - real), str(SEED)], tree, log, "synthetic_rows_s")  # fmt: skip
        report = _run([py, "-m", "indexer.cli", "--config", str(config), "tag", "--json",
                       "--no-progress"], tree, log, "tag_synthetic_s")  # fmt: skip
        log["tag_synthetic"] = json.loads(report)
    (lib / "build.json").write_text(json.dumps(log, indent=2))
    return config


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--real", type=int, default=100_000, help="real files (indexed for real)")
    ap.add_argument("--total", type=int, default=1_000_000, help="rows in all")
    ap.add_argument("--tree", help="the checkout whose code builds it (default: this one)")
    args = ap.parse_args()
    config = library(args.real, args.total, Path(args.tree).resolve() if args.tree else None)
    print(config)
    print((config.parent / "build.json").read_text())


if __name__ == "__main__":
    main()
