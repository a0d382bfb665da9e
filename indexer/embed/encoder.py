"""The model side of indexing: an :class:`Encoder` protocol, the CLIP implementation loaded from
the config, thread settings, and an ordered, bounded background map for decoding.

The indexer only talks to the :class:`Encoder` protocol, so tests can swap in a fake or a
counting wrapper, and a different embedding model needs only a new class.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import numpy as np

from indexer.config import Config
from indexer.types import ModelIdentity

T = TypeVar("T")
R = TypeVar("R")


TEXT_CACHE_SIZE = 4096  # text embeddings kept per process (2 KB each at 512 dims)


class EncoderUnavailableError(RuntimeError):
    """The model cannot be loaded (no weights offline, missing file, bad checkpoint)."""


class Encoder(Protocol):
    """Turns images and text into L2-normalised float32 vectors of one model."""

    identity: ModelIdentity
    image_resolution: int

    def preprocess(self, image: Any) -> Any:
        """A PIL image -> the model input for one image (e.g. a (3, R, R) tensor)."""

    def encode_images(self, batch: list[Any]) -> np.ndarray:
        """Preprocessed inputs -> (n, d) float32, L2-normalised."""

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        """Texts of any length -> (n, d) float32, L2-normalised."""


def cpu_count() -> int:
    """CPUs this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


CPU_BATCH = 32
# A GPU encodes a batch of 128 ViT-B/32 images in a few ms: larger batches amortise the
# per-call overhead, and the CPUs go to decoding to keep it fed.
GPU_BATCH = 128


@dataclass(frozen=True)
class ThreadPlan:
    """How indexing uses the CPUs: model threads, decode workers, whether they take turns, and
    how many model sessions split each batch."""

    model_threads: int
    decode_workers: int
    # Decoders pause while the model runs: when both would otherwise share cores, a
    # preempted model thread stalls every parallel operation at its barrier (on 2 cores,
    # taking turns indexes 12 MP photos ~15% faster than overlapping; bench/bench_index.py).
    take_turns: bool
    # ONNX Runtime: sessions of model_threads // model_sessions threads each run part of a
    # batch side by side. With one thread each there is no barrier to stall, so decoders
    # share the cores with the model instead of taking turns.
    model_sessions: int = 1
    batch_size: int = CPU_BATCH  # images per commit (and per model call)


def thread_plan(cfg: Config) -> ThreadPlan:
    """Threads for the model and for decoding, and the batch size, from the config; 0 means
    automatic.

    Automatic on a GPU: batches of 128, one CPU thread for the model and every other CPU
    decoding. On the CPU, batches of 32; 4 CPUs or more: one decode worker per 4 CPUs and the
    model gets the rest, each on its own cores. Fewer than 4 CPUs: the model and the decoders
    each get every CPU; on ONNX Runtime the model runs one single-threaded session per model
    thread and decoding overlaps it, on torch they take turns (decoders pause while a batch is
    encoded).
    """
    from clipmodel.api import resolve_device

    cpus = cpu_count()
    backend = effective_backend(cfg)
    if backend == "torch" and resolve_device(cfg.model.device).type == "cuda":
        return ThreadPlan(
            model_threads=cfg.index.torch_threads or 1,
            decode_workers=cfg.index.decode_workers or max(1, cpus - 1),
            take_turns=False,
            batch_size=cfg.index.batch_size or GPU_BATCH,
        )
    small = cpus < 4
    workers = cfg.index.decode_workers or (cpus if small else max(1, cpus // 4))
    threads = cfg.index.torch_threads or (cpus if small else max(1, cpus - workers))
    shared = threads + workers > cpus
    sessions = 1
    if backend == "onnxruntime":
        sessions = cfg.index.model_sessions or (threads if shared and small else 1)
        sessions = max(1, min(sessions, threads))
    split = sessions == threads and sessions > 1  # single-threaded sessions: no barrier
    return ThreadPlan(threads, workers, take_turns=shared and not split, model_sessions=sessions,
                      batch_size=cfg.index.batch_size or CPU_BATCH)  # fmt: skip


def effective_precision(configured: str, device: str) -> str:
    """The precision "auto" means here: fp16 on CUDA; on CPU bf16 where the CPU computes it
    natively (about 2x faster, embeddings within cosine 0.9999 of fp32), else fp32."""
    if configured != "auto":
        return configured
    from clipmodel.api import cpu_has_native_bf16, resolve_device

    if resolve_device(device).type == "cpu" and cpu_has_native_bf16():
        return "bf16"
    return "auto"


def effective_backend(cfg: Config) -> str:
    """The runtime "auto" means here: ONNX Runtime (int8) on a CPU with 8-bit dot products
    (VNNI) when it is installed and the precision is auto or int8, else torch. See
    clipmodel.onnx_backend for what it measures."""
    m = cfg.model
    if m.backend != "auto":
        return m.backend
    if m.precision == "int8":
        return "onnxruntime"
    if m.precision != "auto":
        return "torch"
    from clipmodel.api import cpu_has_int8_dot, resolve_device
    from clipmodel.onnx_backend import onnxruntime_available

    if resolve_device(m.device).type != "cpu" or not onnxruntime_available():
        return "torch"
    if not cpu_has_int8_dot():
        return "torch"
    return "onnxruntime"


def model_source(cfg: Config) -> str:
    """What ``clipmodel.load`` reads: ``$CLIPSEARCH_WEIGHTS`` / model.weights, else model.name."""
    weights = cfg.weights_path
    if weights is not None and not weights.exists():
        raise EncoderUnavailableError(f"model weights not found: {weights}")
    return os.fspath(weights) if weights is not None else cfg.model.name


def _normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x / np.maximum(norms, 1e-12), dtype=np.float32)


class ClipEncoder:
    """A :class:`Encoder` over ``clipmodel`` (model loaded once, inference without grad)."""

    def __init__(
        self, model: Any, preprocess: Callable[[Any], Any], name: str, fast_resize: bool = False
    ):
        self.model = model
        self._preprocess = preprocess
        # Torch's antialiased resize for model inputs; the indexer turns it off where its
        # self-check fails (indexer.ingest.fastpaths)
        self.fast_resize = fast_resize
        # int8 ONNX ViTs take 8-bit pixel patches instead of normalised float images
        self._pixels = bool(getattr(model, "pixel_input", False))
        # Images per encode_images call the model runs best at (0: any; see OnnxCLIP)
        self.rows_per_call = int(getattr(model, "rows_per_call", 0))
        self._text_cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self.image_resolution = int(model.image_resolution)
        settings: dict[str, Any] = {"preprocess": repr(preprocess),
                                    "resolution": self.image_resolution}  # fmt: skip
        sigmoid = getattr(model, "sigmoid_calibration", None)
        if sigmoid is not None:  # a sigmoid model (SigLIP): tag thresholds follow its calibration
            settings["sigmoid"] = {"logit_scale": round(sigmoid[0], 6),
                                   "logit_bias": round(sigmoid[1], 6)}  # fmt: skip
        self.identity = ModelIdentity(
            name=name,
            checkpoint_sha256=str(model.checkpoint_sha256),
            embed_dim=int(model.embed_dim),
            preprocess=json.dumps(settings, sort_keys=True),
        )

    @classmethod
    def from_config(cls, cfg: Config, torch_threads: int | None = None) -> ClipEncoder:
        """Load the configured model (``$CLIPSEARCH_WEIGHTS`` / model.weights / model.name)."""
        import torch

        import clipmodel

        plan = thread_plan(cfg)
        threads = torch_threads or plan.model_threads
        torch.set_num_threads(threads)
        backend = effective_backend(cfg)
        weights = cfg.weights_path
        source = model_source(cfg)
        cache = os.fspath(cfg.cache_dir) if cfg.cache_dir else None
        from clipmodel.api import resolve_device

        m = cfg.model
        auto = m.backend == m.precision == "auto" and resolve_device(m.device).type == "cpu"
        try:
            if auto:  # the fastest faithful path, self-checked (clipmodel.fastpath)
                model, preprocess = clipmodel.load(
                    source, device="cpu", download_root=cache, backend="auto",
                    precision="auto", threads=threads, image_sessions=plan.model_sessions,
                )  # fmt: skip
            elif backend == "onnxruntime":
                model, preprocess = clipmodel.load(
                    source, device="cpu", download_root=cache, backend=backend,
                    precision=cfg.model.precision, threads=threads,
                    image_sessions=plan.model_sessions,
                )  # fmt: skip
            else:
                model, preprocess = clipmodel.load(
                    source, device=cfg.model.device, download_root=cache,
                    precision=effective_precision(cfg.model.precision, cfg.model.device),
                )  # fmt: skip
        except clipmodel.CheckpointUnavailableError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise EncoderUnavailableError(first) from None
        except (RuntimeError, ValueError, OSError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise EncoderUnavailableError(f"cannot load model {source}: {first}") from None
        name = cfg.model.name if weights is None else model.model_name
        return cls(model, preprocess, name, fast_resize=cfg.index.fast_resize)

    @property
    def tensor_preprocess(self) -> Callable[[Any], Any]:
        """The model's preprocessing (image -> normalised float tensor; OpenAI's for CLIP), for
        ``clipmodel``'s helpers, which every model's ``encode_image`` accepts."""
        return self._preprocess

    def preprocess(self, image: Any) -> Any:
        """The model input for one image (a PIL image or a path): a normalised float tensor,
        or 8-bit pixel patches for a model that reads them."""
        return self.prepare(image)[0]

    def prepare(self, image: Any, fast_resize: bool | None = None) -> tuple[Any, Any]:
        """:meth:`preprocess`, and the resized image (short side at the model's resolution)
        the input was cropped from, or None where OpenAI's preprocessing ran as one step.
        The indexer makes thumbnails from it: a small shrink instead of a large one.
        ``fast_resize`` overrides the encoder's setting for this call."""
        fast = self.fast_resize if fast_resize is None else fast_resize
        if not (fast or self._pixels):
            return self._preprocess(image), None  # OpenAI's preprocessing, exactly
        from clipmodel import preprocess as pp

        n = self.image_resolution
        img = pp.to_supported_mode(
            pp.open_image(image, getattr(self._preprocess, "max_pixels", None))
        )
        if not getattr(self._preprocess, "is_openai", True):  # another family's (e.g. SigLIP)
            resized = self._preprocess.resize(img, fast)
            # a squashed (uncropped) image keeps no aspect ratio: no thumbnail source
            return self._preprocess.finish(resized), resized if self._preprocess.spec.crop else None
        resize = pp.resize_short_side_fast if fast else pp.resize_short_side
        resized = resize(img, n)
        img = pp.center_crop(resized, n)
        if not self._pixels:
            return pp.to_tensor(img), resized
        from clipmodel.onnx_backend import image_patches

        rgb = img if img.mode == "RGB" else img.convert("RGB")
        return image_patches(np.asarray(rgb), self.model.patch_size), resized

    @property
    def runtime(self) -> str:
        """What runs the model, e.g. "torch bfloat16 on cpu" or "onnxruntime int8 on cpu"."""
        path = getattr(self.model, "fast_path", None)
        if path is not None and path.startswith("onnxruntime"):
            return f"{path} on cpu"
        quantize = getattr(self.model, "quantize", None)
        if quantize is not None:
            return f"onnxruntime {quantize} on cpu"
        device, dtype = self._device_dtype()
        return f"torch {str(dtype).removeprefix('torch.')} on {device}"

    def fidelity(self) -> dict | None:
        """The self-checked path that runs and what it measured (``clipmodel.fastpath``), or
        None for a model loaded without a check (an explicit torch backend or precision)."""
        if getattr(self.model, "fidelity", None) is None:
            return None
        from clipmodel.fastpath import describe

        return describe(self.model)

    def _device_dtype(self) -> tuple[Any, Any]:
        if hasattr(self.model, "quantize"):  # OnnxCLIP: float32 in, CPU
            return self.model.device, self.model.dtype
        p = next(self.model.parameters())
        return p.device, p.dtype

    def encode_images(self, batch: list[Any]) -> np.ndarray:
        import torch

        if self._pixels:
            return _normalize(self.model.encode_pixels(np.stack(batch)).numpy())
        device, dtype = self._device_dtype()
        with torch.inference_mode():
            x = torch.stack(list(batch)).to(device=device, dtype=dtype)
            out = self.model.encode_image(x).float().cpu().numpy()
        return _normalize(out)

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        """Normalised text embeddings; repeated texts come from a bounded LRU cache."""
        import torch

        import clipmodel

        texts = list(texts)
        missing = list(dict.fromkeys(t for t in texts if t not in self._text_cache))
        if missing:
            with torch.inference_mode():
                out = _normalize(
                    clipmodel.encode_text_long(self.model, missing).float().cpu().numpy()
                )
            for text, vec in zip(missing, out):
                self._text_cache[text] = vec
        for text in texts:
            self._text_cache.move_to_end(text)
        while len(self._text_cache) > TEXT_CACHE_SIZE:
            self._text_cache.popitem(last=False)
        return (
            np.stack([self._text_cache[t] for t in texts])
            if texts
            else np.empty((0, self.identity.embed_dim), np.float32)
        )


class HashEncoder:
    """A deterministic model-free encoder (pixels -> random projection) for tests and demos."""

    def __init__(self, dim: int = 32, resolution: int = 16):
        self.image_resolution = resolution
        self._rng = np.random.default_rng(0)
        self._proj = self._rng.standard_normal((3 * resolution * resolution, dim)).astype(
            np.float32
        )
        self.identity = ModelIdentity("hash-encoder", "0" * 64, dim, '{"resolution": 16}')

    def preprocess(self, image: Any) -> np.ndarray:
        img = image.convert("RGB").resize((self.image_resolution,) * 2)
        return np.asarray(img, dtype=np.float32).reshape(-1) / 255.0 - 0.5

    def encode_images(self, batch: list[Any]) -> np.ndarray:
        return _normalize(np.stack(batch) @ self._proj)

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        rows = []
        for t in texts:
            seed = int.from_bytes(hashlib.sha256(t.encode()).digest()[:8], "little")
            rows.append(np.random.default_rng(seed).standard_normal(self._proj.shape[1]))
        return _normalize(np.asarray(rows))


def ordered_map(
    fn: Callable[[T], R], items: Iterable[T], workers: int, max_pending: int
) -> Iterator[R]:
    """``map(fn, items)`` on ``workers`` threads, in order, with at most ``max_pending`` queued.

    The bound keeps memory flat (decoded images wait in a short queue for the model) and lets
    decoding overlap with encoding in the consuming thread.
    """
    if workers <= 0:
        yield from map(fn, items)
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode") as pool:
        pending: deque = deque()
        try:
            for item in items:
                pending.append(pool.submit(fn, item))
                if len(pending) >= max_pending:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for fut in pending:
                fut.cancel()
