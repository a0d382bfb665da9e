"""A library in PostgreSQL: versions as schemas, writers' advisory locks.

Each index version is a schema ``clipsearch_v<n>``; ``public.clipsearch_current`` names the
active one (one row, switched in a transaction by ``reindex``). Writers hold, on one dedicated
connection for as long as they are open, a *shared* advisory lock on the index and an
exclusive one per library root: writers of different roots (other machines) run side by side,
a second writer of the same root is refused (``IndexBusyError``), and work that needs the index
to itself (``reindex``, removing an interrupted reindex's schema, collecting thumbnails) takes
the index lock exclusively, only when no other writer holds it. The server releases a killed
writer's locks when its connection drops.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Connection, text

from indexer.store.base import IndexStore
from indexer.store.errors import IndexBusyError, StoreUnavailableError
from indexer.store.location import StoreLocation
from indexer.store.postgres import schema as db
from indexer.store.postgres.store import PgStore

PREFIX = "clipsearch_"
LOCK_SPACE = zlib.crc32(b"clipsearch") & 0x7FFFFFFF  # first key of every advisory lock
INDEX_KEY = 0
WAIT_MS = 60_000  # how long a writer waits for a running reindex/cleanup


def root_key(root: Path) -> int:
    """The advisory lock key of a library root (by absolute path)."""
    return (zlib.crc32(os.fsencode(os.path.abspath(root))) & 0x7FFFFFFF) or 1


def ensure_public(conn: Connection) -> None:
    """The ``vector`` extension and the versions table (idempotent)."""
    has = conn.execute(text("SELECT 1 FROM pg_extension WHERE extname = 'vector'")).scalar()
    if not has:
        conn.execute(text("SELECT pg_advisory_xact_lock(:a, 1)"), {"a": LOCK_SPACE})
        conn.execute(text("CREATE EXTENSION IF NOT EXISTS vector"))
    conn.execute(text("CREATE TABLE IF NOT EXISTS public.clipsearch_current (id int PRIMARY KEY "
                      "CHECK (id = 1), name text NOT NULL, changed bigint NOT NULL)"))  # fmt: skip


class PgVersions:
    """The :class:`indexer.store.location.Versions` of a database."""

    def __init__(self, location: PgLocation):
        self.loc = location

    def _row(self) -> tuple | None:
        with self.loc.connect() as conn:
            if not conn.execute(text("SELECT to_regclass('public.clipsearch_current')")).scalar():
                return None
            return conn.execute(text("SELECT name, changed FROM public.clipsearch_current")).first()

    def current(self) -> str | None:
        row = self._row()
        return row[0] if row else None

    def signature(self) -> tuple | None:
        row = self._row()
        return tuple(row) if row else None

    def set_current(self, name: str) -> None:
        with self.loc.begin() as conn:
            ensure_public(conn)
            conn.execute(text(
                "INSERT INTO public.clipsearch_current(id, name, changed) VALUES (1, :n, 1) "
                "ON CONFLICT (id) DO UPDATE SET name = excluded.name, "
                "changed = public.clipsearch_current.changed + 1"), {"n": name})  # fmt: skip

    @staticmethod
    def next_name(current: str | None) -> str:
        old = current or "v0"
        return f"v{int(old[1:]) + 1 if old[1:].isdigit() else 1}"

    def remove(self, name: str) -> None:
        with self.loc.begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{PREFIX}{name}" CASCADE'))

    def remove_stale(self) -> None:
        """Drop version schemas other than the active one (an interrupted reindex's); call
        only holding the index lock exclusively."""
        current = self.current()
        if current is None:
            return
        with self.loc.connect() as conn:
            names = conn.execute(text("SELECT nspname FROM pg_namespace WHERE nspname LIKE :p"),
                                 {"p": PREFIX + "v%"}).scalars().all()  # fmt: skip
        for schema in names:
            name = schema[len(PREFIX) :]
            if name != current and name[1:].isdigit():
                self.remove(name)


class PgLock:
    """A writer's advisory locks (see the module docstring) on one dedicated connection."""

    def __init__(self, location: PgLocation, roots: Sequence[Path]):
        self.loc = location
        self.roots = sorted({Path(os.path.abspath(r)) for r in roots})
        self._conn = None

    def acquire(self) -> PgLock:
        engine = self.loc.engine
        with db.translated_errors(self.loc.url):
            conn = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        try:
            with db.translated_errors(self.loc.url):
                conn.execute(text(f"SET lock_timeout = {WAIT_MS}"))
                try:
                    conn.execute(text("SELECT pg_advisory_lock_shared(:a, :b)"),
                                 {"a": LOCK_SPACE, "b": INDEX_KEY})  # fmt: skip
                except StoreUnavailableError:
                    raise IndexBusyError(
                        f"a reindex holds the index in {self.loc.describe()}; try again later"
                    ) from None
                for root in self.roots:
                    got = conn.execute(text("SELECT pg_try_advisory_lock(:a, :b)"),
                                       {"a": LOCK_SPACE, "b": root_key(root)}).scalar()  # fmt: skip
                    if not got:
                        raise IndexBusyError(
                            f"another clipsearch process is indexing {root} into "
                            f"{self.loc.describe()}; wait for it to finish or stop it")  # fmt: skip
        except BaseException:
            conn.close()  # closing the session releases what it took
            raise
        self._conn = conn
        return self

    def release(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            try:
                conn.execute(text("SELECT pg_advisory_unlock_all()"))
            except Exception:  # noqa: BLE001 - the server drops a closed session's locks anyway
                pass
            conn.close()

    @property
    def held(self) -> bool:
        return self._conn is not None

    @contextmanager
    def exclusive(self) -> Iterator[bool]:
        """Yield True holding the index lock exclusively (no other writer runs), else False."""
        if self._conn is None:
            yield False
            return
        with db.translated_errors(self.loc.url):
            got = self._conn.execute(text("SELECT pg_try_advisory_lock(:a, :b)"),
                                     {"a": LOCK_SPACE, "b": INDEX_KEY}).scalar()  # fmt: skip
        try:
            yield bool(got)
        finally:
            if got:
                with db.translated_errors(self.loc.url):
                    self._conn.execute(text("SELECT pg_advisory_unlock(:a, :b)"),
                                       {"a": LOCK_SPACE, "b": INDEX_KEY})  # fmt: skip

    def __enter__(self) -> PgLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


class PgLocation(StoreLocation):
    """A library in the PostgreSQL database at ``url`` (see the module docstring)."""

    shared = True

    def __init__(self, url: str):
        self.url = url
        self.engine = db.make_engine(url, None, pool_size=2)
        self.versions = PgVersions(self)

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        with db.translated_errors(self.url), self.engine.connect() as conn:
            yield conn

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        with db.translated_errors(self.url), self.engine.begin() as conn:
            yield conn

    def open(self, name: str, writer: bool = False, kind: str = "auto") -> IndexStore:
        if writer:
            with self.begin() as conn:
                ensure_public(conn)
        return PgStore(self.url, PREFIX + name, writer=writer, kind=kind)

    def writer_lock(self, roots: Sequence[Path]) -> PgLock:
        return PgLock(self, roots)

    def describe(self) -> str:
        return db.mask_url(self.url)

    def close(self) -> None:
        self.engine.dispose()
