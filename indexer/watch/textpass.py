"""The watch daemon's OCR (``ocr.enabled``): text is read while nothing else waits.

After the daemon's batches are indexed (their vectors committed), :meth:`TextPass.ocr_pass`
reads the pending images' text in ``ocr.batch_size`` batches, and gives way as soon as a file
event arrives, a path is pending or a signal asks to stop: new photos are always indexed
first, and their text follows on the next idle turn of the loop.
"""

from __future__ import annotations

import logging
import time
from typing import Any

log = logging.getLogger("clipsearch.watch")


class TextPass:
    """The OCR part of :class:`indexer.watch.service.WatchService` (a mixin on its state)."""

    cfg: Any
    lib: Any
    events: Any
    stopping: bool
    _ocr_off = False  # the engine is missing: logged once, not retried

    def _ocr_should_yield(self) -> bool:
        return self.stopping or bool(self.events) or bool(self.queue.pending)  # type: ignore[attr-defined]

    def ocr_pass(self) -> None:
        """Read pending images' text until done or something else needs the daemon."""
        if self.lib is None or not self.cfg.ocr.enabled or self._ocr_off or self._ocr_should_yield():
            return
        from indexer.ocr.engines import OcrUnavailableError

        t0 = time.monotonic()
        try:
            if not self.lib.store.ocr_counts()["pending"]:
                return
            self._set_state("reading text")  # type: ignore[attr-defined]
            rep = self.lib.ocr.run(stop=self._ocr_should_yield)
        except OcrUnavailableError as exc:
            log.error("ocr.enabled, but %s; photos are indexed without their text", exc)
            self._ocr_off = True
            return
        except Exception as exc:  # noqa: BLE001 - keep watching; the text stays pending
            log.error("reading text failed: %s: %s", type(exc).__name__, exc)
            return
        if rep.read or rep.errors:
            log.info("text: %d photos read (%d with text, %d errors) in %.2fs, %d pending",
                     rep.read, rep.with_text, rep.errors, time.monotonic() - t0, rep.pending)  # fmt: skip
        if rep.errors:
            log.warning("text: %d photos could not be read (see `clipsearch ocr --errors`)",
                        rep.errors)  # fmt: skip
