"""``clipsearch watch``: keep the index current while photos are added, changed, moved, deleted.

One process holds the index's writer lock (so ``clipsearch index`` refuses while it runs;
searches keep working) and:

1. starts a watchdog observer per library root (recursive): inotify, or polling for network
   shares (NFS, SMB, sshfs, ...), when inotify cannot be used (out of watches: ENOSPC), or
   when ``watch.observer: polling``;
2. reconciles once (an ordinary incremental ``index`` of the roots that are there);
3. turns events into *pending paths* and waits until each is stable
   (:mod:`indexer.watch.debounce`), so a file being written or copied is never read half-way;
4. indexes ready paths in batches of at most ``watch.max_batch`` paths (``Library.index``
   with those paths; each batch commits and is searchable at once);
5. checks the roots every 2 s: a root that vanished (unplugged drive, unmounted share, or an
   empty mount point where images were indexed) goes *offline*: its rows are kept, searches
   skip them, and the root is reconciled when it comes back; 6. idle, reads text (OCR,
   :mod:`indexer.watch.textpass`).

SIGTERM/SIGINT: the current batch stops after its current model batch (all committed
work is kept; the rest is picked up by the next start's reconcile), the FAISS file is saved
and the process exits 0. SIGKILL at any moment is safe by the index's own guarantees.

The main thread blocks in ``select`` on a wake-up pipe (events and signals write to it) with
a timeout of the next due check; idle, it wakes every 2 s for the root check only. Writes that
other processes hand over while it holds the lock (:mod:`indexer.watch.mailbox`) run between
batches.
"""

from __future__ import annotations

import collections
import logging
import os
import select
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from indexer.config import Config
from indexer.store import IndexBusyError
from indexer.watch import mailbox
from indexer.watch.debounce import Pending, PendingPaths
from indexer.watch.logs import RecentErrors
from indexer.watch.roots import Event, Observers, Root, WatchError, ident
from indexer.watch.status import read_status, write_status
from indexer.watch.textpass import TextPass

log = logging.getLogger("clipsearch.watch")

ROOT_CHECK_SECONDS = 2.0  # how often roots are checked (vanished, returned, observer alive)
STATUS_EVERY_SECONDS = 2.0  # status file rewrites at most this often while busy
RETRY_SECONDS = 15.0  # a failed batch is retried after this long (3 attempts)

class WatchedLibrary(Protocol):
    """What the service needs of :class:`indexer.library.Library` (opened as a writer)."""

    store: Any  # an indexer.store.IndexStore

    def index(self, paths: list[str] | None = None, progress: bool = True,
              skip_missing_roots: bool = False, stop: Callable[[], bool] | None = None) -> Any: ...

    def close(self) -> None: ...


class WatchService(TextPass):
    """The ``clipsearch watch`` loop; :meth:`run` returns the exit code.

    ``open_library(cfg)`` opens the index for writing (``Library.open(cfg, writer=True)``);
    ``handle_request(lib, op, kwargs)`` runs the writes other processes hand over while the
    daemon holds the lock (:mod:`indexer.watch.mailbox`; None: they are left waiting).
    """

    def __init__(
        self,
        cfg: Config,
        open_library: Callable[[Config], WatchedLibrary],
        observer: str | None = None,
        handle_request: Callable[[WatchedLibrary, str, dict], dict] | None = None,
    ):
        self.cfg = cfg
        self.handle_request = handle_request
        self.wc = cfg.watch
        self.open_library = open_library
        self.roots = {os.path.abspath(r): Root(os.path.abspath(r)) for r in cfg.roots}
        self.index_dir = os.path.abspath(cfg.index_dir)
        self.observers = Observers(observer or self.wc.observer, self.wc.poll_interval, self._on_fs_event)  # fmt: skip
        self.queue = PendingPaths(self.wc, self.roots, self.index_dir,
                                  {e.lower() for e in cfg.library.extensions},
                                  cfg.library.follow_symlinks, self.check_roots)  # fmt: skip
        self.events: collections.deque[Event] = collections.deque()
        self.stopping = False
        self.lib: WatchedLibrary | None = None
        self.state = "starting"
        self.started_at = time.time()
        self.last_update: float | None = None
        self.batches = 0
        self.last_batch: dict | None = None
        self.reconcile_roots: set[str] = set()
        self._status_dirty = True
        self._last_status = 0.0
        self._errors = RecentErrors(self._mark_dirty)
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    @property
    def pending(self) -> dict[str, Pending]:
        return self.queue.pending

    # ----------------------------------------------------------------- plumbing
    def _on_fs_event(self, event: Event) -> None:
        self.events.append(event)
        self._wake()

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
            "roots": [{"path": r.path, "online": r.online, "observer": r.mode} for r in self.roots.values()],  # fmt: skip
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

    # ----------------------------------------------------------------- roots
    def _root_present(self, root: Root) -> bool:
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

    def _go_offline(self, root: Root, why: str) -> None:
        root.online = False
        root.ident = None
        self.observers.stop(root)
        dropped = [p for p, e in self.pending.items() if e.root == root.path]
        for p in dropped:
            del self.pending[p]
        self.reconcile_roots.discard(root.path)
        log.warning("root %s is offline (%s): its %d indexed images are kept and left out of "
                    "searches until it returns", root.path, why,
                    self.lib.store.roots().get(root.path, 0))  # fmt: skip
        self._status_dirty = True

    def _go_online(self, root: Root, first: bool = False) -> None:
        self.observers.start(root)  # before reconciling: changes meanwhile become events
        root.online = True
        root.ident = ident(root.path)
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
            elif root.online and ident(root.path) != root.ident:
                log.warning("root %s was replaced by another folder: watching it anew",
                            root.path)  # fmt: skip
                self.observers.stop(root)
                self._go_online(root)
            elif root.online and not self.observers.alive(root):
                log.error("the %s observer of %s stopped; restarting it", root.mode, root.path)
                self.observers.stop(root)
                self._go_online(root)

    def _drain_events(self, now: float) -> None:
        self._status_dirty |= bool(self.events)
        while self.events:
            etype, src, dest, is_dir = self.events.popleft()
            self.queue.handle_event(etype, src, dest, is_dir, now)

    # ----------------------------------------------------------------- indexing
    def _stop_requested(self) -> bool:
        self.serve_requests()  # between two batches of a long run, too
        return self.stopping

    def serve_requests(self) -> None:
        """Run the writes handed over by other processes (see :mod:`indexer.watch.mailbox`)."""
        if self.lib is not None and self.handle_request is not None and not self.stopping:
            lib, handle = self.lib, self.handle_request
            mailbox.serve(self.index_dir, lambda op, kwargs: handle(lib, op, kwargs))

    def index_batch(self, paths: list[str], kinds: dict[str, str], attempts: dict) -> None:
        online = [p for p in paths if (r := self.queue.root_of(p)) is not None and r.online
                  and os.path.isdir(r.path)]  # fmt: skip
        if len(online) < len(paths):
            self.check_roots()
        targets = self.queue.compress(online, kinds)
        if not targets:
            return
        self._set_state("indexing")
        self.batches += 1
        n = self.batches
        t0 = time.monotonic()
        try:
            rep = self.lib.index(targets, progress=False, skip_missing_roots=True, stop=self._stop_requested)  # fmt: skip
        except Exception as exc:  # noqa: BLE001 - keep watching; retry the batch later
            log.error("batch %d (%d paths) failed: %s: %s", n, len(targets), type(exc).__name__,
                      exc, exc_info=log.isEnabledFor(logging.DEBUG))  # fmt: skip
            self.queue.retry(targets, kinds, attempts, time.monotonic(), RETRY_SECONDS)
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
            log.warning("batch %d: %d files could not be indexed (see `clipsearch status`)", n, rep.errors)  # fmt: skip
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
    def _open_library(self) -> WatchedLibrary:
        try:
            return self.open_library(self.cfg)
        except IndexBusyError as exc:
            pid = mailbox.watch_pid(self.index_dir)
            if pid is not None:
                raise WatchError(
                    f"clipsearch watch is already running for the index in {self.index_dir} "
                    f"(pid {pid}); stop it first (e.g. systemctl --user stop clipsearch-watch)"
                ) from None
            raise WatchError(str(exc)) from None

    def run(self) -> int:
        old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        # a request was handed over: the handler does nothing, the wake-up fd wakes the loop
        old[mailbox.WAKE_SIGNAL] = signal.signal(mailbox.WAKE_SIGNAL, lambda *_: None)
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
            deadline = min(self.queue.next_deadline(), next_root_check)
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
            self.serve_requests()
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
                batch = self.queue.take_batch(time.monotonic())
                if not batch:
                    break
                self.index_batch(batch, kinds, attempts)
                self._drain_events(time.monotonic())  # events that came during the batch
            self.ocr_pass()  # text of what is indexed, while nothing else waits (ocr.enabled)
            if not self.stopping:
                self._set_state("watching")
            self.write_status()

    def _shutdown(self, old_handlers: dict, old_fd: int) -> None:
        if self.stopping:
            log.info("stopping (signal received); %d changed paths left for the next start",
                     len(self.pending))  # fmt: skip
        self.state = "stopping"
        for root in self.roots.values():
            self.observers.stop(root)
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
