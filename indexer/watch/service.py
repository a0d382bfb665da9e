"""``clipsearch watch``: keep the index current while photos are added, changed, moved, deleted.

One process holds the index's writer lock (so ``clipsearch index`` refuses while it runs;
searches keep working) and:

1. starts a watchdog observer per library root (recursive): inotify, or polling for network
   shares (NFS, SMB, sshfs, ...), when inotify cannot be used (out of watches: ENOSPC), or
   when ``watch.observer: polling``;
2. reconciles once (an ordinary incremental ``index`` of the roots that are there);
3. turns events into *pending paths*. A path is ready once it had no events and the same size
   and mtime for ``watch.debounce_seconds`` (``watch.stable_checks`` stats spread over that
   time) and, with inotify, once a file opened for writing was closed; so a file being
   written or copied is never read half-way. Both ends of a move travel in the same batch
   (the row and vector follow the file, nothing is re-encoded); deletions wait for pending
   writes (a move across file systems is a copy, then a delete) for up to 10 s;
4. indexes ready paths in batches of at most ``watch.max_batch`` paths (``Library.index``
   with those paths; each batch commits and is searchable at once);
5. checks the roots every 2 s: a root that vanished (unplugged drive, unmounted share, or an
   empty mount point where images were indexed) goes *offline*: its rows are kept, searches
   skip them, and the root is reconciled when it comes back.

SIGTERM/SIGINT: the current batch stops after its current model batch (all committed
work is kept; the rest is picked up by the next start's reconcile), the FAISS file is saved
and the process exits 0. SIGKILL at any moment is safe by the index's own guarantees.

The main thread blocks in ``select`` on a wake-up pipe (events and signals write to it) with
a timeout of the next due check; idle, it wakes every 2 s for the root check only.
"""

from __future__ import annotations

import collections
import errno
import logging
import logging.handlers
import os
import select
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from indexer.config import Config
from indexer.library import Library
from indexer.store.lock import IndexBusyError
from indexer.ingest.scan import walk
from indexer.watch.status import read_status, write_status

log = logging.getLogger("clipsearch.watch")

ROOT_CHECK_SECONDS = 2.0  # how often roots are checked (vanished, returned, observer alive)
STATUS_EVERY_SECONDS = 2.0  # status file rewrites at most this often while busy
WRITE_HOLD_SECONDS = 60.0  # a file left open for writing this long without events is indexed
DELETE_HOLD_SECONDS = 10.0  # deletions wait at most this long for pending writes
RETRY_SECONDS = 15.0  # a failed batch is retried after this long (3 attempts)
RECENT_ERRORS = 20
NETWORK_FS = {
    "nfs", "nfs4", "cifs", "smb3", "smbfs", "ncpfs", "afs", "9p", "ceph", "glusterfs",
    "lustre", "gpfs", "fuse.sshfs", "fuse.rclone", "fuse.glusterfs", "fuse.davfs2", "davfs",
    "fuse.s3fs", "fuse.gcsfuse",
}  # fmt: skip


class WatchError(RuntimeError):
    """The service cannot start (reported as one line by the CLI)."""


@dataclass
class _Pending:
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


@dataclass
class _Root:
    path: str
    online: bool = False
    ident: tuple | None = None
    observer: object = None
    mode: str | None = None  # "inotify" | "polling"


def _fs_type(path: str) -> str | None:
    """File system type of the mount holding ``path`` (from /proc/mounts; None if unknown)."""
    try:
        with open("/proc/mounts", encoding="utf-8", errors="replace") as fh:
            mounts = [line.split() for line in fh]
    except OSError:
        return None
    real = os.path.realpath(path)
    best, kind = "", None
    for parts in mounts:
        if len(parts) < 3:
            continue
        mnt = parts[1].replace("\\040", " ")
        if (real == mnt or real.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best):
            best, kind = mnt, parts[2]
    return kind


def _ident(path: str) -> tuple | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def _file_sig(path: str) -> tuple | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns, st.st_ino)


class _RecentErrors(logging.Handler):
    """Keeps the last warnings and errors for the status file."""

    def __init__(self, on_record) -> None:  # noqa: ANN001
        super().__init__(logging.WARNING)
        self.items: collections.deque = collections.deque(maxlen=RECENT_ERRORS)
        self.on_record = on_record

    def emit(self, record: logging.LogRecord) -> None:
        self.items.append({"time": round(record.created, 3), "level": record.levelname.lower(),
                           "message": record.getMessage()})  # fmt: skip
        self.on_record()


def setup_logging(level: str, log_file: str | None) -> None:
    """Log to stderr (the systemd journal) and, optionally, to ``log_file``."""
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    root = logging.getLogger("clipsearch")
    root.setLevel(getattr(logging, level.upper()))
    root.propagate = False
    for h in list(root.handlers):
        root.removeHandler(h)
    handlers: list[logging.Handler] = [logging.StreamHandler()]
    if log_file:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.handlers.WatchedFileHandler(log_file, encoding="utf-8"))
    for h in handlers:
        h.setFormatter(fmt)
        root.addHandler(h)


class WatchService:
    """The ``clipsearch watch`` loop; :meth:`run` returns the exit code."""

    def __init__(self, cfg: Config, observer: str | None = None):
        self.cfg = cfg
        self.wc = cfg.watch
        self.observer_mode = observer or self.wc.observer
        self.roots = {os.path.abspath(r): _Root(os.path.abspath(r)) for r in cfg.roots}
        self.index_dir = os.path.abspath(cfg.index_dir)
        self.exts = {e.lower() for e in cfg.library.extensions}
        self.pending: dict[str, _Pending] = {}
        self.events: collections.deque = collections.deque()
        self.stopping = False
        self.lib: Library | None = None
        self.state = "starting"
        self.started_at = time.time()
        self.last_update: float | None = None
        self.batches = 0
        self.last_batch: dict | None = None
        self.reconcile_roots: set[str] = set()
        self._status_dirty = True
        self._last_status = 0.0
        self._errors = _RecentErrors(self._mark_dirty)
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    # ----------------------------------------------------------------- plumbing
    def _mark_dirty(self) -> None:
        self._status_dirty = True

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"e")
        except (BlockingIOError, OSError):
            pass  # the pipe is full: the main loop is awake anyway

    def _on_signal(self, signum: int, frame: object) -> None:
        # Only set a flag: the C-level handler already wrote to the wake-up fd.
        if not self.stopping:
            self.stopping = True

    def write_status(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and (not self._status_dirty or now - self._last_status < STATUS_EVERY_SECONDS):
            return
        doc = {
            "pid": os.getpid(),
            "state": self.state,
            "started_at": round(self.started_at, 3),
            "last_update": round(self.last_update, 3) if self.last_update else None,
            "queue": len(self.pending),
            "batches": self.batches,
            "last_batch": self.last_batch,
            "roots": [
                {"path": r.path, "online": r.online, "observer": r.mode}
                for r in self.roots.values()
            ],  # fmt: skip
            "offline_roots": [r.path for r in self.roots.values() if not r.online],
            "errors": list(self._errors.items),
        }
        try:
            write_status(Path(self.index_dir), doc)
        except OSError as exc:
            log.debug("cannot write the status file: %s", exc)
        self._status_dirty = False
        self._last_status = now

    def _set_state(self, state: str) -> None:
        if state != self.state:
            self.state = state
            self._status_dirty = True
            self.write_status(force=True)

    # ----------------------------------------------------------------- observers
    def _handler(self):
        from watchdog.events import FileSystemEventHandler

        service = self

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event) -> None:  # noqa: ANN001 - watchdog thread
                service.events.append(
                    (event.event_type, os.fsdecode(event.src_path),
                     os.fsdecode(getattr(event, "dest_path", "") or ""), event.is_directory)
                )  # fmt: skip
                service._wake()

        return Handler()

    def _new_observer(self, mode: str, path: str):
        from watchdog import events as ev

        if mode == "polling":
            from watchdog.observers.polling import PollingObserver

            obs = PollingObserver(timeout=self.wc.poll_interval)
        else:
            from watchdog.observers.inotify import InotifyObserver

            obs = InotifyObserver()
        wanted = [ev.FileCreatedEvent, ev.FileModifiedEvent, ev.FileAttribEvent,
                  ev.FileClosedEvent, ev.FileDeletedEvent, ev.FileMovedEvent,
                  ev.DirCreatedEvent, ev.DirDeletedEvent, ev.DirMovedEvent]  # fmt: skip
        obs.schedule(self._handler(), path, recursive=True, event_filter=wanted)
        obs.daemon = True
        obs.start()  # inotify: adds the watches now (OSError ENOSPC when out of watches)
        return obs

    def _start_observer(self, root: _Root) -> None:
        mode = self.observer_mode
        if mode == "auto":
            fs = _fs_type(root.path)
            if fs in NETWORK_FS or (fs or "").startswith("fuse.sshfs"):
                log.info("root %s is on a network file system (%s): polling it every %gs "
                         "(inotify does not see changes made by other machines)", root.path, fs,
                         self.wc.poll_interval)  # fmt: skip
                mode = "polling"
            else:
                mode = "inotify"
        if mode == "inotify":
            try:
                root.observer, root.mode = self._new_observer("inotify", root.path), "inotify"
                return
            except OSError as exc:
                limit = exc.errno in (errno.ENOSPC, errno.EMFILE)
                why = (
                    f"{exc.strerror or exc}: raise it with `sudo sysctl "
                    "fs.inotify.max_user_watches=524288` (and max_user_instances), "
                    "or set watch.observer: polling"
                    if limit
                    else str(exc)
                )
                if self.observer_mode == "inotify":
                    raise WatchError(f"cannot watch {root.path} with inotify: {why}") from None
                log.warning("cannot watch %s with inotify (%s); falling back to polling every "
                            "%gs", root.path, why, self.wc.poll_interval)  # fmt: skip
        root.observer, root.mode = self._new_observer("polling", root.path), "polling"

    @staticmethod
    def _stop_observer(root: _Root) -> None:
        obs, root.observer = root.observer, None
        if obs is not None:
            try:
                obs.stop()
                obs.join(timeout=5)
            except Exception:  # noqa: BLE001 - a dead observer must not stop the service
                log.debug("stopping the observer of %s failed", root.path, exc_info=True)

    @staticmethod
    def _observer_alive(root: _Root) -> bool:
        obs = root.observer
        if obs is None or not obs.is_alive():
            return False
        return all(e.is_alive() for e in obs.emitters)

    # ----------------------------------------------------------------- roots
    def _root_present(self, root: _Root) -> bool:
        """The root's folder is there and, if it is empty, had no images (an empty mount
        point where a drive used to be is offline, not a mass delete)."""
        if not os.path.isdir(root.path):
            return False
        try:
            with os.scandir(root.path) as it:
                if next(it, None) is not None:
                    return True
        except OSError:
            return False
        indexed = self.lib.store.roots().get(root.path, 0) if self.lib else 0
        if indexed and root.online:
            log.warning("root %s is empty but %d images are indexed under it: treated as "
                        "offline (unmounted drive?); run `clipsearch index` to remove them "
                        "if they were deleted", root.path, indexed)  # fmt: skip
        return not indexed

    def _go_offline(self, root: _Root, why: str) -> None:
        root.online = False
        root.ident = None
        self._stop_observer(root)
        dropped = [p for p, e in self.pending.items() if e.root == root.path]
        for p in dropped:
            del self.pending[p]
        self.reconcile_roots.discard(root.path)
        log.warning("root %s is offline (%s): its %d indexed images are kept and left out of "
                    "searches until it returns", root.path, why,
                    self.lib.store.roots().get(root.path, 0))  # fmt: skip
        self._status_dirty = True

    def _go_online(self, root: _Root, first: bool = False) -> None:
        self._start_observer(root)  # before reconciling: changes meanwhile become events
        root.online = True
        root.ident = _ident(root.path)
        if not first:
            log.info("root %s is back online (%s): reconciling it", root.path, root.mode)
            self.reconcile_roots.add(root.path)
        else:
            log.info("watching %s (%s)", root.path, root.mode)
        self._status_dirty = True

    def check_roots(self) -> None:
        for root in self.roots.values():
            present = self._root_present(root)
            if root.online and not present:
                self._go_offline(root, "folder missing or empty")
            elif not root.online and present:
                self._go_online(root)
            elif root.online and _ident(root.path) != root.ident:
                log.warning("root %s was replaced by another folder: watching it anew",
                            root.path)  # fmt: skip
                self._stop_observer(root)
                self._go_online(root)
            elif root.online and not self._observer_alive(root):
                log.error("the %s observer of %s stopped; restarting it", root.mode, root.path)
                self._stop_observer(root)
                self._go_online(root)

    # ----------------------------------------------------------------- events
    def _root_of(self, path: str) -> _Root | None:
        for r in self.roots.values():
            if path == r.path or path.startswith(r.path.rstrip("/") + "/"):
                return r
        return None

    def _ignored(self, path: str, root: _Root) -> bool:
        if path == self.index_dir or path.startswith(self.index_dir + "/"):
            return True
        rel = os.path.relpath(path, root.path)
        return any(part.startswith(".") for part in rel.split(os.sep) if part not in ("", "."))

    def _want_file(self, path: str) -> bool:
        return os.path.splitext(path)[1].lower() in self.exts

    def _touch(self, path: str, root: _Root, kind: str, now: float) -> _Pending:
        p = self.pending.get(path)
        if p is None:
            p = self.pending[path] = _Pending(path, root.path, kind, first_seen=now)
        elif kind == "dir" or p.kind == "expand":
            p.kind = kind
        p.since, p.checks = now, 0
        p.sig = _file_sig(path) if p.kind == "file" else ("dir", os.path.isdir(path))
        p.next_check = now + self.wc.debounce_seconds / self.wc.stable_checks
        return p

    def handle_event(self, etype: str, src: str, dest: str, is_dir: bool, now: float) -> None:
        if etype in ("opened", "closed_no_write", "modified") and is_dir:
            return
        ends = [(src, etype)] if etype != "moved" else [(src, "moved_from"), (dest, "moved_to")]
        touched: list[_Pending] = []
        for path, what in ends:
            if not path:
                continue
            root = self._root_of(path)
            if root is None or not root.online:
                continue
            if path == root.path:  # the root itself was deleted or moved: check it now
                self.check_roots()
                continue
            if self._ignored(path, root):
                continue
            if is_dir:
                hidden_src = etype == "moved" and (
                    (r := self._root_of(src)) is None or self._ignored(src, r)
                )
                kind = (
                    "expand" if what == "created" or (what == "moved_to" and hidden_src) else "dir"
                )
                touched.append(self._touch(path, root, kind, now))
                continue
            if not self._want_file(path):
                continue
            p = self._touch(path, root, "file", now)
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

    def _drain_events(self, now: float) -> None:
        if not self.events:
            return
        while self.events:
            etype, src, dest, is_dir = self.events.popleft()
            self.handle_event(etype, src, dest, is_dir, now)
        self._status_dirty = True

    # ----------------------------------------------------------------- readiness
    def _check(self, p: _Pending, now: float) -> None:
        """One stability check of a pending path that is due."""
        step = self.wc.debounce_seconds / self.wc.stable_checks
        sig = _file_sig(p.path) if p.kind == "file" else ("dir", os.path.isdir(p.path))
        if sig != p.sig:
            p.sig, p.since, p.checks = sig, now, 0
        else:
            p.checks += 1
        if p.checks >= self.wc.stable_checks and p.writing:
            p.next_check = max(now + step, p.since + WRITE_HOLD_SECONDS)  # wait for close
        else:
            p.next_check = now + step

    def _ready(self, p: _Pending, now: float) -> bool:
        if p.checks < self.wc.stable_checks:
            return False
        return not p.writing or now - p.since >= WRITE_HOLD_SECONDS

    def _next_deadline(self) -> float:
        return min((p.next_check for p in self.pending.values()), default=float("inf"))

    def _expand(self, p: _Pending, now: float) -> None:
        """A folder that appeared: each image file in it becomes a pending file."""
        root = self.roots[p.root]
        del self.pending[p.path]
        found = walk([(Path(p.path), Path(root.path))], self.exts,
                     self.cfg.library.follow_symlinks, exclude=[Path(self.index_dir)])  # fmt: skip
        for e in found.entries:
            if e.path not in self.pending and not self._ignored(e.path, root):
                self._touch(e.path, root, "file", now)
        log.debug("new folder %s: %d image files queued", p.path, len(found.entries))

    def take_batch(self, now: float) -> list[str]:
        """Ready paths for one batch (both ends of moves together), removed from pending."""
        for p in list(self.pending.values()):
            if p.path in self.pending and p.next_check <= now:
                self._check(p, now)
        for p in [p for p in self.pending.values() if p.kind == "expand"]:
            if self._ready(p, now):
                self._expand(p, now)
        ready = {path for path, p in self.pending.items() if self._ready(p, now)}
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

    # ----------------------------------------------------------------- indexing
    def _stop_requested(self) -> bool:
        return self.stopping

    def _compress(self, paths: list[str], kinds: dict[str, str]) -> list[str]:
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

    def index_batch(self, paths: list[str], kinds: dict[str, str], attempts: dict) -> None:
        online = [p for p in paths if (r := self._root_of(p)) is not None and r.online
                  and os.path.isdir(r.path)]  # fmt: skip
        if len(online) < len(paths):
            self.check_roots()
        targets = self._compress(online, kinds)
        if not targets:
            return
        self._set_state("indexing")
        self.batches += 1
        n = self.batches
        t0 = time.monotonic()
        try:
            rep = self.lib.index(targets, progress=False, skip_missing_roots=True,
                                 stop=self._stop_requested)  # fmt: skip
        except Exception as exc:  # noqa: BLE001 - keep watching; retry the batch later
            log.error("batch %d (%d paths) failed: %s: %s", n, len(targets), type(exc).__name__,
                      exc, exc_info=log.isEnabledFor(logging.DEBUG))  # fmt: skip
            now = time.monotonic()
            for p in targets:
                tries = attempts.get(p, 0) + 1
                if tries >= 3:
                    log.error("giving up on %s after %d failed batches", p, tries)
                    continue
                root = self._root_of(p)
                if root is not None and p not in self.pending:
                    e = self._touch(p, root, kinds.get(p, "file"), now)
                    e.attempts, e.next_check = tries, now + RETRY_SECONDS
            return
        self.last_update = time.time()
        secs = time.monotonic() - t0
        self.last_batch = {"number": n, "paths": len(targets), "added": rep.added,
                           "updated": rep.updated, "moved": rep.moved, "copied": rep.copied,
                           "removed": rep.removed, "errors": rep.errors, "encoded": rep.encoded,
                           "seconds": round(secs, 3), "finished_at": round(self.last_update, 3)}  # fmt: skip
        log.info("batch %d: %d paths -> %d added, %d updated, %d moved (vectors reused, not "
                 "re-encoded), %d copied, %d removed, %d errors; %d encoded in %.2fs", n,
                 len(targets), rep.added, rep.updated, rep.moved, rep.copied, rep.removed,
                 rep.errors, rep.encoded, secs)  # fmt: skip
        if rep.errors:
            log.warning("batch %d: %d files could not be indexed (see `clipsearch status`)", n,
                        rep.errors)  # fmt: skip
        self._status_dirty = True
        self.write_status(force=True)

    def reconcile(self, roots: list[str] | None) -> None:
        """Index the online roots (all: ``None``) incrementally, as ``clipsearch index`` does."""
        online = [r.path for r in self.roots.values() if r.online]
        if roots is not None:
            online = [r for r in online if r in roots]
        if not online:
            return
        everything = roots is None and len(online) == len(self.roots)
        self._set_state("reconciling")
        log.info("reconciling %s", "all roots" if everything else ", ".join(online))
        t0 = time.monotonic()
        rep = self.lib.index(None if everything else online, progress=False,
                             skip_missing_roots=True, stop=self._stop_requested)  # fmt: skip
        self.last_update = time.time()
        log.info("reconciled in %.2fs: %d scanned, %d added, %d updated, %d moved, %d copied, "
                 "%d removed, %d errors, %d unchanged; %d encoded%s", time.monotonic() - t0,
                 rep.scanned, rep.added, rep.updated, rep.moved, rep.copied, rep.removed,
                 rep.errors, rep.unchanged, rep.encoded,
                 " (interrupted)" if self.stopping else "")  # fmt: skip
        for folder in rep.unlisted_folders:
            log.warning("cannot list folder %s (its images are kept)", folder)

    # ----------------------------------------------------------------- main
    def _open_library(self) -> Library:
        try:
            return Library.open(self.cfg, writer=True)
        except IndexBusyError as exc:
            doc = read_status(Path(self.index_dir))
            lock_pid = (Path(self.index_dir) / "writer.lock").read_text().strip()
            if doc and str(doc.get("pid")) == lock_pid and doc.get("state") != "stopped":
                raise WatchError(
                    f"clipsearch watch is already running for the index in {self.index_dir} "
                    f"(pid {lock_pid}); stop it first (e.g. systemctl --user stop "
                    "clipsearch-watch)"
                ) from None
            raise WatchError(str(exc)) from None

    def run(self) -> int:
        old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        old_fd = signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        logging.getLogger("clipsearch").addHandler(self._errors)
        try:
            self.lib = self._open_library()
            prev = read_status(Path(self.index_dir))
            if prev and prev.get("state") not in (None, "stopped"):
                log.warning("the previous watch (pid %s) did not stop cleanly; its lock was "
                            "released by its death, taking over", prev.get("pid"))  # fmt: skip
            log.info("clipsearch watch (pid %d) on index %s; debounce %.2gs, %d stable "
                     "checks, batches of at most %d", os.getpid(), self.index_dir,
                     self.wc.debounce_seconds, self.wc.stable_checks, self.wc.max_batch)  # fmt: skip
            self.write_status(force=True)
            for root in self.roots.values():
                if self._root_present(root):
                    self._go_online(root, first=True)
                else:
                    log.warning("root %s is offline (folder missing or empty): its indexed "
                                "images are kept; it is indexed when it appears", root.path)  # fmt: skip
            self.write_status(force=True)
            if not self.stopping:
                self.reconcile(None)
            self._loop()
            return 0
        finally:
            self._shutdown(old, old_fd)

    def _loop(self) -> None:
        next_root_check = time.monotonic() + ROOT_CHECK_SECONDS
        if not self.stopping:
            self._set_state("watching")
            log.info("watching %d roots for changes", sum(r.online for r in self.roots.values()))
        while not self.stopping:
            now = time.monotonic()
            deadline = min(self._next_deadline(), next_root_check)
            if self._status_dirty:
                deadline = min(deadline, self._last_status + STATUS_EVERY_SECONDS)
            timeout = max(0.0, deadline - now)
            if not self.events:
                try:
                    select.select([self._wake_r], [], [], timeout)
                except InterruptedError:
                    pass
            try:
                while os.read(self._wake_r, 4096):
                    pass
            except (BlockingIOError, OSError):
                pass
            if self.stopping:
                break
            now = time.monotonic()
            self._drain_events(now)
            if now >= next_root_check:
                self.check_roots()
                next_root_check = now + ROOT_CHECK_SECONDS
            for path in sorted(self.reconcile_roots):
                self.reconcile_roots.discard(path)
                if self.roots[path].online and not self.stopping:
                    self.reconcile([path])
            while not self.stopping:
                kinds = {x: p.kind for x, p in self.pending.items()}
                attempts = {x: p.attempts for x, p in self.pending.items()}
                batch = self.take_batch(time.monotonic())
                if not batch:
                    break
                self.index_batch(batch, kinds, attempts)
                self._drain_events(time.monotonic())  # events that came during the batch
            if not self.stopping:
                self._set_state("watching")
            self.write_status()

    def _shutdown(self, old_handlers: dict, old_fd: int) -> None:
        if self.stopping:
            log.info("stopping (signal received); %d changed paths left for the next start",
                     len(self.pending))  # fmt: skip
        self.state = "stopping"
        for root in self.roots.values():
            self._stop_observer(root)
        if self.lib is not None:  # (else another process holds the lock: leave its status)
            try:
                self.lib.store.save(force=True)
            finally:
                self.state = "stopped"
                self.write_status(force=True)
                self.lib.close()  # releases the writer lock
                log.info("stopped")
        logging.getLogger("clipsearch").removeHandler(self._errors)
        signal.set_wakeup_fd(old_fd)
        for s, h in old_handlers.items():
            signal.signal(s, h)
        for fd in (self._wake_r, self._wake_w):
            os.close(fd)
