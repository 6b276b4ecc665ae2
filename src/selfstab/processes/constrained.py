"""The constrained trajectory ``θ†`` — projected GD on the stable set ``M`` (docs/theory.md §4; the paper's eq. (2)).

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
the decoupled step ``a = max(0, S − 2/η)/β`` (docs/theory.md §4).

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

Cost (what a step of θ† spends, and why it is small):

- **predictor** (``predict=True``, the default): the first linearized step from
  ``φ₀ = θ†_t − η∇L_t`` needs ``S(φ₀)`` and ``u·∇L(φ₀)``; both follow to first
  order from what is known at ``θ†_t`` — ``S(φ₀) ≈ S_t + ηα_t`` and
  ``u·∇L(φ₀) ≈ (1 − ηS_t) u_t·∇L_t`` (``H_t u_t = S_t u_t``) — so that step
  costs nothing, and the first eigen-solve is at ``φ₁``, already within
  ``O(η²‖∇L‖²)`` of ``M``.  The residuals are still checked at every solved
  point, so this changes where the iteration starts, not what it accepts.
- **chord** ``∇S``: every linearized step uses ``∇S(θ†_t)``, no third
  derivative per step (see :func:`project`).
- **correctors warm-start from the previous point**: ``φ_{k+1}`` differs from
  ``φ_k`` by a tiny Newton correction, so ``u(φ_k)`` alone is an excellent
  start there (one HVP for the Rayleigh quotient, usually one more at most),
  while the first solved point warm-starts from the same kind of point one GD
  step earlier (its tracker's history).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

from typing import Sequence

import torch
from torch import Tensor

from ..problem.objective import Objective
from ..spectrum import EigenTracker
from .base import Context, Fields, Process, all_finite, tracker_options
from .geometry import Geometry, geometry_at, perp, squared_norm


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


def newton_step(theta: Tensor, u: Tensor, u_dot_grad: float, sharpness: float, grad_sharpness: Tensor, lr: float,
                coupled: bool = True, two_sided: bool = False) -> Tensor:
    """One linearized step towards ``M`` from ``theta`` given ``S``, ``u``, ``u·∇L`` and ``∇S`` there (module docstring)."""
    gs_perp = perp(u, grad_sharpness)   # P⊥ at φ's own u (a chord ∇S comes from another point)
    b = u_dot_grad / sharpness
    excess = sharpness - 2.0 / lr
    if coupled:
        excess -= b * float(grad_sharpness @ u)
    phi = theta
    if excess > 0 or (two_sided and excess != 0):
        beta = squared_norm(gs_perp)
        if beta > 0:
            phi = phi - excess * gs_perp / beta
    return phi - b * u


def linearized_projection_step(geom: Geometry, lr: float, coupled: bool = True, two_sided: bool = False,
                                grad_sharpness: Tensor | None = None) -> Tensor:
    """One linearized step towards ``M`` from ``geom.theta`` (the formula in the module docstring).

    ``grad_sharpness``: a ``∇S`` to use instead of the one at ``geom`` (the chord method, see :func:`project`).
    """
    gs = geom.grad_sharpness if grad_sharpness is None else grad_sharpness
    return newton_step(geom.theta, geom.u, float(geom.u @ geom.grad), geom.sharpness, gs, lr, coupled, two_sided)


def _corrector_start(eig) -> Tensor:
    """The warm start of a corrector solve: the previous point's eigenvectors (and guard vectors, if any)."""
    guard = eig.extra.get("guard")
    return eig.vectors if guard is None or not guard.shape[0] else torch.cat([eig.vectors, guard])


def project(objective: Objective, phi: Tensor, lr: float, tracker: EigenTracker | Sequence[EigenTracker], *,
            tol: float = 1e-9,
            max_steps: int = 10, min_steps: int = 0, coupled: bool = True, two_sided: bool = False,
            geometry: Geometry | None = None, chord: Tensor | None = None, steps_taken: int = 0) -> Projection:
    """``proj_M(φ)`` by linearized steps until both residuals are ``≤ tol`` (or ``max_steps``).

    ``geometry``: the geometry at ``φ`` if already known.  ``min_steps``: take at
    least this many steps (``3`` with ``tol = 0``-like settings reproduces the paper).
    ``chord``: a ``∇S`` from a nearby point (``θ†_t``, one GD step away) used for
    every linearized step instead of a fresh ``∇³L(u, u)`` at each ``φ`` — the
    chord method: each step then costs an eigen-solve and a gradient but no third
    derivative, and since ``∇S`` moves by ``O(η‖∇L‖)`` between the two points the
    residuals still fall by orders of magnitude per step, about as fast as with a
    fresh ``∇S`` (benchmarks/RESULTS.md).  Residuals are always those
    of the true ``S`` and ``u·∇L`` at ``φ``.  ``steps_taken``: linearized steps
    already taken to reach ``φ`` (the predictor's), counted in ``steps``.

    ``tracker``: the eigen-solver of the first point (warm-started from its
    history: the same kind of point one GD step earlier); a sequence gives the
    corrector points their own solver (``tracker[1]``), each warm-started from
    the eigenpair just found at the previous point (module docstring).
    """
    trackers = [tracker] if isinstance(tracker, EigenTracker) else list(tracker)
    geom = geometry or geometry_at(objective, phi, trackers[0])
    steps = steps_taken
    while True:
        res_s, res_g = projection_residuals(geom, lr, two_sided)
        done = res_s <= tol and res_g <= tol and steps >= min_steps
        if done or steps >= max_steps:
            break
        steps += 1
        point = objective.at(linearized_projection_step(geom, lr, coupled, two_sided, chord))
        corrector = trackers[-1]
        start = _corrector_start(geom.eig)
        if corrector.last_iterations is not None and corrector.last_iterations > 2:
            # hard going (nearly degenerate top eigenvalues, slow convergence): add the corrector's own recent
            # results, which span the directions the previous solves were still resolving
            start = torch.cat([start, corrector.warm_subspace().to(start)])
        eig = corrector.refresh(point, start=start)
        geom = Geometry(point.theta, point, eig)
    converged = res_s <= tol and res_g <= tol
    if not converged:
        warnings.warn(f"projection: residuals η·max(0, S−2/η) = {res_s:.2e}, |u·∇L|/‖∇L‖ = {res_g:.2e} still above "
                      f"tol {tol:.1e} after {steps} linearized steps; raise track.proj_max_iter or track.proj_tol",
                      ProjectionWarning, stacklevel=2)
    return Projection(geom, steps, res_s, res_g, converged)


def constrained_step(objective: Objective, geom: Geometry, lr: float, tracker: EigenTracker | Sequence[EigenTracker],
                     *, chord: bool = False, predict: bool = False, coupled: bool = True, **kwargs) -> Projection:
    """``θ†_{t+1} = proj_M(θ†_t − η∇L(θ†_t))`` from the geometry at ``θ†_t``.

    ``chord=True``: the projection's linearized steps use ``∇S(θ†_t)`` (already
    computed for the predicted step) instead of a third derivative at each ``φ``.
    ``predict=True``: the first linearized step uses ``S`` and ``u·∇L`` at
    ``θ†_t − η∇L_t`` predicted to first order from ``θ†_t`` (module docstring)
    instead of an eigen-solve there.
    """
    phi = geom.theta - lr * geom.grad
    taken = 0
    if predict:
        s_pred = geom.sharpness + lr * geom.alpha                          # S_t − η ∇S_t·∇L_t
        ug_pred = (1 - lr * geom.sharpness) * float(geom.u @ geom.grad)   # u_t·(∇L_t − η H_t ∇L_t)
        phi = newton_step(phi, geom.u, ug_pred, s_pred, geom.grad_sharpness, lr, coupled)
        taken = 1
    return project(objective, phi, lr, tracker, chord=geom.grad_sharpness if chord else None, coupled=coupled,
                   steps_taken=taken, **kwargs)


def projection_fields(proj: Projection) -> Fields:
    """The projection's residuals, step count and convergence flag, as recorded with ``θ†``."""
    return {"proj_residual_sharpness": proj.residual_sharpness, "proj_residual_grad": proj.residual_grad,
            "proj_steps": float(proj.steps), "proj_converged": float(proj.converged)}


class Constrained(Process):
    """The constrained trajectory ``θ†`` as a process; it provides ``ctx.here`` and ``ctx.next``.

    ``θ†₀`` is ``θ₀`` projected onto the boundary ``S = 2/η`` (two-sided, see
    the module docstring); each step is :func:`constrained_step`.  Two
    eigen-trackers: one for the first solved point of each projection (warm
    from the same kind of point one step earlier) and one for its correctors.
    The sign of ``u_{t+1}`` is chosen so that ``u_{t+1}·u_t > 0``
    (docs/theory.md §2), whichever solver found it.
    """

    name = "constrained"

    def __init__(self, *, eig_tol: float = 1e-7, proj_tol: float = 1e-9, proj_max_iter: int = 10,
                 proj_min_iter: int = 0, proj_coupled: bool = True, proj_chord: bool = True,
                 proj_predict: bool = True):
        self.trackers = [EigenTracker(1, **tracker_options(eig_tol)) for _ in range(2)]
        self.tol, self.max_steps, self.min_steps = proj_tol, proj_max_iter, proj_min_iter
        self.coupled, self.chord, self.predict = proj_coupled, proj_chord, proj_predict
        self.here: Geometry | None = None
        self.proj: Fields = {}
        self.last: Fields = {}

    def _project_kwargs(self) -> dict:
        return dict(tol=self.tol, max_steps=self.max_steps, min_steps=self.min_steps, coupled=self.coupled)

    def start(self, ctx: Context) -> None:
        if ctx.warm is not None:
            for tr in self.trackers:
                tr.seed(ctx.warm.to(ctx.theta))
        proj = project(ctx.objective, ctx.theta, ctx.lr, self.trackers, two_sided=True, **self._project_kwargs())
        self.here, self.proj = proj.geometry, projection_fields(proj)

    def publish(self, ctx: Context) -> None:
        ctx.here = self.here

    def record(self, ctx: Context) -> Fields:
        here, lr = self.here, ctx.lr
        alpha, beta = here.alpha, here.beta
        self.last = {"loss": here.loss, "sharpness": here.sharpness, "alpha": alpha, "beta": beta,
                     "delta": here.delta, "epsilon": here.epsilon(lr), "alpha_nonpositive": float(alpha <= 0),
                     "grad_norm": float(here.grad.norm()), "eig_residual": float(here.eig.residuals.max()),
                     "gradS_dot_u": float(here.grad_sharpness @ here.u), **self.proj}
        return self.last

    def advance(self, ctx: Context) -> None:
        here = self.here
        proj = constrained_step(ctx.objective, here, ctx.lr, self.trackers, chord=self.chord, predict=self.predict,
                                **self._project_kwargs())
        nxt = proj.geometry
        if float(nxt.u @ here.u) < 0:
            nxt.eig.vectors.neg_()
            nxt.eig.images.neg_()
        ctx.next = self.here = nxt
        self.proj = projection_fields(proj)

    def finite(self) -> bool:
        return all_finite(self.last.get("loss", 0.0), self.last.get("sharpness", 0.0))

    def state_dict(self) -> dict:
        return {"here": self.here.state_dict(), "proj": dict(self.proj),
                "trackers": [tr.state_dict() for tr in self.trackers]}

    def load_state_dict(self, state: dict) -> None:
        obj = self.objective
        self.here = Geometry.from_state(obj, state["here"])
        self.proj = dict(state["proj"])
        for tr, st in zip(self.trackers, state["trackers"]):
            tr.load_state_dict(st, obj.device)
