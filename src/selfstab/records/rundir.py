"""The run directory: resolved config, per-step records, summary and checkpoints.

::

    runs/x/
      config.toml     the resolved config, every default written out
      records.h5      one group per process ("train", "gd", …): int64 step + float64 fields
      summary.json    a small dict of headline numbers
      checkpoints/    ckpt-<seq>-step<step>.pt, the last few

Records are kept in memory (the whole run, as growable numpy columns) and
persisted by :meth:`RunDir.flush`, which rewrites ``records.h5`` atomically.
That costs O(T · fields) per flush — simple, and a 20k-step run with 60 fields
flushes in a few tens of milliseconds — so flush every few hundred steps or
with each checkpoint, not every step.  Since every file is replaced
atomically, a run killed at any moment (SIGKILL included) leaves the last
flushed records and the last written checkpoint, and :func:`load_run` reads it.

Resuming: :meth:`RunDir.save_checkpoint` flushes the records *then* writes the
checkpoint, which remembers how many rows each process had.  After a crash the
records may run ahead of the newest checkpoint; :meth:`RunDir.rewind_to_checkpoint`
cuts them back to it, so a resumed run appends exactly what an uninterrupted
one would have.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tomllib
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from ..tomlio import dumps_toml, to_dict
from ..errors import ConfigError
from . import checkpoint as ckpt
from .io import atomic_write_text, clean_temp_files, read_records, write_records
from .recorder import Recorder, check_name, to_frame

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
    except (OSError, KeyError, ValueError) as exc:
        raise ConfigError(f"run: {path / RECORDS} is unreadable ({exc})") from None


def _read_summary(path: Path) -> dict:
    try:
        return json.loads((path / SUMMARY).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"run: {path / SUMMARY} is not valid JSON ({exc})") from None


def _jsonable(value: Any, where: str) -> Any:
    """Summary values → strict JSON; NaN and ±inf become null (JSON has neither)."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if hasattr(value, "tolist"):  # numpy values and tensors
        return _jsonable(value.tolist(), where)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else None
    raise ConfigError(f"summary: {where} has type {type(value).__name__}; use numbers, strings, lists or dicts")


class RunDir:
    """A run directory being written.  Use :meth:`create` or :meth:`open`, not the constructor."""

    def __init__(self, path: Path, config: dict, tables: dict, summary: dict):
        self.path = path
        self.config = config
        self._recorders = {name: Recorder(name, *table) for name, table in tables.items()}
        self._summary = summary
        self._flushed: dict[str, int] | None = None  # recorder versions at the last flush; None: never

    @classmethod
    def create(cls, path: str | os.PathLike, config: Any, *, overwrite: bool = False) -> RunDir:
        """Start a run in ``path`` (created; an empty folder is fine) and write ``config.toml``.

        ``config`` is a dict or a config dataclass.  An existing run is an error
        unless ``overwrite``; a non-empty folder that is not a run is never erased.
        """
        path = Path(path)
        if path.exists() and not path.is_dir():
            raise ConfigError(f"run: {path} exists and is not a folder")
        if path.exists() and any(path.iterdir()):
            if not (path / CONFIG).is_file():
                raise ConfigError(f"run: {path} exists and is not a selfstab run directory; refusing to write into it")
            if not overwrite:
                raise ConfigError(f"run: {path} already holds a run; pass --overwrite or choose another --out")
            # config.toml goes last, so an interrupted erase still leaves something we may erase again.
            for entry in path.iterdir():
                if entry.name != CONFIG:
                    shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
            (path / CONFIG).unlink()
        (path / CHECKPOINTS).mkdir(parents=True, exist_ok=True)
        text = dumps_toml(to_dict(config), header="selfstab run config, resolved: every field, defaults included.")
        atomic_write_text(path / CONFIG, text)
        return cls(path, _read_config(path), {}, {})

    @classmethod
    def open(cls, path: str | os.PathLike) -> RunDir:
        """Reopen a run to continue it; stale temporary files of dead writers are removed."""
        path = Path(path)
        config = _read_config(path)
        for folder in (path, path / CHECKPOINTS):
            clean_temp_files(folder)
        (path / CHECKPOINTS).mkdir(exist_ok=True)
        return cls(path, config, _read_tables(path), _read_summary(path))

    def update_config(self, config: Any) -> None:
        """Rewrite ``config.toml`` (atomically), e.g. when ``selfstab track`` sets the tracking options."""
        text = dumps_toml(to_dict(config), header="selfstab run config, resolved: every field, defaults included.")
        atomic_write_text(self.path / CONFIG, text)
        self.config = _read_config(self.path)

    # ------------------------------------------------------------------ records

    def recorder(self, name: str) -> Recorder:
        """The recorder of process ``name`` (created empty on first use)."""
        rec = self._recorders.get(name)
        if rec is None:
            rec = self._recorders[check_name(name, "process")] = Recorder(name)
        return rec

    @property
    def recorders(self) -> dict[str, Recorder]:
        return dict(self._recorders)

    def flush(self) -> None:
        """Atomically rewrite ``records.h5`` with everything recorded so far (O(T), see the module docstring)."""
        versions = {name: rec.version for name, rec in self._recorders.items()}
        if versions == self._flushed and (self.path / RECORDS).exists():
            return
        tables = {name: (*rec.table(), rec.first_rows()) for name, rec in self._recorders.items() if len(rec)}
        write_records(self.path / RECORDS, tables)
        self._flushed = versions

    def rewind_to(self, step: int, processes: list[str] | None = None) -> None:
        """Drop the rows with step > ``step`` (of ``processes``, default all), in memory and on disk."""
        for name in processes if processes is not None else list(self._recorders):
            rec = self._recorders.get(name)
            if rec is None:
                raise ConfigError(f"records: no process {name!r}; this run has {', '.join(self._recorders) or 'none'}")
            rec.truncate(rec.rows_through(step))
        self.flush()

    # ------------------------------------------------------------------ checkpoints

    def save_checkpoint(self, step: int, state: dict, *, keep: int = 2) -> Path:
        """Flush the records, then atomically write a checkpoint of ``state``; keep the newest ``keep``."""
        self.flush()
        folder = self.path / CHECKPOINTS
        folder.mkdir(exist_ok=True)
        existing = ckpt.list_checkpoints(folder)
        seq = existing[-1][0] + 1 if existing else 0
        target = folder / ckpt.checkpoint_name(seq, int(step))
        rows = {name: len(rec) for name, rec in self._recorders.items()}
        ckpt.save_checkpoint_file(target, seq, int(step), state, rows)
        for _, _, old in ckpt.list_checkpoints(folder)[: -max(1, keep)]:
            old.unlink(missing_ok=True)
        return target

    def _latest(self, map_location: Any = "cpu") -> dict | None:
        for _, _, file in reversed(ckpt.list_checkpoints(self.path / CHECKPOINTS)):
            try:
                return ckpt.load_checkpoint_file(file, map_location)
            except Exception as exc:  # a torn or foreign file: fall back to the previous one
                warnings.warn(f"run: skipping unreadable checkpoint {file} ({type(exc).__name__}: {exc})", stacklevel=3)
        return None

    def latest_checkpoint(self, map_location: Any = "cpu") -> tuple[int, dict] | None:
        """``(step, state)`` of the newest readable checkpoint, or None when there is none."""
        payload = self._latest(map_location)
        return None if payload is None else (payload["step"], payload["state"])

    def rewind_to_checkpoint(self, map_location: Any = "cpu") -> tuple[int, dict] | None:
        """Cut the records back to the newest readable checkpoint and return it, for a resume.

        Each process keeps the rows (and fields) it had when the checkpoint was
        taken; one that did not exist then is emptied.  With no checkpoint every
        record is dropped (the run restarts from scratch) and None is returned.
        """
        payload = self._latest(map_location)
        rows = {} if payload is None else payload["records"]
        for name, rec in self._recorders.items():
            rec.truncate(rows.get(name, 0))
        self.flush()
        return None if payload is None else (payload["step"], payload["state"])

    # ------------------------------------------------------------------ summary

    def write_summary(self, values: Mapping[str, Any], *, replace: bool = False) -> None:
        """Merge ``values`` into ``summary.json`` (or replace it) atomically."""
        new = _jsonable(dict(values), "summary")
        summary = new if replace else {**self._summary, **new}
        atomic_write_text(self.path / SUMMARY, json.dumps(summary, indent=2, allow_nan=False) + "\n")
        self._summary = summary

    @property
    def summary(self) -> dict:
        return dict(self._summary)


@dataclass
class Run:
    """A run as read back by :func:`load_run`; ``records[process]`` is a DataFrame indexed by ``step``."""

    path: Path
    config: dict
    records: dict[str, pd.DataFrame] = field(default_factory=dict)  # processes with at least one row
    summary: dict = field(default_factory=dict)

    def __getitem__(self, process: str) -> pd.DataFrame:
        return self.records[process]


def load_run(path: str | os.PathLike) -> Run:
    """Read a run directory (its last flushed state; temporary files are ignored)."""
    path = Path(path)
    config = _read_config(path)
    records = {name: to_frame(steps, cols) for name, (steps, cols, _) in _read_tables(path).items()}
    return Run(path=path, config=config, records=records, summary=_read_summary(path))
