"""Library roots under watch: one watchdog observer per root, and what file system it is on."""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("clipsearch.watch")

NETWORK_FS = {
    "nfs", "nfs4", "cifs", "smb3", "smbfs", "ncpfs", "afs", "9p", "ceph", "glusterfs",
    "lustre", "gpfs", "fuse.sshfs", "fuse.rclone", "fuse.glusterfs", "fuse.davfs2", "davfs",
    "fuse.s3fs", "fuse.gcsfuse",
}  # fmt: skip


class WatchError(RuntimeError):
    """The service cannot start (reported as one line by the CLI)."""


@dataclass
class Root:
    path: str
    online: bool = False
    ident: tuple | None = None
    observer: object = None
    mode: str | None = None  # "inotify" | "polling"


def fs_type(path: str) -> str | None:
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


def ident(path: str) -> tuple | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


Event = tuple[str, str, str, bool]  # (event type, src path, dest path, is a folder)


class Observers:
    """Starts and stops the observer of each root; events go to ``on_event`` (any thread)."""

    def __init__(self, observer_mode: str, poll_interval: float, on_event: Callable[[Event], None]):
        self.observer_mode = observer_mode
        self.poll_interval = poll_interval
        self.on_event = on_event

    def _handler(self):
        from watchdog.events import FileSystemEventHandler

        on_event = self.on_event

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event) -> None:  # noqa: ANN001 - watchdog thread
                on_event(
                    (event.event_type, os.fsdecode(event.src_path),
                     os.fsdecode(getattr(event, "dest_path", "") or ""), event.is_directory)
                )  # fmt: skip

        return Handler()

    def _new_observer(self, mode: str, path: str):
        from watchdog import events as ev

        if mode == "polling":
            from watchdog.observers.polling import PollingObserver

            obs = PollingObserver(timeout=self.poll_interval)
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

    def start(self, root: Root) -> None:
        """Watch ``root`` (inotify, or polling for network file systems and as the fallback)."""
        mode = self.observer_mode
        if mode == "auto":
            fs = fs_type(root.path)
            if fs in NETWORK_FS or (fs or "").startswith("fuse.sshfs"):
                log.info("root %s is on a network file system (%s): polling it every %gs "
                         "(inotify does not see changes made by other machines)", root.path, fs,
                         self.poll_interval)  # fmt: skip
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
                            "%gs", root.path, why, self.poll_interval)  # fmt: skip
        root.observer, root.mode = self._new_observer("polling", root.path), "polling"

    @staticmethod
    def stop(root: Root) -> None:
        obs, root.observer = root.observer, None
        if obs is not None:
            try:
                obs.stop()
                obs.join(timeout=5)
            except Exception:  # noqa: BLE001 - a dead observer must not stop the service
                log.debug("stopping the observer of %s failed", root.path, exc_info=True)

    @staticmethod
    def alive(root: Root) -> bool:
        obs = root.observer
        if obs is None or not obs.is_alive():
            return False
        return all(e.is_alive() for e in obs.emitters)
