"""Videos in an indexing run: one at a time, after the photos.

A video is sampled into frames (:func:`indexer.embed.video.decode_video`: scene changes and at
least every ``video.interval_s``), the frames are encoded in model batches, and the video is
stored as one image row whose vector is the normalised mean of its frames, with the frames and
their times beside it (one transaction per video). Only one video's frames are in memory at a
time: a video of 120 frames holds ~70 MB of model input, so videos do not join the photo
pipeline's queues. Moves, copies and unchanged content are decided exactly as for photos.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from indexer.config import Config
from indexer.embed.images import BadImage, write_thumbnail
from indexer.embed.thumbs import moment_thumbnail, thumbnail_file
from indexer.ingest.work import IndexReport, _Result, _Work
from indexer.store import STATUS_OK, Changes


def limits(cfg: Config):  # noqa: ANN201 - indexer.embed.video.VideoLimits (imported lazily)
    """The decoder's limits from the ``video`` section."""
    from indexer.embed.video import VideoLimits

    v = cfg.video
    return VideoLimits(
        interval_s=v.interval_s, scene_threshold=v.scene_threshold, max_frames=v.max_frames,
        max_seconds=v.max_seconds, max_bytes=v.max_mb * 2**20, keyframes_only=v.keyframes_only,
    )  # fmt: skip


class VideoIngest:
    """The video half of :class:`~indexer.ingest.pipeline.Indexer` (it holds the store,
    encoder and report; this decides, samples, encodes and commits each video)."""

    def __init__(self, indexer: Any) -> None:  # the pipeline's Indexer (it imports this)
        self.ix = indexer
        self.limits = limits(indexer.cfg)

    def process(self, work: _Work, allow_known: bool = True) -> _Result:
        """Hash the file (streamed) and, when its content is new, sample and prepare frames."""
        from indexer.embed.video import decode_video, file_digest

        ix = self.ix
        try:
            digest = file_digest(work.entry.path)
            if work.old_ok and digest == work.old_hash:
                return _Result(work, "same", digest)
            if allow_known and ix._known.get(digest):
                return _Result(work, "known", digest)
            dv = decode_video(work.entry.path, self.limits, max_side=ix.draft)
            prepare = getattr(ix.encoder, "prepare", None)
            tensors = [prepare(f.image)[0] if prepare else ix.encoder.preprocess(f.image)
                       for f in dv.frames]  # fmt: skip
            meta = {"width": dv.width, "height": dv.height, "taken_at": dv.taken_at,
                    "camera": dv.camera, "duration_ms": dv.duration_ms}  # fmt: skip
            res = _Result(work, "encode", digest, tensors, meta)
            res.frames = dv.frames
            return res
        except BadImage as exc:
            return _Result(work, "error", error=str(exc))
        except ImportError:
            return _Result(work, "error", error="video support not installed: pip install 'clipsearch[video]'")  # fmt: skip
        except Exception as exc:  # noqa: BLE001 - never let one file stop the run
            return _Result(work, "error", error=f"{type(exc).__name__}: {exc}")

    def run(self, work: list[_Work], rep: IndexReport, progress: bool) -> None:
        """Index ``work`` (videos only), committing each video as it is done."""
        ix = self.ix
        bar = None
        if progress and work:
            from tqdm import tqdm

            bar = tqdm(total=len(work), unit="video", desc="videos")
        try:
            for w in work:
                if ix.stop is not None and ix.stop():
                    ix.stopped = True
                    break
                changes, batch = Changes.empty(), []
                ix._handle(self.process(w), changes, batch, rep)
                for res in batch:  # new content: encode its frames
                    changes.upserts.append(self._row(res))
                    rep.added += res.work.row_id is None
                    rep.updated += res.work.row_id is not None
                    rep.encoded += 1
                ix._flush(changes, rep)
                if bar is not None:
                    bar.update(1)
        finally:
            if bar is not None:
                bar.close()

    def _row(self, res: _Result) -> dict:
        """The upsert of one sampled video: its frames encoded, the summary vector, thumbnails."""
        ix = self.ix
        bs = ix._plan.batch_size
        parts = [ix._encode_tensors(res.tensor[i : i + bs]) for i in range(0, len(res.tensor), bs)]
        vecs = np.concatenate(parts).astype(np.float32)
        vecs /= np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
        times = np.asarray([f.t_ms for f in res.frames], dtype=np.int64)
        mean = vecs.mean(axis=0)
        self._thumbnails(res, vecs @ mean)
        row = ix._row(res.work.entry, res.work.row_id, res.digest)
        row.update(res.meta, status=STATUS_OK, error=None, vector=mean, frames=(times, vecs))
        return row

    def _thumbnails(self, res: _Result, typicality: np.ndarray) -> None:
        """The video's thumbnail (its most typical frame) and one per sampled frame."""
        cfg, thumbs = self.ix.cfg, self.ix.thumb_dir
        size, fast = cfg.index.thumbnail_size, cfg.index.fast_resize
        poster = res.frames[int(np.argmax(typicality))].image
        try:
            write_thumbnail(poster, thumbnail_file(thumbs, res.digest), size, fast=fast)
            for f in res.frames:
                name = moment_thumbnail(res.digest, f.t_ms)
                write_thumbnail(f.image, thumbnail_file(thumbs, name), size, fast=fast)
        except OSError:
            pass  # a missing thumbnail is not worth failing the video for
