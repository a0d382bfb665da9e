"""Acceptance 5: readers search while a writer indexes; one writer at a time."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from indexer.config import load_config
from indexer.embed.encoder import ClipEncoder, HashEncoder
from indexer.library import Library
from indexer.store import IndexBusyError

from .indexer_helpers import REPO, cli_env, copy_images, run_cli, write_config

READER = r"""
import json, sys, time, traceback
from pathlib import Path
from indexer.config import load_config
from indexer.library import Library
cfg = load_config(sys.argv[1]); stop = Path(sys.argv[2]); query_id = int(sys.argv[3])
with Library.open(cfg) as lib:
    i = 0
    while True:
        done = stop.exists()
        try:
            if i % 10 == 0:
                res = lib.search("a photo of people", k=5)          # text: loads the model
            else:
                res = lib.search(image=query_id, k=5)                # by indexed id
            assert res.hits and (i % 10 == 0 or res.hits[0].id == query_id)
            count = lib.store.vector_state().count
            assert lib.status()["faiss"]["count"] >= count
            print(json.dumps({"count": count}), flush=True)
        except Exception:
            print(json.dumps({"error": traceback.format_exc()}), flush=True)
            sys.exit(1)
        i += 1
        if done:
            break
        time.sleep(0.05)
"""


def test_reader_sees_writer_progress(tmp_path, coco_images, tiny_checkpoint, database):
    photos = tmp_path / "photos"
    copy_images(coco_images[:30], photos)
    cfg_path = write_config(tmp_path / "c.yaml", [photos], tmp_path / "idx", tiny_checkpoint,
                            index={"batch_size": 8, "save_interval": 1}, database=database)  # fmt: skip
    cfg = load_config(cfg_path)
    with Library.open(cfg, writer=True, encoder=ClipEncoder.from_config(cfg)) as lib:
        lib.index(progress=False)
        first_id = lib.search(image=photos / coco_images[0].name, k=1).hits[0].id
    copy_images(coco_images[30:160], photos)

    stop = tmp_path / "stop"
    reader = subprocess.Popen(
        [sys.executable, "-c", READER, str(cfg_path), str(stop), str(first_id)],
        cwd=REPO, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    first_line = reader.stdout.readline()  # the reader is up and searching before the writer
    writer = run_cli(["index", "--no-progress"], cfg_path)
    assert writer.returncode == 0, writer.stderr
    time.sleep(1.5)
    stop.touch()
    out, err = reader.communicate(timeout=120)
    lines = [json.loads(x) for x in [first_line, *out.splitlines()] if x.strip()]
    errors = [x["error"] for x in lines if "error" in x]
    assert reader.returncode == 0 and not errors, (errors, err[-2000:])
    counts = [x["count"] for x in lines]
    assert counts[0] == 30 and counts[-1] == 160
    assert counts == sorted(counts), "the count never goes down"
    assert len(set(counts)) >= 3, (
        f"the reader should see intermediate states: {sorted(set(counts))}"
    )


def test_single_writer_lock(tmp_path, sample_images, database):
    copy_images(sample_images[:3], tmp_path / "photos")
    cfg_path = write_config(
        tmp_path / "c.yaml", [tmp_path / "photos"], tmp_path / "idx", database=database
    )
    cfg = load_config(cfg_path)
    with Library.open(cfg, writer=True, encoder=HashEncoder()) as lib:
        lib.index(progress=False)
        with pytest.raises(IndexBusyError, match="another clipsearch process"):
            Library.open(cfg, writer=True, encoder=HashEncoder())
        proc = run_cli(["index"], cfg_path)
        assert proc.returncode == 1
        assert proc.stderr.startswith("clipsearch: error: another clipsearch process")
        assert len(proc.stderr.strip().splitlines()) == 1
        with Library.open(cfg, encoder=HashEncoder()) as reader:  # readers are not blocked
            assert reader.status()["indexed"] == 3
    with Library.open(cfg, writer=True, encoder=HashEncoder()):  # released on close
        pass
