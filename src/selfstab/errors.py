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
