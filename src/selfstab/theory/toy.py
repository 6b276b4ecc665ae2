"""The toy model of Appendix B, on which GD *is* the simplified dynamics eq. (3).

    L(x, y, z) = ½ (2/η + √β y) x² − (α/√β) y − z,        θ = (x, y, z),  θ₀ = (x₀, 0, 0).

Derivatives: ``∇L = ((2/η + √β y) x,  √β x²/2 − α/√β,  −1)`` and

    ∇²L = [[2/η + √β y, √β x, 0],
           [√β x,       0,    0],
           [0,          0,    0]].

At ``x = 0`` (the constrained trajectory ``θ†_t = (0, 0, η t)``) the Hessian is
diagonal: ``S = 2/η + √β y``, ``u = e_x``, ``∇S = ∇³L(u, u) = ∇(L_xx) = (0, √β, 0)``,
``α = −∇L·∇S = −(−α/√β)·√β = α`` and ``β = ‖P⊥_u ∇S‖² = β``.  At ``x ≠ 0`` the
off-diagonal ``√β x`` tilts ``u`` and ``S = (a + sqrt(a² + 4βx²))/2`` with
``a = 2/η + √β y`` (:func:`toy_sharpness_exact`); the paper's ``S_t = 2/η + y_t``
is the ``x = 0`` value, which eq. (3) uses.

GD with step ``η``, in the coordinates ``(x, ỹ = √β y)``:

    x_{t+1} = x − η (2/η + √β y) x = −(1 + η ỹ_t) x_t
    ỹ_{t+1} = √β (y − η(√β x²/2 − α/√β)) = ỹ_t + η (α − β x_t²/2)

which is eq. (3) exactly, while ``z`` moves by ``+η`` per step.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from ..errors import ConfigError
from ..problem import Objective


def _check(alpha: float, beta: float, lr: float) -> None:
    if not (alpha > 0 and beta > 0 and lr > 0):
        raise ConfigError(f"toy model: needs α, β, η > 0, got α={alpha}, β={beta}, η={lr}")


def toy_loss(theta, alpha: float, beta: float, lr: float):
    """``L(x, y, z)`` of Appendix B; ``theta[0], theta[1], theta[2]`` are ``x, y, z`` (a tensor or
    array of shape ``(3,)``, or ``(3, n)`` for ``n`` points at once)."""
    x, y, z = theta[0], theta[1], theta[2]
    rb = math.sqrt(beta)
    return 0.5 * (2.0 / lr + rb * y) * x ** 2 - (alpha / rb) * y - z


def toy_start(x0: float, dtype: torch.dtype = torch.float64) -> Tensor:
    """``θ₀ = (x₀, 0, 0)``."""
    return torch.tensor([float(x0), 0.0, 0.0], dtype=dtype)


def toy_objective(alpha: float, beta: float, lr: float, x0: float = 0.1,
                  dtype: torch.dtype = torch.float64) -> Objective:
    """The Appendix B loss as an :class:`Objective` on ``θ ∈ R³`` (``theta0 = (x0, 0, 0)``)."""
    _check(alpha, beta, lr)
    return Objective.from_function(lambda th: toy_loss(th, alpha, beta, lr), toy_start(x0, dtype))


def toy_sharpness(theta: Tensor, beta: float, lr: float) -> Tensor:
    """``S = 2/η + √β y``: the sharpness at ``x = 0`` (and the paper's ``S_t``)."""
    return 2.0 / lr + math.sqrt(beta) * theta[1]


def toy_sharpness_exact(theta: Tensor, beta: float, lr: float) -> Tensor:
    """``λ_max(∇²L) = (a + sqrt(a² + 4βx²))/2``, ``a = 2/η + √β y``, at any ``θ``."""
    a = toy_sharpness(theta, beta, lr)
    return 0.5 * (a + torch.sqrt(a ** 2 + 4.0 * beta * theta[0] ** 2))


def toy_eigvec(theta: Tensor) -> Tensor:
    """``u = e_x`` (exact at ``x = 0``)."""
    u = torch.zeros_like(theta)
    u[0] = 1.0
    return u


def toy_grad_sharpness(theta: Tensor, beta: float) -> Tensor:
    """``∇S = ∇³L(u, u) = (0, √β, 0)`` at ``x = 0`` (Lemma 2)."""
    g = torch.zeros_like(theta)
    g[1] = math.sqrt(beta)
    return g


def toy_alpha(alpha: float) -> float:
    """``α = −∇L·∇S`` at ``x = 0``: the model's ``alpha`` parameter itself."""
    return float(alpha)


def toy_beta(beta: float) -> float:
    """``β = ‖P⊥_u ∇S‖²`` at ``x = 0``: the model's ``beta`` parameter itself."""
    return float(beta)


def to_simplified(theta: Tensor, beta: float) -> tuple[float, float]:
    """``θ = (x, y, z) ↦ (x, √β y)``, the coordinates in which GD is eq. (3)."""
    return float(theta[0]), math.sqrt(beta) * float(theta[1])


def toy_gd(alpha: float, beta: float, lr: float, x0: float, steps: int) -> np.ndarray:
    """GD on the toy loss from ``(x0, 0, 0)`` with the closed-form gradient: the iterates as a
    float64 array of shape ``(steps + 1, 3)``.  (Tests check it against the objective's autograd
    gradient and against eq. (3).)"""
    _check(alpha, beta, lr)
    rb = math.sqrt(beta)
    out = np.empty((steps + 1, 3))
    x, y, z = float(x0), 0.0, 0.0
    out[0] = x, y, z
    for t in range(steps):
        gx, gy = (2.0 / lr + rb * y) * x, 0.5 * rb * x * x - alpha / rb
        x, y, z = x - lr * gx, y - lr * gy, z + lr
        out[t + 1] = x, y, z
    return out
