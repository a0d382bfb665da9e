"""One indexing run: scan the roots, decode in background threads, encode in batches, store.

Per file the decision is: unchanged (same size and mtime: skipped, errors included, so bad
files are retried only when they change); same content as before (only size/mtime updated);
content already indexed under another path (a move keeps its row, id and vector; a copy gets
the vector copied; neither is re-encoded); otherwise decoded and encoded. Rows whose files are
gone are swept at the end, after moves have claimed theirs.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np

from indexer.config import Config
from indexer.embed.encoder import Encoder, ordered_map, thread_plan
from indexer.embed.images import (
    BadImage,
    content_hash,
    decode,
    draft_target,
    read_file,
    setup_codecs,
    thumbnail_source,
    write_thumbnail,
)
from indexer.embed.thumbs import thumbnail_file
from indexer.embed.video import is_video
from indexer.ingest.scan import (
    FileEntry,
    check_roots,
    offline_roots,
    under_any,
    walk,
    with_raw_twins,
)
from indexer.ingest.videos import VideoIngest
from indexer.ingest.work import IndexReport, _Result, _Work
from indexer.store import STATUS_ERROR, STATUS_OK, Changes, IndexStore


class PathOutsideRootsError(ValueError):
    """``clipsearch index PATH`` was given a path outside every library root."""


def _targets(
    cfg: Config, paths: list[str] | None, skip_missing_roots: bool = False
) -> list[tuple[Path, Path]]:
    roots = [Path(os.path.abspath(r)) for r in cfg.roots]
    if not skip_missing_roots:
        check_roots(roots)
    if not paths:
        return [(r, r) for r in roots if r.is_dir()]
    out = []
    for p in paths:
        ap = Path(os.path.abspath(p))
        root = next((r for r in roots if ap == r or r in ap.parents), None)
        if root is None:
            raise PathOutsideRootsError(f"{p} is not inside any library root (library.roots)")
        out.append((ap, root))  # a path that no longer exists: its rows are swept
    return out


class Indexer:
    """Runs :meth:`run` over a writer :class:`IndexStore` with an :class:`Encoder`."""

    # Set by the caller before run(): ``skip_missing_roots`` indexes the roots that are there
    # (the watch daemon: a missing root is offline, its rows are kept); ``stop()`` returning
    # True ends the run after the current model batch (committed; the sweep is left for the
    # next run), and sets ``stopped``.
    skip_missing_roots: bool = False
    sweep_unconfigured: bool = True
    # JPEG draft decoding (index.jpeg_draft), unless its self-check refused it
    # (indexer.ingest.fastpaths; set by the Library)
    jpeg_draft: bool = True
    stop = None
    stopped: bool = False

    def __init__(
        self, store: IndexStore, encoder: Encoder, cfg: Config, thumb_dir: Path, tagger=None
    ):
        self.store, self.encoder, self.cfg, self.thumb_dir = store, encoder, cfg, thumb_dir
        # tags.sync.Tagger (tags.auto): tags each committed batch's vectors, catches up at the end
        self.tagger = tagger
        self._plan = thread_plan(cfg)
        self._model_idle = threading.Event()
        self._model_idle.set()
        # JPEGs decode at the smallest DCT scale that still leaves 1.5x the model's input
        # (bench/bench_fidelity.py: closer to 1x costs fidelity; 12 MP photos decode at 1/8).
        self.draft = max(draft_target(encoder.image_resolution), cfg.index.thumbnail_size)

    def _process(self, work: _Work, allow_known: bool = True) -> _Result:
        """Worker thread: read, hash, and (when the content is new) decode and preprocess."""
        if is_video(work.entry.path):
            return self._videos.process(work, allow_known)
        self._model_idle.wait()  # taking turns with the model (see encoder.ThreadPlan)
        try:
            data = read_file(work.entry.path)
            digest = content_hash(data)
            if work.old_ok and digest == work.old_hash:
                return _Result(work, "same", digest)
            if allow_known and self._known.get(digest):
                return _Result(work, "known", digest)
            dec = decode(
                data,
                self.cfg.library.max_pixels,
                self.draft if self.cfg.index.jpeg_draft and self.jpeg_draft else None,
                name=work.entry.path,
                min_preview=self.draft,  # RAW: a preview this large
            )
            del data
            prepare = getattr(self.encoder, "prepare", None)
            tensor, resized = (
                prepare(dec.image) if prepare else (self.encoder.preprocess(dec.image), None)
            )
            try:
                write_thumbnail(
                    thumbnail_source(dec.image, resized, self.cfg.index.thumbnail_size,
                                     self.cfg.index.fast_resize),
                    thumbnail_file(self.thumb_dir, digest), self.cfg.index.thumbnail_size,
                    fast=self.cfg.index.fast_resize, full_size=dec.image.size,
                )  # fmt: skip
            except OSError:
                pass  # a missing thumbnail is not worth failing the image for
            meta = {"width": dec.width, "height": dec.height, "taken_at": dec.taken_at,
                    "camera": dec.camera}  # fmt: skip
            return _Result(work, "encode", digest, tensor, meta)
        except BadImage as exc:
            reason = str(exc)
            ext = os.path.splitext(work.entry.path)[1].lower()
            if ext in (".heic", ".heif") and not self._heif and "not a recognised" in reason:
                reason = (
                    "HEIC/HEIF needs the optional pillow-heif package (pip install pillow-heif)"
                )
            return _Result(work, "error", error=reason)
        except Exception as exc:  # noqa: BLE001 - never let one file stop the run
            return _Result(work, "error", error=f"{type(exc).__name__}: {exc}")

    def run(self, paths: list[str] | None = None, progress: bool = True) -> IndexReport:
        t0 = time.monotonic()
        self._heif = setup_codecs()
        self.store.bind_model(self.encoder.identity)
        targets = with_raw_twins(_targets(self.cfg, paths, self.skip_missing_roots), self.cfg)
        if self.tagger is not None:
            self.tagger.start(self.store)
        found = walk(
            targets, self.cfg.library.extensions, self.cfg.library.follow_symlinks,
            exclude=[self.cfg.index_dir], raw_with_jpeg=self.cfg.library.raw_with_jpeg,
        )  # fmt: skip
        rep = IndexReport(scanned=len(found.entries), unlisted_folders=found.unlisted)
        prefixes = [os.fsencode(s) for s, _ in targets]
        unlisted = [os.fsencode(u) for u in found.unlisted]
        # A full run also sweeps rows of roots no longer configured (not in a shared store:
        # other machines' roots); a partial run only its paths.
        in_targets, everything = under_any(prefixes), not paths and self.sweep_unconfigured
        rows = {r[1]: r for r in self.store.rows_for_scan() if everything or in_targets(r[1])}
        self._known: dict[str, list[int]] = {}
        changes, work = Changes.empty(), []
        for e in found.entries:
            key = os.fsencode(e.path)
            row = rows.pop(key, None)
            if row is not None and row[2] == e.size and row[3] == e.mtime_ns:
                rep.unchanged += 1
            elif e.error:
                changes.upserts.append(self._error_row(e, row[0] if row else None, None, e.error))
                rep.errors += 1
            else:
                work.append(_Work(e, row[0] if row else None, row[5] if row else None,
                                  bool(row and row[4] == STATUS_OK)))  # fmt: skip
        # Rows whose file vanished (excluding unlistable folders): move candidates, then swept.
        # Rows of offline roots (unplugged drive) are neither move candidates nor swept.
        kept = under_any(unlisted + offline_roots(self.cfg))
        self._missing = {r[0]: r for k, r in rows.items() if not kept(k)}
        self._flush(changes, rep)  # stat-level errors first: their rows lose their vectors
        self._known = self.store.hashes_with_vectors()
        self._videos = VideoIngest(self)
        self._encode_all([w for w in work if not is_video(w.entry.path)], rep, progress)
        if not self.stopped:
            self._videos.run([w for w in work if is_video(w.entry.path)], rep, progress)
        if self._missing and not self.stopped:
            gone = under_any(offline_roots(self.cfg))  # a drive unplugged during the run
            changes = Changes.empty()
            changes.deletes = sorted(i for i, r in self._missing.items() if not gone(r[1]))
            rep.removed = len(changes.deletes)
            self._flush(changes, rep)
        if self.tagger is not None:
            self.tagger.finish(self.store)  # pending vectors; the full pass if tags changed
        self.store.maintain()
        self.store.save(force=True)
        rep.seconds = round(time.monotonic() - t0, 3)
        rep.images_per_second = round(rep.encoded / rep.seconds, 2) if rep.seconds else 0.0
        return rep

    def _encode_all(self, work: list[_Work], rep: IndexReport, progress: bool) -> None:
        plan = self._plan
        bs = plan.batch_size
        workers = plan.decode_workers
        bar = None
        if progress and work:
            from tqdm import tqdm

            bar = tqdm(total=len(work), unit="img", desc="indexing", smoothing=0.1)
        changes, batch = Changes.empty(), []
        # Batches are encoded in the background while the next ones are gathered and earlier
        # ones stored; they are committed in order. With several model sessions, a batch goes
        # to them in parts of the size the model prefers, so all stay busy to the last image.
        depth = 1 if plan.take_turns else plan.model_sessions
        part = (getattr(self.encoder, "rows_per_call", 0) or bs) if depth > 1 else bs

        def encode(pool: ThreadPoolExecutor, batch: list[_Result]) -> list[Future]:
            return [pool.submit(self._encode, batch[i : i + part])
                    for i in range(0, len(batch), part)]  # fmt: skip

        pending: deque = deque()
        try:
            with ThreadPoolExecutor(depth, thread_name_prefix="encode") as model:
                for res in ordered_map(self._process, work, workers, max_pending=2 * bs + workers):
                    self._handle(res, changes, batch, rep)
                    if len(batch) >= bs or len(changes) >= 4 * bs:
                        pending.append((changes, batch, encode(model, batch)))
                        changes, batch = Changes.empty(), []
                        while len(pending) > depth:
                            self._commit(*pending.popleft(), rep)
                        if self.stop is not None and self.stop():
                            self.stopped = True  # the rest is left for the next run
                            break
                    if bar is not None:
                        bar.update(1)
                else:
                    pending.append((changes, batch, encode(model, batch)))
                while pending:
                    self._commit(*pending.popleft(), rep)
        finally:
            if bar is not None:
                bar.close()

    def _handle(self, res: _Result, changes: Changes, batch: list, rep: IndexReport) -> None:
        e, w = res.work.entry, res.work
        if res.kind in ("error", "encode") and w.row_id is not None and w.old_hash:
            # The row's old content is going away: it can no longer serve moves or copies.
            old = self._known.get(w.old_hash, [])
            if w.row_id in old:
                old.remove(w.row_id)
        if res.kind == "error":
            changes.upserts.append(self._error_row(e, w.row_id, res.digest, res.error))
            rep.errors += 1
        elif res.kind == "same":
            changes.touches.append({"id": w.row_id, "size": e.size, "mtime_ns": e.mtime_ns})
            rep.touched += 1
        elif self._reuse(res, changes, rep):
            pass
        elif res.kind == "known":  # its source vanished meanwhile: decode after all
            self._handle(self._process(w, allow_known=False), changes, batch, rep)
        else:
            batch.append(res)

    def _reuse(self, res: _Result, changes: Changes, rep: IndexReport) -> bool:
        """Content already has a vector: move the row of a vanished file, else copy the vector.

        False when no indexed row has this content (the image must be encoded).
        """
        e, w = res.work.entry, res.work
        candidates = [i for i in self._known.get(res.digest, []) if i != w.row_id]
        if not candidates:
            return False
        if w.row_id is None:
            moved = next((i for i in candidates if i in self._missing), None)
            if moved is not None:
                del self._missing[moved]
                changes.moves.append({"id": moved, "path": os.fsencode(e.path),
                                      "root": os.fsencode(e.root), "size": e.size,
                                      "mtime_ns": e.mtime_ns})  # fmt: skip
                rep.moved += 1
                return True
        src = candidates[0]
        row = self._row(e, w.row_id, res.digest)
        row.update(status=STATUS_OK, error=None, copy_from=src)
        self._copy_meta(row, src)
        changes.upserts.append(row)
        rep.copied += 1
        return True

    def _copy_meta(self, row: dict, src: int) -> None:
        rec = self.store.records([src]).get(src)
        if rec is not None:
            row.update(width=rec.width, height=rec.height, taken_at=rec.taken_at,
                       camera=rec.camera, duration_ms=rec.duration_ms)  # fmt: skip

    def _encode(self, batch: list[_Result]) -> np.ndarray:
        return self._encode_tensors([r.tensor for r in batch])

    def _encode_tensors(self, tensors: list) -> np.ndarray:
        if self._plan.take_turns:
            self._model_idle.clear()
        try:
            return self.encoder.encode_images(tensors)
        finally:
            self._model_idle.set()

    def _commit(
        self, changes: Changes, batch: list[_Result], parts: list[Future], rep: IndexReport
    ) -> None:
        """Store ``changes`` and the encoded ``batch`` (``parts``: :meth:`_encode` of its parts,
        in order)."""
        if batch:
            vectors = np.concatenate([p.result() for p in parts])
            for r, v in zip(batch, vectors, strict=True):
                row = self._row(r.work.entry, r.work.row_id, r.digest)
                row.update(r.meta, status=STATUS_OK, error=None, vector=v)
                changes.upserts.append(row)
                if r.work.row_id is None:
                    rep.added += 1
                else:
                    rep.updated += 1
            rep.encoded += len(batch)
        self._flush(changes, rep)

    def _flush(self, changes: Changes, rep: IndexReport) -> None:
        if not len(changes):
            return
        ids = self.store.apply(changes)
        if self.tagger is not None:
            self.tagger.after_commit(self.store)
        for up in changes.upserts:
            if up.get("status") == STATUS_OK and up.get("content_hash"):
                lst = self._known.setdefault(up["content_hash"], [])
                if ids[up["path"]] not in lst:
                    lst.append(ids[up["path"]])
        self.store.save(interval=self.cfg.index.save_interval)

    @staticmethod
    def _row(e: FileEntry, row_id: int | None, digest: str | None) -> dict:
        row = {"path": os.fsencode(e.path), "root": os.fsencode(e.root), "size": e.size,
               "mtime_ns": e.mtime_ns, "content_hash": digest}  # fmt: skip
        if row_id is not None:
            row["id"] = row_id
        return row

    def _error_row(self, e: FileEntry, row_id: int | None, digest: str | None, reason: str) -> dict:
        row = self._row(e, row_id, digest)
        row.update(status=STATUS_ERROR, error=reason, width=None, height=None, taken_at=None,
                   camera=None, duration_ms=None)  # fmt: skip
        return row
