"""Acceptance 2: SIGKILL at random moments never corrupts the index; plus store repair."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from indexer.config import load_config
from indexer.embed.encoder import HashEncoder
from indexer.library import Library

from .indexer_helpers import (
    REPO,
    cli_env,
    copy_images,
    faiss_ids,
    run_cli,
    sqlite_state,
    vector_count,
    version_dir,
    versions_in,
    write_config,
)  # fmt: skip


# the PostgreSQL run takes ~2 min (slow); the two-writer kill test runs on it by default
@pytest.mark.parametrize(
    "database", ["sqlite", pytest.param("postgres", marks=pytest.mark.slow)], indirect=True
)
def test_sigkill_during_indexing(tmp_path, coco_images, tiny_checkpoint, database):
    photos = copy_images(coco_images[:220], tmp_path / "photos")
    idx = tmp_path / "idx"
    cfg_path = write_config(
        tmp_path / "c.yaml", [tmp_path / "photos"], idx, tiny_checkpoint,
        database, index={"batch_size": 4, "save_interval": 0},  # commit + save after every batch
    )  # fmt: skip
    cmd = [sys.executable, "-m", "indexer.cli", "--config", str(cfg_path), "index", "--no-progress"]
    rng = random.Random(1234)
    kills = 0
    for attempt in range(5):
        before = vector_count(idx, database)
        proc = subprocess.Popen(cmd, cwd=REPO, env=cli_env(), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)  # fmt: skip
        if attempt == 0:  # a random moment in start-up: imports, model loading, scanning
            time.sleep(rng.uniform(0.2, 1.5))
        else:  # a random moment once this run has committed a random number of images
            target = before + rng.randint(1, 24)
            deadline = time.monotonic() + 60
            while vector_count(idx, database) < target and proc.poll() is None:
                assert time.monotonic() < deadline, "indexer made no progress"
                time.sleep(0.02)
            time.sleep(rng.uniform(0.0, 0.1))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
            print(f"SIGKILL {attempt}: {vector_count(idx, database)} images committed")
        proc.wait(timeout=60)
        if attempt == 2:  # a deletion between crashes
            photos[-1].unlink()
    assert kills >= 4, "the indexer finished too fast to be killed"
    assert 0 < vector_count(idx, database) < 219, (
        "the kills should have interrupted indexing midway"
    )

    proc = run_cli(["index", "--no-progress"], cfg_path)
    assert proc.returncode == 0, proc.stderr
    state = sqlite_state(idx, database)
    expected = {os.fspath(p) for p in photos[:-1]}
    assert set(state["ok"]) == expected and not state["errors"]
    assert state["vector_ids"] == sorted(state["ok"].values())  # exactly one vector per image
    assert faiss_ids(idx, database) == state["vector_ids"]
    if database is None:
        leftovers = [p.name for p in version_dir(idx).iterdir() if p.suffix == ".tmp"]
        assert not leftovers


def _hash_library(tmp_path, sample_images, database=None):
    copy_images(sample_images, tmp_path / "photos")
    cfg = load_config(write_config(tmp_path / "c.yaml", [tmp_path / "photos"], tmp_path / "idx",
                                   database=database))  # fmt: skip
    with Library.open(cfg, writer=True, encoder=HashEncoder()) as lib:
        lib.index(progress=False)
    return cfg


def test_corrupt_or_missing_faiss_file_is_rebuilt_from_sqlite(tmp_path, sample_images):
    cfg = _hash_library(tmp_path, sample_images)
    faiss_file = version_dir(cfg.index_dir) / "vectors.faiss"
    want = sqlite_state(cfg.index_dir)["vector_ids"]
    for damage in ("truncate", "garbage", "delete"):
        if damage == "truncate":
            faiss_file.write_bytes(faiss_file.read_bytes()[:100])
        elif damage == "garbage":
            faiss_file.write_bytes(os.urandom(5000))
        else:
            faiss_file.unlink()
        with Library.open(cfg, encoder=HashEncoder()) as lib:  # readers rebuild in memory
            assert len(lib.search(image=sample_images[0], k=3).hits) == 3
        with Library.open(cfg, writer=True, encoder=HashEncoder()) as lib:
            assert lib.store.index.ids().tolist() == want
        assert faiss_ids(cfg.index_dir) == want


def test_stale_faiss_file_is_replayed_from_generations(tmp_path, sample_images):
    """A FAISS file older than SQLite (crash before the save) gets the newer rows replayed."""
    cfg = _hash_library(tmp_path, sample_images)
    faiss_file = version_dir(cfg.index_dir) / "vectors.faiss"
    stale = faiss_file.read_bytes()
    (tmp_path / "photos" / sample_images[0].name).unlink()
    with Library.open(cfg, writer=True, encoder=HashEncoder()) as lib:
        lib.index(progress=False)
    faiss_file.write_bytes(stale)  # as if the writer died after committing SQLite
    state = sqlite_state(cfg.index_dir)
    with Library.open(cfg) as lib:
        lib.store.refresh()
        assert lib.store.index.ids().tolist() == state["vector_ids"]
    with Library.open(cfg, writer=True, encoder=HashEncoder()) as lib:
        ids = lib.store.index.ids()
        assert ids.tolist() == state["vector_ids"]
        got = lib.store.index.get_vectors(ids)
        want = np.stack([state["vectors"][i] for i in ids.tolist()])
        assert np.allclose(got, want, atol=2.5e-4)  # flat16: the float16 codes SQLite holds


def test_reindex_swaps_under_a_running_reader(tmp_path, sample_images, database):
    cfg = _hash_library(tmp_path, sample_images, database)
    reader = Library.open(cfg, encoder=HashEncoder())
    try:
        before = reader.search(image=sample_images[2], k=1).hits[0]
        old, _ = versions_in(cfg.index_dir, database)
        with Library.open(cfg, writer=True, encoder=HashEncoder()) as lib:
            rep = lib.reindex(progress=False)
            assert rep.added == len(sample_images)
            # until the swap the reader kept using the old version; now it follows
        after = reader.search(image=sample_images[2], k=1).hits[0]
        assert after.path == before.path and versions_in(cfg.index_dir, database) == ("v2", {"v2"})
        assert old == "v1" and reader.status()["version"] == "v2"
    finally:
        reader.close()


def test_removed_root_is_swept(tmp_path, sample_images):
    copy_images(sample_images[:3], tmp_path / "a")
    copy_images(sample_images[3:5], tmp_path / "b")
    both = load_config(write_config(tmp_path / "c.yaml", [tmp_path / "a", tmp_path / "b"],
                                    tmp_path / "idx"))  # fmt: skip
    with Library.open(both, writer=True, encoder=HashEncoder()) as lib:
        assert lib.index(progress=False).added == 5
    only_a = load_config(write_config(tmp_path / "c.yaml", [tmp_path / "a"], tmp_path / "idx"))
    with Library.open(only_a, writer=True, encoder=HashEncoder()) as lib:
        assert lib.index(progress=False).removed == 2
        assert lib.status()["indexed"] == 3


def test_index_dir_inside_a_root_is_not_indexed(tmp_path, sample_images, database):
    copy_images(sample_images[:4], tmp_path / "lib")
    cfg = load_config(
        write_config(
            tmp_path / "c.yaml", [tmp_path / "lib"], tmp_path / "lib" / "idx", database=database
        )
    )
    for _ in range(2):  # the second run would see the thumbnails of the first
        with Library.open(cfg, writer=True, encoder=HashEncoder()) as lib:
            lib.index(progress=False)
    assert sorted(sqlite_state(cfg.index_dir, database)["ok"]) == sorted(
        str(tmp_path / "lib" / p.name) for p in sample_images[:4]
    )


def test_file_turned_broken_symlink_while_its_content_moved(tmp_path, sample_images, database):
    photos = copy_images(sample_images[:2], tmp_path / "lib")
    cfg = load_config(
        write_config(tmp_path / "c.yaml", [tmp_path / "lib"], tmp_path / "idx", database=database)
    )
    with Library.open(cfg, writer=True, encoder=HashEncoder()) as lib:
        lib.index(progress=False)
    target = tmp_path / "lib" / "elsewhere.png"
    os.rename(photos[0], target)
    os.symlink(tmp_path / "gone.png", photos[0])  # same name, now a broken link
    with Library.open(cfg, writer=True, encoder=HashEncoder()) as lib:
        rep = lib.index(progress=False)
    state = sqlite_state(cfg.index_dir, database)
    assert str(photos[0]) in state["errors"] and str(target) in state["ok"]
    assert rep.errors == 1 and rep.copied + rep.added == 1
    assert state["vector_ids"] == sorted(state["ok"].values()) == faiss_ids(cfg.index_dir, database)


@pytest.mark.parametrize("kind", ["hnsw", "ivf", "ivf-sq8"])
def test_configured_approximate_kinds(tmp_path, sample_images, kind):
    photos = copy_images(sample_images, tmp_path / "photos")
    cfg = load_config(write_config(tmp_path / "c.yaml", [tmp_path / "photos"], tmp_path / "idx",
                                   index={"kind": kind}))  # fmt: skip
    with Library.open(cfg, writer=True, encoder=HashEncoder()) as lib:
        lib.index(progress=False)
        photos[0].unlink()
        assert lib.index(progress=False).removed == 1
    with Library.open(cfg, encoder=HashEncoder()) as lib:
        st = lib.status()
        assert st["faiss"]["kind"] == kind and st["faiss"]["count"] == len(photos) - 1
        assert lib.search(image=photos[3], k=1).hits[0].path == str(photos[3])
    assert faiss_ids(cfg.index_dir) == sqlite_state(cfg.index_dir)["vector_ids"]
