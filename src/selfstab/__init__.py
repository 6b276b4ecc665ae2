"""selfstab — gradient descent at the edge of stability, and the theory of self-stabilization beside it.

The data flow one way: config → problem (:class:`Objective`) → processes → records → figures.
"""

from .errors import ConfigError, ConvergenceError, DataError, DivergenceError, SelfstabError
from .problem import Objective

__version__ = "0.1.0"

__all__ = ["ConfigError", "ConvergenceError", "DataError", "DivergenceError", "Objective", "SelfstabError"]
