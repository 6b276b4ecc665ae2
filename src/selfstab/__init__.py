"""selfstab — gradient descent at the edge of stability, and the theory of self-stabilization beside it.

The data flow one way: config → problem (:class:`Objective`) → processes → records → figures.

The public names below are imported on first use, so ``import selfstab`` (and
the command line's ``--help``) does not load torch, scipy or matplotlib; the
error classes are light and imported at once.  Everything else stays
importable from its submodule (``selfstab.processes.Lockstep``,
``selfstab.spectrum.EigenTracker``, …).
"""

from __future__ import annotations

import importlib

from .errors import ConfigError, ConvergenceError, DataError, DivergenceError, SelfstabError

__version__ = "0.1.0"

# public name → the module that defines it (imported when the name is first used)
_LAZY = {
    "Objective": ".problem.objective",
    "load_dataset": ".problem.data",
    "build_model": ".problem.models",
    "gd_to_edge": ".train",
    "track": ".processes",
    "run": ".experiment",
    "load_run": ".records",
    "top_eigenpairs": ".spectrum",
}

__all__ = ["ConfigError", "ConvergenceError", "DataError", "DivergenceError", "SelfstabError", *_LAZY]


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'selfstab' has no attribute {name!r}")
    source = importlib.import_module(module, __name__)
    try:
        value = getattr(source, name)
    except AttributeError:
        raise AttributeError(f"selfstab.{name} is not available: selfstab{module} defines no {name!r}") from None
    globals()[name] = value   # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
