"""The predicted dynamics (Definition 7, eq. (6)) and the generalized form (Appendix F).

A displacement ``v_t`` predicts ``θ_t ≈ θ†_t + v_t``.  Every quantity is taken
at ``θ†_t`` (``H_t``, ``u_t``, ``∇S⊥_t``, ``δ_t``); with ``x_t = u_t·v_t`` and
``y_t = ∇S⊥_t·v_t``:

    v_{t+1} = P⊥_{u_{t+1}} (I − ηH_t) P⊥_{u_t} v_t
            + η P⊥_{u_{t+1}} ∇S⊥_t (δ_t² − x_t²)/2
            − (1 + η y_t) x_t u_{t+1}

The generalized dynamics replace only the coefficient of ``u_{t+1}``:
``x_{t+1} = −(1 + η y_t) x_t − η F_t'(x_t)`` with
``F_t'(x) = u_t·∇L(θ†_t + x u_t) − 2x/η`` (one extra gradient; two for the
even part ``(F'(x) − F'(−x))/2``).

``δ_t² = 2α_t/β_t`` enters only squared, so the step is defined for ``α ≤ 0``
too (then ``δ`` itself is missing and recorded as such); with ``β = 0`` the
``∇S⊥`` term vanishes.  Cost: one HVP with ``P⊥_{u_t} v_t`` at ``θ†_t``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .geometry import Geometry, perp


def predicted_step(v: Tensor, here: Geometry, u_next: Tensor, lr: float, *, generalized: bool = False,
                   even_part: bool = False) -> tuple[Tensor, dict]:
    """``v_{t+1}`` from ``v_t``, the geometry at ``θ†_t`` and ``u_{t+1}`` (eq. (6) / Appendix F).

    Returns the new displacement and the fields at ``t``: ``x, y`` and, for the
    generalized form, ``F_prime``.
    """
    u = here.u
    gs_perp = here.grad_sharpness_perp
    x = float(u @ v)
    y = float(gs_perp @ v)
    w = perp(u, v)
    w = w - lr * here.point.hvp(w)                            # (I − ηH_t) P⊥_{u_t} v_t
    w = w + lr * gs_perp * (here.delta_sq - x * x) / 2
    coef = -(1 + lr * y) * x
    fields = {"x": x, "y": y}
    if generalized:
        fp = _f_prime(here, x, lr)
        if even_part:
            fp = 0.5 * (fp - _f_prime(here, -x, lr))
        coef -= lr * fp
        fields["F_prime"] = fp
    v_next = perp(u_next, w) + coef * u_next
    return v_next, fields


def _f_prime(here: Geometry, x: float, lr: float) -> float:
    """``F_t'(x) = u_t·∇L(θ†_t + x u_t) − 2x/η``."""
    if x == 0.0:
        return float(here.u @ here.grad)
    g = here.point.objective.grad(here.theta + x * here.u)
    return float(here.u @ g) - 2 * x / lr


def theorem1_predictions(here: Geometry, x: float, y: float, lr: float) -> dict:
    """Theorem 1: ``L(θ_t) ≈ L(θ†_t) + x_t²/η`` and ``S(θ_t) ≈ 2/η + y_t + (∇S_t·u_t) x_t``."""
    return {"loss": here.loss + x * x / lr,
            "sharpness": 2.0 / lr + y + float(here.grad_sharpness @ here.u) * x}


def finite(v: Tensor) -> bool:
    return bool(torch.isfinite(v).all()) and math.isfinite(float(v.norm()))
