"""Atomic file writes and the on-disk layout of ``records.h5``.

Every file of a run directory is written the same way: into a temporary file
in the *same* directory, flushed and fsync'ed, then moved over the old one
with :func:`os.replace`, which is atomic on POSIX and Windows.  A process
killed at any moment (SIGKILL included) therefore leaves either the old file
or the new one, never a torn one — plus, at worst, a stray temporary file,
which readers ignore (its name starts with a dot and carries ``.tmp-``) and
:func:`clean_temp_files` removes once its writer is gone.  (See ``FSYNC`` for
what the fsync adds and how to skip it.)

``records.h5`` holds one group per process; in each group an int64 ``step``
dataset and one float64 dataset per field, all of the same length, NaN where a
field was not recorded at a step.  (Each field's ``first_row`` attribute, the
row where it first appeared, lets a resumed run drop fields born after its
checkpoint.)  Nothing else is needed to read it::

    h5py.File("runs/x/records.h5")["gd/loss"][:]
    pandas.DataFrame({k: v[:] for k, v in h5py.File("runs/x/records.h5")["gd"].items()})

Every dataset carries checksums (HDF5's fletcher32 filter, which every HDF5
library has built in: plain readers still need nothing), so a damaged file is
refused instead of read: :func:`read_records` raises :class:`UnreadableRecords`
naming the dataset, for a checksum mismatch as for any other failure to read
(a truncated file, a damaged header).  Files written before the checksums read
as before.
"""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path
from typing import BinaryIO, Callable

import h5py
import numpy as np

FORMAT = "selfstab-records"
VERSION = 1

# fsync makes a write survive power loss; a killed process needs only the atomic
# rename (the kernel keeps its page cache).  Each fsync costs milliseconds on a
# disk, so SELFSTAB_FSYNC=0 turns it off for tests and scratch runs.
FSYNC = os.environ.get("SELFSTAB_FSYNC", "1") not in ("0", "false", "no")

# ".records.h5.tmp-<pid>-<token>": hidden, and tagged with the writer's pid.
_TMP_RE = re.compile(r"^\..+\.tmp-(\d+)-[0-9a-f]+$")

Table = tuple[np.ndarray, dict[str, np.ndarray], dict[str, int]]
"""One process's records: ``(step int64[T], {field: float64[T]}, {field: first row})``."""


def temp_path(path: Path) -> Path:
    """A fresh temporary name next to ``path`` (same directory, hence same filesystem)."""
    return path.parent / f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"


def fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (a no-op where directories cannot be opened)."""
    if not FSYNC:
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> None:
    """Call ``write(f)`` on a temporary file, fsync it, then move it onto ``path`` atomically."""
    path = Path(path)
    tmp = temp_path(path)
    try:
        with open(tmp, "w+b") as f:
            write(f)
            f.flush()
            if FSYNC:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Atomically replace ``path`` with the UTF-8 ``text``."""
    data = text.encode("utf-8")
    atomic_write(path, lambda f: f.write(data))


def is_temp_file(name: str) -> bool:
    return _TMP_RE.match(name) is not None


def clean_temp_files(folder: str | os.PathLike) -> list[Path]:
    """Remove temporary files in ``folder`` left by writers that no longer run; return them.

    A temporary file of a live process (another writer, or this one) is left
    alone, so cleaning never races a write in progress.
    """
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for entry in folder.iterdir():
        m = _TMP_RE.match(entry.name)
        if m is None or _pid_alive(int(m.group(1))):
            continue
        try:
            entry.unlink()
            removed.append(entry)
        except OSError:
            pass
    return removed


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists but is not ours, or cannot tell: keep the file
    return True


# Rows per chunk of a dataset (128 KiB of float64): each chunk has its own checksum.
CHUNK_ROWS = 1 << 14


class UnreadableRecords(OSError):
    """``records.h5`` (or the copy a checkpoint carries) cannot be read: damaged, truncated or not HDF5.
    ``str()`` is one line naming the dataset where it is known and why."""


def _create(group: h5py.Group, name: str, data: np.ndarray) -> h5py.Dataset:
    """One column, chunked with a fletcher32 checksum per chunk (an empty one has no data to check)."""
    if not len(data):
        return group.create_dataset(name, data=data)
    return group.create_dataset(name, data=data, chunks=(min(len(data), CHUNK_ROWS),), fletcher32=True)


def write_records(path: str | os.PathLike, tables: dict[str, Table]) -> None:
    """Atomically (re)write ``records.h5`` with one group per process.

    Datasets are chunked, uncompressed and checksummed (fletcher32, built into
    every HDF5 library: plain readers need nothing more), and writing ~10 MB
    this way takes milliseconds.  Group and field order is kept (``track_order``)
    so columns come back in the order they first appeared.
    """

    def write(f: BinaryIO) -> None:
        with h5py.File(f, "w", track_order=True) as h5:
            h5.attrs["format"] = FORMAT
            h5.attrs["version"] = VERSION
            for name, (steps, cols, first_rows) in tables.items():
                group = h5.create_group(name, track_order=True)
                _create(group, "step", np.asarray(steps, dtype=np.int64))
                for field, values in cols.items():
                    data = _create(group, field, np.asarray(values, dtype=np.float64))
                    data.attrs["first_row"] = int(first_rows.get(field, 0))

    atomic_write(path, write)


def _why(exc: BaseException) -> str:
    """A failure to read, in words: h5py reports a checksum mismatch as a filter failure."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    if "filter" in text.lower() or "checksum" in text.lower():
        return "checksum mismatch: the file is damaged"
    return text if isinstance(exc, OSError) else f"{type(exc).__name__}: {text}"


def read_records(path: str | os.PathLike | BinaryIO) -> dict[str, Table]:
    """Read every process group of ``records.h5`` (see :func:`write_records`); ``path`` may be a binary file.

    Any failure to read (a checksum mismatch, a truncated or damaged file, a header that no longer
    makes sense) raises :class:`UnreadableRecords`, never a partial or silently wrong table.
    """
    tables: dict[str, Table] = {}
    where = ""
    try:
        with h5py.File(path, "r") as h5:
            for name in list(h5.keys()):
                where = f"{name}: "
                group = h5[name]
                if not isinstance(group, h5py.Group) or "step" not in group:
                    continue
                where = f"{name}/step: "
                steps = np.asarray(group["step"][:]).astype(np.int64, copy=False)
                cols, first = {}, {}
                for key in list(group.keys()):
                    if key == "step":
                        continue
                    where = f"{name}/{key}: "
                    data = group[key]
                    cols[key] = np.asarray(data[:]).astype(np.float64, copy=False)
                    first[key] = int(data.attrs.get("first_row", 0))
                    if cols[key].shape != steps.shape:
                        raise ValueError(f"{len(cols[key])} rows beside {len(steps)} steps")
                tables[name] = (steps, cols, first)
    except (KeyboardInterrupt, MemoryError):
        raise
    except Exception as exc:   # OSError (checksums, truncation), KeyError, TypeError from a damaged structure…
        raise UnreadableRecords(f"{where}{_why(exc)}") from exc
    return tables
