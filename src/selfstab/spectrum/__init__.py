"""Stage 2 — the spectrum: warm-started top eigenpairs of ∇²L and the sharpness gradient ∇S."""

from .eigen import DENSE_MAX, EigenWarning, Eigenpairs, default_tol, lobpcg, top_eigenpairs
from .sharpness import EigenTracker, sharpness_gradient

__all__ = ["DENSE_MAX", "EigenTracker", "EigenWarning", "Eigenpairs", "default_tol", "lobpcg",
           "sharpness_gradient", "top_eigenpairs"]
