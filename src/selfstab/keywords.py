"""A misspelt keyword argument of a public function: a one-line :class:`~selfstab.errors.ConfigError`
with a "did you mean", instead of Python's bare ``TypeError``."""

from __future__ import annotations

import difflib
import functools
import inspect
from typing import Callable, TypeVar

from .errors import ConfigError

__all__ = ["did_you_mean", "suggest_keywords"]

F = TypeVar("F", bound=Callable)


def did_you_mean(name: str, valid) -> str:
    """``"; did you mean 'x'?"`` for the nearest of ``valid`` to ``name``, or ``""``."""
    guess = difflib.get_close_matches(name, list(valid), n=1)
    return f"; did you mean {guess[0]!r}?" if guess else ""


def suggest_keywords(func: F) -> F:
    """Wrap ``func`` so that an unknown keyword argument is a ConfigError naming it and the nearest valid one
    (a call that binds is passed on untouched)."""
    sig = inspect.signature(func)
    names = [p.name for p in sig.parameters.values()
             if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)]

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        unknown = [k for k in kwargs if k not in names]
        if unknown:
            key = unknown[0]
            raise ConfigError(f"{func.__name__}: unknown keyword argument {key!r}{did_you_mean(key, names)} "
                              f"(arguments: {', '.join(names)})")
        return func(*args, **kwargs)

    return wrapper
