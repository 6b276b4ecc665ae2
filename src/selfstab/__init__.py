"""selfstab — gradient descent at the edge of stability, and the theory of self-stabilization beside it.

The data flow one way: config → problem (:class:`Objective`) → processes → records → figures.
"""

from .errors import ConfigError, ConvergenceError, DataError, DivergenceError, SelfstabError
from .problem import Objective
from .problem.data import load_dataset
from .problem.models import build_model
from .processes import Lockstep, track
from .records import load_run
from .spectrum import EigenTracker, sharpness_gradient, top_eigenpairs
from .train import gd_run, gd_to_edge

__version__ = "0.1.0"

__all__ = ["ConfigError", "ConvergenceError", "DataError", "DivergenceError", "EigenTracker", "Lockstep",
           "Objective", "SelfstabError", "build_model", "gd_run", "load_dataset", "gd_to_edge", "load_run", "sharpness_gradient", "top_eigenpairs",
           "track"]
