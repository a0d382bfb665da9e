"""Writes while ``clipsearch watch`` holds the writer lock: requests handed to the daemon.

There is one writer per index, and a running ``watch`` is it. A short write from elsewhere
(teaching a concept, saving an album, from the CLI or the UI) that finds the lock held by a
running daemon is not refused: it is written as a request file into ``<index.dir>/requests/``
(atomically: a temporary name, then a rename), the daemon is woken (``SIGUSR1``; it also looks
every few seconds), runs it with its own writer Library between two batches, and writes the
answer next to it; the caller waits for the answer. The request names an operation and its
JSON arguments; the daemon's handler decides what the names mean (``indexer.cli.writes``).

A caller that gives up (its timeout) withdraws its request; a request whose caller has gone is
dropped by the daemon unanswered; a daemon killed mid-request leaves the request file, which
the next daemon drops if its caller has given up by then.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from indexer.store import IndexBusyError
from indexer.watch.status import pid_alive, read_status

log = logging.getLogger("clipsearch.watch")

REQUESTS_DIR = "requests"
WAKE_SIGNAL = signal.SIGUSR1
DEFAULT_TIMEOUT = 120.0  # a request waits for the current batch of the daemon to end
_POLL = 0.05
_STALE_ANSWER = 3600.0  # seconds an unread answer is kept


class RequestError(ValueError):
    """The daemon ran the request and it failed; the message is the daemon's."""


def watch_pid(index_dir: str | os.PathLike) -> int | None:
    """The pid of the ``watch`` daemon holding this index's writer lock, None if none runs.

    SQLite's lock file names its holder; a PostgreSQL index has no lock file (its lock is the
    server's), so there the daemon's status file names it, if that process is alive.
    """
    index_dir = Path(index_dir)
    doc = read_status(index_dir)
    if not doc or doc.get("state") in (None, "stopped") or not str(doc.get("pid")).isdigit():
        return None
    pid = int(doc["pid"])
    try:
        lock_pid = (index_dir / "writer.lock").read_text().strip()
    except FileNotFoundError:
        return pid if pid_alive(pid) else None
    except OSError:
        return None
    return pid if lock_pid == str(pid) else None


def _write_json(path: Path, doc: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(doc), encoding="utf-8")
    os.replace(tmp, path)


def submit(
    index_dir: str | os.PathLike, op: str, kwargs: dict, timeout: float = DEFAULT_TIMEOUT
) -> dict:
    """Have the running ``watch`` daemon run ``op(**kwargs)``; returns its JSON result.

    Raises :class:`RequestError` (the daemon's message) if it failed, and
    :class:`IndexBusyError` if no daemon runs or it did not answer within ``timeout``.
    """
    pid = watch_pid(index_dir)
    if pid is None:
        raise IndexBusyError(f"another process holds the writer lock of {index_dir}")
    folder = Path(index_dir) / REQUESTS_DIR
    folder.mkdir(exist_ok=True)
    rid = uuid.uuid4().hex
    req, res = folder / f"{rid}.req", folder / f"{rid}.res"
    _write_json(req, {"op": op, "kwargs": kwargs, "pid": os.getpid(),
                      "deadline": time.time() + timeout})  # fmt: skip
    with contextlib.suppress(OSError):
        os.kill(pid, WAKE_SIGNAL)
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            doc = json.loads(res.read_text(encoding="utf-8"))
        except FileNotFoundError:
            time.sleep(_POLL)
            continue
        res.unlink(missing_ok=True)
        if doc.get("ok"):
            return doc.get("result") or {}
        raise RequestError(str(doc.get("error") or "the request failed"))
    req.unlink(missing_ok=True)
    raise IndexBusyError(
        f"clipsearch watch (pid {pid}) holds the writer lock of {index_dir} and did not "
        f"answer within {timeout:.0f} s (it may be busy indexing); try again later"
    )


def serve(index_dir: str | os.PathLike, handle: Callable[[str, dict], dict]) -> int:
    """Run the waiting requests, oldest first, with ``handle(op, kwargs)``; returns how many.

    ``handle`` raises ValueError/PermissionError/LookupError for a request that cannot be done
    (its message goes back to the caller); anything else is logged and answered as a failure.
    """
    folder = Path(index_dir) / REQUESTS_DIR
    try:
        waiting = sorted(folder.glob("*.req"), key=lambda p: p.stat().st_mtime)
    except (FileNotFoundError, NotADirectoryError):
        return 0
    except OSError as exc:  # a request vanished while sorting: the next look gets it
        log.debug("requests: %s", exc)
        return 0
    for res in folder.glob("*.res"):  # answers nobody came for (the caller had given up)
        with contextlib.suppress(OSError):
            if res.stat().st_mtime < time.time() - _STALE_ANSWER:
                res.unlink()
    done = 0
    for req in waiting:
        try:
            doc = json.loads(req.read_text(encoding="utf-8"))
            req.unlink()  # claimed (a caller that withdrew it first: skipped)
        except (OSError, ValueError):
            req.unlink(missing_ok=True)
            continue
        if float(doc.get("deadline", 0)) < time.time():
            continue  # its caller has given up
        op, kwargs = str(doc.get("op")), doc.get("kwargs") or {}
        try:
            answer = {"ok": True, "result": handle(op, kwargs)}
            log.info("ran %s for pid %s", op, doc.get("pid"))
        except (ValueError, PermissionError, LookupError) as exc:
            answer = {"ok": False, "error": str(exc)}
        except Exception as exc:  # noqa: BLE001 - the daemon keeps running; the caller is told
            log.exception("request %s failed", op)
            answer = {"ok": False, "error": f"the watch daemon could not run {op}: {exc}"}
        try:
            _write_json(req.with_suffix(".res"), answer)
        except OSError as exc:
            log.warning("cannot answer request %s: %s", req.name, exc)
        done += 1
    return done
