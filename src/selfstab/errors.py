"""Errors that carry a one-line message naming the field and the fix.

The command line prints ``str(error)`` alone for any :class:`SelfstabError`,
so each message must make sense without a traceback.
"""


class SelfstabError(Exception):
    """Base class for every error selfstab raises on purpose."""


class ConfigError(SelfstabError, ValueError):
    """Bad input: an unknown name, a wrong type or value, mismatched shapes."""


class DataError(SelfstabError, FileNotFoundError):
    """A dataset file that is missing or unreadable."""


class DivergenceError(SelfstabError, FloatingPointError):
    """A run whose loss became NaN/inf or grew past its bound."""

    def __init__(self, message: str, step: int | None = None, lr: float | None = None):
        super().__init__(message)
        self.step = step
        self.lr = lr


class ConvergenceError(SelfstabError, ArithmeticError):
    """An iterative solver (eigen-solver, projection) that did not converge."""


class NotWritableError(SelfstabError, PermissionError):
    """A file or folder selfstab must write cannot be written (read-only file system, no permission, disk full).

    ``path`` is what could not be written; the message names it and the fix.
    """

    def __init__(self, message: str, path: str | None = None):
        super().__init__(message)
        self.path = path

    def __str__(self) -> str:
        return self.args[0] if self.args else ""


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during a run, after its records were flushed: ``str()`` says where it stopped and how to go on.

    ``step``: the step it was at; ``phase``: "training" or "tracking"; ``resume_step``: the step that
    ``selfstab resume`` continues from (its last checkpoint; None: from the start).
    """

    def __init__(self, message: str, *, path: str, phase: str, step: int | None, resume_step: int | None):
        super().__init__(message)
        self.path, self.phase, self.step, self.resume_step = path, phase, step, resume_step
