"""The turning term of the k-constrained projection (docs/theory.md §10).

The linearized projection step of :mod:`~selfstab.processes.kconstrained`
holds each active eigenvector ``u_i`` fixed.  In a near-degenerate cluster the
active eigenvectors turn as ``ψ`` moves, and ``u_i·∇L`` then shrinks only by a
constant factor per step; the turning vectors ``q_i = ∇³L(u_i, (λ_i − H)⁺∇L)``
(:func:`turning_vectors`, with their own conjugate-gradient solve) restore fast
convergence: the shift along the active ``u_i`` solves ``(Λ + Q_U) b = g − Q·D⊥(Y)``
on the active set (:func:`active_shift`), alternated with the SDCP.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from .block import KGeometry, active_set


TURN_ROUNDS = 4       # SDCP ↔ active-shift rounds of one linearized step with the turning term
# turning="auto": on once a linearized step after the first shrinks max |u_i·∇L|/‖∇L‖ less than tenfold, with
# several critical eigenvalues (with one, θ†_k stays exactly the paper's θ†)
TURN_WHEN = 0.1
Turning = Literal["auto", "on", "off"]
TURNING = ("auto", "on", "off")


def turning_vectors(geom: KGeometry, lr: float, active_rtol: float = 1e-3, *, rtol: float = 1e-3,
                    max_iter: int = 50) -> Tensor | None:
    """``q_i = ∇³L(u_i, w_i)``, ``w_i = (λ_i − H)⁺∇L`` off the active span, for the active ``i`` (rows of a (k, d)
    tensor, zero elsewhere); ``None`` when nothing outside the active set matters (``∇L`` in their span).

    ``q_i·Δ`` is how ``u_i·∇L`` changes along ``Δ`` because ``u_i`` turns (first-order perturbation:
    ``du_i = (λ_i − H)⁺ ∇³L(·, u_i, Δ)``); a linearized step without it assumes ``u_i`` fixed and
    converges only linearly, slowly where eigenvalues just below the active ones are close
    (docs/theory.md §10).  ``w_i``: the block's inactive eigenvectors exactly (``u_j g_j/(λ_i − λ_j)``),
    the rest by conjugate gradients on ``λ_i − H`` off the block (positive definite there: every
    eigenvalue outside the block is below the critical threshold), to ``rtol``.  Costs the CG's HVPs
    and one third-derivative product per active ``i``.
    """
    U, vals, point = geom.U, geom.values.to(geom.U), geom.point
    grad = point.grad
    act = active_set(vals, lr, active_rtol).to(U.device)
    g = U @ grad
    rest = grad - g @ U                         # ∇L off the block
    if float(rest.norm()) == 0.0 and bool(act.all()):
        return None
    def shifted(v: Tensor, lam: float) -> Tensor:     # (λ − H)v off the block, for v off the block
        hv = point.hvp(v)
        return lam * v - (hv - (U @ hv) @ U)

    q = torch.zeros_like(U)
    for i in act.nonzero().flatten().tolist():
        w = _cg(lambda v, lam=float(vals[i]): shifted(v, lam), rest, rtol, max_iter)
        for j in (~act).nonzero().flatten().tolist():
            if float(vals[i] - vals[j]) > 0:
                w = w + U[j] * (g[j] / (vals[i] - vals[j]))
        q[i] = point.d3(U[i], w)
    return q


def _cg(apply, rhs: Tensor, rtol: float, max_iter: int) -> Tensor:
    """Conjugate gradients for a positive-definite ``apply`` from zero.  Written here rather than
    ``scipy.sparse.linalg.cg``: the vectors stay on the objective's device (and dtype) throughout."""
    x = torch.zeros_like(rhs)
    r = rhs.clone()
    p = r.clone()
    rr = float(r @ r)
    stop = (rtol ** 2) * rr
    for _ in range(max_iter):
        if rr <= stop or rr == 0.0:
            break
        Ap = apply(p)
        curv = float(p @ Ap)
        if not curv > 0:        # not positive definite here (an eigenvalue above λ_i outside the block): stop
            break
        alpha = rr / curv
        x = x + alpha * p
        r = r - alpha * Ap
        rr, rr_old = float(r @ r), rr
        p = r + (rr / rr_old) * p
    return x


def active_shift(turn: Tensor, U: Tensor, g: Tensor, vals: Tensor, act: Tensor, step: Tensor | None) -> Tensor:
    """``b`` (k,): the shift along the active ``u_i`` (``Δ = −step − Σ b_i u_i``) that zeroes the linearized
    ``u_i·∇L + λ_i u_i·Δ + q_i·Δ`` for every active ``i`` given the pair part ``step`` (orthogonal to ``U``):
    ``(Λ + Q_U) b = g − Q·step`` on the active set, with ``Q_U[i, m] = q_i·u_m``."""
    a = act.nonzero().flatten()
    Qa = turn[a]
    lhs = torch.diag(vals.to(g)[a]) + Qa @ U[a].T
    rhs = g[a] - (Qa @ step if step is not None else 0.0)
    b = torch.zeros_like(g)
    b[a] = torch.linalg.solve(lhs.double(), rhs.double()).to(g)
    return b
