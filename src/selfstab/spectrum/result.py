"""What an eigen-solve returns (:class:`Eigenpairs`), and what a failed one looks like.

Shared by the solver paths of :mod:`~selfstab.spectrum.eigen` and the block
LOBPCG of :mod:`~selfstab.spectrum.block_solver`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor

MatVec = Callable[[Tensor], Tensor]          # (m, d) -> (m, d)


class EigenWarning(RuntimeWarning):
    """An eigen-solve that stopped above its tolerance (recorded in the result too)."""


@dataclass
class Eigenpairs:
    """Top-``k`` eigenpairs, largest first.

    ``values`` (k,) float64 on the CPU; ``vectors`` (k, d) in the objective's
    dtype/device, orthonormal; ``images`` = ``H @ vectors`` (k, d), a free
    by-product; ``residuals`` (k,) relative ``‖Hu − λu‖/|λ|``.
    """

    values: Tensor
    vectors: Tensor
    images: Tensor
    residuals: Tensor
    hvps: int
    iterations: int
    converged: bool
    method: str
    extra: dict = field(default_factory=dict)

    @property
    def sharpness(self) -> float:
        return float(self.values[0])

    @property
    def u(self) -> Tensor:
        return self.vectors[0]


def default_tol(dtype: torch.dtype) -> float:
    """Relative residual the solver aims for: eigenvalue error ≈ tol² λ/gap."""
    return 1e-6 if dtype == torch.float64 else 1e-4


def _residuals(values: Tensor, X: Tensor, AX: Tensor) -> Tensor:
    R = AX - values.to(X.dtype)[:, None] * X
    return (R.norm(dim=1).double().cpu() / values.abs().clamp_min(1e-300)).to(torch.float64)


_NONFINITE = ("the Hessian-vector product returned NaN/inf",
              "θ or the loss is not finite (a diverged run?): lower the learning rate or start from finite parameters")
def _finite(t: Tensor) -> bool:
    return bool(torch.isfinite(t).all())


def _failed(k: int, d: int, dtype, device, hvps: int, iterations: int, method: str, failure: tuple[str, str],
            start_residual: float = float("nan")) -> Eigenpairs:
    """A result with no usable eigenpair: NaN throughout, so nothing downstream mistakes it for one."""
    nan = float("nan")
    vectors = torch.full((k, d), nan, dtype=dtype, device=device)
    return Eigenpairs(torch.full((k,), nan, dtype=torch.float64), vectors, vectors.clone(),
                      torch.full((k,), nan, dtype=torch.float64), hvps, iterations, False, method,
                      {"start_residual": start_residual, "guard": vectors[:0], "gap_ratio": nan, "failure": failure})
