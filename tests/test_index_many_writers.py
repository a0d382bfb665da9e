"""Many writers on one PostgreSQL database: two indexer processes (two machines, each with its
own root and local index.dir, one shared thumbnail folder) write at once while one of them is
SIGKILLed at random moments; nothing is lost or duplicated and the vectors equal a single
writer's."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from indexer.config import load_config
from indexer.embed.encoder import ClipEncoder, HashEncoder
from indexer.library import Library
from indexer.store import IndexBusyError

from .indexer_helpers import REPO, _pg_connect, cli_env, copy_images, pg_state, write_config


def _root_vectors(database: str, root) -> int:
    """Vectors committed for images under ``root`` (0 while there is no index yet)."""
    import psycopg

    try:
        with _pg_connect(database) as con:
            name = con.execute("SELECT name FROM clipsearch_current").fetchone()[0]
            return con.execute(
                f"SELECT count(*) FROM clipsearch_{name}.vectors v JOIN clipsearch_{name}.images i "
                "ON i.id = v.image_id WHERE i.root = %s", (os.fsencode(root),)).fetchone()[0]  # fmt: skip
    except (psycopg.Error, TypeError):
        return 0


def test_two_writers_at_once_keep_each_others_rows(tmp_path, sample_images, pg_server):
    """Two writers (threads, each its own Library and root) index at once, then again with a
    root removed from one config: neither sweeps the other's rows; a third writer of a root
    in use is refused, and so is a reindex while others write."""
    url = pg_server.create_database("two")
    roots = [tmp_path / "a", tmp_path / "b"]
    copy_images(sample_images[:5], roots[0])
    copy_images(sample_images[5:], roots[1])
    cfgs = [load_config(write_config(tmp_path / f"{i}.yaml", [r], tmp_path / f"idx{i}", None, url,
                                     index={"batch_size": 2}))
            for i, r in enumerate(roots)]  # fmt: skip
    libs = [Library.open(c, writer=True, encoder=HashEncoder()) for c in cfgs]
    try:
        errors: list[BaseException] = []

        def run(lib: Library) -> None:
            try:
                lib.index(progress=False)
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(lib,)) for lib in libs]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert not errors, errors
        with pytest.raises(IndexBusyError, match="another clipsearch process is indexing"):
            Library.open(cfgs[1], writer=True, encoder=HashEncoder())
        with pytest.raises(IndexBusyError, match="other clipsearch processes are writing"):
            libs[0].reindex(progress=False)
        assert libs[0].index(progress=False).removed == 0  # b's rows are not a removed root
    finally:
        for lib in libs:
            lib.close()
    state = pg_state(url)
    photos = {os.fspath(p) for r in roots for p in r.iterdir()}
    assert set(state["ok"]) == photos and state["vector_ids"] == sorted(state["ok"].values())


@pytest.mark.slow  # ~2 min: six indexer processes start (model loads) on a 2-CPU machine
def test_two_writers_one_killed_repeatedly(tmp_path, coco_images, tiny_checkpoint, pg_server):
    url = pg_server.create_database("many")
    roots = {"a": tmp_path / "a", "b": tmp_path / "b"}
    copy_images(coco_images[:24], roots["a"])
    copy_images(coco_images[24:88], roots["b"])  # enough that 3 kills after 1-8 more never end it
    thumbs = {"thumbs_dir": str(tmp_path / "shared-thumbs")}
    configs = {
        name: write_config(tmp_path / f"{name}.yaml", [root], tmp_path / f"idx-{name}",
                           tiny_checkpoint, url, index={"batch_size": 4, **thumbs})
        for name, root in roots.items()
    }  # fmt: skip

    def start(name: str) -> subprocess.Popen:
        cmd = [sys.executable, "-m", "indexer.cli", "--config", str(configs[name]), "index",
               "--no-progress"]  # fmt: skip
        return subprocess.Popen(cmd, cwd=REPO, env=cli_env(), stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)  # fmt: skip

    # the reference single writer's config; loading its encoder first also fills the session's
    # model cache (ONNX export), so the writers' start-up is model loading only
    single_url = pg_server.create_database("single")
    single = load_config(write_config(tmp_path / "s.yaml", list(roots.values()),
                                      tmp_path / "idx-s", tiny_checkpoint, single_url,
                                      index={"batch_size": 4}))  # fmt: skip
    encoder = ClipEncoder.from_config(single)

    rng = random.Random(17)
    writer_a = start("a")  # runs to the end beside the other one
    kills = 0
    for attempt in range(4):
        before = _root_vectors(url, roots["b"])
        proc = start("b")
        if attempt == 0:  # during start-up (model load, schema creation, scanning)
            time.sleep(rng.uniform(0.5, 2.0))
        else:  # once it has committed a random number of its photos
            target, deadline = before + rng.randint(1, 8), time.monotonic() + 90
            while _root_vectors(url, roots["b"]) < target and proc.poll() is None:
                if time.monotonic() > deadline:
                    proc.kill()
                    activity = pg_server.execute(
                        "SELECT string_agg(state || ' ' || coalesce(wait_event, '-') || ' ' "
                        "|| left(query, 80), E'\\n') FROM pg_stat_activity")  # fmt: skip
                    raise AssertionError(f"writer b made no progress: {proc.communicate()[1]}\n"
                                         f"{activity}")  # fmt: skip
                time.sleep(0.02)
            time.sleep(rng.uniform(0.0, 0.2))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait(timeout=60)
    assert kills >= 3, "writer b finished too fast to be killed"
    killed_at = _root_vectors(url, roots["b"])
    final_b = start("b")
    out_b = final_b.communicate(timeout=300)[1]
    out_a = writer_a.communicate(timeout=300)[1]
    assert final_b.returncode == 0, out_b
    assert writer_a.returncode == 0, out_a
    assert killed_at < 64, "the kills should have interrupted writer b midway"

    state = pg_state(url)
    photos = {os.fspath(p) for r in roots.values() for p in r.glob("*.jpg")}
    assert set(state["ok"]) == photos and not state["errors"]  # paths are unique: once each
    assert state["vector_ids"] == sorted(state["ok"].values())  # one vector per photo

    # a single writer indexing both roots into another database
    with Library.open(single, writer=True, encoder=encoder) as lib:
        lib.index(progress=False)
    ref = pg_state(single_url)
    assert set(ref["ok"]) == photos
    diff = max(float(np.abs(state["vectors"][state["ok"][p]] - ref["vectors"][ref["ok"][p]]).max())
               for p in photos)  # fmt: skip
    print(f"{kills} kills; max |v - v_single| = {diff:.2e}")
    assert diff < 1e-5
    # every photo's thumbnail in the shared folder
    with Library.open(load_config(configs["a"])) as lib:
        assert all(lib.thumbnail_path(lib.store.record_by_path(p)) for p in photos)
