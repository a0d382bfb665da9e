"""The SQL side of tags: scoring stored vectors into ``tags`` rows, and reading them back.

Tables (schema 2, :mod:`indexer.db`): ``tags(image_id, tag, score)`` holds every tag that passes
its threshold, *uncapped*; ``tag_defs(tag, fingerprint)`` the definition each tag's rows were
scored with. The meta key ``tags_gen`` is the generation up to which vectors have been tagged:

* vectors with ``gen <= tags_gen`` carry rows for every tag of ``tag_defs``, scored with the
  definition whose fingerprint is stored there;
* vectors with ``gen > tags_gen`` (written since, or left untagged by a crash) are *pending*.

:func:`sync` restores the invariant for a vocabulary in one transaction: rows of changed and
removed tags are deleted and the changed tags re-scored over the tagged vectors (text encoding
of the changed prompts only -- images are never re-encoded), then pending vectors are scored
with every tag. Reading applies the vocabulary's ``top_n`` (:func:`visible_sql`), so editing
one tag never rewrites other tags' rows. :class:`Tagger` is the indexing hook, and
:class:`TaggingMixin` gives :class:`indexer.library.Library` its tag methods.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Connection, Engine, bindparam, delete, func, insert, select, text

from indexer.store.sqlite import schema as db
from indexer.tags import vocabulary as tg
from indexer.config import Config, ConfigError
from indexer.store.sqlite.schema import MetaRow, TagDefRow, TagRow, VectorRow
from indexer.store.sqlite.queries import chunks

TAGS_GEN_KEY = "tags_gen"
_CHUNK = 4096  # vectors scored at a time (bounded memory on large libraries)

EmbedTexts = Callable[[list[str]], np.ndarray]


@dataclass
class TagReport:
    """What one :func:`sync` did (also the ``tag --json`` output)."""

    changed: list[str]  # tags (re-)scored over the already tagged images
    removed: list[str]  # tags whose rows were deleted
    rescored: int = 0  # already tagged images scored for the changed tags
    pending: int = 0  # newly indexed (or untagged) images scored with every tag
    rows: int = 0  # tag rows written
    texts_encoded: int = 0  # prompt texts sent to the text encoder
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------- embeddings
class EmbeddingCache:
    """Tag embeddings by (model, tag, ensemble texts): text is encoded once per definition.

    With ``directory``, embeddings also persist there (one ``.npy`` per key, written
    atomically), so each ``index`` run does not re-encode the whole vocabulary.
    """

    def __init__(self, directory: Path | None = None) -> None:
        self._cache: dict[tuple, np.ndarray] = {}
        self.texts_encoded = 0
        self.directory = directory

    def _file(self, key: tuple) -> Path | None:
        if self.directory is None:
            return None
        return self.directory / (hashlib.sha256(repr(key).encode()).hexdigest() + ".npy")

    def _load(self, key: tuple) -> bool:
        path = self._file(key)
        if path is None or not path.exists():
            return False
        try:
            self._cache[key] = np.load(path, allow_pickle=False)
        except (OSError, ValueError):
            return False
        return True

    def _save(self, key: tuple, emb: np.ndarray) -> None:
        path = self._file(key)
        if path is None:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            with open(tmp, "wb") as fh:
                np.save(fh, np.asarray(emb, dtype=np.float32), allow_pickle=False)
            os.replace(tmp, path)
        except OSError:
            pass  # a cache: failing to write it only costs re-encoding next time

    def get(
        self, vocab: tg.Vocabulary, embed: EmbedTexts, names: Iterable[str], model: str = ""
    ) -> dict[str, np.ndarray]:
        specs = [vocab.tags[n] for n in dict.fromkeys(names)]
        key = {s.name: (model, s.name, tuple(vocab.texts_for(s))) for s in specs}
        missing = [
            s.name for s in specs if key[s.name] not in self._cache and not self._load(key[s.name])
        ]
        if missing:

            def counted(texts: list[str]) -> np.ndarray:
                self.texts_encoded += len(texts)
                return embed(texts)

            for name, emb in tg.tag_embeddings(vocab, counted, tags=missing).items():
                self._cache[key[name]] = emb
                self._save(key[name], emb)
        return {s.name: self._cache[key[s.name]] for s in specs}


def needed_tags(vocab: tg.Vocabulary, only: Iterable[str] | None = None) -> list[str]:
    """Tags whose embeddings scoring ``only`` (None: every active tag) needs: exclusive groups
    need all their members, hidden ones included."""
    active = vocab.active_tags()
    if only is None:
        return [t.name for t in active]
    wanted = set(only)
    groups = {t.group for t in active if t.name in wanted and vocab.is_exclusive(t)}
    return [t.name for t in active if t.name in wanted or (t.group in groups and t.group)]


# --------------------------------------------------------------------------- storage helpers
def stored_fingerprints(conn: Connection) -> dict[str, str]:
    return dict(conn.execute(select(TagDefRow.tag, TagDefRow.fingerprint)).all())


def tags_generation(conn: Connection) -> int:
    value = conn.execute(select(MetaRow.value).where(MetaRow.key == TAGS_GEN_KEY)).scalar()
    return int(value) if value is not None else 0


def _vector_chunks(
    conn: Connection, lo: int | None = None, hi: int | None = None, size: int = _CHUNK
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(ids, (n, D) float32) of stored vectors with ``lo < gen <= hi``, by id (keyset pages,
    so no cursor stays open while the caller writes)."""
    last = -1
    while True:
        q = select(VectorRow.image_id, VectorRow.vector).where(VectorRow.image_id > last)
        if lo is not None:
            q = q.where(VectorRow.gen > lo)
        if hi is not None:
            q = q.where(VectorRow.gen <= hi)
        rows = conn.execute(q.order_by(VectorRow.image_id).limit(size)).all()
        if not rows:
            return
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        vecs = np.frombuffer(b"".join(r[1] for r in rows), dtype="<f4").reshape(len(rows), -1)
        yield ids, vecs.astype(np.float32)
        last = int(ids[-1])


def _insert_rows(conn: Connection, ids: np.ndarray, assigned: list[tg.TagList]) -> int:
    rows = [
        {"image_id": int(i), "tag": name, "score": float(score)}
        for i, tags in zip(ids.tolist(), assigned)
        for name, score in tags
    ]
    if rows:
        conn.execute(insert(TagRow), rows)
    return len(rows)


def count_pending(engine: Engine) -> tuple[int, int]:
    """(vectors already tagged, vectors pending) of the store."""
    with engine.connect() as conn:
        gen = tags_generation(conn)
        q = select(func.count()).select_from(VectorRow).where(VectorRow.gen <= gen)
        done = conn.execute(q).scalar() or 0
        total = conn.execute(select(func.count(VectorRow.image_id))).scalar() or 0
    return int(done), int(total - done)


def is_current(engine: Engine, vocab: tg.Vocabulary) -> bool:
    """True when ``tag_defs`` matches the vocabulary (no tag changed or removed)."""
    with engine.connect() as conn:
        changed, removed = tg.changed_tags(stored_fingerprints(conn), vocab)
    return not changed and not removed


def sync(
    engine: Engine,
    vocab: tg.Vocabulary,
    embed: EmbedTexts,
    cache: EmbeddingCache | None = None,
    model: str = "",
    rescore_all: bool = False,
    pending_only: bool = False,
    fingerprints: dict[str, str] | None = None,
) -> TagReport:
    """Bring the ``tags`` rows up to ``vocab`` in one transaction (see the module docstring).

    ``rescore_all``: treat every tag as changed. ``pending_only``: only score pending vectors
    (the per-batch indexing hook, when ``tag_defs`` is known to be current).
    ``fingerprints``: ``vocabulary_fingerprints(vocab)`` when the caller already has them.
    """
    t0 = time.monotonic()
    cache = cache if cache is not None else EmbeddingCache()
    encoded_before = cache.texts_encoded
    current = fingerprints if fingerprints is not None else tg.vocabulary_fingerprints(vocab)
    with engine.begin() as conn:
        gen = db.get_generation(conn)
        done = tags_generation(conn)
        if pending_only:
            changed, removed = [], []
        elif rescore_all:
            stored = stored_fingerprints(conn)
            changed, removed = list(current), [t for t in stored if t not in current]
        else:
            changed, removed = tg.changed_tags(stored_fingerprints(conn), vocab, current)
        rep = TagReport(changed=changed, removed=removed)
        if changed or removed:
            for part in chunks(changed + removed):
                conn.execute(delete(TagRow).where(TagRow.tag.in_(part)))
            if changed:
                embs = cache.get(vocab, embed, needed_tags(vocab, changed), model)
                for ids, vecs in _vector_chunks(conn, hi=done):
                    got = tg.score_tags(vecs, embs, vocab, top_n=None, only=changed)
                    rep.rows += _insert_rows(conn, ids, got)
                    rep.rescored += len(ids)
            for part in chunks(removed):
                conn.execute(delete(TagDefRow).where(TagDefRow.tag.in_(part)))
            for name in changed:
                conn.execute(
                    text(
                        "INSERT INTO tag_defs(tag, fingerprint) VALUES (:t, :f) "
                        "ON CONFLICT(tag) DO UPDATE SET fingerprint = excluded.fingerprint"
                    ),
                    {"t": name, "f": current[name]},
                )
        if gen > done:
            embs = None
            for ids, vecs in _vector_chunks(conn, lo=done):
                if embs is None:
                    embs = cache.get(vocab, embed, needed_tags(vocab), model)
                for part in chunks(ids.tolist()):
                    conn.execute(delete(TagRow).where(TagRow.image_id.in_(part)))
                got = tg.score_tags(vecs, embs, vocab, top_n=None)
                rep.rows += _insert_rows(conn, ids, got)
                rep.pending += len(ids)
            db.set_meta(conn, **{TAGS_GEN_KEY: gen})
    rep.texts_encoded = cache.texts_encoded - encoded_before
    rep.seconds = round(time.monotonic() - t0, 3)
    return rep


# --------------------------------------------------------------------------- reading
def _exclusive(vocab: tg.Vocabulary) -> list[str]:
    return [t.name for t in vocab.tags.values() if vocab.is_exclusive(t)]


def visible_sql(vocab: tg.Vocabulary) -> tuple[str, dict]:
    """A ``WITH visible(image_id, tag, score) AS (...)`` clause: the stored rows with the
    vocabulary's ``top_n`` applied (standalone tags ranked per image; exclusive ones kept)."""
    if vocab.top_n is None:
        return "WITH visible AS (SELECT image_id, tag, score FROM tags)", {}
    sql = (
        "WITH ranked AS (SELECT image_id, tag, score, ROW_NUMBER() OVER ("
        "PARTITION BY image_id ORDER BY score DESC, tag) AS rn FROM tags "
        "WHERE tag NOT IN :excl), "
        "visible AS (SELECT image_id, tag, score FROM ranked WHERE rn <= :top_n "
        "UNION ALL SELECT image_id, tag, score FROM tags WHERE tag IN :excl)"
    )
    return sql, {"excl": _exclusive(vocab), "top_n": vocab.top_n}


def _run(conn: Connection, vocab: tg.Vocabulary, tail: str, **params: Any) -> list:
    head, p = visible_sql(vocab)
    stmt = text(f"{head} {tail}")
    expanding = [bindparam("excl", expanding=True)] if "excl" in p else []
    for name, value in params.items():
        if isinstance(value, (list, tuple)):
            expanding.append(bindparam(name, expanding=True))
            params[name] = list(value)
    if expanding:
        stmt = stmt.bindparams(*expanding)
    return conn.execute(stmt, {**p, **params}).all()


def tag_counts(engine: Engine, vocab: tg.Vocabulary) -> dict[str, int]:
    """{tag: images carrying it}, most frequent first (``top_n`` applied)."""
    with engine.connect() as conn:
        rows = _run(conn, vocab, "SELECT tag, COUNT(*) AS n FROM visible GROUP BY tag "
                                 "ORDER BY n DESC, tag")  # fmt: skip
    return {str(t): int(n) for t, n in rows}


def image_tags(engine: Engine, vocab: tg.Vocabulary, image_id: int) -> tg.TagList:
    """[(tag, score)] of one image, best first (``top_n`` applied)."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(TagRow.tag, TagRow.score).where(TagRow.image_id == int(image_id))
        ).all()
    tags = tg.cap_top_n([(str(t), float(s)) for t, s in rows], vocab)
    return sorted(tags, key=lambda ts: (-ts[1], ts[0]))


def ids_with_tags(engine: Engine, vocab: tg.Vocabulary, tags: Sequence[str]) -> np.ndarray:
    """Ids (ascending) of images that carry every tag in ``tags`` (``top_n`` applied)."""
    wanted = sorted(set(tags))
    if not wanted:
        return np.zeros(0, np.int64)
    with engine.connect() as conn:
        rows = _run(conn, vocab, "SELECT image_id FROM visible WHERE tag IN :wanted "
                                 "GROUP BY image_id HAVING COUNT(DISTINCT tag) = :n "
                                 "ORDER BY image_id", wanted=wanted, n=len(wanted))  # fmt: skip
    return np.asarray([r[0] for r in rows], dtype=np.int64)


def all_image_tags(engine: Engine, vocab: tg.Vocabulary) -> dict[int, tg.TagList]:
    """{image_id: [(tag, score)] best first} of every tagged image (``top_n`` applied)."""
    out: dict[int, tg.TagList] = {}
    with engine.connect() as conn:
        for i, t, s in _run(conn, vocab, "SELECT image_id, tag, score FROM visible"):
            out.setdefault(int(i), []).append((str(t), float(s)))
    for tags in out.values():
        tags.sort(key=lambda ts: (-ts[1], ts[0]))
    return out


# --------------------------------------------------------------------------- vocabulary
def load_vocabulary(cfg: Config) -> tg.Vocabulary:
    """The configured vocabulary (``tags.vocabulary``, ``tags.file`` or the built-in one)
    with ``tags.top_n`` applied; errors are :class:`ConfigError`."""
    t = cfg.tags
    try:
        if t.vocabulary is not None:
            vocab = tg.Vocabulary.from_dict(t.vocabulary)
            if t.safety and tg.SAFETY_GROUP in vocab.groups:
                vocab = vocab.with_groups_enabled([tg.SAFETY_GROUP])
        else:
            path = cfg.resolve(t.file) if t.file else None
            vocab = tg.load_vocabulary(path, safety=t.safety)
    except tg.VocabularyError as exc:
        where = "tags.vocabulary" if t.vocabulary is not None else "tags"
        raise ConfigError(f"{where}: {exc}") from None
    if t.top_n is not None:
        vocab.top_n = t.top_n or None
    return vocab


# --------------------------------------------------------------------------- indexing hook
class Tagger:
    """Tags newly indexed vectors after each committed batch (``tags.auto``).

    When ``tag_defs`` is stale (the vocabulary changed since the last pass) and some images are
    already tagged, the batches are left pending and :meth:`finish` runs the full pass.
    """

    def __init__(
        self,
        vocab: tg.Vocabulary,
        embed: EmbedTexts,
        cache: EmbeddingCache | None = None,
        model: str = "",
    ):
        self.vocab, self.embed, self.model = vocab, embed, model
        self.cache = cache if cache is not None else EmbeddingCache()
        self.deferred = False
        self.reports: list[TagReport] = []
        self._fingerprints: dict[str, str] | None = None  # of self.vocab, made once per run

    def _sync(self, engine: Engine, pending_only: bool) -> None:
        if self._fingerprints is None:
            self._fingerprints = tg.vocabulary_fingerprints(self.vocab)
        rep = sync(engine, self.vocab, self.embed, self.cache, self.model,
                   pending_only=pending_only, fingerprints=self._fingerprints)  # fmt: skip
        if rep.rows or rep.pending or rep.rescored or rep.changed or rep.removed:
            self.reports.append(rep)

    def start(self, store: Any) -> None:
        if is_current(store.engine, self.vocab):
            self.deferred = False
            return
        done, _pending = count_pending(store.engine)
        # Nothing tagged yet (new or migrated index): adopting the definitions costs nothing.
        self.deferred = done > 0
        if not self.deferred:
            self._sync(store.engine, pending_only=False)

    def after_commit(self, store: Any) -> None:
        if not self.deferred:
            self._sync(store.engine, pending_only=True)

    def finish(self, store: Any) -> None:
        self._sync(store.engine, pending_only=False)
        self.deferred = False

    @property
    def images_tagged(self) -> int:
        return sum(r.pending + r.rescored for r in self.reports)


# --------------------------------------------------------------------------- Library API
class TaggingMixin:
    """Tag methods of :class:`indexer.library.Library` (needs ``cfg``, ``store``, ``writer``,
    ``encoder()`` and ``_require_writer()``)."""

    cfg: Config

    def vocabulary(self) -> tg.Vocabulary:
        """The configured tag vocabulary (re-read when the tags file changes)."""
        path = self.cfg.resolve(self.cfg.tags.file) if self.cfg.tags.file else None
        try:
            st = os.stat(path) if path is not None else None
            sig = (st.st_mtime_ns, st.st_size) if st is not None else None
        except OSError:
            sig = None
        cached = getattr(self, "_vocab_cache", None)
        if cached is not None and cached[0] == sig:
            return cached[1]
        vocab = load_vocabulary(self.cfg)
        self._vocab_cache = (sig, vocab)
        return vocab

    def _tag_cache(self) -> EmbeddingCache:
        cache = getattr(self, "_tag_embedding_cache", None)
        if cache is None:
            # Shared by every index on this machine (keys name the checkpoint and the prompt
            # texts), so a new index does not re-encode the vocabulary.
            from clipmodel.download import default_cache_dir

            root = self.cfg.cache_dir or default_cache_dir()
            cache = self._tag_embedding_cache = EmbeddingCache(root / "tag-embeddings")
        return cache

    def _auto_tagger(self, encoder: Any) -> Tagger | None:
        """The indexing hook when ``tags.auto`` is on (None otherwise)."""
        if not self.cfg.tags.auto:
            return None
        return Tagger(self.vocabulary(), encoder.encode_texts, self._tag_cache(),
                      encoder.identity.checkpoint_sha256)  # fmt: skip

    def tag(self, progress: bool = False, rescore_all: bool = False) -> TagReport:
        """Apply the vocabulary to the stored vectors now: re-score changed tags (every tag
        with ``rescore_all``), drop removed ones, tag pending images. No image is re-encoded."""
        self._require_writer()  # type: ignore[attr-defined]
        vocab = self.vocabulary()
        store = self.store  # type: ignore[attr-defined]
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=1, unit="pass", desc="tagging")
        encoder = _LazyEncoder(self)
        try:
            rep = sync(store.engine, vocab, encoder.encode_texts, self._tag_cache(),
                       encoder.model, rescore_all=rescore_all)  # fmt: skip
        finally:
            if bar is not None:
                bar.update(1)
                bar.close()
        return rep

    def tag_counts(self) -> dict[str, int]:
        return tag_counts(self.store.engine, self.vocabulary())  # type: ignore[attr-defined]

    def image_tags(self, image_id: int) -> list[tuple[str, float]]:
        return image_tags(self.store.engine, self.vocabulary(), image_id)  # type: ignore[attr-defined]

    def ids_with_tags(self, tags: Sequence[str]) -> np.ndarray:
        return ids_with_tags(self.store.engine, self.vocabulary(), list(tags))  # type: ignore[attr-defined]

    def all_image_tags(self) -> dict[int, tg.TagList]:
        return all_image_tags(self.store.engine, self.vocabulary())  # type: ignore[attr-defined]

    def duplicates(self, threshold: float | None = None) -> list:
        """Groups of near-duplicate images (``duplicates.DuplicateGroup``, keeper first)."""
        from indexer.tags.duplicates import describe_groups, find_duplicate_groups

        thr = self.cfg.tags.duplicate_threshold if threshold is None else float(threshold)
        store = self.store  # type: ignore[attr-defined]
        ids_parts, vec_parts = [], []
        with store.engine.connect() as conn:
            for ids, vecs in _vector_chunks(conn, size=20_000):
                ids_parts.append(ids)
                vec_parts.append(vecs)
        if not ids_parts:
            return []
        groups = find_duplicate_groups(np.concatenate(ids_parts), np.concatenate(vec_parts), thr)
        records = store.records([i for g in groups for i in g])
        return describe_groups(groups, records.get)


class _LazyEncoder:
    """The Library's encoder, loaded only when some text must actually be encoded."""

    def __init__(self, lib: Any):
        self.lib = lib
        meta = lib.store.meta()
        self.model = meta.get("checkpoint_sha256", "")

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        enc = self.lib.encoder()
        self.lib.store.check_model(enc.identity)
        return enc.encode_texts(texts)
