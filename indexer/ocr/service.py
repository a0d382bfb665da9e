"""The OCR pass: read the text of the images whose vectors were written since the last pass.

It runs after the embedding, never in the encode path (``clipsearch index`` and the watch
daemon call it once their vectors are committed; ``clipsearch ocr`` catches up). Like the tags
(:mod:`indexer.tags.sync`) it follows the store's generations: the pass fixes ``upto``, the
current generation, reads the pending images in batches of ``ocr.batch_size`` and commits each
batch's text rows (:meth:`~indexer.store.IndexStore.put_texts` keeps only rows whose vector is
still the one read), then records ``upto`` as the OCR generation. An interrupted pass loses at
most one batch: images that have a row are not pending any more.

A file that cannot be read or that the engine fails on gets a row with status ``error`` and
the reason; nothing stops the run but a missing engine (:class:`OcrUnavailableError`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from indexer.config import Config
from indexer.ocr.engines import OcrEngine, OcrUnavailableError, make_engine
from indexer.store import OCR_ERROR, ImageText, IndexStore, Record


@dataclass
class OcrReport:
    """What one pass did (the ``ocr --json`` output)."""

    read: int = 0  # images read (rows written)
    with_text: int = 0  # of which some text was found in
    errors: int = 0  # images that could not be read (recorded with their reason)
    stale: int = 0  # images re-encoded meanwhile (left pending for the next pass)
    pending: int = 0  # images still pending when the pass stopped
    engines: dict[str, int] = field(default_factory=dict)  # images read per engine
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


class OcrReader:
    """Reads one image file into an :class:`ImageText` with the configured engine."""

    def __init__(self, cfg: Config, engine: OcrEngine | None = None):
        self.cfg, self.oc = cfg, cfg.ocr
        self.engine = engine if engine is not None else make_engine(self.oc.engine, self.oc.languages)

    def read(self, rec: Record) -> ImageText:
        """The text of ``rec``'s file; a bad file or an engine failure becomes an error row."""
        from PIL import Image  # here: a query process never reads text from images

        from indexer.embed.images import BadImage, decode, read_file

        t0 = time.perf_counter()
        name = self.engine.name
        if rec.is_video:  # videos are searched by their frames' vectors, not read
            return ImageText(rec.id, "", "none (video)", seconds=0.0)
        try:
            image = decode(read_file(rec.path), self.cfg.library.max_pixels).image
            scale = min(1.0, self.oc.max_side / max(image.size))
            if scale < 1.0:
                image = image.resize((max(1, round(image.width * scale)),
                                      max(1, round(image.height * scale))), Image.BILINEAR)  # fmt: skip
            lines = self.engine.read(image)
            name = getattr(self.engine, "used", self.engine.name)  # auto: the one(s) it ran
        except BadImage as exc:
            return ImageText(rec.id, "", name, OCR_ERROR, str(exc), time.perf_counter() - t0)
        except OcrUnavailableError:
            raise
        except Exception as exc:  # noqa: BLE001 - one image an engine fails on is recorded
            why = f"OCR failed: {type(exc).__name__}: {exc}"[:500]
            return ImageText(rec.id, "", name, OCR_ERROR, why, time.perf_counter() - t0)
        min_px = self.oc.min_text_px * scale
        kept = [ln.text.strip() for ln in lines if ln.text.strip()
                and ln.confidence >= self.oc.min_confidence and ln.height >= min_px]  # fmt: skip
        return ImageText(rec.id, "\n".join(kept), name, seconds=time.perf_counter() - t0)


def run_ocr(
    store: IndexStore,
    reader: OcrReader,
    stop: Callable[[], bool] | None = None,
    progress: Callable[[int], None] | None = None,
    limit: int | None = None,
) -> OcrReport:
    """Read every pending image (see the module docstring); ``stop()`` True ends the pass
    after the current batch, ``limit`` after that many images (the rest stays pending)."""
    t0 = time.monotonic()
    rep = OcrReport()
    upto = store.generation()
    size = reader.oc.batch_size
    skipped: set[int] = set()  # pending ids without a record (never written: not retried)
    finished = False
    while not (stop is not None and stop()):
        if limit is not None and rep.read + rep.stale >= limit:
            break
        n = size if limit is None else min(size, limit - rep.read - rep.stale)
        ids = [i for i in store.ocr_pending(upto, n + len(skipped)) if i not in skipped][:n]
        if not ids:
            finished = True
            break
        records = store.records(ids)
        skipped.update(i for i in ids if i not in records)
        texts = [reader.read(records[i]) for i in ids if i in records]
        written = store.put_texts(texts, upto)
        rep.stale += len(texts) - written  # re-encoded meanwhile: their newer vector is pending
        rep.read += written
        for t in texts:
            rep.engines[t.engine] = rep.engines.get(t.engine, 0) + 1
            rep.errors += t.status == OCR_ERROR
            rep.with_text += bool(t.text)
        if progress is not None:
            progress(rep.read)
    if finished:
        store.set_ocr_generation(upto)
    rep.pending = store.ocr_counts()["pending"]
    rep.seconds = round(time.monotonic() - t0, 3)
    return rep


class OcrService:
    """The Library's OCR (``lib.ocr``): the engine is made on first use, for writers."""

    def __init__(self, cfg: Config, get_store: Callable[[], IndexStore],
                 require_writer: Callable[[], None]):  # fmt: skip
        self.cfg, self._get_store, self._require_writer = cfg, get_store, require_writer
        self.reader: OcrReader | None = None

    @property
    def enabled(self) -> bool:
        return self.cfg.ocr.enabled

    def run(self, progress: Callable[[int], None] | None = None,
            stop: Callable[[], bool] | None = None, limit: int | None = None) -> OcrReport:  # fmt: skip
        """Read the images indexed since the last pass (see :func:`run_ocr`; writers only);
        a missing engine raises :class:`OcrUnavailableError` naming what to install."""
        self._require_writer()
        if self.reader is None:
            self.reader = OcrReader(self.cfg)
        return run_ocr(self._get_store(), self.reader, stop=stop, progress=progress, limit=limit)

    def image_text(self, image_id: int) -> ImageText | None:
        """The text recognised in one image (None: not read yet)."""
        return self._get_store().image_texts([int(image_id)]).get(int(image_id))

    def status(self) -> dict:
        """{"enabled", "read", "with_text", "errors", "pending"} (``status --json``)."""
        return {"enabled": self.enabled, **self._get_store().ocr_counts()}
