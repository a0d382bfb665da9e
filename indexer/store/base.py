"""The store interface: everything ingest, search, tags, watch and the UI need from storage.

An :class:`IndexStore` holds one index version: image records, one L2-normalised float32
vector per successfully encoded image, tags scored on those vectors, and metadata (the model,
the generation). Backends implement the abstract primitives; the helpers below them are derived
once here. :class:`indexer.store.sqlite.SqliteStore` is SQLite + a FAISS file;
:class:`indexer.store.postgres.PgStore` is PostgreSQL + pgvector (vectors searched in the
database, no derived file).

Contract (every backend):

* **Generations.** Every committed change of vectors (:meth:`apply`) gets the next
  *generation*; each written vector carries it, and each removed vector leaves a *tombstone*
  with it. Readers call :meth:`refresh` before a query to see a running writer's progress up
  to the latest generation. A crash at any moment loses no committed change and leaves no
  orphan vector.
* **Tags.** Tag rows hold every tag that passed its threshold, uncapped; they go with their
  image's vector (replacing or removing a vector deletes its tags in the same transaction).
  The *tagged generation* is the generation up to which vectors have been tagged; vectors
  written since are *pending* (see :mod:`indexer.tags.sync`).
* **Concepts.** A personal concept (:class:`~indexer.store.records.Concept`) is stored with its
  fitted model; its tag rows live with the other tags (the tag is the concept's name) and go
  with their vectors alike, but follow their own *concepts generation*: vectors written since
  it have not been scored by the concepts yet. Zero-shot tag writes never touch concept rows.
* **Text (OCR).** The text recognised in an image (:class:`~indexer.store.records.ImageText`,
  an empty text or an error with its reason included) is one row per image that goes with its
  vector like the tags. The *OCR generation* is the generation up to which every vector has a
  text row; vectors written since without one are *pending OCR* (see :mod:`indexer.ocr.service`).
  Text is matched in :func:`~indexer.store.records.compact_text` form, as a substring.
* **Video frames.** A video is one image row (``duration_ms`` set) whose vector summarises it
  (the normalised mean of its frames, so tags, concepts and duplicates treat it as one item)
  plus its sampled *frames*: (time, vector) pairs written, copied and removed with that vector
  in the same transaction (``Changes`` upserts carry them as ``frames``). :meth:`search_frames`
  searches the frames alone; the engine merges its hits into the videos' (best moments).
* **Albums.** Smart albums are saved searches (:class:`~indexer.store.records.Album`), stored
  by name; the store keeps their definition only (results are searched when read).
* **Writers.** At most one writer per index (``writer=True``; the caller holds the writer lock
  of its :class:`~indexer.store.location.StoreLocation`; PostgreSQL: one per library root, so
  several at once); any number of readers, in other processes too, see only committed
  generations.
* **Threads.** Reads may come from several threads (each opens its own connection; searching
  an unchanging vector index is thread-safe); :meth:`refresh`, writes and :meth:`close` are
  serialised by the caller (the Library's lock). Returned records and arrays are the caller's
  own: changing them changes nothing stored.
* **Errors.** Driver errors never leak: a database that cannot be read or written raises
  :class:`~indexer.store.errors.StoreUnavailableError` (a :class:`StoreError`); a schema this
  program cannot use raises :class:`SchemaError`; opening a reader where there is no index
  raises :class:`IndexMissingError`; :meth:`check_model` raises :class:`ModelMismatchError`.
"""

from __future__ import annotations

import abc
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager

import numpy as np

from indexer.store.errors import ModelMismatchError
from indexer.store.records import (
    Album,
    Changes,
    Concept,
    ImageText,
    Record,
    TagView,
    TextMatch,
    VectorState,
)
from indexer.types import ModelIdentity

TagList = list[tuple[str, float]]


class TagWriter(abc.ABC):
    """The tag primitives of one write transaction (:meth:`IndexStore.tag_transaction`)."""

    @abc.abstractmethod
    def generation(self) -> int:
        """The store's current generation."""

    @abc.abstractmethod
    def tagged_generation(self) -> int:
        """The generation up to which vectors have been tagged (0: none)."""

    @abc.abstractmethod
    def set_tagged_generation(self, gen: int) -> None: ...

    @abc.abstractmethod
    def fingerprints(self) -> dict[str, str]:
        """{tag: fingerprint of the definition its rows were scored with}."""

    @abc.abstractmethod
    def set_fingerprints(self, fingerprints: dict[str, str]) -> None: ...

    @abc.abstractmethod
    def drop_fingerprints(self, tags: Sequence[str]) -> None: ...

    @abc.abstractmethod
    def delete_tags(self, tags: Sequence[str]) -> None:
        """Delete every row of these tags."""

    @abc.abstractmethod
    def delete_image_tags(self, ids: Sequence[int]) -> None:
        """Delete every zero-shot tag row of these images (concept rows are kept)."""

    @abc.abstractmethod
    def insert_tags(self, ids: np.ndarray, assigned: Sequence[TagList]) -> int:
        """Insert ``assigned[i]`` as the rows of image ``ids[i]``; returns the rows written."""

    # concepts (see the module docstring)
    @abc.abstractmethod
    def concepts(self) -> list[Concept]:
        """Every stored concept, by name."""

    @abc.abstractmethod
    def put_concept(self, concept: Concept) -> None:
        """Insert or replace the concept named ``concept.name`` (its rows are left alone)."""

    @abc.abstractmethod
    def drop_concept(self, name: str) -> None:
        """Delete the concept and all its tag rows."""

    @abc.abstractmethod
    def concepts_generation(self) -> int:
        """The generation up to which vectors have been scored by every concept (0: none)."""

    @abc.abstractmethod
    def set_concepts_generation(self, gen: int) -> None: ...

    @abc.abstractmethod
    def delete_concept_rows(self, names: Sequence[str], ids: Sequence[int] | None = None) -> None:
        """Delete the tag rows of these concepts (of the images ``ids`` only, when given)."""

    @abc.abstractmethod
    def vector_chunks(
        self, lo: int | None = None, hi: int | None = None, size: int = 4096
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(ids, (n, D) float32) of the vectors with ``lo < gen <= hi``, by id, in pages that
        leave no cursor open while the caller writes."""


class IndexStore(abc.ABC):
    """One index version (see the module docstring for the contract)."""

    writer: bool

    # ----------------------------------------------------------------- metadata / model
    @abc.abstractmethod
    def meta(self) -> dict[str, str]:
        """All metadata (model name, checkpoint sha256, embed_dim, generation, ...)."""

    @abc.abstractmethod
    def generation(self) -> int:
        """The latest committed generation."""

    @abc.abstractmethod
    def bind_model(self, identity: ModelIdentity) -> None:
        """Record ``identity`` as this index's model (checked first; writers only)."""

    @abc.abstractmethod
    def set_meta(self, values: Mapping[str, str]) -> None:
        """Upsert free-form metadata keys in one transaction (writers only), e.g. the
        ``fast_paths`` a run used; the model keys are :meth:`bind_model`'s."""

    def dim(self) -> int | None:
        """The vectors' dimension (None before the first model is bound)."""
        value = self.meta().get("embed_dim")
        return int(value) if value else None

    def model_identity(self) -> ModelIdentity | None:
        """The model the index was built with (None: none yet)."""
        m = self.meta()
        if "checkpoint_sha256" not in m:
            return None
        return ModelIdentity(
            m["model_name"], m["checkpoint_sha256"], int(m["embed_dim"]), m.get("preprocess", "")
        )

    def check_model(self, identity: ModelIdentity) -> None:
        """Raise :class:`ModelMismatchError` unless ``identity`` is this index's model."""
        mine = self.model_identity()
        if mine is not None and mine.checkpoint_sha256 != identity.checkpoint_sha256:
            raise ModelMismatchError(
                f"the index was built with model {mine.short()}, but the config selects "
                f"{identity.short()}; run `clipsearch reindex` to rebuild it with the new model"
            )

    # ----------------------------------------------------------------- writing
    @abc.abstractmethod
    def apply(self, changes: Changes) -> dict[bytes, int]:
        """Apply ``changes`` in one transaction with a new generation; returns the ids of the
        upserted rows by path (bytes). Writers only."""

    @abc.abstractmethod
    def refresh(self) -> bool:
        """Bring what :meth:`search_vectors` sees up to the latest generation; True if changed."""

    @abc.abstractmethod
    def save(self, force: bool = False, interval: float | None = None) -> bool:
        """Persist derived state (a writer's vector index file) if dirty and ``interval`` has
        passed; True if saved. A no-op for backends without derived state."""

    def maintain(self) -> None:  # noqa: B027 - optional hook, a no-op by default
        """Reorganise derived state after an indexing run (e.g. a better vector index kind)."""

    @abc.abstractmethod
    def close(self) -> None: ...

    # ----------------------------------------------------------------- records
    @abc.abstractmethod
    def records(self, ids: Sequence[int]) -> dict[int, Record]:
        """Image records by id (missing ids are left out)."""

    @abc.abstractmethod
    def record_by_path(self, path: str | os.PathLike) -> Record | None: ...

    @abc.abstractmethod
    def rows_for_scan(self) -> list[tuple]:
        """(id, path bytes, size, mtime_ns, status, content_hash) of every image row."""

    @abc.abstractmethod
    def hashes_with_vectors(self) -> dict[str, list[int]]:
        """content hash -> ids of rows that have a vector (for move/duplicate detection)."""

    @abc.abstractmethod
    def content_hashes(self) -> set[str]:
        """Content hashes of all image rows."""

    @abc.abstractmethod
    def filter_ids(
        self, folder: str | None = None, since: str | None = None, until: str | None = None
    ) -> np.ndarray:
        """Ids of indexed images under ``folder`` and captured within [since, until]."""

    @abc.abstractmethod
    def counts(self) -> dict[str, int]:
        """{"images", "ok", "errors", "vectors"}."""

    @abc.abstractmethod
    def errors(self, limit: int | None = None) -> list[Record]:
        """Records of the files that could not be indexed, by path."""

    @abc.abstractmethod
    def roots(self) -> dict[str, int]:
        """Indexed image count per root."""

    # ----------------------------------------------------------------- vectors
    @abc.abstractmethod
    def vectors(self, ids: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """(ids found, their vectors (n, d)), in the order of ``ids``."""

    @abc.abstractmethod
    def iter_vectors(self, size: int = 20_000) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Every stored vector as (ids, (n, d) float32) pages, by id."""

    @abc.abstractmethod
    def vector_state(self) -> VectorState:
        """What :meth:`search_vectors` searches (after the last :meth:`refresh`)."""

    def vector_summary(self) -> VectorState:
        """What :meth:`search_vectors` searches once refreshed, as cheaply as the backend can
        tell (``status``: a backend may answer without loading its vector index)."""
        self.refresh()
        return self.vector_state()

    @abc.abstractmethod
    def search_vectors(
        self, query: np.ndarray, k: int, allowed_ids: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` (scores, ids), best first, by cosine with the unit vector ``query``,
        among ``allowed_ids`` when given; padded with (-inf, -1) when fewer exist."""

    @abc.abstractmethod
    def sample_vectors(self, n: int) -> np.ndarray:
        """Up to ``n`` searchable vectors chosen at random (deterministic per state)."""

    # ----------------------------------------------------------------- tags
    @abc.abstractmethod
    def tag_transaction(self) -> AbstractContextManager[TagWriter]:
        """One write transaction over the tags (committed when the block exits cleanly)."""

    @abc.abstractmethod
    def tag_fingerprints(self) -> dict[str, str]:
        """{tag: fingerprint} the stored rows were scored with."""

    @abc.abstractmethod
    def tag_progress(self) -> tuple[int, int]:
        """(vectors already tagged, vectors pending)."""

    @abc.abstractmethod
    def image_tags(self, image_id: int) -> TagList:
        """The stored (uncapped) tags of one image."""

    @abc.abstractmethod
    def tag_counts(self, view: TagView) -> dict[str, int]:
        """{tag: images carrying it} under ``view``, most frequent first (then by name)."""

    @abc.abstractmethod
    def ids_with_tags(self, tags: Sequence[str], view: TagView) -> np.ndarray:
        """Ids (ascending) of images carrying every tag in ``tags`` under ``view``."""

    @abc.abstractmethod
    def all_image_tags(self, view: TagView) -> dict[int, TagList]:
        """{image_id: [(tag, score)] best first} of every tagged image under ``view``."""

    @abc.abstractmethod
    def concepts(self) -> list[Concept]:
        """Every stored concept, by name (as of the last commit)."""

    @abc.abstractmethod
    def albums(self) -> list[Album]:
        """Every smart album, by name."""

    @abc.abstractmethod
    def put_album(self, album: Album) -> None:
        """Insert or replace the album named ``album.name`` (writers only)."""

    @abc.abstractmethod
    def drop_album(self, name: str) -> bool:
        """Delete the album; False if there was none (writers only)."""

    # ----------------------------------------------------------------- video frames
    @abc.abstractmethod
    def search_frames(
        self, query: np.ndarray, k: int, allowed_ids: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The top-``k`` frames by cosine with ``query``: (scores, image ids, times in ms),
        best first, among the frames of ``allowed_ids`` when given (committed state, as of the
        last :meth:`refresh`)."""

    @abc.abstractmethod
    def frames(self, image_id: int) -> tuple[np.ndarray, np.ndarray]:
        """(times in ms, (n, d) float32 vectors) of one video's frames, in time order."""

    @abc.abstractmethod
    def frame_counts(self) -> dict[str, int]:
        """{"videos": images with frames, "frames": frame rows}."""

    # ----------------------------------------------------------------- recognised text (OCR)
    @abc.abstractmethod
    def ocr_generation(self) -> int:
        """The generation up to which every vector has a text row (0: none)."""

    @abc.abstractmethod
    def set_ocr_generation(self, gen: int) -> None:
        """Record that vectors up to ``gen`` have been read (writers only)."""

    @abc.abstractmethod
    def ocr_pending(self, upto: int, limit: int) -> list[int]:
        """Ids (ascending, at most ``limit``) of images whose vector has ``ocr_generation() <
        gen <= upto`` and no text row."""

    @abc.abstractmethod
    def put_texts(self, texts: Sequence[ImageText], upto: int) -> int:
        """Insert or replace the text rows of images whose vector still has ``gen <= upto``
        (one re-encoded since stays pending); one transaction; returns the rows written."""

    @abc.abstractmethod
    def image_texts(self, ids: Sequence[int]) -> dict[int, ImageText]:
        """The text rows of these images (images without one are left out)."""

    @abc.abstractmethod
    def search_text(self, phrase: str, limit: int | None = None) -> list[TextMatch]:
        """Images whose text contains ``phrase`` (both in ``compact_text`` form), newest id
        first; an empty compact phrase matches nothing."""

    @abc.abstractmethod
    def ocr_counts(self) -> dict[str, int]:
        """{"read": text rows, "with_text": rows with text, "errors": rows with an error,
        "pending": vectors without a row}."""

    @abc.abstractmethod
    def ocr_errors(self, limit: int | None = None) -> list[ImageText]:
        """The text rows with an error (the reason in ``error``), by image id."""

    def last_modified(self) -> float | None:
        """When the stored data last changed (epoch seconds; None if the backend cannot tell)."""
        return None

    # ----------------------------------------------------------------- derived helpers
    def get_record(self, image_id: int) -> Record | None:
        """The record of one image (None if unknown)."""
        return self.records([image_id]).get(image_id)
