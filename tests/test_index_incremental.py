"""Acceptance 1: incremental indexing of real photos (add, modify, move, copy, delete)."""

from __future__ import annotations

import os
import shutil

import numpy as np
from PIL import Image

from indexer.config import load_config
from indexer.embed.encoder import ClipEncoder
from indexer.library import Library

from .indexer_helpers import CountingEncoder, copy_images, faiss_ids, sqlite_state, write_config


def test_incremental_add_modify_move_delete(tmp_path, coco_images, tiny_checkpoint, database):
    lib_dir = tmp_path / "photos"
    first = copy_images(coco_images[:30], lib_dir / "a")
    extra = coco_images[30:36]
    cfg = load_config(
        write_config(
            tmp_path / "c.yaml", [lib_dir], tmp_path / "idx", tiny_checkpoint, database=database
        )
    )
    enc = CountingEncoder(ClipEncoder.from_config(cfg))

    with Library.open(cfg, writer=True, encoder=enc) as lib:
        rep = lib.index(progress=False)
    assert (rep.added, rep.encoded, rep.errors) == (30, 30, 0)
    assert enc.images_encoded == 30
    s0 = sqlite_state(cfg.index_dir, database)
    assert len(s0["ok"]) == 30 and s0["vector_ids"] == sorted(s0["ok"].values())
    assert faiss_ids(cfg.index_dir, database) == s0["vector_ids"]

    # Unchanged library: nothing is read or encoded.
    with Library.open(cfg, writer=True, encoder=enc) as lib:
        rep = lib.index(progress=False)
    assert (rep.unchanged, rep.encoded) == (30, 0) and enc.images_encoded == 30

    # add 6, modify 3 (new content), touch 2 (mtime only), move 4, copy 1, delete 3
    copy_images(extra, lib_dir / "b")
    modified = first[0:3]
    for p in modified:
        with Image.open(p) as im:
            im.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(p, quality=90)
    touched = first[3:5]
    for p in touched:
        os.utime(p, ns=(p.stat().st_atime_ns, p.stat().st_mtime_ns + 5_000_000_000))
    moved = first[5:9]
    (lib_dir / "moved" / "deeper").mkdir(parents=True)
    moved_to = [lib_dir / "moved" / "deeper" / f"renamed_{p.name}" for p in moved]
    for src, dst in zip(moved, moved_to, strict=True):
        os.rename(src, dst)
    copied_from = first[9]
    copied_to = lib_dir / "b" / f"copy_of_{copied_from.name}"
    shutil.copyfile(copied_from, copied_to)
    deleted = first[10:13]
    for p in deleted:
        p.unlink()

    with Library.open(cfg, writer=True, encoder=enc) as lib:
        rep = lib.index(progress=False)
    # Only new and modified content reaches the model.
    assert enc.images_encoded == 30 + 6 + 3
    assert (rep.added, rep.updated, rep.touched, rep.moved, rep.copied, rep.removed) == (
        6, 3, 2, 4, 1, 3,
    )  # fmt: skip
    s1 = sqlite_state(cfg.index_dir, database)
    expected = {os.fspath(p) for p in lib_dir.rglob("*.jpg")}
    assert set(s1["ok"]) == expected and len(expected) == 30 + 6 + 1 - 3
    assert s1["vector_ids"] == sorted(s1["ok"].values())
    assert faiss_ids(cfg.index_dir, database) == s1["vector_ids"]

    # Moved files kept their id and bit-identical vector.
    for src, dst in zip(moved, moved_to, strict=True):
        old_id = s0["ok"][os.fspath(src)]
        assert s1["ok"][os.fspath(dst)] == old_id
        assert s1["vectors"][old_id].tobytes() == s0["vectors"][old_id].tobytes()
    # The copy has a new id and a bit-identical copy of the vector.
    src_id, copy_id = s0["ok"][os.fspath(copied_from)], s1["ok"][os.fspath(copied_to)]
    assert copy_id != src_id and copy_id not in s0["vectors"]
    assert s1["vectors"][copy_id].tobytes() == s0["vectors"][src_id].tobytes()
    # Modified files: same id, new vector.
    for p in modified:
        i = s0["ok"][os.fspath(p)]
        assert s1["ok"][os.fspath(p)] == i
        assert not np.array_equal(s1["vectors"][i], s0["vectors"][i])
    # Touched files: same vector. Deleted files: gone from SQLite and FAISS.
    for p in touched:
        i = s0["ok"][os.fspath(p)]
        assert s1["vectors"][i].tobytes() == s0["vectors"][i].tobytes()
    # Thumbnails of deleted and replaced content are collected; the others stay.
    thumbs = {p.stem for p in (cfg.index_dir / "thumbs").rglob("*.jpg")}
    with Library.open(cfg, encoder=enc) as lib:
        assert thumbs == {lib.get_image(i).content_hash for i in s1["ok"].values()}
    gone = {s0["ok"][os.fspath(p)] for p in deleted}
    assert not gone & set(s1["vector_ids"]) and not gone & set(faiss_ids(cfg.index_dir, database))

    # Searching finds the moved file under its new path, with the in-memory FAISS used by readers.
    with Library.open(cfg, encoder=enc) as lib:
        hit = lib.search(image=moved_to[0], k=1).hits[0]
        assert hit.path == os.fspath(moved_to[0]) and hit.score > 0.999
        st = lib.status()
        assert st["indexed"] == st["vectors"] == st["faiss"]["count"] == 34

    # Indexing a sub-path only touches that part of the library.
    (lib_dir / "b" / extra[0].name).unlink()
    with Library.open(cfg, writer=True, encoder=enc) as lib:
        rep = lib.index([os.fspath(lib_dir / "a")], progress=False)
        assert rep.removed == 0 and rep.scanned == len(list((lib_dir / "a").glob("*.jpg")))
        rep = lib.index([os.fspath(lib_dir / "b")], progress=False)
        assert rep.removed == 1


def test_partial_runs_follow_moves_and_deletions(tmp_path, sample_images, database):
    """What the watch daemon does: index([old, new]) for a move, index([gone]) for a delete."""
    from indexer.embed.encoder import HashEncoder

    photos = copy_images(sample_images[:4], tmp_path / "lib")
    cfg = load_config(
        write_config(tmp_path / "c.yaml", [tmp_path / "lib"], tmp_path / "idx", database=database)
    )
    enc = CountingEncoder(HashEncoder())
    with Library.open(cfg, writer=True, encoder=enc) as lib:
        lib.index(progress=False)
        before = sqlite_state(cfg.index_dir, database)
        new = tmp_path / "lib" / "sub" / "moved.png"
        new.parent.mkdir()
        os.rename(photos[0], new)
        rep = lib.index([str(photos[0]), str(new)], progress=False)
        assert (rep.moved, rep.removed, rep.encoded) == (1, 0, 0)
        photos[1].unlink()
        assert lib.index([str(photos[1])], progress=False).removed == 1
    after = sqlite_state(cfg.index_dir, database)
    assert after["ok"][str(new)] == before["ok"][str(photos[0])]
    assert str(photos[1]) not in after["ok"] and enc.images_encoded == 4
