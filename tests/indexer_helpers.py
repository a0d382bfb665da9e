"""Shared helpers for the indexer tests (tests/test_index_*.py)."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml

from indexer.store.sqlite.schema import VECTOR_DTYPE

REPO = Path(__file__).resolve().parent.parent


def write_config(
    path: Path,
    roots: list[Path],
    index_dir: Path,
    weights: Path | None = None,
    database: str | None = None,
    **sections: dict,
) -> Path:
    """A config file for a temporary library; ``sections`` update config sections;
    ``database``: a PostgreSQL URL (the ``store`` fixture's), None for SQLite."""
    data: dict = {
        "model": {"weights": os.fspath(weights) if weights else None},
        "library": {"roots": [os.fspath(r) for r in roots]},
        "index": {"dir": os.fspath(index_dir), "batch_size": 16},
    }
    if database:
        data["index"]["database"] = database
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    path.write_text(yaml.safe_dump(data))
    return path


def copy_images(sources: list[Path], dest: Path) -> list[Path]:
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for src in sources:
        target = dest / src.name
        shutil.copyfile(src, target)
        out.append(target)
    return out


def cli_env(**extra: str) -> dict[str, str]:
    # The model cache stays: the session's (tests/conftest.py), never the user's ~/.cache.
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("CLIPSEARCH_") or k == "CLIPSEARCH_CACHE_DIR"
    }
    env.update(PYTHONPATH=os.fspath(REPO), **extra)
    return env


def run_cli(
    args: list[str],
    config: Path | None = None,
    env: dict | None = None,
    timeout: float = 180,
    **kwargs,
) -> subprocess.CompletedProcess:
    """``python -m indexer.cli [--config FILE] ARGS`` in a fresh process."""
    cmd = [sys.executable, "-m", "indexer.cli"]
    if config is not None:
        cmd += ["--config", os.fspath(config)]
    return subprocess.run(
        cmd + args, capture_output=True, text=True, timeout=timeout, env=env or cli_env(),
        cwd=REPO, **kwargs,
    )  # fmt: skip


def run_json(args: list[str], config: Path, **kw) -> dict:
    proc = run_cli([*args, "--json"], config, **kw)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def version_dir(index_dir: Path) -> Path:
    return index_dir / (index_dir / "CURRENT").read_text().strip()


def _unit(v: np.ndarray) -> np.ndarray:
    """A stored vector as the store reads it back (float32, renormalised)."""
    from indexer.store.sqlite.queries import decode_rows

    return decode_rows([(0, np.ascontiguousarray(v, VECTOR_DTYPE).tobytes())])[1][0].copy()


def sqlite_state(index_dir: Path, database: str | None = None) -> dict:
    """{"ok": {path: id}, "errors": {path: reason}, "vector_ids": sorted ids, "vectors": {id: arr}}
    of the active version (in PostgreSQL at ``database`` when given)."""
    if database:
        return pg_state(database)
    con = sqlite3.connect(version_dir(index_dir) / "index.sqlite")
    try:
        ok, errors = {}, {}
        for i, p, status, err in con.execute("SELECT id, path, status, error FROM images"):
            path = os.fsdecode(p)
            if status == "ok":
                ok[path] = i
            else:
                errors[path] = err
        vecs = {i: _unit(np.frombuffer(b, dtype=VECTOR_DTYPE)) for i, b in con.execute(
            "SELECT image_id, vector FROM vectors")}  # fmt: skip
    finally:
        con.close()
    return {"ok": ok, "errors": errors, "vector_ids": sorted(vecs), "vectors": vecs}


def pg_state(database: str) -> dict:
    """:func:`sqlite_state` read straight from PostgreSQL (the active version's schema)."""
    from pgvector.psycopg import register_vector

    with _pg_connect(database) as con:
        register_vector(con)
        name = con.execute("SELECT name FROM clipsearch_current").fetchone()[0]
        schema = f"clipsearch_{name}"
        ok, errors = {}, {}
        for i, p, status, err in con.execute(
            f"SELECT id, path, status, error FROM {schema}.images"
        ):
            if status == "ok":
                ok[os.fsdecode(bytes(p))] = i
            else:
                errors[os.fsdecode(bytes(p))] = err
        vecs = {i: v.to_numpy().astype(np.float32) for i, v in con.execute(
            f"SELECT image_id, vector FROM {schema}.vectors")}  # fmt: skip
    return {"ok": ok, "errors": errors, "vector_ids": sorted(vecs), "vectors": vecs}


def _pg_connect(database: str):
    import psycopg

    return psycopg.connect(database.replace("postgresql+psycopg://", "postgresql://"))


def versions_in(index_dir: Path, database: str | None = None) -> tuple[str | None, set[str]]:
    """(the active version's name, every version present) of an index."""
    if not database:
        current = (
            (index_dir / "CURRENT").read_text().strip()
            if (index_dir / "CURRENT").exists()
            else None
        )
        return current, {p.name for p in index_dir.glob("v*") if p.is_dir()}
    with _pg_connect(database) as con:
        row = con.execute("SELECT name FROM clipsearch_current").fetchone()
        names = {r[0][len("clipsearch_"):] for r in con.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'clipsearch_v%'")}  # fmt: skip
    return (row[0] if row else None), names


def vector_count(index_dir: Path, database: str | None = None) -> int:
    """Vectors committed in the active version (0 while there is none), read directly."""
    if not database:
        try:
            con = sqlite3.connect(
                f"file:{version_dir(index_dir) / 'index.sqlite'}?mode=ro", uri=True
            )
        except (OSError, sqlite3.Error):
            return 0
        try:
            return con.execute("SELECT count(*) FROM vectors").fetchone()[0]
        except sqlite3.Error:
            return 0
        finally:
            con.close()
    import psycopg

    try:
        with _pg_connect(database) as con:
            name = con.execute("SELECT name FROM clipsearch_current").fetchone()[0]
            return con.execute(f"SELECT count(*) FROM clipsearch_{name}.vectors").fetchone()[0]
    except (psycopg.Error, TypeError):
        return 0


def faiss_ids(index_dir: Path, database: str | None = None) -> list[int]:
    """The ids the vector search holds (PostgreSQL: the vectors table's, it is the index)."""
    if database:
        return pg_state(database)["vector_ids"]
    from indexer.store.vectors.index import VectorIndex

    index, _gen = VectorIndex.load(version_dir(index_dir) / "vectors.faiss")
    return index.ids().tolist()


class CountingEncoder:
    """Wraps an Encoder and counts the images it encodes."""

    def __init__(self, inner):
        self.inner = inner
        self.identity = inner.identity
        self.image_resolution = inner.image_resolution
        self.images_encoded = 0
        self.calls = 0

    def preprocess(self, image):
        return self.inner.preprocess(image)

    def encode_images(self, batch):
        self.calls += 1
        self.images_encoded += len(batch)
        return self.inner.encode_images(batch)

    def encode_texts(self, texts):
        return self.inner.encode_texts(texts)


def as_schema_5(con: sqlite3.Connection) -> dict[int, bytes]:
    """Turn a current index into what schema 5 wrote: no recognised text (schema 7),
    float32 vector blobs, no counter tables or triggers (schema 6), version 5; returns the
    float32 blobs by id. Tests that fake an older schema remove that schema's later tables on
    top."""
    for (name,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
        con.execute(f"DROP TRIGGER {name}")
    con.execute("DROP TABLE ocr_fts")
    con.execute("DROP TABLE ocr_text")
    con.execute("DELETE FROM meta WHERE key = 'ocr_gen'")
    con.execute("DROP TABLE image_counts")
    con.execute("DROP TABLE counters")
    con.execute("UPDATE schema_version SET version = 5")
    old = {}
    for i, blob in con.execute("SELECT image_id, vector FROM vectors").fetchall():
        old[i] = _unit(np.frombuffer(blob, dtype=VECTOR_DTYPE)).astype("<f4").tobytes()
        con.execute("UPDATE vectors SET vector = ? WHERE image_id = ?", (old[i], i))
    return old
