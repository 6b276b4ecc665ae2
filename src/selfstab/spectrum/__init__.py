"""Stage 2 — the spectrum: warm-started top eigenpairs of ∇²L and the sharpness gradient ∇S."""

from .eigen import DENSE_MAX, EigenWarning, Eigenpairs, default_tol, lobpcg, top_eigenpairs
from .sdcp import SDCPResult, SDCPWarning, gram_matrix, pair_coefficients, solve_sdcp
from .sharpness import EigenTracker, sharpness_gradient

__all__ = ["DENSE_MAX", "EigenTracker", "EigenWarning", "Eigenpairs", "SDCPResult", "SDCPWarning", "default_tol",
           "gram_matrix", "lobpcg", "pair_coefficients", "sharpness_gradient", "solve_sdcp", "top_eigenpairs"]
