"""The watcher's debouncing: changed paths wait until they are stable, then go out in batches.

A path is ready once it had no events and the same size and mtime for
``watch.debounce_seconds`` (``watch.stable_checks`` stats spread over that time) and, with
inotify, once a file opened for writing was closed. Both ends of a move travel in the same
batch; deletions wait for pending writes (a move across file systems is a copy, then a delete)
for up to :data:`DELETE_HOLD_SECONDS`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from indexer.config import WatchConfig
from indexer.ingest.scan import walk
from indexer.watch.roots import Root

log = logging.getLogger("clipsearch.watch")

WRITE_HOLD_SECONDS = 60.0  # a file left open for writing this long without events is indexed
DELETE_HOLD_SECONDS = 10.0  # deletions wait at most this long for pending writes


@dataclass
class Pending:
    """A changed path waiting to be indexed."""

    path: str
    root: str
    kind: str  # "file" | "dir" (a moved/deleted folder: indexed as a whole) | "expand"
    first_seen: float
    since: float = 0.0  # last event or last change of sig
    sig: tuple | None = None
    checks: int = 0
    next_check: float = 0.0
    writing: bool = False  # opened for writing and not closed yet (inotify only)
    partners: set[str] = field(default_factory=set)
    attempts: int = 0


def file_sig(path: str) -> tuple | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns, st.st_ino)


class PendingPaths:
    """Changed paths under the watched roots, waiting to be indexed (``pending`` by path).

    ``on_root_event()`` is called when a root itself was deleted or moved.
    """

    def __init__(
        self,
        wc: WatchConfig,
        roots: dict[str, Root],
        index_dir: str,
        exts: set[str],
        follow_symlinks: bool,
        on_root_event: Callable[[], None],
    ):
        self.wc = wc
        self.roots = roots
        self.index_dir = index_dir
        self.exts = exts
        self.follow_symlinks = follow_symlinks
        self.on_root_event = on_root_event
        self.pending: dict[str, Pending] = {}

    def root_of(self, path: str) -> Root | None:
        for r in self.roots.values():
            if path == r.path or path.startswith(r.path.rstrip("/") + "/"):
                return r
        return None

    def ignored(self, path: str, root: Root) -> bool:
        if path == self.index_dir or path.startswith(self.index_dir + "/"):
            return True
        rel = os.path.relpath(path, root.path)
        return any(part.startswith(".") for part in rel.split(os.sep) if part not in ("", "."))

    def want_file(self, path: str) -> bool:
        return os.path.splitext(path)[1].lower() in self.exts

    def touch(self, path: str, root: Root, kind: str, now: float) -> Pending:
        p = self.pending.get(path)
        if p is None:
            p = self.pending[path] = Pending(path, root.path, kind, first_seen=now)
        elif kind == "dir" or p.kind == "expand":
            p.kind = kind
        p.since, p.checks = now, 0
        p.sig = file_sig(path) if p.kind == "file" else ("dir", os.path.isdir(path))
        p.next_check = now + self.wc.debounce_seconds / self.wc.stable_checks
        return p

    def retry(
        self, paths: list[str], kinds: dict[str, str], attempts: dict, now: float, wait: float
    ) -> None:
        """Queue the paths of a failed batch again in ``wait`` seconds (3 attempts each)."""
        for p in paths:
            tries = attempts.get(p, 0) + 1
            if tries >= 3:
                log.error("giving up on %s after %d failed batches", p, tries)
                continue
            root = self.root_of(p)
            if root is not None and p not in self.pending:
                e = self.touch(p, root, kinds.get(p, "file"), now)
                e.attempts, e.next_check = tries, now + wait

    def handle_event(self, etype: str, src: str, dest: str, is_dir: bool, now: float) -> None:
        if etype in ("opened", "closed_no_write", "modified") and is_dir:
            return
        ends = [(src, etype)] if etype != "moved" else [(src, "moved_from"), (dest, "moved_to")]
        touched: list[Pending] = []
        for path, what in ends:
            if not path:
                continue
            root = self.root_of(path)
            if root is None or not root.online:
                continue
            if path == root.path:  # the root itself was deleted or moved: check it now
                self.on_root_event()
                continue
            if self.ignored(path, root):
                continue
            if is_dir:
                hidden_src = etype == "moved" and (
                    (r := self.root_of(src)) is None or self.ignored(src, r)
                )
                kind = (
                    "expand" if what == "created" or (what == "moved_to" and hidden_src) else "dir"
                )
                touched.append(self.touch(path, root, kind, now))
                continue
            if not self.want_file(path):
                continue
            p = self.touch(path, root, "file", now)
            if root.mode == "inotify":
                # Written while watched: wait for the close. (Not on "created" alone: watchdog
                # also reports files that were complete before a new folder's watch existed.)
                if what == "modified":
                    p.writing = True
                elif what in ("closed", "moved_to", "deleted", "moved_from"):
                    p.writing = False
            touched.append(p)
        if len(touched) == 2:  # both ends of a move go in the same batch
            touched[0].partners.add(touched[1].path)
            touched[1].partners.add(touched[0].path)

    def check(self, p: Pending, now: float) -> None:
        """One stability check of a pending path that is due."""
        step = self.wc.debounce_seconds / self.wc.stable_checks
        sig = file_sig(p.path) if p.kind == "file" else ("dir", os.path.isdir(p.path))
        if sig != p.sig:
            p.sig, p.since, p.checks = sig, now, 0
        else:
            p.checks += 1
        if p.checks >= self.wc.stable_checks and p.writing:
            p.next_check = max(now + step, p.since + WRITE_HOLD_SECONDS)  # wait for close
        else:
            p.next_check = now + step

    def ready(self, p: Pending, now: float) -> bool:
        if p.checks < self.wc.stable_checks:
            return False
        return not p.writing or now - p.since >= WRITE_HOLD_SECONDS

    def next_deadline(self) -> float:
        return min((p.next_check for p in self.pending.values()), default=float("inf"))

    def expand(self, p: Pending, now: float) -> None:
        """A folder that appeared: each image file in it becomes a pending file."""
        root = self.roots[p.root]
        del self.pending[p.path]
        found = walk([(Path(p.path), Path(root.path))], self.exts,
                     self.follow_symlinks, exclude=[Path(self.index_dir)])  # fmt: skip
        for e in found.entries:
            if e.path not in self.pending and not self.ignored(e.path, root):
                self.touch(e.path, root, "file", now)
        log.debug("new folder %s: %d image files queued", p.path, len(found.entries))

    def take_batch(self, now: float) -> list[str]:
        """Ready paths for one batch (both ends of moves together), removed from pending."""
        for p in list(self.pending.values()):
            if p.path in self.pending and p.next_check <= now:
                self.check(p, now)
        for p in [p for p in self.pending.values() if p.kind == "expand"]:
            if self.ready(p, now):
                self.expand(p, now)
        ready = {path for path, p in self.pending.items() if self.ready(p, now)}
        unready = [path for path in self.pending if path not in ready]
        # A folder target is walked as a whole: not while something under it is unready.
        for path in [x for x in ready if self.pending[x].kind == "dir"]:
            prefix = path.rstrip("/") + "/"
            if any(u.startswith(prefix) for u in unready):
                ready.discard(path)
        if not ready:
            return []
        groups: list[set[str]] = []
        seen: set[str] = set()
        for path in sorted(ready, key=lambda x: self.pending[x].first_seen):
            if path in seen:
                continue
            group, todo = set(), [path]
            while todo:
                x = todo.pop()
                if x in group or x not in self.pending:
                    continue
                group.add(x)
                todo.extend(self.pending[x].partners)
            seen |= group
            groups.append(group)

        def exists(x: str) -> bool:
            p = self.pending[x]
            return p.sig is not None and p.sig != ("dir", False)

        writes_waiting = any(exists(u) for u in unready)
        present = [g for g in groups if any(exists(x) for x in g) or len(g) > 1]
        gone = [g for g in groups if g not in present]
        batch: list[str] = []
        for g in present:
            if batch and len(batch) + len(g) > self.wc.max_batch:
                break
            batch.extend(sorted(g))
        all_present_in = len(batch) == sum(len(g) for g in present)
        for g in gone:
            (x,) = g
            held = now - self.pending[x].first_seen < DELETE_HOLD_SECONDS
            if held and (writes_waiting or not all_present_in):
                continue  # maybe the first half of a move across file systems
            if batch and len(batch) + 1 > self.wc.max_batch:
                break
            batch.append(x)
        for x in batch:
            self.pending.pop(x, None)
        return batch

    def compress(self, paths: list[str], kinds: dict[str, str]) -> list[str]:
        """Drop paths inside a folder target of the same batch (walked anyway)."""
        dirs = {p.rstrip("/") for p in paths if kinds.get(p) == "dir"}
        out = []
        for p in paths:
            parent, inside = os.path.dirname(p), False
            while parent and parent != "/":
                if parent in dirs:
                    inside = True
                    break
                parent = os.path.dirname(parent)
            if not inside:
                out.append(p)
        return out
