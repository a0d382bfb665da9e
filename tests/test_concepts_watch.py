"""Issue 16: new photos matching a personal concept are tagged by the real ``watch`` daemon
(a ``python -m indexer.cli watch`` subprocess) within seconds of arriving; concepts and albums
are taught and saved while the daemon holds the writer lock (it runs them for the CLI)."""

from __future__ import annotations

import shutil
import time

from indexer.config import load_config
from indexer.library import Library

from .augment import augmented_copies, augmented_library
from .indexer_helpers import run_cli, run_json, write_config
from .test_watch import DEBOUNCE, Watcher, wait_for, watchers  # noqa: F401 - the fixture

X = 20  # a coco-mini photo whose augmentations cluster under the tiny random model


def test_watch_tags_new_photos_with_concepts(tmp_path, coco_images, tiny_checkpoint, watchers):  # noqa: F811
    photos = tmp_path / "photos"
    family, rest = augmented_library(photos, coco_images, copies=4, others=30, x=X)
    cfg_path = write_config(tmp_path / "c.yaml", [photos], tmp_path / "idx", tiny_checkpoint,
                            index={"batch_size": 16}, tags={"auto": False},
                            watch={"debounce_seconds": DEBOUNCE, "stable_checks": 2})  # fmt: skip
    run_json(["index"], cfg_path)
    cfg = load_config(cfg_path)
    with Library.open(cfg) as lib:
        examples = [lib.store.record_by_path(p).id for p in family[1:4]]
    w = Watcher(cfg_path, tmp_path / "watch.log")
    watchers.append(w)
    w.wait_state("watching")
    taught = run_json(["concept", "teach", "x", *map(str, examples)], cfg_path)  # via the daemon
    assert taught["photos"] >= 3 and taught["examples"] == examples
    bad = run_cli(["concept", "teach", "y", "999999", *map(str, examples[:2])], cfg_path)
    assert bad.returncode == 1 and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
    assert "image id 999999 is not in the index" in bad.stderr
    album = run_json(["albums", "create", "xs", "--concept", "x"], cfg_path)
    assert album["name"] == "xs" and album["count"] >= 3
    assert "ran concept.teach" in (tmp_path / "watch.log").read_text()
    staging = tmp_path / "staging"
    new_x = augmented_copies(coco_images[X], staging, 4, prefix="new")
    stranger = staging / coco_images[X + 40].name
    shutil.copyfile(coco_images[X + 40], stranger)  # a photo unlike X: negative control
    t0 = time.monotonic()
    for p in [*new_x, stranger]:
        shutil.move(p, photos / p.name)
    lib = Library.open(cfg)
    try:

        def tagged() -> set[int]:
            recs = [lib.store.record_by_path(photos / p.name) for p in new_x]
            have = {r.id for r in recs if r is not None}
            return have & set(lib.ids_with_tags(["x"]).tolist())

        wait_for(lambda: len(tagged()) >= 3, timeout=60, what="new copies tagged by the concept")
        latency = time.monotonic() - t0
        print(f"watch tagged {len(tagged())}/4 new copies of X {latency:.2f} s after they arrived")
        wait_for(lambda: lib.store.record_by_path(photos / stranger.name) is not None, 30)
        time.sleep(1.0)  # its batch's concept pass commits right after the batch
        rec = lib.store.record_by_path(photos / stranger.name)
        assert "x" not in {t for t, _ in lib.image_tags(rec.id)}
        assert latency < 30
    finally:
        lib.close()
    assert w.stop() == 0
