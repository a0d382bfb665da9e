"""Short writes (concepts, albums) that work whether or not ``clipsearch watch`` runs.

:func:`write` runs a named operation on a writer Library; when a running ``watch`` daemon holds
the writer lock, it hands the operation to the daemon instead (:mod:`indexer.watch.mailbox`),
which runs it with the same code (:func:`handle`) between two batches. Operations take and
return JSON: the arguments are ids, paths and plain values; the result is a JSON document.
"""

from __future__ import annotations

from collections.abc import Callable

from indexer.config import Config
from indexer.store import IndexBusyError


def concept_doc(lib, c, counts: dict[str, int] | None = None) -> dict:  # noqa: ANN001
    """The JSON document of one concept (``photos``: how many photos carry it now; ``counts``:
    :meth:`Library.tag_counts` when the caller has it already)."""
    counts = lib.tag_counts() if counts is None else counts
    return {"name": c.name, "examples": list(c.positives), "negatives": list(c.negatives),
            "hint": c.hint, "threshold": round(float(c.threshold), 6),
            "photos": counts.get(c.name, 0), "model": c.model, "created": c.created,
            "updated": c.updated, "stats": c.stats}  # fmt: skip


def album_doc(lib, album) -> dict:  # noqa: ANN001 - a Library, an indexer.store.Album
    """The JSON document of one album (``count``: its photos now)."""
    return {"name": album.name, "spec": album.spec, "created": album.created,
            "updated": album.updated, "count": len(lib.albums.run(album).hits)}  # fmt: skip


def _teach(lib, name: str, photos: list, negatives: list = (), hint: str | None = None) -> dict:  # noqa: ANN001
    return concept_doc(lib, lib.concepts.teach(name, photos, negatives, hint))


def _edit(lib, name: str, **changes: list) -> dict:  # noqa: ANN001
    return concept_doc(lib, lib.concepts.edit(name, **changes))


def _delete_concept(lib, name: str) -> dict:  # noqa: ANN001
    c = lib.concepts.get(name)
    lib.concepts.delete(c.name)
    return {"deleted": c.name}


def _save_album(lib, name: str, query: str | None = None, like: list = (), unlike: list = (),  # noqa: ANN001
                **spec: object) -> dict:  # fmt: skip
    """``spec``: :func:`indexer.search.albums.make_spec`'s other arguments (concepts, tags,
    folder, since, until, k, threshold, adaptive); ``like``/``unlike``: ids or paths."""
    from indexer.search.albums import make_spec

    resolve = lib.search_engine.resolve_ids
    made = make_spec(query, resolve(lib.store, list(like)), resolve(lib.store, list(unlike)),
                     **spec)  # fmt: skip
    return album_doc(lib, lib.albums.save(name, made))


def _delete_album(lib, name: str) -> dict:  # noqa: ANN001
    lib.albums.delete(name)
    return {"deleted": name}


OPS: dict[str, Callable[..., dict]] = {
    "concept.teach": _teach, "concept.edit": _edit, "concept.delete": _delete_concept,
    "album.save": _save_album, "album.delete": _delete_album,
}  # fmt: skip


def handle(lib, op: str, kwargs: dict) -> dict:  # noqa: ANN001 - a writer Library
    """Run operation ``op`` on the writer ``lib`` (what the watch daemon calls)."""
    fn = OPS.get(op)
    if fn is None:
        raise LookupError(f"unknown write operation {op!r}")
    return fn(lib, **kwargs)


def write(cfg: Config, op: str, timeout: float | None = None, encoder=None, **kwargs) -> dict:  # noqa: ANN001
    """Run ``op(**kwargs)`` on a writer Library, or through the running ``watch`` daemon when
    it holds the writer lock; returns the operation's JSON result.

    Raises what the operation raises (ConceptError, AlbumError, QueryError: ValueErrors;
    through the daemon, :class:`~indexer.watch.mailbox.RequestError` with its message) and
    IndexBusyError when another writer (not a daemon) holds the lock.
    """
    from indexer.library import Library
    from indexer.watch import mailbox

    if op not in OPS:
        raise LookupError(f"unknown write operation {op!r}")
    try:
        lib = Library.open(cfg, writer=True, encoder=encoder)
    except IndexBusyError:
        if mailbox.watch_pid(cfg.index_dir) is None:
            raise
        return mailbox.submit(cfg.index_dir, op, kwargs, timeout or mailbox.DEFAULT_TIMEOUT)
    with lib:
        return handle(lib, op, kwargs)
