"""Schema versioning: migrations run for writers, readers and old programs refuse clearly."""

from __future__ import annotations

import sqlite3

import pytest
from sqlalchemy import text

from indexer.config import load_config
from indexer.embed.encoder import HashEncoder
from indexer.library import Library
from indexer.store.errors import SchemaError
from indexer.store.sqlite import reads
from indexer.store.sqlite import schema as db

from .indexer_helpers import copy_images, version_dir, write_config


def _library(tmp_path, sample_images):
    copy_images(sample_images[:3], tmp_path / "photos")
    cfg = load_config(write_config(tmp_path / "c.yaml", [tmp_path / "photos"], tmp_path / "idx"))
    with Library.open(cfg, writer=True, encoder=HashEncoder()) as lib:
        lib.index(progress=False)
    return cfg


def test_migration_runs_for_writers_only(tmp_path, sample_images, monkeypatch):
    cfg = _library(tmp_path, sample_images)

    def v_next(conn):
        conn.execute(text("ALTER TABLE images ADD COLUMN rating INTEGER"))

    target = db.SCHEMA_VERSION + 1  # a future migration on top of the current schema
    monkeypatch.setattr(db, "SCHEMA_VERSION", target)
    monkeypatch.setattr(reads, "SCHEMA_VERSION", target)  # what the light reader checks
    monkeypatch.setitem(db.MIGRATIONS, target, v_next)
    with pytest.raises(SchemaError, match="run `clipsearch index` to migrate"):
        Library.open(cfg, encoder=HashEncoder())
    with Library.open(cfg, writer=True, encoder=HashEncoder()) as lib:  # migrates in place
        assert lib.index(progress=False).unchanged == 3
    con = sqlite3.connect(version_dir(cfg.index_dir) / "index.sqlite")
    cols = [r[1] for r in con.execute("PRAGMA table_info(images)")]
    version = con.execute("SELECT version FROM schema_version").fetchone()[0]
    con.close()
    assert "rating" in cols and version == target
    with Library.open(cfg, encoder=HashEncoder()) as lib:
        assert lib.status()["indexed"] == 3


def test_newer_schema_is_refused(tmp_path, sample_images):
    cfg = _library(tmp_path, sample_images)
    con = sqlite3.connect(version_dir(cfg.index_dir) / "index.sqlite")
    con.execute("UPDATE schema_version SET version = 99")
    con.commit()
    con.close()
    for writer in (False, True):
        with pytest.raises(SchemaError, match="newer clipsearch"):
            Library.open(cfg, writer=writer, encoder=HashEncoder())
