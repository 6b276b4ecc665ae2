"""Appendix H: a scale-invariant loss plus weight decay drives the normalized sharpness down.

``f(θ) = f(cθ)`` for all ``c > 0`` and ``L(θ) = f(θ) + λ/2 ‖θ‖²``.  Scale invariance gives
``∇²f(θ) = ∇²f(θ̄)/‖θ‖²`` with ``θ̄ = θ/‖θ‖``, so

    S(θ) = S_f(θ̄)/‖θ‖² + λ,        S_f(θ̄) = (S(θ) − λ) ‖θ‖²  (the *normalized* sharpness).

Weight decay shrinks ``‖θ‖`` (``∇f ⊥ θ``), which raises ``S`` until GD reaches the edge
``S = 2/η`` (progressive sharpening).  From then on self-stabilization holds ``S ≈ 2/η``
(Lemma 6: at such a point ``∇L ⊥ u``, ``α > 0``), so ``S_f(θ̄) ≈ (2/η − λ)‖θ‖²`` must fall
as ``‖θ‖`` keeps shrinking: GD solves ``min f(θ̄) + λ/(2(2/η − λ)) S_f(θ̄)`` — the sharpness
reduction of Lyu et al. — as the equivalence derivation of Appendix H says.

The model: a two-layer tanh network ``x ↦ w₂ᵀ tanh(W₁ᵀ x)`` whose weights are
``c θ/‖θ‖`` (all of θ normalized jointly), ``mse`` loss (docs/theory.md §1, no ½) on a
small synthetic binary task (Gaussian inputs, ``±1`` labels of a random teacher).
The sharpness ``S(θ_t)`` is measured every step, by one of two methods:

* ``"dense"`` (default here, ``d = width·(dim_in + 1)`` is 30): the exact Hessian
  of the loss function from one batched backward pass through its gradient
  (``is_grads_batched``) and ``numpy.linalg.eigvalsh`` — cheaper at this size
  than ``"lanczos"``, whose 20-odd HVPs are one backward pass each
  (benchmarks/RESULTS.md);
* ``"lanczos"``: ARPACK (``scipy.sparse.linalg.eigsh``) on a ``LinearOperator`` of
  :meth:`Objective.hvp`, warm-started from the previous ``u``; for larger models.

The two agree to ~1e-12 relative (tests check it).
"""

from __future__ import annotations

import math
import time
from typing import Callable

import numpy as np
import pandas as pd
import torch

from ..errors import ConfigError, DivergenceError
from ..problem import Objective
from ..spectrum import top_eigenpairs


def _data(n: int, dim_in: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, dim_in))
    y = np.sign(X @ rng.standard_normal(dim_in))
    y[y == 0] = 1.0
    return torch.tensor(X), torch.tensor(y)


def scale_invariant_loss(weight_decay: float = 0.0025, *, n: int = 8, dim_in: int = 4, width: int = 6,
                         scale: float = 5.0, radius: float = 8.0, seed: int = 0
                         ) -> tuple[Callable[[torch.Tensor], torch.Tensor], torch.Tensor]:
    """``(L, θ₀)``: ``L(θ) = mean_i (net(c θ/‖θ‖; x_i) − y_i)² + λ/2 ‖θ‖²`` on
    ``θ ∈ R^{width·(dim_in + 1)}`` (float64), ``θ₀`` a Gaussian direction of norm ``radius``."""
    if weight_decay < 0:
        raise ConfigError(f"weight_decay: must be ≥ 0, got {weight_decay}")
    if min(n, dim_in, width) < 1 or not (scale > 0 and radius > 0):
        raise ConfigError("scale invariance: n, dim_in, width, scale and radius must be positive")
    X, y = _data(n, dim_in, seed)
    d1 = dim_in * width

    def loss(theta: torch.Tensor) -> torch.Tensor:
        w = scale * theta / theta.norm()
        out = torch.tanh(X @ w[:d1].view(dim_in, width)) @ w[d1:]
        return (out - y).pow(2).mean() + 0.5 * weight_decay * theta.pow(2).sum()

    g = torch.Generator().manual_seed(seed + 1)
    theta0 = torch.randn(d1 + width, generator=g, dtype=torch.float64)
    return loss, theta0 * (radius / theta0.norm())


def scale_invariant_objective(weight_decay: float = 0.0025, **kwargs) -> Objective:
    """:func:`scale_invariant_loss` as an :class:`Objective` (``theta0 = θ₀``)."""
    return Objective.from_function(*scale_invariant_loss(weight_decay, **kwargs))


def dense_step(loss_fn, theta: torch.Tensor) -> tuple[float, torch.Tensor, float]:
    """``(L, ∇L, λ_max(∇²L))`` at ``theta``: the whole Hessian from one batched backward pass
    through the gradient, its top eigenvalue by :func:`~selfstab.spectrum.top_eigenpairs`."""
    x = theta.detach().requires_grad_(True)
    val = loss_fn(x)
    (g,) = torch.autograd.grad(val, x, create_graph=True)

    def hvps(V: torch.Tensor) -> torch.Tensor:   # (m, d) -> (m, d): m HVPs in one backward pass
        (HV,) = torch.autograd.grad(g, x, V, is_grads_batched=True, retain_graph=True)
        return HV

    eig = top_eigenpairs(hvps, x.numel(), 1, dtype=x.dtype, method="dense")
    return float(val.detach()), g.detach(), eig.sharpness


def lanczos_sharpness(point, v0: np.ndarray | torch.Tensor | None = None, tol: float = 1e-10
                      ) -> tuple[float, np.ndarray]:
    """``(S, u)`` at an :class:`~selfstab.problem.Point` from its HVPs alone, by
    :func:`~selfstab.spectrum.top_eigenpairs`: warm-started from ``v0`` (the previous ``u``; the new
    ``u`` is signed so that ``u·v0 > 0``), cold (ARPACK) without it; ``tol``: relative residual."""
    theta = point.theta
    warm = None if v0 is None else torch.as_tensor(np.asarray(v0), dtype=theta.dtype).reshape(1, -1)
    eig = top_eigenpairs(point.hvp, theta.numel(), 1, dtype=theta.dtype, device=theta.device, warm=warm,
                         tol=tol, method="lobpcg")
    return eig.sharpness, eig.u.detach().cpu().numpy()


def scale_invariance_experiment(lr: float = 0.2, weight_decay: float = 0.0025, steps: int = 3000, *,
                                method: str = "dense", radius: float = 8.0, n: int = 8, dim_in: int = 4,
                                width: int = 6, scale: float = 5.0, seed: int = 0) -> pd.DataFrame:
    """Full-batch GD on :func:`scale_invariant_loss`, one row per step ``t = 0..steps``.

    Columns: ``step``, ``loss`` (``L``), ``f`` (the scale-invariant part), ``sharpness``
    (``S(θ_t)``), ``norm_sq`` (``‖θ_t‖²``), ``normalized_sharpness`` (``(S − λ)‖θ‖² = S_f(θ̄)``;
    ``S·‖θ‖²`` differs by ``λ‖θ‖²``), ``sharpness_ratio`` (``S η/2``).  ``df.attrs`` holds the
    settings, ``edge_step`` (first ``t`` with ``S ≥ 2/η``, or ``None``) and ``seconds``.
    """
    if lr <= 0 or steps < 1:
        raise ConfigError(f"lr, steps: need lr > 0 and steps ≥ 1, got {lr}, {steps}")
    if method not in ("dense", "lanczos"):
        raise ConfigError(f"method: {method!r} is not one of 'dense', 'lanczos'")
    loss_fn, theta = scale_invariant_loss(weight_decay, n=n, dim_in=dim_in, width=width, scale=scale,
                                          radius=radius, seed=seed)
    start = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 30 parameters: extra threads only add overhead (and thrash on a busy machine)
    try:
        rows = _gd_rows(loss_fn, theta, lr, weight_decay, steps, method)
    finally:
        torch.set_num_threads(threads)
    df = pd.DataFrame(rows, columns=["step", "loss", "f", "sharpness", "norm_sq", "normalized_sharpness",
                                     "sharpness_ratio"])
    edge = np.flatnonzero(df["sharpness_ratio"].to_numpy() >= 1.0)
    df.attrs.update(lr=lr, weight_decay=weight_decay, method=method, radius=radius, n=n, dim_in=dim_in,
                    width=width, scale=scale, seed=seed, edge_step=int(edge[0]) if edge.size else None,
                    seconds=time.perf_counter() - start)
    return df


def _gd_rows(loss_fn, theta, lr: float, weight_decay: float, steps: int, method: str) -> list[tuple]:
    """GD from ``theta``, one row per step (the columns of :func:`scale_invariance_experiment`)."""
    obj = Objective.from_function(loss_fn, theta) if method == "lanczos" else None
    u, rows = None, []
    for t in range(steps + 1):
        if method == "dense":
            loss, grad, S = dense_step(loss_fn, theta)
        else:
            point = obj.at(theta)
            S, u = lanczos_sharpness(point, u)
            loss, grad = float(point.loss), point.grad
        if not math.isfinite(loss):
            raise DivergenceError(f"scale invariance: loss is {loss} at step {t}", step=t, lr=lr)
        r2 = float(theta.pow(2).sum())
        rows.append((t, loss, loss - 0.5 * weight_decay * r2, S, r2, (S - weight_decay) * r2, S * lr / 2))
        theta = theta - lr * grad
    return rows
