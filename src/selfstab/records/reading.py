"""Reading a run directory back: its config, records, summary and newest checkpoint, changing nothing.

:func:`load_run` is what figures, the report, export and a user's script call;
:class:`~selfstab.records.rundir.RunDir` (the writer) opens a run through the
same readers.  A damaged ``records.h5`` is one "unreadable" line here
(``repair.unreadable``), never a traceback or a silently wrong number.
"""

from __future__ import annotations

import json
import os
import socket
import tomllib
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from ..errors import ConfigError
from . import checkpoint as ckpt
from . import repair
from .io import UnreadableRecords, _pid_alive, read_records
from .recorder import to_frame

CONFIG, RECORDS, SUMMARY, CHECKPOINTS = "config.toml", "records.h5", "summary.json", "checkpoints"


def _not_a_run(path: Path) -> ConfigError:
    return ConfigError(
        f"run: {path} is not a selfstab run directory (no {CONFIG}); "
        "pass the folder that `selfstab train` or `selfstab run` created"
    )


def _read_config(path: Path) -> dict:
    if not (path / CONFIG).is_file():
        raise _not_a_run(path)
    try:
        return tomllib.loads((path / CONFIG).read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"run: {path / CONFIG} is not valid TOML ({exc})") from None


def _read_tables(path: Path) -> dict:
    if not (path / RECORDS).is_file():
        return {}
    try:
        return read_records(path / RECORDS)
    except UnreadableRecords as exc:
        raise repair.unreadable(path / RECORDS, exc) from None


def _rank_tables(path: Path) -> dict:
    """A rank ≠ 0's records: the file, or where it is damaged the copy of the checkpoint rank 0 rebuilds it from."""
    try:
        return read_records(path / RECORDS) if (path / RECORDS).is_file() else {}
    except UnreadableRecords as exc:
        latest = read_latest_checkpoint(path)
        tables = None if latest is None else repair.carried(latest)
        if latest is not None and tables is None:
            raise repair.unreadable(path / RECORDS, exc) from None
        return tables or {}


def _read_summary(path: Path) -> dict:
    try:
        return json.loads((path / SUMMARY).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"run: {path / SUMMARY} is not valid JSON ({exc})") from None


def read_latest_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict | None:
    """The newest readable checkpoint of the run in ``path`` (``step``, ``records`` rows, ``state``), read
    without changing anything there; None when it has none."""
    for _, _, file in reversed(ckpt.list_checkpoints(Path(path) / CHECKPOINTS)):
        try:
            return ckpt.load_checkpoint_file(file, map_location)
        except Exception as exc:  # a torn or foreign file: fall back to the previous one
            warnings.warn(f"run: skipping unreadable checkpoint {file} ({type(exc).__name__}: {exc})", stacklevel=2)
    return None


@dataclass
class Run:
    """A run as read back by :func:`load_run`; ``records[process]`` is a DataFrame indexed by ``step``."""

    path: Path
    config: dict
    records: dict[str, pd.DataFrame] = field(default_factory=dict)  # processes with at least one row
    summary: dict = field(default_factory=dict)

    def __getitem__(self, process: str) -> pd.DataFrame:
        return self.records[process]

    @property
    def status(self) -> str | None:
        """``"running"``, ``"finished"``, ``"stopped: …"``, ``"failed: …"`` as the run last wrote it (None: a run
        written before runs had a status).  A killed run still says "running": see :attr:`running`."""
        return self.summary.get("status")

    @property
    def running(self) -> bool:
        """Whether the run is being written now: its status is "running" and its writer is alive (its pid
        on this host, or a heartbeat from another host within the last ``stale`` seconds)."""
        return self.status == "running" and writer_alive(self.summary, self.config)


def writer_alive(summary: Mapping[str, Any], config: Mapping[str, Any]) -> bool:
    """Whether the process that last wrote a run's summary still runs: its pid, when on this host; else
    its heartbeat is recent (a few flush intervals, at least two minutes)."""
    pid, host = summary.get("pid"), summary.get("host")
    if host == socket.gethostname() and isinstance(pid, int):
        return _pid_alive(pid)
    try:
        beat = datetime.fromisoformat(summary["heartbeat"])
    except (KeyError, TypeError, ValueError):
        return False
    flush = config.get("flush_seconds") or 15.0
    return (datetime.now(timezone.utc) - beat).total_seconds() < max(120.0, 4 * flush)



def load_run(path: str | os.PathLike) -> Run:
    """Read a run directory (its last flushed state; temporary files are ignored)."""
    path = Path(path)
    config = _read_config(path)
    records = {name: to_frame(steps, cols) for name, (steps, cols, _) in _read_tables(path).items()}
    return Run(path=path, config=config, records=records, summary=_read_summary(path))
