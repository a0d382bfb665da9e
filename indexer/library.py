"""Library: the one API the CLI, the watch daemon and the UI use.

    with Library.open(load_config(), writer=True) as lib:
        lib.index()
    with Library.open(cfg) as lib:              # read-only: works while a writer runs
        for hit in lib.search("a dog on the beach", k=10).hits:
            print(hit.score, hit.path, lib.thumbnail_path(hit.id))

``index.dir`` holds ``thumbs/ab/<content hash>.jpg`` (thumbnails, shared by versions) and, by
default, the SQLite + FAISS versions (``CURRENT``, ``writer.lock``, ``v<n>/``: see
:class:`indexer.store.location.DirectoryLocation`); ``index.database`` puts them in PostgreSQL.
``reindex`` builds ``v<n+1>`` beside the active version with the newly configured model and
switches ``CURRENT`` only when it is complete; readers switch on their next query.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from indexer.config import Config
from indexer.embed.encoder import ClipEncoder, Encoder, thread_plan
from indexer.embed.query import reader_encoder
from indexer.embed.thumbs import moment_thumbnail, remove_thumbnails, thumbnail_file
from indexer.library_status import FAST_PATHS_KEY, status_document
from indexer.search.engine import SearchEngine, SearchResults
from indexer.store import (
    IndexBusyError,
    IndexMissingError,
    IndexStore,
    Record,
    StoreUnavailableError,
    open_location,
    set_search_threads,
)
from indexer.watch.status import read_status as read_watch_status
from indexer.watch.status import watch_status

if TYPE_CHECKING:  # the services are imported where first used: a query starts faster
    from indexer.ingest.pipeline import IndexReport
    from indexer.learn.service import ConceptService
    from indexer.ocr.service import OcrService
    from indexer.search.albums import AlbumService
    from indexer.tags.duplicates import DuplicateGroup
    from indexer.tags.service import TagService
    from indexer.tags.sync import TagReport
    from indexer.tags.vocabulary import TagList, Vocabulary

THUMBS_NAME = "thumbs"


class Library:
    """An index directory opened for reading, or for writing (holding the writer lock).

    Composes the active :class:`~indexer.store.IndexStore`, the encoder, a
    :class:`~indexer.search.engine.SearchEngine`, a :class:`~indexer.tags.service.TagService`
    (``tags``; the tag methods below delegate to it) and the OCR (``ocr``).
    """

    def __init__(self, cfg: Config, writer: bool = False, encoder: Encoder | None = None):
        self.cfg = cfg
        self.writer = writer
        self.dir = cfg.index_dir
        self.thumb_dir = cfg.thumbs_dir
        self._encoder = encoder
        self._fast_paths_recorded: dict | None = None
        # SQLite versions in index.dir, or PostgreSQL (readers read a replica when configured)
        self.location = open_location(self.dir, cfg.database_url if writer else cfg.read_database_url)
        self._lock = self.location.writer_lock(cfg.roots) if writer else None
        self.versions = self.location.versions
        self._store: IndexStore | None = None
        self._current_sig: tuple | None = None
        self._mutex = threading.RLock()  # one Library may be shared by threads (e.g. the UI)
        self.search_engine = SearchEngine(self._get_store, self.encoder,
                                          lambda tags: self.tags.ids_with_tags(tags),
                                          lambda names: self.concepts.direction(names))  # fmt: skip
        if not writer:
            # One query at a time: a single FAISS thread is as fast and never stalls on an
            # OpenMP barrier while another process (a running indexer) holds the other core.
            set_search_threads(1)

    @cached_property
    def tags(self) -> TagService:
        """Tags, their vocabulary and duplicates (the services are made on first use)."""
        from indexer.tags.service import TagService

        tags = TagService(self.cfg, self._get_store, self.encoder)
        tags.always_shown = lambda: {c.name for c in self._get_store().concepts()}
        return tags

    @cached_property
    def concepts(self) -> ConceptService:
        from indexer.learn.service import ConceptService

        return ConceptService(self._get_store, self.encoder, self.search_engine.resolve_ids,
                              lambda: set(self.tags.vocabulary().tags), self._require_writer)  # fmt: skip

    @cached_property
    def albums(self) -> AlbumService:
        from indexer.search.albums import AlbumService

        return AlbumService(self._get_store, self.search, self._require_writer)

    @cached_property
    def ocr(self) -> OcrService:  # text in images
        from indexer.ocr.service import OcrService

        return OcrService(self.cfg, self._get_store, self._require_writer)

    @classmethod
    def open(cls, cfg: Config, writer: bool = False, encoder: Encoder | None = None) -> Library:
        """Open the index in ``cfg.index_dir`` (writers take the lock and repair the index)."""
        lib = cls(cfg, writer, encoder)
        try:
            if lib._lock is not None:
                lib._lock.acquire()
                lib._clean_leftovers()
            lib._get_store()
        except BaseException:
            lib.close()
            raise
        return lib

    def _clean_leftovers(self) -> None:
        """Remove what a killed writer left (we hold the lock): half-written thumbnails and
        the version of an interrupted reindex (only while no other writer shares the index)."""
        with self._lock.exclusive() as alone:
            if alone:
                remove_thumbnails(self.thumb_dir)
                self.versions.remove_stale()

    # ----------------------------------------------------------------- versions

    def _get_store(self) -> IndexStore:
        """The store of the active version (readers reopen after a reindex swapped it)."""
        with self._mutex:
            for attempt in range(3):
                try:
                    return self._open_current()
                except IndexMissingError:
                    # A reindex may have swapped versions and removed the old one meanwhile.
                    if attempt == 2 or self.versions.current() is None:
                        raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _open_current(self) -> IndexStore:
        sig = self.versions.signature()
        if self._store is not None and (self.writer or sig == self._current_sig):
            return self._store
        name = self.versions.current()
        if name is None:
            if not self.writer:
                raise IndexMissingError(f"no index in {self.location.describe()}; run `clipsearch index` first")
            name = "v1"
            store = self._new_store(name)
            self.versions.set_current(name)
            sig = self.versions.signature()
        else:
            store = self._new_store(name)
        if self._store is not None:
            self._store.close()
        self._store, self._current_sig = store, sig
        return store

    def _new_store(self, name: str) -> IndexStore:
        return self.location.open(name, writer=self.writer, kind=self.cfg.index.kind)

    @property
    def store(self) -> IndexStore:
        return self._get_store()

    # ----------------------------------------------------------------- model
    def encoder(self) -> Encoder:
        """The configured model (loaded on first use); readers take its torch-free query
        encoder where it can run (indexer.embed.query)."""
        if self._encoder is None:
            def full() -> Encoder:  # readers: 1 thread (no OpenMP stalls beside an indexer)
                threads = thread_plan(self.cfg).model_threads if self.writer else 1
                return ClipEncoder.from_config(self.cfg, threads)

            self._encoder = full() if self.writer else reader_encoder(self.cfg, full)
        return self._encoder

    # ----------------------------------------------------------------- writing
    def _require_writer(self) -> None:
        if not self.writer:
            raise PermissionError("this Library was opened read-only")

    def index(
        self,
        paths: list[str] | None = None,
        progress: bool = True,
        skip_missing_roots: bool = False,
        stop=None,  # noqa: ANN001 - Callable[[], bool] | None
    ) -> IndexReport:
        """Bring the index up to date with the library roots (or only ``paths`` inside them).

        ``paths`` may name files or folders that no longer exist: their rows are removed (the
        watch daemon passes both ends of a move, and the row follows the file).
        ``skip_missing_roots``: index the roots that are there and keep the rows of missing
        (offline) ones, instead of failing. ``stop()`` returning True ends the run early,
        after the current model batch (see :class:`indexer.ingest.pipeline.Indexer`).
        """
        from indexer.ingest.scan import check_roots

        self._require_writer()
        if not skip_missing_roots:
            check_roots(self.cfg.roots)  # before the (slow) model load
        encoder = self.encoder()
        self.store.check_model(encoder.identity)
        indexer = self._indexer(self.store, encoder)
        indexer.skip_missing_roots, indexer.stop = skip_missing_roots, stop
        indexer.sweep_unconfigured = not self.location.shared  # others' roots are not ours
        indexer.jpeg_draft = self._check_fast_paths(encoder)
        report = indexer.run(paths, progress)
        if not paths and (report.removed or report.updated):
            self.collect_thumbnails()
        return report

    def _indexer(self, store: IndexStore, encoder: Encoder):  # noqa: ANN202 - an ingest Indexer
        from indexer.ingest.ray_engine import indexer_class
        from indexer.learn.apply import ConceptTagger, Hooks

        tagger = Hooks(self.tags.auto_tagger(encoder), ConceptTagger())
        return indexer_class(self.cfg)(store, encoder, self.cfg, self.thumb_dir, tagger)

    def _check_fast_paths(self, encoder: Encoder) -> bool:
        """Self-check the image pipeline's fast paths once per model (cached), record what
        runs in the store's metadata (``status``), and return whether JPEG drafts may run."""
        from indexer.ingest.fastpaths import apply_check, check_pipeline, fast_paths_doc

        check = check_pipeline(encoder, self.cfg)
        doc = fast_paths_doc(encoder, check)
        if doc != self._fast_paths_recorded:
            self.store.set_meta({FAST_PATHS_KEY: json.dumps(doc, sort_keys=True)})
            self._fast_paths_recorded = doc
        return apply_check(encoder, check)

    def collect_thumbnails(self) -> int:
        """Delete thumbnails no image row refers to any more; returns how many (none while
        other writers share the index: their new rows may not be committed yet)."""
        self._require_writer()
        with self._lock.exclusive() as alone:
            return remove_thumbnails(self.thumb_dir, self.store.content_hashes()) if alone else 0

    def reindex(self, progress: bool = True) -> IndexReport:
        """Rebuild everything with the configured model beside the active version, then swap
        (holding the index alone: other writers sharing it make it :class:`IndexBusyError`)."""
        self._require_writer()
        with self._lock.exclusive() as alone:
            if not alone:
                raise IndexBusyError(f"other clipsearch processes are writing to "
                                     f"{self.location.describe()}; reindex when they are done")  # fmt: skip
            return self._reindex(progress)

    def _reindex(self, progress: bool) -> IndexReport:
        from indexer.ingest.scan import check_roots

        check_roots(self.cfg.roots)
        encoder = self.encoder()
        old = self.versions.current() or "v0"
        name = self.versions.next_name(old)
        self.versions.remove(name)  # an interrupted attempt
        new = self.location.open(name, writer=True, kind=self.cfg.index.kind)
        try:
            report = self._indexer(new, encoder).run(None, progress)
            # personal concepts are refitted on the new model's vectors (examples by path)
            if self.versions.current() is not None:
                report.concepts_lost = self.concepts.carry_over(self.store, new)
        except BaseException:
            new.close()
            raise
        self.versions.set_current(name)
        if self._store is not None:
            self._store.close()
        self._store, self._current_sig = new, self.versions.signature()
        self.versions.remove(old)
        return report

    # ----------------------------------------------------------------- reading
    def search(self, query: str | None = None, **kwargs) -> SearchResults:
        """See :meth:`indexer.search.engine.SearchEngine.search`; defaults: ``search:``."""
        kwargs.setdefault("k", self.cfg.search.top_k)
        kwargs.setdefault("threshold", self.cfg.search.threshold)
        kwargs.setdefault("adaptive", self.cfg.search.adaptive)
        offline = self.offline_roots()
        if not offline:
            return self._search(query, **kwargs)
        # Images of offline roots (an unplugged drive) keep their rows but are left out of
        # results: fetch more until k results from online roots are found (or none are left).
        k, fetch = kwargs["k"], kwargs["k"]
        while True:
            res = self._search(query, **{**kwargs, "k": fetch})
            hits = [h for h in res.hits if h.record.root not in offline]
            if len(hits) >= k or len(res.hits) < fetch or fetch >= res.candidates:
                break
            fetch *= 4
        res.hits = hits[:k]
        return res

    def _search(self, query: str | None, **kwargs) -> SearchResults:
        with self._mutex:
            try:
                return self.search_engine.search(query, **kwargs)
            except (StoreUnavailableError, IndexMissingError):
                if self.writer or self.versions.signature() == self._current_sig:
                    raise
            # A reindex swapped versions (and removed the old one) mid-query: retry on the new.
            return self.search_engine.search(query, **kwargs)

    def offline_roots(self) -> set[str]:
        """Roots the running watch service reports offline (missing: an unplugged drive, or
        an empty mount point); their images are kept but left out of search results.
        Without the service nothing is left out (``status()["roots"][i]["online"]`` tells)."""
        watch = read_watch_status(self.dir)
        if not watch or not watch.get("offline_roots") or not self.watch_status()["running"]:
            return set()
        return {str(r) for r in watch["offline_roots"]}

    def watch_status(self) -> dict:
        """The watch service: ``running``, ``pid``, ``state``, ``queue``, ``last_update``
        (epoch seconds), ``errors`` (recent), ``offline_roots``, ``detail``; see
        :mod:`indexer.watch.status`."""
        return watch_status(self.dir)

    def get_image(self, image_id: int) -> Record | None:
        """The record of one image by id (None if unknown)."""
        return self.store.get_record(image_id)

    def thumbnail_path(self, image: int | Record, t_ms: int | None = None) -> Path | None:
        """The image's JPEG thumbnail (a video's frame at ``t_ms`` if any), or None if none."""
        rec = self.get_image(image) if isinstance(image, int) else image
        if rec is None or not rec.content_hash:
            return None
        frame = moment_thumbnail(rec.content_hash, t_ms) if t_ms is not None else None
        if frame and (path := thumbnail_file(self.thumb_dir, frame)).exists():
            return path
        path = thumbnail_file(self.thumb_dir, rec.content_hash)
        return path if path.exists() else None

    def status(self, max_errors: int | None = 100) -> dict:
        """What is in the index (the ``status --json`` document)."""
        with self._mutex:
            return status_document(
                self.store, max_errors, index_dir=self.dir, version=self.versions.current(),
                database=self.location.describe() if self.location.shared else None,
                watch=self.watch_status, ocr=lambda: self.ocr.status())

    # ----------------------------------------------------------------- tags
    def vocabulary(self) -> Vocabulary:
        """The configured tag vocabulary (re-read when the tags file changes)."""
        return self.tags.vocabulary()

    def tag(self, progress: bool = False, rescore_all: bool = False) -> TagReport:
        """See :meth:`indexer.tags.service.TagService.tag` (writers only)."""
        self._require_writer()
        return self.tags.tag(progress, rescore_all)

    def tag_counts(self) -> dict[str, int]:
        return self.tags.tag_counts()

    def image_tags(self, image_id: int) -> TagList:
        return self.tags.image_tags(image_id)

    def ids_with_tags(self, tags: Sequence[str]) -> np.ndarray:
        return self.tags.ids_with_tags(tags)

    def all_image_tags(self) -> dict[int, TagList]:
        return self.tags.all_image_tags()

    def duplicates(self, threshold: float | None = None) -> list[DuplicateGroup]:
        return self.tags.duplicates(threshold)

    # ----------------------------------------------------------------- lifecycle
    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None
        if self._lock is not None:
            self._lock.release()
        self.location.close()

    def __enter__(self) -> Library:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
