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

Watching: with ``flush_seconds`` set, :meth:`RunDir.tick` (called once per
step) also flushes the records whenever that many seconds have passed since
the last flush, and refreshes the run's status in ``summary.json``:
``"status": "running"`` with the writer's ``pid``, ``host``, a
``heartbeat`` time (of the last write) and its ``progress``
(``{"phase": "training"|"tracking", "step": …}``), then ``"finished"``, ``"stopped: …"`` or ``"failed: …"``
(:meth:`RunDir.set_status`).  :attr:`Run.running` tells a reader whether the
writer is still alive.

Data parallelism (``torchrun``, docs/theory.md §11): rank 0 alone writes.  On
a rank ≠ 0 every writer of :class:`RunDir` (the methods marked
:func:`_main_writes`) does nothing on disk; what it would change in memory
(summary, config, records) changes all the same, so every rank holds the same
run.  :meth:`RunDir.create` makes no folder there, and :meth:`RunDir.open`
only reads.  :meth:`RunDir.rewind_to_checkpoint` waits at a barrier before
reading, so every rank reads the checkpoint rank 0 wrote.  Checkpoints record
the world size that wrote them (:attr:`RunDir.checkpoint_world_size`).

Creating: :meth:`RunDir.create` takes the folder's creation lock first
(:mod:`.lock`), so of two runs started at once into one folder one runs and the
other is told which process (pid, host) is creating it; the lock is released
once the summary carries the run's status, which from then on tells who writes
the run (``resume`` and ``--overwrite`` refuse a run whose writer is alive).

Damage: every dataset of ``records.h5`` carries checksums; a damaged file is a
one-line "unreadable" error for every reader, and ``resume`` rebuilds it from
the copy its last checkpoint carries, or says plainly what is lost; a resume
with no checkpoint left starts over from step 0 and says so, with the old
records kept aside (:mod:`.repair`).

Unwritable places (a read-only file system, no permission, a full disk) end
in a one-line :class:`~selfstab.errors.NotWritableError` naming the path and
the fix, never a raw ``OSError`` (:mod:`.writable`; its :func:`writable_folder` does the same for
a folder a reader such as ``selfstab plot`` or ``report`` writes into).
"""

from __future__ import annotations

import functools
import json
import math
import os
import shutil
import socket
import time
import tomllib
import warnings
import weakref
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

import torch

from .. import distributed
from ..tomlio import dumps_toml, to_dict
from ..errors import ConfigError
from . import checkpoint as ckpt
from . import lock, repair
from .io import UnreadableRecords, atomic_write_text, clean_temp_files, read_records, write_records
from .recorder import Recorder, check_name
from .reading import (CHECKPOINTS, CONFIG, RECORDS, SUMMARY, _rank_tables, _read_config, _read_summary, _read_tables,
                      read_latest_checkpoint, writer_alive)
from .writable import check_writable, writing



def _main_writes(method):
    """A writer of :class:`RunDir`: it runs on rank 0 (and in a plain process) only; elsewhere it is a no-op
    returning None (the one place that keeps ranks ≠ 0 of a data-parallel run off the disk)."""
    @functools.wraps(method)
    def writer(self, *args, **kwargs):
        return method(self, *args, **kwargs) if self.writes else None
    return writer


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _copy_it(path: Path) -> str:
    """The way on when a run folder cannot be written."""
    return f"copy the run somewhere writable (cp -r {path} DIR) and continue it there"


def _prepare_folder(path: Path, overwrite: bool, fix: str) -> None:
    """:meth:`RunDir.create`'s checks of an existing folder, and the erase of a run ``overwrite`` replaces;
    under the creation lock."""
    if not any(entry.name != lock.LOCK for entry in path.iterdir()):
        return
    if not (path / CONFIG).is_file():
        raise ConfigError(f"run: {path} exists and is not a selfstab run directory; refusing to write into it")
    try:
        summary, config = _read_summary(path), _read_config(path)
    except ConfigError:   # a damaged run: nobody is writing it
        summary, config = {}, {}
    if summary.get("status") == "running" and summary.get("pid") != os.getpid() and writer_alive(summary, config):
        raise ConfigError(f"run: {path} is being written by another process (pid {summary.get('pid')} on "
                          f"{summary.get('host')}); wait for it or stop it, or choose another --out")
    if not overwrite:
        raise ConfigError(f"run: {path} already holds a run; pass --overwrite (overwrite=True in Python) or choose "
                          f"another --out")
    # config.toml goes last, so an interrupted erase still leaves something we may erase again.
    with writing(path, fix):
        for entry in path.iterdir():
            if entry.name not in (CONFIG, lock.LOCK):
                shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
        (path / CONFIG).unlink()


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

    def __init__(self, path: Path, config: dict, tables: dict, summary: dict, *, fix: str | None = None):
        self.path = path
        self.config = config
        self._recorders = {name: Recorder(name, *table) for name, table in tables.items()}
        self._summary = summary
        self._flushed: dict[str, int] | None = None  # recorder versions at the last flush; None: never
        # what to do when this folder cannot be written (in every NotWritableError about it)
        self.fix = fix or _copy_it(path)
        self.flush_seconds: float | None = None   # tick() flushes at least this often; None: only on flush()
        self._last_flush = time.monotonic()
        self.made: list[Path] | None = None       # what create() made, for discard(); None: an opened run
        # {"phase": …, "step": …} kept current by the writer: the heartbeat reports it as "progress"
        self.position: dict | None = None
        # rank 0 (or a plain process) writes the folder; other ranks of a data-parallel run only read
        self.writes = distributed.is_main()
        # the world size that wrote the checkpoint rewind_to_checkpoint returned (None: none read yet)
        self.checkpoint_world_size: int | None = None
        self._lock: Path | None = None   # the creation lock create() holds until a status is written

    def _writing(self, path: Path | None = None):
        return writing(path or self.path, self.fix)

    @classmethod
    def create(cls, path: str | os.PathLike, config: Any, *, overwrite: bool = False) -> RunDir:
        """Start a run in ``path`` (created; an empty folder is fine) and write ``config.toml``.

        ``config`` is a dict or a config dataclass.  An existing run is an error
        unless ``overwrite``; a non-empty folder that is not a run is never erased.
        """
        path = Path(path)
        fix = "choose a writable folder with --out DIR (or out = … in the config)"
        text = dumps_toml(to_dict(config), header="selfstab run config, resolved: every field, defaults included.")
        if not distributed.is_main():   # rank 0 makes the folder; this rank keeps the same config in memory
            return cls(path, tomllib.loads(text), {}, {}, fix=fix)
        if path.exists() and not path.is_dir():
            raise ConfigError(f"run: {path} exists and is not a folder")
        with writing(path, fix):
            try:
                path.mkdir(parents=True)
                existed = False
            except FileExistsError:
                existed = True
            if not path.is_dir():
                raise ConfigError(f"run: {path} exists and is not a folder")
            held = lock.acquire(path, lambda who: writer_alive(who, {}), str(path))
        try:
            _prepare_folder(path, overwrite, fix)
            with writing(path, fix):   # config.toml first: a folder with it is a run, which --overwrite may erase
                atomic_write_text(path / CONFIG, text)
                (path / CHECKPOINTS).mkdir(parents=True, exist_ok=True)
            self = cls(path, _read_config(path), {}, {}, fix=fix)
        except BaseException:
            lock.release(held)
            raise
        self.made = [path] if not existed else [p for p in path.iterdir() if p.name != lock.LOCK]
        self._lock = held
        # a run that never writes a status (RunDir used directly) frees its folder when the process ends
        weakref.finalize(self, lock.release, held)
        return self

    def _release(self) -> None:
        """Give up the creation lock: the summary now says who writes this run (or it is discarded)."""
        if self._lock is not None:
            lock.release(self._lock)
            self._lock = None

    @_main_writes
    def discard(self) -> None:
        """Remove what :meth:`create` started (a run that failed before it began): the folder itself when
        create made it, else everything in it (it was empty, or an overwritten run).  An opened run is kept."""
        if self.made is None:
            return
        if self.made == [self.path]:
            shutil.rmtree(self.path, ignore_errors=True)
        else:
            for entry in list(self.path.iterdir()):
                if entry.name == lock.LOCK:
                    continue
                shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() and not entry.is_symlink() \
                    else entry.unlink(missing_ok=True)
        self.made = None
        self._release()

    @classmethod
    def open(cls, path: str | os.PathLike, *, fix: str | None = None) -> RunDir:
        """Reopen a run to continue it; stale temporary files of dead writers are removed.

        A run another live process is writing is refused; so is one that cannot be written, with ``fix``
        (default: copy it somewhere writable) in the message."""
        path = Path(path)
        creating = lock.holder(path)
        if creating is not None and creating.get("pid") != os.getpid() and writer_alive(creating, {}):
            raise lock.busy(creating, str(path))
        config = _read_config(path)
        summary = _read_summary(path)
        if not distributed.is_main():   # rank 0 checks and tidies the folder; this rank only reads it
            return cls(path, config, _rank_tables(path), summary, fix=fix)
        if summary.get("status") == "running" and summary.get("pid") != os.getpid() and writer_alive(summary, config):
            raise ConfigError(f"run: {path} is being written by another process (pid {summary.get('pid')} "
                              f"on {summary.get('host')}); wait for it to finish, or stop it first")
        check_writable(path, fix or _copy_it(path))   # now, not after minutes of work
        rebuilt = None
        try:
            tables = read_records(path / RECORDS) if (path / RECORDS).is_file() else {}
        except UnreadableRecords as exc:   # damaged: rebuilt from the last checkpoint's copy, or a plain refusal
            tables, rebuilt = repair.rebuild(path / RECORDS, exc, read_latest_checkpoint(path))
        self = cls(path, config, tables, summary, fix=fix)
        for folder in (path, path / CHECKPOINTS):
            clean_temp_files(folder)
        with self._writing(path / CHECKPOINTS):
            (path / CHECKPOINTS).mkdir(exist_ok=True)
        check_writable(path / CHECKPOINTS, self.fix)
        if rebuilt is not None:
            self.write_summary({"records_rebuilt": [*summary.get("records_rebuilt", []), rebuilt]})
        return self

    def update_config(self, config: Any, *, notes: list[str] = (), header: str | None = None) -> None:
        """Rewrite ``config.toml`` (atomically), e.g. when ``selfstab track`` sets the tracking options;
        ``notes`` are comment lines under the header (e.g. the history of extensions); ``header`` replaces
        the usual first line (a run saved from Python says what its config does not hold)."""
        header = "\n".join([header or "selfstab run config, resolved: every field, defaults included.", *notes])
        text = dumps_toml(to_dict(config), header=header)
        self._write_text(CONFIG, text)
        self.config = tomllib.loads(text)

    @_main_writes
    def _write_text(self, name: str, text: str) -> None:
        with self._writing(self.path / name):
            atomic_write_text(self.path / name, text)

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

    @_main_writes
    def flush(self) -> None:
        """Atomically rewrite ``records.h5`` with everything recorded so far (O(T), see the module docstring)."""
        versions = {name: rec.version for name, rec in self._recorders.items()}
        if versions == self._flushed and (self.path / RECORDS).exists():
            return
        tables = {name: (*rec.table(), rec.first_rows()) for name, rec in self._recorders.items() if len(rec)}
        with self._writing(self.path / RECORDS):
            write_records(self.path / RECORDS, tables)
        self._flushed = versions
        self._last_flush = time.monotonic()

    @_main_writes
    def tick(self) -> bool:
        """Flush the records (and beat the heartbeat) when ``flush_seconds`` have passed since the last
        flush; call it once per step.  Returns whether it flushed."""
        if self.flush_seconds is None or time.monotonic() - self._last_flush < self.flush_seconds:
            return False
        self.flush()
        self._last_flush = time.monotonic()
        self._beat()
        return True

    def _beat(self) -> None:
        """While running: the heartbeat time (the records were just written) and where the writer is."""
        if self._summary.get("status") == "running":
            self.write_summary({"heartbeat": _now(), **({"progress": dict(self.position)} if self.position else {})})

    # ------------------------------------------------------------------ status

    def set_status(self, status: str) -> None:
        """``"running"`` (with this process's pid, host and a heartbeat), ``"finished"``, ``"stopped: …"``
        or ``"failed: …"``, in ``summary.json``."""
        values: dict[str, Any] = {"status": status, "heartbeat": _now()}
        if status == "running":
            values.update(pid=os.getpid(), host=socket.gethostname())
        if self.position:
            values["progress"] = dict(self.position)
        self.write_summary(values)

    def copy_records(self, source: str | os.PathLike, rows: Mapping[str, int]) -> None:
        """Take the first ``rows[name]`` rows of process ``name`` from the run in ``source`` (e.g. its
        training, up to the edge checkpoint), with the fields they had; ``source`` is only read."""
        tables = _read_tables(Path(source))
        for name, n in rows.items():
            if name not in tables:
                continue
            steps, cols, first = tables[name]
            n = min(int(n), len(steps))
            kept = [k for k in cols if first.get(k, 0) < n]
            self._recorders[check_name(name, "process")] = Recorder(
                name, steps[:n], {k: cols[k][:n] for k in kept}, {k: first.get(k, 0) for k in kept})

    def rewind_to(self, step: int, processes: list[str] | None = None) -> None:
        """Drop the rows with step > ``step`` (of ``processes``, default all), in memory and on disk."""
        for name in processes if processes is not None else list(self._recorders):
            rec = self._recorders.get(name)
            if rec is None:
                raise ConfigError(f"records: no process {name!r}; this run has {', '.join(self._recorders) or 'none'}")
            rec.truncate(rec.rows_through(step))
        self.flush()

    # ------------------------------------------------------------------ checkpoints

    @_main_writes
    def save_checkpoint(self, step: int, state: dict, *, keep: int = 2) -> Path:
        """Flush the records, then atomically write a checkpoint of ``state``; keep the newest ``keep``.

        The checkpoint also records the world size (1 in a plain process) whose reductions made ``state``."""
        self.flush()
        folder = self.path / CHECKPOINTS
        with self._writing(folder):
            folder.mkdir(exist_ok=True)
            existing = ckpt.list_checkpoints(folder)
            seq = existing[-1][0] + 1 if existing else 0
            target = folder / ckpt.checkpoint_name(seq, int(step))
            rows = {name: len(rec) for name, rec in self._recorders.items()}
            records = (self.path / RECORDS).read_bytes() if (self.path / RECORDS).is_file() else None
            ckpt.save_checkpoint_file(target, seq, int(step), state, rows, world_size=distributed.world_size(),
                                      records_file=records)
            for _, _, old in ckpt.list_checkpoints(folder)[: -max(1, keep)]:
                old.unlink(missing_ok=True)
        self._beat()
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
        taken; one that did not exist then is emptied.  With no checkpoint the
        run restarts from scratch and None is returned: records already on disk
        are moved aside and that is said (:mod:`.repair`); so are rows missing
        below the checkpoint's.
        In a data-parallel run every rank calls it: a barrier first, so that all
        read what rank 0 wrote before.
        """
        if distributed.world_size() > 1:
            torch.distributed.barrier()
        payload = self._latest(map_location)
        self.checkpoint_world_size = None if payload is None else int(payload.get("world_size", 1))
        rows = {} if payload is None else payload["records"]
        if payload is None and any(len(rec) for rec in self._recorders.values()):
            self._start_over()
        have = {name: len(rec) for name, rec in self._recorders.items()}
        lost = {name: f"{have.get(name, 0)} of {n}" for name, n in rows.items() if n > have.get(name, 0)}
        if lost and self.writes:   # records.h5 deleted or moved aside: said, not silently a run with a gap
            where = ", ".join(f"{k} {v}" for k, v in lost.items())
            repair.say(f"{self.path / RECORDS} holds fewer rows than the checkpoint of step {payload['step']} "
                       f"({where} rows): the missing rows are lost; the run goes on from that checkpoint")
            self.write_summary({"records_lost": [*self._summary.get("records_lost", []),
                                                 {"time": _now(), "checkpoint_step": payload["step"], "rows": lost}]})
        for name, rec in self._recorders.items():
            rec.truncate(rows.get(name, 0))
        self.flush()
        return None if payload is None else (payload["step"], payload["state"])

    @_main_writes
    def _start_over(self) -> None:
        """No checkpoint left but records on disk: set the records and summary aside, say it, start from 0."""
        old = {}
        for name in (RECORDS, SUMMARY):
            if (self.path / name).is_file():
                with self._writing(self.path):
                    old[name] = repair.set_aside(self.path / name, "bak").name
        rows = ", ".join(f"{name} {len(rec)}" for name, rec in self._recorders.items() if len(rec))
        repair.say(f"{self.path} has no readable checkpoint: the run starts over from step 0 (its records, rows "
                   f"{rows}, moved to {old.get(RECORDS, '?')})")
        self._recorders = {}
        kept = {k: self._summary[k] for k in ("train_only", "extensions", "restarted") if k in self._summary}
        note = {"time": _now(), "reason": "no readable checkpoint", "old_records": old.get(RECORDS),
                "old_summary": old.get(SUMMARY)}
        self.write_summary({**kept, "restarted": [*kept.get("restarted", []), note]}, replace=True)

    # ------------------------------------------------------------------ summary

    def write_summary(self, values: Mapping[str, Any], *, replace: bool = False) -> None:
        """Merge ``values`` into ``summary.json`` (or replace it) atomically."""
        new = _jsonable(dict(values), "summary")
        summary = new if replace else {**self._summary, **new}
        self._write_text(SUMMARY, json.dumps(summary, indent=2, allow_nan=False) + "\n")
        self._summary = summary
        if "status" in new:   # the summary now says who writes this run: the creation lock is not needed
            self._release()

    @property
    def summary(self) -> dict:
        return dict(self._summary)


