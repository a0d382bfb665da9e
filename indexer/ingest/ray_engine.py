"""``index.engine: ray``: decoding and encoding on a Ray cluster, committing on the driver.

The driver scans the roots and decides per file exactly as :class:`Indexer` does (unchanged,
same content, moved, copied: see :mod:`indexer.ingest.pipeline`); the files left to read go
through a Ray Data ``map_batches`` over a pool of :class:`EncodeActor` (each loads the model
once). An actor runs the local pipeline's own per-file step (read, hash, same/known check,
decode, thumbnail) and encodes its batch; results stream back in order and are committed in
ordered batches by the inherited ``_handle``/``_commit``. A dead actor is restarted and its
batch retried (Ray Data's actor pool: ``max_restarts``/``max_task_retries`` -1); a killed
driver leaves the committed batches, and the next run skips them (same size and mtime).

``ray`` is imported only here, inside functions: ``import indexer`` never loads it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import socket
import sys
from concurrent.futures import Future
from dataclasses import replace
from pathlib import Path

import numpy as np

from indexer.config import Config
from indexer.embed.encoder import ClipEncoder, ordered_map
from indexer.embed.images import setup_codecs
from indexer.ingest.pipeline import Indexer, IndexReport, _Result, _Work
from indexer.ingest.scan import FileEntry
from indexer.store import Changes

# Test hooks (real process deaths and an encode log; see tests/test_index_ray.py).
ENCODE_LOG_ENV = "CLIPSEARCH_RAY_ENCODE_LOG"  # actors append the paths they encoded
DIE_ENV = "CLIPSEARCH_RAY_DIE_AFTER"  # "N:MARKER": the first actor to finish N batches exits
DEFAULT_BATCH = 64


def indexer_class(cfg: Config) -> type[Indexer]:
    """The indexer for ``index.engine``."""
    return RayIndexer if cfg.index.engine == "ray" else Indexer


def map_path(path: str, mapping: dict) -> str:
    """``path`` with its longest matching prefix of ``mapping`` (driver: worker) replaced."""
    best = max((p for p in mapping if path == p or path.startswith(p.rstrip("/") + "/")),
               key=len, default=None)  # fmt: skip
    return path if best is None else mapping[best] + path[len(best):]


def node_mapping(path_map: dict, names: list[str]) -> dict:
    """The prefix mapping of this node: its first name (hostname, IP) in ``path_map``, else "*"."""
    for name in [*names, "*"]:
        if name in path_map:
            return {str(k): str(v) for k, v in dict(path_map[name]).items()}
    return {}


class EncodeActor:
    """One Ray actor: loads the model once, then reads, decodes and encodes batches of files."""

    def __init__(self, cfg: Config, thumb_dir: str, jpeg_draft: bool, known, roots: list[str]):
        import ray

        host, ip = socket.gethostname(), ray.util.get_node_ip_address()
        self.node = f"{host} ({ip})"
        self.mapping = node_mapping(cfg.index.ray.path_map, [host, ip])
        encoder = ClipEncoder.from_config(cfg)
        self.local = Indexer(None, encoder, cfg, Path(map_path(thumb_dir, self.mapping)))
        self.local.jpeg_draft, self.local._heif = jpeg_draft, setup_codecs()
        self.local._known = {h: True for h in known}
        self.bad_roots: dict[str, str] = {}  # driver root -> why this node cannot read it
        for root in roots:
            here = map_path(root, self.mapping)
            try:
                os.listdir(here)
            except OSError as exc:
                self.bad_roots[root] = f"{here}: {exc.strerror or exc}"
        self.batches = 0

    def __call__(self, batch: dict) -> dict:
        works, out = [], []
        for path, root, size, mtime, old_hash, old_ok in zip(
            batch["path"], batch["root"], batch["size"], batch["mtime_ns"], batch["old_hash"],
            batch["old_ok"],
        ):  # fmt: skip
            path, root = os.fsdecode(bytes(path)), os.fsdecode(bytes(root))
            entry = FileEntry(map_path(path, self.mapping), root, int(size), int(mtime))
            works.append(_Work(entry, None, old_hash or None, bool(old_ok)))
        workers = self.local._plan.decode_workers  # index.ray.num_cpus threads
        results = list(ordered_map(self._one, works, workers, max_pending=2 * workers))
        todo = [r for r in results if r.kind == "encode"]
        if todo:
            vectors = self.local.encoder.encode_images([r.tensor for r in todo])
            for r, v in zip(todo, vectors, strict=True):
                r.tensor = np.asarray(v, np.float32)
        self.batches += 1
        self._test_hooks(batch, results)
        for r in results:
            out.append(pickle.dumps({"kind": r.kind, "digest": r.digest, "vector": r.tensor,
                                     "meta": r.meta, "error": r.error, "node": self.node}))  # fmt: skip
        return {"i": np.asarray(batch["i"]), "blob": np.array(out, dtype=object)}

    def _one(self, w: _Work) -> _Result:
        if w.entry.root in self.bad_roots:
            return _Result(w, "unreachable", error=self.bad_roots[w.entry.root])
        return self.local._process(w)  # the local pipeline's own read/hash/decode step

    def _test_hooks(self, batch: dict, results: list[_Result]) -> None:
        spec = os.environ.get(DIE_ENV)
        if spec:
            after, marker = spec.split(":", 1)
            if self.batches >= int(after) and not os.path.exists(marker):
                Path(marker).write_text(f"{os.getpid()}\n")
                os._exit(1)  # a real death before the batch is delivered: Ray must retry it
        log = os.environ.get(ENCODE_LOG_ENV)
        if log:
            lines = b"".join(bytes(p) + b"\n" for p, r in zip(batch["path"], results)
                             if r.kind == "encode")  # fmt: skip
            fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, lines)
            finally:
                os.close(fd)


class _Done(Future):
    def __init__(self, value: np.ndarray):
        super().__init__()
        self.set_result(value)


def connect(cfg: Config) -> bool:
    """Join ``index.ray_address`` (or start a local cluster); True when this call started Ray."""
    import ray

    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    quiet = {"log_to_driver": False, "logging_level": logging.WARNING}
    if cfg.index.ray_address:
        ray.init(address=cfg.index.ray_address, **quiet)
    else:  # a cluster of this machine alone listens on loopback only
        ray.init(include_dashboard=False, _node_ip_address="127.0.0.1", **quiet)
    return True


def actor_resources(cfg: Config) -> tuple[int, float, float]:
    """(actors, GPUs per actor, CPUs per actor) for the connected cluster."""
    import ray

    rc = cfg.index.ray
    total = ray.cluster_resources()
    gpus_there = total.get("GPU", 0)
    per_gpu = rc.num_gpus if rc.num_gpus is not None else (1.0 if gpus_there else 0.0)
    if rc.actors:
        return rc.actors, per_gpu, rc.num_cpus
    if per_gpu:
        return max(1, int(gpus_there // per_gpu)), per_gpu, rc.num_cpus
    return max(1, int(total.get("CPU", 1) // rc.num_cpus)), 0.0, rc.num_cpus


class RayIndexer(Indexer):
    """:class:`Indexer` whose decoding and encoding run on a Ray actor pool."""

    def _process(self, work: _Work, allow_known: bool = True) -> _Result:
        # Only the rare fallback of _handle (a copy whose source vanished mid-run) runs here,
        # on the driver: encode at once so every batch result carries its vector. Videos
        # are indexed on the driver after the photos (indexer.ingest.videos), one at a time.
        res = super()._process(work, allow_known)
        if res.kind == "encode" and res.frames is None:
            res.tensor = self.encoder.encode_images([res.tensor])[0]
        return res

    def _encode_all(self, work: list[_Work], rep: IndexReport, progress: bool) -> None:
        if not work:
            return
        # Ray prints worker and raylet messages to stdout: keep it for ``index --json``.
        with contextlib.redirect_stdout(sys.stderr):
            started = connect(self.cfg)
            try:
                self._run_ray(work, rep, progress)
            finally:
                if started:
                    import ray

                    ray.shutdown()

    def _dataset(self, work: list[_Work], bs: int):
        import ray
        import ray.data

        logging.getLogger("ray.data").setLevel(logging.WARNING)  # after Ray Data's own config
        # our own progress bar replaces Ray Data's (which would say so at every run)
        logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)
        ctx = ray.data.DataContext.get_current()
        ctx.execution_options.preserve_order = True  # commits stay in scan order
        ctx.enable_progress_bars = False
        actors, gpus, cpus = actor_resources(self.cfg)
        threads = max(1, int(cpus))
        acfg = replace(self.cfg, index=replace(self.cfg.index, torch_threads=threads,
                                               decode_workers=threads, model_sessions=0))  # fmt: skip
        known = sorted(h for h, ids in self._known.items() if ids)  # Ray Data stores it once
        # bytes: a file name need not be valid UTF-8 (Arrow strings must be)
        rows = [{"i": n, "path": os.fsencode(w.entry.path), "root": os.fsencode(w.entry.root),
                 "size": w.entry.size,
                 "mtime_ns": w.entry.mtime_ns, "old_hash": w.old_hash or "",
                 "old_ok": w.old_ok} for n, w in enumerate(work)]  # fmt: skip
        roots = sorted({w.entry.root for w in work})  # str: actors compare decoded roots
        ds = ray.data.from_items(rows, override_num_blocks=max(1, -(-len(rows) // bs)))
        return ds.map_batches(
            EncodeActor, batch_size=bs, batch_format="numpy", num_gpus=gpus, num_cpus=cpus,
            compute=ray.data.ActorPoolStrategy(size=actors),
            fn_constructor_kwargs={"cfg": acfg, "thumb_dir": os.fspath(self.thumb_dir),
                                   "jpeg_draft": self.jpeg_draft, "known": known,
                                   "roots": roots},
        )  # fmt: skip

    def _run_ray(self, work: list[_Work], rep: IndexReport, progress: bool) -> None:
        bs = self.cfg.index.ray.batch_size or self.cfg.index.batch_size or DEFAULT_BATCH
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(work), unit="img", desc="indexing (ray)", smoothing=0.1)
        changes, batch = Changes.empty(), []
        warned: set[tuple[str, str]] = set()
        try:
            for out in self._dataset(work, bs).iter_batches(batch_size=None,
                                                            batch_format="numpy"):  # fmt: skip
                for n, blob in zip(out["i"], out["blob"]):
                    r = pickle.loads(blob)
                    w = work[int(n)]
                    if bar is not None:
                        bar.update(1)
                    if r["kind"] == "unreachable":
                        rep.unreachable += 1
                        if (r["node"], w.entry.root) not in warned:
                            warned.add((r["node"], w.entry.root))
                            print(f"warning: worker {r['node']} cannot read root "
                                  f"{w.entry.root} ({r['error']}); its files are left for the "
                                  "next run (index.ray.path_map maps paths per node)",
                                  file=sys.stderr)  # fmt: skip
                        continue
                    res = _Result(w, r["kind"], r["digest"], r["vector"], r["meta"], r["error"])
                    self._handle(res, changes, batch, rep)
                    if len(batch) >= bs or len(changes) >= 4 * bs:
                        self._commit_now(changes, batch, rep)
                        changes, batch = Changes.empty(), []
                        if self.stop is not None and self.stop():
                            self.stopped = True  # the rest is left for the next run
                            return
            self._commit_now(changes, batch, rep)
        finally:
            if bar is not None:
                bar.close()

    def _commit_now(self, changes: Changes, batch: list[_Result], rep: IndexReport) -> None:
        vectors = np.stack([r.tensor for r in batch]) if batch else None
        self._commit(changes, batch, [_Done(vectors)] if batch else [], rep)
