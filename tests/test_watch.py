"""Issue 4: `clipsearch watch` follows changes under the library roots (real subprocesses)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

from indexer.config import ConfigError, config_from_dict, load_config
from indexer.embed.images import content_hash
from indexer.library import Library
from indexer.watch.status import read_status

from .indexer_helpers import (
    REPO,
    cli_env,
    copy_images,
    faiss_ids,
    run_cli,
    sqlite_state,
    write_config,
)  # fmt: skip

DEBOUNCE = 0.5
BATCH_RE = re.compile(
    r"batch (\d+): (\d+) paths -> (\d+) added, \d+ updated, (\d+) moved .*?, (\d+) copied"
)


class Watcher:
    """A `python -m indexer.cli watch` subprocess with its own log file."""

    def __init__(self, cfg_path: Path, log: Path, *extra: str):
        self.cfg_path, self.log = cfg_path, log
        self.index_dir = load_config(cfg_path).index_dir
        cmd = [sys.executable, "-m", "indexer.cli", "--config", str(cfg_path), "watch",
               "--log-file", str(log), *extra]  # fmt: skip
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=cli_env(), stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)  # fmt: skip

    def wait_state(self, state: str = "watching", timeout: float = 90) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            doc = read_status(self.index_dir)
            if doc and doc.get("pid") == self.proc.pid and doc.get("state") == state:
                return doc
            assert self.proc.poll() is None, f"watch exited early: {self.proc.stderr.read()}"
            time.sleep(0.05)
        raise AssertionError(f"watch never reached state {state!r}:\n{self.log_text()}")

    def log_text(self) -> str:
        return self.log.read_text() if self.log.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self.proc.stderr.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)


@pytest.fixture
def watchers():
    started: list[Watcher] = []
    yield started
    for w in started:
        w.kill()


def _config(tmp_path: Path, roots: list[Path], checkpoint: Path, **watch) -> Path:
    settings = {"debounce_seconds": DEBOUNCE, "stable_checks": 2, **watch}
    return write_config(tmp_path / "c.yaml", roots, tmp_path / "idx", checkpoint,
                        index={"batch_size": 16}, watch=settings)  # fmt: skip


def searchable_id(lib: Library, path: Path) -> int | None:
    """The id of ``path`` if a search finds it (by its own vector, within its folder)."""
    rec = lib.store.record_by_path(path)
    if rec is None or rec.status != "ok":
        return None
    hits = lib.search(image=rec.id, k=1, folder=os.fspath(path.parent)).hits
    return rec.id if hits and hits[0].id == rec.id else None


def wait_for(cond, timeout: float = 10.0, what: str = "condition") -> float:
    """Poll ``cond`` until true; returns the seconds it took."""
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)
    return time.monotonic() - t0


def assert_consistent(index_dir: Path, root_files: set[str]) -> dict:
    state = sqlite_state(index_dir)
    assert set(state["ok"]) == root_files and not state["errors"]
    assert state["vector_ids"] == sorted(state["ok"].values())
    assert faiss_ids(index_dir) == state["vector_ids"]
    return state


def _files(*roots: Path) -> set[str]:
    return {os.fspath(p) for r in roots for p in r.rglob("*.jpg")}


# --------------------------------------------------------------------------- acceptance 1 + 5
def test_watch_follows_creates_slow_copies_renames_moves_deletes(
    tmp_path, coco_images, tiny_checkpoint, watchers
):
    photos = tmp_path / "photos"
    copy_images(coco_images[:6], photos)
    copy_images(coco_images[6:10], photos / "album")
    cfg_path = _config(tmp_path, [photos], tiny_checkpoint)
    w = Watcher(cfg_path, tmp_path / "watch.log")
    watchers.append(w)
    w.wait_state("watching")
    lib = Library.open(load_config(cfg_path))
    try:
        assert lib.status()["indexed"] == 10  # the start-up reconcile
        # --- copies: each file searchable within 5 s
        delays = []
        for src in coco_images[10:18]:
            shutil.copyfile(src, photos / src.name)
            delays.append(wait_for(lambda s=src: searchable_id(lib, photos / s.name), 5, src.name))
        print(f"\ncopy -> searchable delays (s): {[round(d, 2) for d in delays]}; "
              f"median {statistics.median(delays):.2f}s, max {max(delays):.2f}s")  # fmt: skip

        # --- a slow copy: chunks with pauses longer than the debounce, file kept open
        data = coco_images[18].read_bytes()
        slow = photos / "slow.jpg"
        n = 4
        with open(slow, "wb") as fh:
            for i in range(n):
                fh.write(data[i * len(data) // n : (i + 1) * len(data) // n])
                fh.flush()
                os.fsync(fh.fileno())
                time.sleep(DEBOUNCE * 2)
                assert lib.store.record_by_path(slow) is None, "indexed while half-written"
        d = wait_for(lambda: searchable_id(lib, slow), 5, "the slow copy")
        rec = lib.store.record_by_path(slow)
        assert rec.status == "ok" and rec.content_hash == content_hash(data)
        assert rec.size == len(data)
        print(f"slow copy ({n} chunks, {DEBOUNCE * 2}s pauses) searchable {d:.2f}s after close")

        # --- rename: same id, bit-identical vector, not re-encoded
        before = sqlite_state(w.index_dir)
        old, new = photos / coco_images[0].name, photos / "renamed.jpg"
        old_id = before["ok"][os.fspath(old)]
        os.rename(old, new)
        d = wait_for(lambda: searchable_id(lib, new) == old_id, 5, "the renamed file")
        assert lib.store.record_by_path(old) is None
        after = sqlite_state(w.index_dir)
        assert after["vectors"][old_id].tobytes() == before["vectors"][old_id].tobytes()
        print(f"rename searchable under its new name after {d:.2f}s (same id {old_id})")

        # --- move a whole folder: every file keeps its id and vector
        album_ids = {p: before["ok"][os.fspath(photos / "album" / p)]
                     for p in (x.name for x in coco_images[6:10])}  # fmt: skip
        os.rename(photos / "album", photos / "trips")
        d = wait_for(lambda: all(searchable_id(lib, photos / "trips" / n) == i
                                 for n, i in album_ids.items()), 5, "the moved folder")  # fmt: skip
        assert not any(lib.store.record_by_path(photos / "album" / n) for n in album_ids)
        print(f"folder move searchable after {d:.2f}s")

        # --- deletes: gone within 5 s
        gone = [photos / coco_images[1].name, photos / coco_images[2].name]
        for p in gone:
            p.unlink()
        d = wait_for(lambda: all(lib.store.record_by_path(p) is None for p in gone), 5, "deletes")
        print(f"deletes gone after {d:.2f}s")
    finally:
        lib.close()

    log = w.log_text()
    moved = sum(int(m.group(4)) for m in BATCH_RE.finditer(log))
    assert moved >= 5, log  # the rename and the 4 files of the folder were reused
    state = sqlite_state(w.index_dir)
    assert state["vector_ids"] == sorted(state["ok"].values())
    encoded = sum(int(x) for x in re.findall(r"; (\d+) encoded in", log))
    assert encoded == 9, log  # the 8 copies and the slow copy; nothing re-encoded
    assert w.stop() == 0
    assert_consistent(w.index_dir, _files(photos))


# --------------------------------------------------------------------------- acceptance 2
def test_burst_is_indexed_in_batches(tmp_path, coco_images, tiny_checkpoint, watchers):
    photos = tmp_path / "photos"
    photos.mkdir()
    max_batch = 64
    cfg_path = _config(tmp_path, [photos], tiny_checkpoint, max_batch=max_batch)
    w = Watcher(cfg_path, tmp_path / "watch.log")
    watchers.append(w)
    w.wait_state("watching")
    burst = coco_images[:220]
    t0 = time.monotonic()
    copy_images(burst, photos / "import")

    def batches() -> list[tuple[int, int]]:  # (paths, added or copied) per logged batch
        return [(int(m.group(2)), int(m.group(3)) + int(m.group(5)))
                for m in BATCH_RE.finditer(w.log_text())]  # fmt: skip

    wait_for(lambda: sum(a for _, a in batches()) >= len(burst), 120, "the burst")
    took = time.monotonic() - t0
    sizes = batches()
    with Library.open(load_config(cfg_path)) as lib:
        assert lib.status()["indexed"] == len(burst)
    print(f"\n{len(burst)} files indexed {took:.1f}s after the copy began; batches "
          f"(paths, added): {sizes}")  # fmt: skip
    assert sum(a for _, a in sizes) == len(burst)
    assert max(p for p, _ in sizes) <= max_batch
    assert sum(1 for _, a in sizes if a > 1) >= 3, sizes
    assert w.stop() == 0
    assert_consistent(w.index_dir, _files(photos))


# --------------------------------------------------------------------------- acceptance 3
def test_second_instance_refuses_and_stale_lock_is_taken_over(
    tmp_path, coco_images, tiny_checkpoint, watchers
):
    photos = tmp_path / "photos"
    copy_images(coco_images[:5], photos)
    cfg_path = _config(tmp_path, [photos], tiny_checkpoint)
    first = Watcher(cfg_path, tmp_path / "w1.log")
    watchers.append(first)
    first.wait_state("watching")

    proc = run_cli(["watch"], cfg_path, timeout=60)
    assert proc.returncode == 1
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "clipsearch watch is already running" in proc.stderr
    assert f"pid {first.proc.pid}" in proc.stderr
    proc = run_cli(["index"], cfg_path, timeout=60)  # the writer lock is shared with `index`
    assert proc.returncode == 1 and "another clipsearch process" in proc.stderr
    status = json.loads(run_cli(["status", "--json"], cfg_path, timeout=60).stdout)  # reader
    assert status["indexed"] == 5
    assert status["watch"]["running"] and status["watch"]["pid"] == first.proc.pid
    assert status["watch"]["queue"] == 0 and status["watch"]["last_update"]
    text = run_cli(["status"], cfg_path, timeout=60).stdout
    assert f"watch:    watching (pid {first.proc.pid}), queue 0, last update" in text

    first.stop(signal.SIGKILL)  # a stale status file and lock file are left behind
    cfg = load_config(cfg_path)
    with Library.open(cfg) as lib:
        ws = lib.status()["watch"]
        assert not ws["running"] and ws["state"] == "dead"
    copy_images(coco_images[5:7], photos)  # changed while no one watched
    second = Watcher(cfg_path, tmp_path / "w2.log")
    watchers.append(second)
    second.wait_state("watching")
    assert "did not stop cleanly" in second.log_text()
    with Library.open(cfg) as lib:
        assert lib.status()["indexed"] == 7 and lib.watch_status()["running"]
    assert second.stop(signal.SIGINT) == 0
    with Library.open(cfg) as lib:
        ws = lib.watch_status()
        assert not ws["running"] and ws["state"] == "stopped"
    assert_consistent(cfg.index_dir, _files(photos))


# --------------------------------------------------------------------------- acceptance 4
def test_root_that_vanishes_is_offline_not_deleted(
    tmp_path, coco_images, tiny_checkpoint, watchers
):
    photos, other = tmp_path / "photos", tmp_path / "other"
    copy_images(coco_images[:12], photos)
    copy_images(coco_images[12:15], other)
    cfg_path = _config(tmp_path, [photos, other], tiny_checkpoint)
    w = Watcher(cfg_path, tmp_path / "watch.log")
    watchers.append(w)
    w.wait_state("watching")
    before = sqlite_state(w.index_dir)
    assert len(before["ok"]) == 15
    away = tmp_path / "unplugged"
    os.rename(photos, away)
    lib = Library.open(load_config(cfg_path))
    try:
        d = wait_for(lambda: os.fspath(photos) in lib.watch_status()["offline_roots"], 5,
                     "the root to go offline")  # fmt: skip
        print(f"\nroot offline after {d:.2f}s")
        copy_images(coco_images[15:16], away)  # added while "unplugged"
        time.sleep(3 * DEBOUNCE + 2.5)  # time for a (wrong) sweep to happen
        assert sqlite_state(w.index_dir)["ok"] == before["ok"], "rows of an offline root lost"
        other_id = before["ok"][os.fspath(other / coco_images[12].name)]
        hits = lib.search(image=other_id, k=20).hits
        assert len(hits) == 3 and all(h.record.root == os.fspath(other) for h in hits)
        status = lib.status()
        online = {r["path"]: r["online"] for r in status["roots"]}
        assert online == {os.fspath(photos): False, os.fspath(other): True}
        assert f"offline:  {photos}" in run_cli(["status"], cfg_path, timeout=60).stdout

        os.rename(away, photos)
        new = photos / coco_images[15].name
        d = wait_for(lambda: searchable_id(lib, new), 10, "the root to come back")
        print(f"root back and reconciled after {d:.2f}s")
        after = sqlite_state(w.index_dir)
        for path, i in before["ok"].items():  # nothing lost, nothing re-encoded
            assert after["ok"][path] == i
            assert after["vectors"][i].tobytes() == before["vectors"][i].tobytes()
        assert len(lib.search(image=other_id, k=20).hits) == 16
        assert lib.watch_status()["offline_roots"] == []
    finally:
        lib.close()
    assert "is offline" in w.log_text() and "back online" in w.log_text()
    assert w.stop() == 0
    assert_consistent(w.index_dir, _files(photos, other))


# --------------------------------------------------------------------------- polling fallback
def test_polling_observer(tmp_path, coco_images, tiny_checkpoint, watchers):
    photos = tmp_path / "photos"
    copy_images(coco_images[:2], photos)
    cfg_path = _config(tmp_path, [photos], tiny_checkpoint, observer="polling", poll_interval=0.5)
    w = Watcher(cfg_path, tmp_path / "watch.log")
    watchers.append(w)
    doc = w.wait_state("watching")
    assert doc["roots"][0]["observer"] == "polling"
    lib = Library.open(load_config(cfg_path))
    try:
        copy_images(coco_images[2:5], photos / "sub")
        d = wait_for(lambda: all(searchable_id(lib, photos / "sub" / p.name)
                                 for p in coco_images[2:5]), 6, "polled files")  # fmt: skip
        print(f"\npolling: 3 new files searchable after {d:.2f}s")
    finally:
        lib.close()
    assert w.stop() == 0


# --------------------------------------------------------------------------- acceptance 5
@pytest.mark.slow  # a soak / diagnostic run: kept out of the 15-minute default run
def test_idle_cpu_is_near_zero(tmp_path, coco_images, tiny_checkpoint, watchers):
    photos = tmp_path / "photos"
    copy_images(coco_images[:20], photos)
    cfg_path = _config(tmp_path, [photos], tiny_checkpoint)
    w = Watcher(cfg_path, tmp_path / "watch.log")
    watchers.append(w)
    w.wait_state("watching")
    time.sleep(2)  # let start-up work (thread pools, first status writes) settle

    def cpu_ticks() -> int:
        fields = Path(f"/proc/{w.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime + stime

    hz = os.sysconf("SC_CLK_TCK")
    t0, c0 = time.monotonic(), cpu_ticks()
    time.sleep(30)
    t1, c1 = time.monotonic(), cpu_ticks()
    percent = 100.0 * (c1 - c0) / hz / (t1 - t0)
    print(f"\nidle CPU of the watch service over {t1 - t0:.1f}s: {percent:.2f}% of one core "
          f"({c1 - c0} ticks)")  # fmt: skip
    assert percent < 5.0
    assert w.stop() == 0


# --------------------------------------------------------------------------- config
def test_watch_config_validation():
    cfg = config_from_dict({"watch": {"debounce_seconds": 2, "observer": "polling"}})
    assert cfg.watch.debounce_seconds == 2.0 and cfg.watch.max_batch == 256
    for bad in ({"observer": "fanotify"}, {"max_batch": 0}, {"stable_checks": 0},
                {"debounce_seconds": 0}, {"poll_interval": 0}, {"log_level": "loud"},
                {"nope": 1}):  # fmt: skip
        with pytest.raises(ConfigError, match="watch"):
            config_from_dict({"watch": bad})
    assert load_config(REPO / "config.yaml").watch.max_batch == 256
