"""Schema 6: one compact (float16) copy of each vector in SQLite, migrated from schema 5."""

from __future__ import annotations

import os
import sqlite3

import numpy as np
import pytest

from indexer.config import load_config
from indexer.embed.encoder import HashEncoder
from indexer.library import Library
from indexer.store.sqlite import schema as db

from .indexer_helpers import as_schema_5, copy_images, faiss_ids, version_dir, write_config


def _as_schema_5(path) -> dict[int, bytes]:
    """Rewrite a schema 6 file as schema 5 wrote it (float32 blobs, version 5)."""
    con = sqlite3.connect(path)
    old = as_schema_5(con)
    con.commit()
    con.close()
    return old


def test_schema_5_file_migrates_to_float16_and_shrinks(tmp_path, sample_images):
    copy_images(sample_images[:4], tmp_path / "photos")
    cfg = load_config(write_config(tmp_path / "c.yaml", [tmp_path / "photos"], tmp_path / "idx"))
    with Library.open(cfg, writer=True, encoder=HashEncoder()) as lib:
        lib.index(progress=False)
        query = lib.store.vectors([1])[1][0]
        before = lib.store.search_vectors(query, 4)
    path = version_dir(cfg.index_dir) / "index.sqlite"
    old = _as_schema_5(path)
    # a free tail in the old file (as a vector table twice the size leaves): VACUUM drops it
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE ballast (x BLOB)")
    con.executemany("INSERT INTO ballast VALUES (?)", [(bytes(4096),)] * 300)
    con.commit()
    con.execute("DROP TABLE ballast")
    con.commit()
    con.close()
    size_old = path.stat().st_size

    with pytest.raises(db.SchemaError, match="run `clipsearch index` to migrate"):
        Library.open(cfg, encoder=HashEncoder())  # readers never migrate
    with Library.open(cfg, writer=True, encoder=HashEncoder()) as lib:  # migrates in place
        assert lib.index(progress=False).unchanged == 4
        ids, vecs = lib.store.vectors(sorted(old))
        after = lib.store.search_vectors(query, 4)
    con = sqlite3.connect(path)
    version = con.execute("SELECT version FROM schema_version").fetchone()[0]
    blobs = dict(con.execute("SELECT image_id, vector FROM vectors").fetchall())
    con.close()
    assert version == db.SCHEMA_VERSION >= 6
    assert all(len(b) == HashEncoder().identity.embed_dim * 2 for b in blobs.values())
    for i, v in zip(ids.tolist(), vecs):  # float16 of the float32 vectors, renormalised
        np.testing.assert_allclose(v, np.frombuffer(old[i], dtype="<f4"), atol=5e-4)
        assert abs(float(np.linalg.norm(v)) - 1) < 1e-5
    assert path.stat().st_size < size_old - 300 * 4096 // 2  # VACUUMed after the migration
    assert list(after[1]) == list(before[1])
    np.testing.assert_allclose(after[0], before[0], atol=1e-3)
    assert faiss_ids(cfg.index_dir) == sorted(old)  # FAISS kept in step (derived, same ids)
    with Library.open(cfg, encoder=HashEncoder()) as lib:  # readers open the migrated file
        assert lib.status()["indexed"] == 4


def test_trigger_counters_match_the_rows(tmp_path, sample_images):
    """counts() and roots() read trigger-kept counters; they equal a scan of the rows through
    adds, a bad file, a move between roots, a deleted file and a swept root."""
    photos = copy_images(sample_images[:5], tmp_path / "a")
    copy_images(sample_images[5:7], tmp_path / "b")
    cfg_path = write_config(tmp_path / "c.yaml", [tmp_path / "a", tmp_path / "b"], tmp_path / "idx")
    cfg = load_config(cfg_path)

    def truth() -> tuple[dict, dict]:
        con = sqlite3.connect(version_dir(cfg.index_dir) / "index.sqlite")
        by = dict(con.execute("SELECT status, COUNT(*) FROM images GROUP BY status").fetchall())
        roots = dict(con.execute("SELECT root, COUNT(*) FROM images WHERE status = 'ok' "
                                 "GROUP BY root").fetchall())  # fmt: skip
        vectors = con.execute("SELECT COUNT(*) FROM vectors").fetchone()[0]
        con.close()
        counts = {"images": sum(by.values()), "ok": by.get("ok", 0),
                  "errors": by.get("error", 0), "vectors": vectors}  # fmt: skip
        return counts, {os.fsdecode(r): n for r, n in roots.items()}

    def check(lib) -> dict:
        counts, roots = truth()
        assert lib.store.counts() == counts and lib.store.roots() == roots
        return counts

    with Library.open(cfg, writer=True, encoder=HashEncoder()) as lib:
        lib.index(progress=False)
        assert check(lib) == {"images": 7, "ok": 7, "errors": 0, "vectors": 7}
        photos[0].write_bytes(b"not a photo")  # ok -> error (loses its vector)
        photos[1].rename(tmp_path / "b" / photos[1].name)  # a move to another root
        photos[2].unlink()
        lib.index(progress=False)
        assert check(lib) == {"images": 6, "ok": 5, "errors": 1, "vectors": 5}
    cfg = load_config(write_config(tmp_path / "c.yaml", [tmp_path / "b"], tmp_path / "idx"))
    with Library.open(cfg, writer=True, encoder=HashEncoder()) as lib:
        lib.index(progress=False)  # root a is no longer configured: its rows are swept
        assert check(lib) == {"images": 3, "ok": 3, "errors": 0, "vectors": 3}
        assert list(lib.store.roots()) == [str(tmp_path / "b")]
