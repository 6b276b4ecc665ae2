"""The creation lock of a run directory: two ``selfstab run --out R`` at once, one wins, the other is told who.

:meth:`~selfstab.records.RunDir.create` takes ``R/.selfstab-lock`` before it
looks at or writes anything in ``R``.  The file appears atomically and whole
(written aside, then hard-linked into place, which fails when the name
exists; where hard links are not supported, ``O_CREAT | O_EXCL``), holding the
creator's ``pid``, ``host`` and ``heartbeat``: the same keys as a running
run's ``summary.json``, judged alive by the same rule
(:func:`~selfstab.records.reading.writer_alive`: the pid on this host, else a
recent heartbeat).  A second creator (or a ``resume``) that finds a live lock
is refused with the holder's pid and host; a lock whose writer is gone is
taken over.  The run releases the lock as soon as its ``summary.json`` carries
a status (from then on the summary says who writes the run), or when it is
discarded, or when the process ends.

A takeover re-reads the stale lock just before removing it, so two creators
that find the same stale lock at the same instant are the one race left.
"""

from __future__ import annotations

import json
import os
import socket
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from ..errors import ConfigError
from .io import temp_path

LOCK = ".selfstab-lock"


def _content() -> bytes:
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "heartbeat": now}).encode()


def _place(lock: Path, data: bytes) -> bool:
    """Make ``lock`` with ``data`` unless it exists (False then); the file is never seen half-written."""
    tmp = temp_path(lock)
    tmp.write_bytes(data)
    try:
        os.link(tmp, lock)
        return True
    except FileExistsError:
        return False
    except OSError:   # no hard links here (some network or FUSE file systems): exclusive create instead
        try:
            fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return True
    finally:
        tmp.unlink(missing_ok=True)


def _holder(lock: Path) -> tuple[bytes, dict] | None:
    """The lock's raw bytes and what it says (``{}`` when unreadable); None when there is no lock."""
    try:
        raw = lock.read_bytes()
    except FileNotFoundError:
        return None
    except OSError:
        return b"", {}
    try:
        who = json.loads(raw.decode())
    except (UnicodeDecodeError, ValueError):
        who = {}
    return raw, who if isinstance(who, dict) else {}


def acquire(folder: Path, alive: Callable[[dict], bool], what: str) -> Path:
    """Take ``folder``'s creation lock; a one-line :class:`ConfigError` naming the live holder's pid and host.

    ``alive(holder)`` judges the holder's ``{"pid", "host", "heartbeat"}``; ``what`` is the folder as
    the message shows it.
    """
    lock = folder / LOCK
    data = _content()
    for _ in range(5):
        if _place(lock, data):
            return lock
        held = _holder(lock)
        if held is None:   # released meanwhile: try again
            continue
        raw, who = held
        if who.get("pid") == os.getpid() and who.get("host") == socket.gethostname():
            lock.write_bytes(data)   # ours already (a RunDir of this process not yet released)
            return lock
        if alive(who) or (not who and _young(lock)):
            raise busy(who, what)
        again = _holder(lock)   # stale: remove it unless it changed meanwhile
        if again is not None and again[0] == raw:
            lock.unlink(missing_ok=True)
    raise ConfigError(f"run: cannot take the creation lock {lock} (other processes keep taking it); "
                      f"choose another --out")


def busy(who: dict, what: str) -> ConfigError:
    """The refusal for a folder another live process is creating."""
    pid, host = who.get("pid", "?"), who.get("host", "?")
    return ConfigError(f"run: another selfstab process (pid {pid} on {host}) is creating {what}; "
                       f"wait for it or choose another --out")


def _young(lock: Path, seconds: float = 10.0) -> bool:
    """A lock without readable content is only trusted while new (its writer may still be writing it)."""
    try:
        return time.time() - lock.stat().st_mtime < seconds
    except OSError:
        return False


def holder(folder: Path) -> dict | None:
    """Who holds ``folder``'s creation lock (``{}``: unreadable); None when nobody does."""
    held = _holder(folder / LOCK)
    return None if held is None else held[1]


def release(lock: Path) -> None:
    """Remove ``lock`` if this process holds it."""
    held = _holder(lock)
    if held is not None and held[1].get("pid") == os.getpid() and held[1].get("host") == socket.gethostname():
        lock.unlink(missing_ok=True)
