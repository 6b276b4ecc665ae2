"""What ``resume`` does when a run's records are damaged or its checkpoints are gone: never silent, never a loss.

* **Damaged ``records.h5``** (a checksum mismatch, a truncated or damaged
  file: :class:`~selfstab.records.io.UnreadableRecords`).  Readers (``load_run``,
  ``selfstab plot``, ``report``, ``export``) stop with one line naming the
  file.  ``resume`` (:meth:`RunDir.open <selfstab.records.RunDir.open>`)
  rebuilds the records from the copy the newest readable checkpoint carries
  (:mod:`.checkpoint`'s ``records_file``, checked by its own checksums): the
  damaged file is moved aside to ``records.h5.damaged-<time>`` (never
  deleted), the copy takes its place, one line on stderr and the summary's
  ``records_rebuilt`` say so.  Nothing is lost: a resume cuts the records back
  to its checkpoint anyway, and recomputes the rest bit for bit.  Where no
  checkpoint carries a copy (one written before copies were carried), resume
  refuses, saying which rows are lost and the two ways on: move the file aside
  and resume from the checkpoint (records from there on only), or start over.
  With no checkpoint at all, the damaged file is moved aside and the run
  starts over, as below.
* **No readable checkpoint** but records on disk (every checkpoint deleted or
  damaged, or a run killed before its first one): the run starts over from
  step 0, saying so on stderr and in the summary's ``restarted``; the old
  ``records.h5`` and ``summary.json`` are moved aside to ``*.bak-<time>``.
* **Fewer rows than the checkpoint's** (``records.h5`` deleted or moved aside
  by hand): the run goes on from the checkpoint, saying on stderr and in the
  summary's ``records_lost`` which rows are missing.
"""

from __future__ import annotations

import io
import os
import sys
from datetime import datetime, timezone
from pathlib import Path

from ..errors import ConfigError
from .io import UnreadableRecords, atomic_write, fsync_dir, read_records


def stamp() -> str:
    """A time for the names of files set aside: ``20261208T035100``."""
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")


def set_aside(file: Path, tag: str) -> Path:
    """Rename ``file`` to ``<file>.<tag>-<time>`` (a new name, never over another file); return the new path."""
    base = file.with_name(f"{file.name}.{tag}-{stamp()}")
    target, n = base, 1
    while target.exists():
        target, n = base.with_name(f"{base.name}-{n}"), n + 1
    os.replace(file, target)
    fsync_dir(file.parent)
    return target


def say(text: str) -> None:
    """One line on stderr: something a resume did that the user must know about."""
    print(f"selfstab: warning: {text}", file=sys.stderr, flush=True)


def unreadable(file: Path, exc: UnreadableRecords) -> ConfigError:
    """The one-line error of every reader of a damaged ``records.h5``."""
    return ConfigError(f"run: {file} is unreadable ({exc}); selfstab resume {file.parent} rebuilds it from "
                       f"its last checkpoint (the damaged file is kept aside), or run it again")


def carried(payload: dict) -> dict | None:
    """The records a checkpoint carries, as read by :func:`read_records`; None when it carries none or its
    copy is damaged too."""
    data = payload.get("records_file")
    if not data:
        return None
    try:
        return read_records(io.BytesIO(data))
    except UnreadableRecords:
        return None


def rebuild(file: Path, exc: UnreadableRecords, payload: dict | None) -> tuple[dict, dict]:
    """Replace the damaged ``file`` by the copy in ``payload`` (the newest readable checkpoint, None: none).

    Returns the tables now in ``file`` and the note for the summary; raises a one-line
    :class:`ConfigError` saying what is lost when the checkpoint cannot rebuild them.
    """
    if payload is None:
        aside = set_aside(file, "damaged")
        say(f"{file} is unreadable ({exc}); moved to {aside.name}. The run has no readable checkpoint "
            f"to rebuild it from: it starts over from step 0")
        return {}, {"time": stamp(), "damaged": aside.name, "from": None}
    tables = carried(payload)
    if tables is None:
        why = ("its copy there is damaged too" if payload.get("records_file")
               else "it was written before checkpoints carried the records")
        rows = ", ".join(f"{k} {v}" for k, v in payload["records"].items() if v) or "none"
        raise ConfigError(
            f"run: {file} is unreadable ({exc}) and the newest checkpoint (step {payload['step']}) cannot rebuild "
            f"it ({why}): the records up to it are lost (rows: {rows}). To go on from that checkpoint with "
            f"records from there on only, move the file aside (mv {file} {file}.damaged) and resume again; or start "
            f"over with selfstab run --out {file.parent} --overwrite")
    data = payload["records_file"]
    aside = set_aside(file, "damaged")
    atomic_write(file, lambda f: f.write(data))
    say(f"{file} is unreadable ({exc}); moved to {aside.name} and rebuilt from the checkpoint of step "
        f"{payload['step']}, which the resume continues from")
    return tables, {"time": stamp(), "damaged": aside.name, "from": f"checkpoint step {payload['step']}"}
