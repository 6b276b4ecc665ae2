"""The constrained trajectory ``θ†`` — projected GD on the stable set ``M`` (SPEC.md §3, item 2).

``M = {θ : S(θ) ≤ 2/η and ∇L(θ)·u(θ) = 0}``; ``θ†_{t+1} = proj_M(θ†_t − η∇L(θ†_t))``.
``proj_M`` is repeated *linearized* projection steps at the current ``φ``:

    φ ← φ − max(0, S − 2/η) ∇S⊥/‖∇S⊥‖² − u (u·∇L)/S

The first term is a Newton step on ``S(φ) = 2/η`` along ``∇S⊥`` (moving along
``∇S⊥`` changes ``S`` at rate ``∇S·∇S⊥ = ‖∇S⊥‖²`` and leaves ``u·∇L`` alone to
first order, since ``uᵀH∇S⊥ = S u·∇S⊥ = 0``); the second a Newton step on
``u·∇L(φ) = 0`` along ``u``.

``coupled=True`` (the default) solves the linearized 2×2 system exactly: the
``u``-step ``b = u·∇L/S`` also changes ``S`` by ``−b (∇S·u)``, so the sharpness
excess corrected along ``∇S⊥`` is ``max(0, S − 2/η − b ∇S·u)``.  The extra term
vanishes at convergence (``u·∇L = 0``), so both forms find points of ``M``;
without it the first step from ``θ₀`` (where ``x₀ = u·v₀`` is not small)
mistakes the ``x₀``-part of the sharpness for excess, and on the toy model
of Appendix B ``θ†₀`` lands ``O(x₀²)`` off ``x = y = 0``.  ``coupled=False`` is
the formula of SPEC.md §3 as written.

``two_sided=True`` projects onto the boundary ``{S = 2/η, u·∇L = 0}`` instead
(``S − 2/η`` without the ``max(0, ·)``, residual ``η|S − 2/η|``).  It is used
for ``θ†₀ = proj(θ₀)``: ``θ₀`` sits at the edge, and the predicted dynamics
(Definition 7) take ``S(θ†) = 2/η``; a ``θ†₀`` left strictly inside ``M`` would
start the prediction with a spurious ``y₀``.  Later steps start from
``θ†_t − η∇L(θ†_t)``, which progressive sharpening (``α > 0``) puts above the
edge, so the one-sided and two-sided forms agree there.  The
paper does exactly 3 steps; here the loop stops on the residuals
``η·max(0, S − 2/η)`` and ``|u·∇L|/‖∇L‖`` (both recorded), with a cap, and
warns when the cap is hit above tolerance.

The geometry computed to check the residuals at the final ``φ`` *is* the
geometry at ``θ†_{t+1}``: the eigenpair and gradient there are reused by the
next step, the predicted dynamics and the diagnostics.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

from typing import Sequence

from torch import Tensor

from ..problem.objective import Objective
from ..spectrum import EigenTracker
from .geometry import Geometry, geometry_at


class ProjectionWarning(RuntimeWarning):
    """The linearized projection hit its step cap above tolerance (recorded in the records too)."""


@dataclass
class Projection:
    geometry: Geometry          # at the projected point
    steps: int                  # linearized steps taken
    residual_sharpness: float   # η·max(0, S − 2/η)  (η|S − 2/η| when two-sided)
    residual_grad: float        # |u·∇L| / ‖∇L‖
    converged: bool


def projection_residuals(geom: Geometry, lr: float, two_sided: bool = False) -> tuple[float, float]:
    gnorm = float(geom.grad.norm())
    excess = geom.sharpness - 2.0 / lr
    res_s = lr * (abs(excess) if two_sided else max(0.0, excess))
    res_g = abs(float(geom.u @ geom.grad)) / gnorm if gnorm > 0 else 0.0
    return res_s, res_g


def linearized_projection_step(geom: Geometry, lr: float, coupled: bool = True, two_sided: bool = False,
                                grad_sharpness: Tensor | None = None) -> Tensor:
    """One linearized step towards ``M`` from ``geom.theta`` (the formula in the module docstring).

    ``grad_sharpness``: a ``∇S`` to use instead of the one at ``geom`` (the chord method, see :func:`project`).
    """
    u = geom.u
    gs = geom.grad_sharpness if grad_sharpness is None else grad_sharpness
    gs_perp = gs - (u @ gs) * u
    b = float(u @ geom.grad) / geom.sharpness
    excess = geom.sharpness - 2.0 / lr
    if coupled:
        excess -= b * float(gs @ u)
    phi = geom.theta
    if excess > 0 or (two_sided and excess != 0):
        beta = float(gs_perp.pow(2).sum())
        if beta > 0:
            phi = phi - excess * gs_perp / beta
    return phi - b * u


def project(objective: Objective, phi: Tensor, lr: float, tracker: EigenTracker | Sequence[EigenTracker], *,
            tol: float = 1e-9,
            max_steps: int = 10, min_steps: int = 0, coupled: bool = True, two_sided: bool = False,
            geometry: Geometry | None = None, chord: Tensor | None = None) -> Projection:
    """``proj_M(φ)`` by linearized steps until both residuals are ``≤ tol`` (or ``max_steps``).

    ``geometry``: the geometry at ``φ`` if already known.  ``min_steps``: take at
    least this many steps (``3`` with ``tol = 0``-like settings reproduces the paper).
    ``chord``: a ``∇S`` from a nearby point (``θ†_t``, one GD step away) used for
    every linearized step instead of a fresh ``∇³L(u, u)`` at each ``φ`` — the
    chord method: each step then costs an eigen-solve and a gradient but no third
    derivative, and since ``∇S`` moves by ``O(η‖∇L‖)`` between the two points the
    residuals still fall by orders of magnitude per step (measured: 2–3 steps to
    1e-9 on the default job, as with fresh ``∇S``).  Residuals are always those
    of the true ``S`` and ``u·∇L`` at ``φ``.

    ``tracker`` may be a sequence: the ``k``-th linearized point is solved by
    ``tracker[min(k, len − 1)]``.  Each then warm-starts from the same kind of
    point one GD step earlier (a smooth sequence in ``t``) instead of from the
    alternation ``θ†_t → θ†_t − η∇L → …`` that a single history would see
    (measured on the default job: 6–7 LOBPCG iterations per solve → 0–2).
    """
    trackers = [tracker] if isinstance(tracker, EigenTracker) else list(tracker)
    geom = geometry or geometry_at(objective, phi, trackers[0])
    steps = 0
    while True:
        res_s, res_g = projection_residuals(geom, lr, two_sided)
        done = res_s <= tol and res_g <= tol and steps >= min_steps
        if done or steps >= max_steps:
            break
        steps += 1
        geom = geometry_at(objective, linearized_projection_step(geom, lr, coupled, two_sided, chord),
                           trackers[min(steps, len(trackers) - 1)])
    converged = res_s <= tol and res_g <= tol
    if not converged:
        warnings.warn(f"projection: residuals η·max(0, S−2/η) = {res_s:.2e}, |u·∇L|/‖∇L‖ = {res_g:.2e} still above "
                      f"tol {tol:.1e} after {steps} linearized steps; raise track.proj_max_iter or track.proj_tol",
                      ProjectionWarning, stacklevel=2)
    return Projection(geom, steps, res_s, res_g, converged)


def constrained_step(objective: Objective, geom: Geometry, lr: float, tracker: EigenTracker | Sequence[EigenTracker],
                     **kwargs) -> Projection:
    """``θ†_{t+1} = proj_M(θ†_t − η∇L(θ†_t))`` from the geometry at ``θ†_t``.

    ``chord=True``: the projection's linearized steps use ``∇S(θ†_t)`` (already
    computed for the predicted step) instead of a third derivative at each ``φ``.
    """
    chord = kwargs.pop("chord", False)
    return project(objective, geom.theta - lr * geom.grad, lr, tracker,
                   chord=geom.grad_sharpness if chord else None, **kwargs)

