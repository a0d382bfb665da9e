"""``clipsearch index --ray``: a real local Ray cluster, real PostgreSQL, real photos.

Every Ray cluster runs inside a loopback-only network namespace (``unshare -n``): the CLI
process starts it (``index --ray`` without an address) and nothing leaves the machine. The
PostgreSQL server listens on a unix socket, which works across network namespaces.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from indexer.config import ConfigError, config_from_dict
from indexer.ingest.pipeline import Indexer
from indexer.ingest.ray_engine import (
    DIE_ENV,
    ENCODE_LOG_ENV,
    RayIndexer,
    indexer_class,
    map_path,
    node_mapping,
)

from .indexer_helpers import REPO, cli_env, copy_images, pg_state, vector_count, write_config

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("ray") is None or shutil.which("unshare") is None,
    reason="needs ray (pip install -e '.[ray]') and unshare",
)


def netns_cli(args: list[str], config: Path, **env: str) -> list[str]:
    """The command line of ``python -m indexer.cli`` in a new loopback-only network namespace."""
    return ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", sys.executable,
            "-m", "indexer.cli", "--config", os.fspath(config), *args]  # fmt: skip


def ray_env(**extra: str) -> dict[str, str]:
    return cli_env(RAY_USAGE_STATS_ENABLED="0", **extra)


def run_ray(config: Path, *args: str, timeout: float = 300, **env: str) -> dict:
    proc = subprocess.run(netns_cli(["index", "--ray", "--json", "--no-progress", *args], config),
                          capture_output=True, text=True, timeout=timeout, env=ray_env(**env),
                          cwd=REPO)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads(proc.stdout)
    out["stderr"] = proc.stderr
    return out


def run_local(config: Path) -> dict:
    proc = subprocess.run([sys.executable, "-m", "indexer.cli", "--config", os.fspath(config),
                           "index", "--json", "--no-progress"], capture_output=True, text=True,
                          timeout=300, env=cli_env(), cwd=REPO)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout)


def by_path(state: dict) -> dict[str, np.ndarray]:
    return {p: state["vectors"][i] for p, i in state["ok"].items()}


def library(tmp_path: Path, coco_images: list[Path], n: int) -> Path:
    root = tmp_path / "photos"
    copy_images(coco_images[:n], root)
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg" * 20)
    (root / "empty.png").write_bytes(b"")
    shutil.copyfile(coco_images[n], root / os.fsdecode(b"caf\xe9 (not utf-8).jpg"))
    return root


def test_path_mapping_picks_the_node_and_longest_prefix():
    pm = {"*": {"/photos": "/mnt/p"}, "gpu1": {"/photos": "/data/p", "/photos/raw": "/raw"}}
    assert node_mapping(pm, ["gpu1", "10.0.0.2"]) == pm["gpu1"]
    assert node_mapping(pm, ["cpu7", "10.0.0.3"]) == pm["*"]
    assert node_mapping({}, ["x"]) == {}
    m = node_mapping(pm, ["gpu1"])
    assert map_path("/photos/raw/a.jpg", m) == "/raw/a.jpg"
    assert map_path("/photos/b.jpg", m) == "/data/p/b.jpg"
    assert map_path("/photosx/b.jpg", m) == "/photosx/b.jpg"


def test_ray_config_keys():
    cfg = config_from_dict({"index": {"engine": "ray", "ray_address": "auto",
                                      "ray": {"actors": 2, "num_gpus": 1}}})  # fmt: skip
    assert (cfg.index.engine, cfg.index.ray_address, cfg.index.ray.actors) == ("ray", "auto", 2)
    assert indexer_class(cfg) is RayIndexer and indexer_class(config_from_dict({})) is Indexer
    for bad in ({"engine": "spark"}, {"ray": {"actors": -1}}, {"ray": {"num_cpus": 0}},
                {"ray": {"path_map": []}}, {"ray": {"nope": 1}}):  # fmt: skip
        with pytest.raises(ConfigError, match="index"):
            config_from_dict({"index": bad})


def test_importing_indexer_does_not_import_ray():
    code = ("import sys, indexer, indexer.library, indexer.cli, indexer.ingest.ray_engine; "
            "sys.exit('ray' in sys.modules)")  # fmt: skip
    assert subprocess.run([sys.executable, "-c", code], env=cli_env(), cwd=REPO).returncode == 0


def test_ray_index_equals_local_index(tmp_path, coco_images, tiny_checkpoint, pg_server):
    """>= 200 real photos through a real local Ray cluster into PostgreSQL: the same rows,
    statuses, error reasons and (cosine >= 0.9999) vectors as the local pipeline's."""
    assert len(coco_images) >= 200
    root = library(tmp_path, coco_images, 220)
    from tests.videos import make_video  # a video too: indexed on the driver after the photos

    frames = []
    for src in coco_images[230:233]:
        with Image.open(src) as img:
            frames.append(img.convert("RGB"))
    make_video(root / "clip.webm", frames, codec="libvpx-vp9")
    local_db, ray_db = pg_server.create_database("local"), pg_server.create_database("ray")
    local_cfg = write_config(tmp_path / "local.yaml", [root], tmp_path / "idx-local",
                             tiny_checkpoint, local_db)  # fmt: skip
    ray_cfg = write_config(tmp_path / "ray.yaml", [root], tmp_path / "idx-ray", tiny_checkpoint,
                           ray_db, index={"ray": {"actors": 2, "batch_size": 16}})  # fmt: skip
    want = run_local(local_cfg)
    got = run_ray(ray_cfg)
    for key in ("scanned", "added", "errors", "encoded", "copied", "moved"):
        assert got[key] == want[key], key
    assert got["added"] == 222 and got["errors"] == 2 and got["unreachable"] == 0
    a, b = pg_state(local_db), pg_state(ray_db)
    assert set(a["ok"]) == set(b["ok"]) and len(b["ok"]) == 222
    assert os.fspath(root / "clip.webm") in b["ok"]
    assert a["errors"] == b["errors"] and len(b["errors"]) == 2
    va, vb = by_path(a), by_path(b)
    cos = [float(va[p] @ vb[p] / np.linalg.norm(va[p]) / np.linalg.norm(vb[p])) for p in va]
    assert min(cos) >= 0.9999, min(cos)
    assert b["vector_ids"] == sorted(b["ok"].values())


@pytest.mark.slow
def test_unreadable_root_on_a_worker_is_reported_once_then_reindex(tmp_path, coco_images, tiny_checkpoint):
    """A worker whose path mapping points nowhere: one clear warning, no rows written, and the
    next run (mapping fixed) indexes everything; ``reindex --ray`` rebuilds on Ray too."""
    root = tmp_path / "photos"
    copy_images(coco_images[:20], root)
    cfg = write_config(tmp_path / "c.yaml", [root], tmp_path / "idx", tiny_checkpoint,
                       index={"ray": {"actors": 1, "path_map": {"*": {os.fspath(root):
                                                                     "/nonexistent/p"}}}})  # fmt: skip
    out = run_ray(cfg)
    assert out["unreachable"] == 20 and out["added"] == 0
    assert out["stderr"].count("cannot read root") == 1 and "/nonexistent/p" in out["stderr"]
    write_config(cfg, [root], tmp_path / "idx", tiny_checkpoint, index={"ray": {"actors": 1}})
    out = run_ray(cfg)
    assert out["added"] == 20 and out["unreachable"] == 0
    proc = subprocess.run(netns_cli(["reindex", "--ray", "--json", "--no-progress"], cfg),
                          capture_output=True, text=True, timeout=300, env=ray_env(), cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout)["encoded"] == 20


def encode_log(path: Path) -> list[str]:
    return [os.fsdecode(b) for b in path.read_bytes().splitlines()] if path.exists() else []


@pytest.mark.slow
def test_a_worker_that_dies_has_its_batch_retried(tmp_path, coco_images, tiny_checkpoint,
                                                   pg_url):  # fmt: skip
    """An actor exits (os._exit) after its 3rd batch: Ray restarts it and retries the batch;
    every photo is stored and delivered exactly once."""
    root = library(tmp_path, coco_images, 200)
    log, marker = tmp_path / "encodes.log", tmp_path / "died"
    cfg = write_config(tmp_path / "c.yaml", [root], tmp_path / "idx", tiny_checkpoint, pg_url,
                       index={"ray": {"actors": 2, "batch_size": 8}})  # fmt: skip
    out = run_ray(cfg, **{ENCODE_LOG_ENV: os.fspath(log), DIE_ENV: f"3:{marker}"})
    assert marker.exists(), "the test hook never killed an actor"
    assert out["added"] == 201 and out["errors"] == 2
    lines = encode_log(log)
    assert len(lines) == len(set(lines)) == 201
    state = pg_state(pg_url)
    assert len(state["ok"]) == 201 and state["vector_ids"] == sorted(state["ok"].values())


@pytest.mark.slow
def test_driver_killed_mid_run_loses_nothing_and_encodes_nothing_twice(
    tmp_path, coco_images, tiny_checkpoint, pg_url
):
    """SIGKILL the driver once some batches are committed; the next run finishes the rest:
    every photo once, and nothing committed before the kill is encoded again. Then a move
    and a copy: vectors reused, as in a local run."""
    root = library(tmp_path, coco_images, 238)  # and a 239th photo with a non-UTF-8 name
    log1, log2 = tmp_path / "run1.log", tmp_path / "run2.log"
    cfg = write_config(tmp_path / "c.yaml", [root], tmp_path / "idx", tiny_checkpoint, pg_url,
                       index={"ray": {"actors": 1, "batch_size": 8}})  # fmt: skip
    proc = subprocess.Popen(netns_cli(["index", "--ray", "--no-progress"], cfg),
                            env=ray_env(**{ENCODE_LOG_ENV: os.fspath(log1)}), cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        while vector_count(tmp_path / "idx", pg_url) < 40 and time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
            time.sleep(0.2)
        committed_before = vector_count(tmp_path / "idx", pg_url)
        proc.send_signal(signal.SIGKILL)  # the driver only; its Ray cluster goes down with it
        proc.wait(timeout=30)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # leftovers of the cluster it started
        except ProcessLookupError:
            pass
        proc.stderr.close()
    committed = set(pg_state(pg_url)["ok"])
    assert 40 <= committed_before and len(committed) < 239, "the kill came too late"
    out = run_ray(cfg, **{ENCODE_LOG_ENV: os.fspath(log2)})
    second = encode_log(log2)
    assert not set(second) & committed, "photos committed before the kill were encoded again"
    assert len(second) == len(set(second)) == 239 - len(committed) == out["encoded"]
    state = pg_state(pg_url)
    assert len(state["ok"]) == 239 and len(state["errors"]) == 2
    assert state["vector_ids"] == sorted(state["ok"].values())
    # Incremental as the local pipeline: a move and a copy reuse vectors, nothing is encoded.
    (root / coco_images[0].name).rename(root / "moved.jpg")
    shutil.copyfile(root / coco_images[1].name, root / "copy.jpg")
    again = run_ray(cfg)
    assert (again["encoded"], again["moved"], again["copied"]) == (0, 1, 1)
    assert again["unchanged"] == 240  # 238 photos and 2 broken files
