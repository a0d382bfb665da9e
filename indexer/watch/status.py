"""The watch service's status file, ``<index.dir>/watch.json``, and whether the service runs.

The service rewrites the file atomically (temporary file + rename) when its state changes,
at most every few seconds while busy and after each batch; it never writes while idle.
Anyone (``clipsearch status``, the UI) reads it with :func:`watch_status`, which decides
"running" from the kernel, not from the file: the recorded pid must be alive and hold the
index's writer lock (``/proc/locks``), so a service killed by SIGKILL reads as not running.

Document (fields are only ever added)::

    {"pid": int, "state": "starting"|"reconciling"|"watching"|"indexing"|"stopping"|"stopped",
     "started_at": float, "last_update": float|null (epoch seconds of the last index change),
     "queue": int (changed paths waiting), "batches": int, "last_batch": {...}|null,
     "roots": [{"path": str, "online": bool, "observer": "inotify"|"polling"|null}],
     "offline_roots": [str], "errors": [{"time": float, "level": str, "message": str}]}
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from indexer.store.lock import LOCK_NAME

STATUS_NAME = "watch.json"


def status_file(index_dir: Path) -> Path:
    return Path(index_dir) / STATUS_NAME


def write_status(index_dir: Path, doc: dict) -> None:
    """Replace the status file atomically (readers see the old or the new document)."""
    path = status_file(index_dir)
    tmp = path.with_name(f".{STATUS_NAME}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(doc, indent=1, sort_keys=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def read_status(index_dir: Path) -> dict | None:
    """The last document written (None when there is none or it cannot be read)."""
    try:
        doc = json.loads(status_file(index_dir).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (killed, not yet reaped by its parent) is not running
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True


def lock_held_by(index_dir: Path, pid: int) -> bool:
    """Whether ``pid`` holds the writer lock of ``index_dir`` (without touching the lock)."""
    lock = Path(index_dir) / LOCK_NAME
    try:
        inode = os.stat(lock).st_ino
        recorded = lock.read_text(encoding="ascii", errors="ignore").strip()
    except OSError:
        return False
    try:
        with open("/proc/locks", encoding="ascii", errors="ignore") as fh:
            lines = fh.read().splitlines()
    except OSError:  # no /proc: trust the pid recorded in the lock file
        return recorded == str(pid) and pid_alive(pid)
    for line in lines:
        parts = line.split()
        # "1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF" (blocked waiters have "->")
        if len(parts) >= 6 and parts[1] == "FLOCK" and parts[2] != "->" and parts[4] == str(pid):
            if parts[5].rsplit(":", 1)[-1] == str(inode):
                return True
    return False


def watch_status(index_dir: Path) -> dict:
    """``Library.status()["watch"]``: the status document plus ``running`` (decided live)."""
    doc = read_status(index_dir)
    if doc is None:
        return {"running": False, "pid": None, "state": None, "last_update": None, "queue": 0,
                "errors": [], "offline_roots": [], "detail": "not running (never started)"}  # fmt: skip
    pid = doc.get("pid")
    running = (
        isinstance(pid, int)
        and doc.get("state") != "stopped"
        and pid_alive(pid)
        and lock_held_by(index_dir, pid)
    )
    out = dict(doc)
    out.setdefault("queue", 0)
    out.setdefault("errors", [])
    out.setdefault("offline_roots", [])
    out.setdefault("last_update", None)
    out["running"] = bool(running)
    if running:
        out["detail"] = f"{doc.get('state')} (pid {pid})"
    elif doc.get("state") == "stopped":
        out["detail"] = "not running (stopped)"
    else:
        out["detail"] = f"not running (pid {pid} ended without stopping cleanly)"
        out["state"] = "dead"
        out["offline_roots"] = []  # no one is keeping track any more
    return out
