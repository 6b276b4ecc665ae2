"""Places that cannot be written: one-line :class:`~selfstab.errors.NotWritableError` instead of ``OSError``.

A read-only file system, no permission, a full disk or a quota: the error
names the path and the fix.  Used by :class:`~selfstab.records.RunDir` for
everything it writes and by the readers that write beside a run (``selfstab
plot``, ``report``, ``export``).
"""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path

from ..errors import NotWritableError, SelfstabError
from .io import temp_path


# errno values that mean "this place cannot be written" (as opposed to a bug or a vanished file)
_UNWRITABLE = {errno.EROFS: "read-only file system", errno.EACCES: "permission denied",
               errno.EPERM: "operation not permitted", errno.ENOSPC: "no space left on the device",
               errno.EDQUOT: "disk quota exceeded"}


def not_writable(path: str | os.PathLike, exc: OSError, fix: str) -> NotWritableError | None:
    """The one-line error for an ``OSError`` that says ``path`` cannot be written (None: some other error)."""
    if isinstance(exc, SelfstabError) or exc.errno not in _UNWRITABLE:
        return None
    return NotWritableError(f"cannot write {path} ({_UNWRITABLE[exc.errno]}); {fix}", path=os.fspath(path))


@contextlib.contextmanager
def writing(path: str | os.PathLike, fix: str):
    """Turn an "unwritable" ``OSError`` inside the block into a :class:`NotWritableError` about ``path``."""
    try:
        yield
    except OSError as exc:
        err = not_writable(path, exc, fix)
        if err is None:
            raise
        raise err from None


def check_writable(folder: str | os.PathLike, fix: str) -> None:
    """Create and remove a temporary file in ``folder``: a :class:`NotWritableError` if that fails."""
    folder = Path(folder)
    probe = temp_path(folder / "probe")
    with writing(folder, fix):
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
        os.unlink(probe)


def writable_folder(path: str | os.PathLike, fix: str = "use --out DIR to write somewhere else") -> Path:
    """Make ``path`` (and its parents) and check that files can be written in it; else a one-line
    :class:`NotWritableError` naming it and ``fix`` (e.g. ``selfstab plot``/``report`` writing a run's figures)."""
    path = Path(path)
    with writing(path, fix):
        path.mkdir(parents=True, exist_ok=True)
    check_writable(path, fix)
    return path
