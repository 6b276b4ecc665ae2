"""The central flow for GD (docs/theory.md §10): several eigenvalues at the edge at once.

Cohen, Damian, Talwalkar, Kolter & Lee, *Understanding Optimization in Deep
Learning with Central Flows* (2024): in time units of GD steps,

    dθ/dt = −η ∇L(θ) − (η/2) D(X(t)),     D(X) = Σ_ij X_ij ∇³L(θ)(u_i, u_j),

where ``u_1..u_k`` are the *critical* eigenvectors (``λ_i ≥ threshold·2/η``)
and ``X ⪰ 0`` (k×k) solves, over a substep of length ``dt``, the SDCP

    A = (2/η) I − (Λ + dt·Ḣ₀),   Ḣ₀_ij = −η ∇³L(u_i, u_j)·∇L,   B = dt·(η/2)·G,

``G`` the Gram operator of the pair vectors ``p_ij = ∇³L(u_i, u_j)``.  ``Ḣ₀``
is how the critical block ``UᵀHU`` moves under the stable part of the
velocity and ``−dt(η/2)G(X)`` how ``X`` pushes it back, so after the substep
every critical eigenvalue is at or below ``2/η`` to first order, and ``X ≠ 0``
only on those pinned there.  Predictions: GD's time-averaged loss
``≈ L(θ) + tr(X)/η`` (``½tr(HΣ)`` with ``HU = (2/η)U`` on the pinned block) and
its oscillation covariance ``Σ = U X Uᵀ``.  With ``k = 0`` it is gradient flow
(``dθ/dt = −η∇L``); on Appendix B's toy model ``X = δ² = 2α/β`` and the flow is
the constrained trajectory ``(0, 0, z₀ + ηt)``.

The integrator is explicit Euler in substeps, as the authors' code is.  The
authors' scheme solves the eigenproblem, takes the pair vectors and solves
the SDCP at every substep (``chord=False`` here).  The default, **chord**
mode, pays for the eigen-solve and the pair vectors once per GD step: the
pair vectors are the derivative of the critical block, ``d(UᵀHU)_ij =
p_ij·dθ``, so within the step the block at a substep's point is taken as
``Λ + [p_ij·(θ_s − θ_t)]`` (first order in a step of length ``η‖∇L‖``) and
each substep costs one gradient.  The next step's eigen-solve is exact, so
whatever the model missed is seen there and the SDCP pushes it back: the
error does not accumulate.  It is not the authors' scheme to that scheme's
own discretization error: on the digits MLP at η = 0.4, over steps 0–50, the
two differ in the predicted loss by 3.6e-4 median and 1.6e-3 max (relative),
the authors' 4-vs-8-substep difference by 4.5e-5.  That changes no prediction
measurably: against GD's 10-step average the two are off by 1.147% and 1.137%
(docs/results.md, *Several unstable eigenvalues*; ``benchmarks/bench_central.py``).
The other cost levers:

- **one product for D(X)**: ``D(X) = Σ c_ij p_ij`` from the pair vectors, or,
  when they are reused in the authors' scheme, one third-derivative product
  of rank ``rank(X)`` (:meth:`~selfstab.problem.objective.Point.d3_form`);
- **pair vectors reused** (``pairs_every > 1``): they move slowly, so an
  eigen-solve may reuse the last ones, rotated into the current eigenbasis by
  the overlap ``R = U_now U_oldᵀ`` (exact when only the basis inside the
  critical subspace changed, which is what a degenerate cluster does), while
  the subspace is unchanged and, in chord mode, while the block model they
  carry still matches the new solve (``chord_tol``);
- **adaptive substeps**: the explicit step is stable and accurate on a
  non-critical mode ``λ`` when ``η·λ·dt`` is small; ``n = ⌈η λ_nc / stiffness⌉``
  (clamped) with ``λ_nc`` the largest eigenvalue of the tracked block that the
  SDCP does not hold, so ``n = 4`` at the default ``stiffness = 0.5`` when a
  mode sits just below the edge (the reference's fixed 4; 8 changed its
  predicted loss by ≤ 1.7e-4, 2 was still stable);
- **a looser eigen-solve** (``central_eig_tol = 1e-5``): the eigenvalues, which
  is what the SDCP needs exactly, come out to about the residual squared.

The critical set: the eigen-tracker follows every eigenvalue above
``track_threshold·2/η`` plus two unconverged guard vectors below it (``k``
adapts within the solve: a guard whose Ritz value reaches the threshold
becomes wanted, so no eigenvalue crosses unseen); those above ``threshold·2/η`` (default
0.975, the reference's) enter the SDCP.  ``track_threshold`` defaults to
``threshold``: the block is then the critical eigenpairs plus the guard, which
is all the flow needs; a lower one (e.g. 0.9) also records the eigenvalues on
their way up, at the price of converging them at every substep (on the digits
MLP at η = 0.4 that roughly doubled the eigen-solver's HVPs for an identical
flow).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from ..errors import ConfigError
from ..problem.objective import Objective, Point
from ..spectrum import EigenTracker, Eigenpairs
from ..spectrum.sdcp import SDCPResult, gram_matrix, pair_coefficients, solve_sdcp
from .base import Context, Fields, Process, all_finite, spent_since, tensor_finite, tracker_options
from .block import PairCache, block_fields, critical_count, pair_matrix, refresh_block, rotate_pairs


# -- one substep ----------------------------------------------------------------------------------
def sdcp_terms(block: Tensor | np.ndarray, pairs: Tensor, grad: Tensor, lr: float, dt: float,
               gram: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(A, B)`` of the central flow's SDCP over a substep ``dt`` (module docstring); ``B`` in svec coordinates.

    ``block``: the critical block ``UᵀHU`` — its eigenvalues (k,) when ``U`` diagonalizes it, or the (k, k)
    matrix itself; ``gram``: ``G`` if already computed for these ``pairs``.
    """
    block = torch.as_tensor(block, dtype=torch.float64).cpu().numpy()
    block = np.diag(block) if block.ndim == 1 else 0.5 * (block + block.T)
    k = block.shape[0]
    hdot = pair_matrix(pairs, -lr * grad)                                  # Ḣ₀, symmetric
    A = (2.0 / lr) * np.eye(k) - (block + dt * hdot)
    B = dt * (lr / 2.0) * (gram_matrix(pairs) if gram is None else gram)
    return A, B


@dataclass
class Velocity:
    """The central flow's velocity at one point, with what it was made of."""

    velocity: Tensor            # −η∇L − (η/2) D(X), shape (d,)
    X: Tensor                   # (k, k) float64
    drift: Tensor               # D(X), shape (d,)
    sdcp: SDCPResult | None     # None when k = 0
    pairs: Tensor | None        # the pair vectors used for A and B (k(k+1)/2, d)


def central_velocity(point: Point, U: Tensor, values: Tensor, lr: float, dt: float, *, pairs: Tensor | None = None,
                     exact_drift: bool = True, sdcp_tol: float = 1e-8,
                     on_fail: Literal["raise", "warn"] = "raise") -> Velocity:
    """``dθ/dt = −η∇L − (η/2)D(X)`` at ``point`` for the critical eigenpairs ``U`` (k, d), ``values`` (k,).

    ``pairs``: pair vectors to reuse (already in the basis ``U``); without them
    they are computed here (fresh, and then ``D(X)`` comes from them for
    free).  With reused pairs, ``exact_drift=True`` takes ``D(X)`` as one
    third-derivative product at ``point`` instead.
    """
    grad = point.grad
    k = U.shape[0]
    if k == 0:
        return Velocity(-lr * grad, torch.zeros(0, 0, dtype=torch.float64), torch.zeros_like(grad), None, None)
    fresh = pairs is None
    if fresh:
        pairs = point.d3_pairs(U)
    A, B = sdcp_terms(values, pairs, grad, lr, dt)
    res = solve_sdcp(A, B, tol=sdcp_tol, on_fail=on_fail)
    X = res.X
    if not bool(torch.isfinite(X).all()) or float(X.abs().max()) == 0.0:
        drift = torch.zeros_like(grad)
    elif fresh or not exact_drift:
        drift = pair_coefficients(X).to(pairs) @ pairs
    else:
        drift = point.d3_form(U, X)
    return Velocity(-lr * grad - 0.5 * lr * drift, X, drift, res, pairs)


# -- one GD step of the flow ------------------------------------------------------------------------
@dataclass
class CentralStep:
    """One unit of time (one GD step) of the central flow from ``theta``.

    The fields at the start (``t``) are what a record shows: ``loss``,
    ``predicted_loss = L + tr(X)/η``, the tracked ``values``, the critical
    eigenvectors ``U`` and ``X`` of the first substep, ``sigma_values``/
    ``sigma_vectors`` (``Σ = U X Uᵀ`` diagonalized, largest first).  ``theta_next``
    is the flow at ``t + 1``.
    """

    theta: Tensor
    theta_next: Tensor
    loss: float
    grad_norm: float
    values: Tensor                  # the tracked block's eigenvalues at θ (float64)
    U: Tensor                       # critical eigenvectors at θ (k, d)
    X: Tensor                       # (k, k) at the first substep
    substeps: int
    sdcp: list[SDCPResult] = field(default_factory=list)
    pair_refreshes: int = 0
    pairs: Tensor | None = None     # the pair vectors of the (first) substep, in the basis U
    chord_error: float = math.nan   # the reused pairs' block model against this step's solve (× 2/η); NaN: fresh

    @property
    def k_crit(self) -> int:
        return int(self.U.shape[0])

    @property
    def x_trace(self) -> float:
        return float(torch.trace(self.X)) if self.X.numel() else 0.0

    def predicted_loss(self, lr: float) -> float:
        """GD's time-averaged loss predicted by the flow: ``L(θ) + tr(X)/η``."""
        return self.loss + self.x_trace / lr

    @property
    def sigma(self) -> tuple[Tensor, Tensor]:
        """``Σ = U X Uᵀ`` as (eigenvalues (k,), eigenvectors (k, d)), largest first."""
        if not self.X.numel():
            return self.X.new_zeros(0), self.U
        w, C = torch.linalg.eigh(self.X)
        w, C = w.flip(0), C.flip(1)
        return w, C.T.to(self.U) @ self.U

    @property
    def x_rank(self) -> int:
        """Directions that oscillate: eigenvalues of ``X`` above ``1e-9`` of the largest (0 when ``X = 0``)."""
        if not self.X.numel():
            return 0
        w = torch.linalg.eigvalsh(self.X)
        top = float(w.abs().max())
        return int((w > 1e-9 * top).sum()) if top > 0 else 0

    @property
    def sdcp_residual(self) -> float:
        """The largest KKT residual of this step's SDCP solves (0 when none was needed)."""
        return max((r.residual for r in self.sdcp), default=0.0)


def substep_count(values: Tensor, k_crit: int, lr: float, *, stiffness: float = 0.5, min_substeps: int = 2,
                  max_substeps: int = 32) -> int:
    """``⌈η λ_nc / stiffness⌉`` clamped to ``[min_substeps, max_substeps]``; ``λ_nc`` the largest tracked
    eigenvalue outside the critical set (module docstring)."""
    rest = values[k_crit:]
    lam = float(rest.max()) if rest.numel() else 0.0
    n = math.ceil(lr * max(lam, 0.0) / stiffness) if lam > 0 else 1
    return int(min(max_substeps, max(min_substeps, n)))


def central_flow_step(objective: Objective, theta: Tensor, lr: float, tracker: EigenTracker, *,
                      threshold: float = 0.975, track_threshold: float | None = None, substeps: int | None = None,
                      min_substeps: int = 2, max_substeps: int = 32, stiffness: float = 0.5, chord: bool = True,
                      pairs_every: int = 1, chord_tol: float = 1e-3, exact_drift: bool = True,
                      rotation_tol: float = 1e-3, max_k: int | None = None, sdcp_tol: float = 1e-8,
                      on_fail: Literal["raise", "warn"] = "raise", from_last: bool = False,
                      point: Point | None = None, cache: PairCache | None = None) -> CentralStep:
    """Integrate the central flow from ``theta`` over one GD step (time 1) in explicit substeps.

    ``chord=True`` (default): one eigen-solve at ``theta`` (warm-started
    ``tracker``, :func:`refresh_block`) and one set of pair vectors; each
    substep then costs one gradient: the critical block at the substep's
    point is the first-order model ``UᵀH(θ_s)U ≈ Λ + [p_ij·(θ_s − θ)]``,
    the SDCP is solved for it and ``D(X) = Σ c_ij p_ij``.  The next GD step's
    eigen-solve is exact again, so the model's error does not accumulate.
    ``chord=False``: the authors' scheme, an eigen-solve, pair vectors and
    SDCP at every substep (``exact_drift``: with reused pairs, ``D(X)`` from a
    fresh third-derivative product at the substep).

    ``pairs_every``: fresh pair vectors at every this-many-th eigen-solve (a
    GD step in chord mode, a substep otherwise), reused in between through
    ``cache`` — rotated into the new basis — while the critical subspace is
    unchanged (``‖RRᵀ − I‖ ≤ rotation_tol``) and, in chord mode, while the
    block model they carry matches the new solve to ``chord_tol``·2/η
    (:meth:`PairCache.model_error`).  ``substeps``: a fixed count; ``None``
    picks it from the block (:func:`substep_count`).  ``from_last``: each
    eigen-solve warm-starts from the previous block alone (see
    :func:`refresh_block`).  ``point``: the objective at ``theta`` if built.
    """
    track_threshold = threshold if track_threshold is None else track_threshold
    if threshold <= 0 or track_threshold <= 0 or track_threshold > threshold:
        raise ConfigError(f"threshold: need 0 < track_threshold ≤ threshold, got {track_threshold} and {threshold}")
    if pairs_every < 1:
        raise ConfigError(f"pairs_every: must be ≥ 1, got {pairs_every}")
    if substeps is not None and substeps < 1:
        raise ConfigError(f"substeps: must be ≥ 1 (or None for adaptive), got {substeps}")
    theta = objective.vector(theta)
    p = point if point is not None else objective.at(theta)
    cache = PairCache() if cache is None else cache
    n = substeps
    out: CentralStep | None = None
    i = 0
    while n is None or i < n:
        eig = refresh_block(tracker, p, lr, track_threshold, max_k, from_last=from_last)
        kc = critical_count(eig.values, lr, threshold)
        if n is None:
            n = substep_count(eig.values, kc, lr, stiffness=stiffness, min_substeps=min_substeps,
                              max_substeps=max_substeps)
        U, vals = eig.vectors[:kc], eig.values[:kc]
        reuse, model_error = None, math.nan
        if cache.reusable(U, pairs_every, rotation_tol):
            if chord:
                model_error = cache.model_error(U, p.theta, vals, lr)
            if not model_error > chord_tol:      # NaN (not checked) or within tolerance
                reuse = rotate_pairs(cache.pairs, cache.U, U)
        if chord:
            out = _chord_substeps(objective, p, eig, kc, n, lr, pairs=reuse, sdcp_tol=sdcp_tol, on_fail=on_fail)
            out.chord_error = model_error
        else:
            vel = central_velocity(p, U, vals, lr, 1.0 / n, pairs=reuse, exact_drift=exact_drift,
                                   sdcp_tol=sdcp_tol, on_fail=on_fail)
            if i == 0:
                out = CentralStep(theta, theta, float(p.loss), float(p.grad.norm()), eig.values.clone(), U.clone(),
                                  vel.X.clone(), n)
            if vel.sdcp is not None:
                out.sdcp.append(vel.sdcp)
            out.theta_next = p.theta + vel.velocity / n
        fresh = kc and reuse is None
        if kc:
            pairs = out.pairs if chord else vel.pairs
            cache.pairs, cache.U, cache.age = pairs, U, (1 if fresh else cache.age + 1)
            cache.theta, cache.block = p.theta, np.diag(vals.double().cpu().numpy())
        out.pair_refreshes += int(fresh)
        i = n if chord else i + 1
        if i < n:
            p = objective.at(out.theta_next)
    out.theta = theta
    return out


def _chord_substeps(objective: Objective, p: Point, eig: Eigenpairs, kc: int, n: int, lr: float, *,
                    pairs: Tensor | None, sdcp_tol: float, on_fail: Literal["raise", "warn"]) -> CentralStep:
    """The ``n`` substeps of one GD step in chord mode (:func:`central_flow_step`): one gradient each."""
    U, vals = eig.vectors[:kc], eig.values[:kc]
    theta0, dt = p.theta, 1.0 / n
    if kc and pairs is None:
        pairs = p.d3_pairs(U)
    gram = gram_matrix(pairs) if kc else None
    out = CentralStep(theta0, theta0, float(p.loss), float(p.grad.norm()), eig.values.clone(), U.clone(),
                      torch.zeros(kc, kc, dtype=torch.float64), n, pairs=pairs)
    theta, grad = theta0, p.grad
    for s in range(n):
        if s:
            grad = objective.grad(theta)
        drift = torch.zeros_like(grad)
        if kc:
            block = np.diag(vals.double().cpu().numpy()) + pair_matrix(pairs, theta - theta0)
            A, B = sdcp_terms(block, pairs, grad, lr, dt, gram=gram)
            res = solve_sdcp(A, B, tol=sdcp_tol, on_fail=on_fail)
            out.sdcp.append(res)
            if s == 0:
                out.X = res.X.clone()
            if bool(torch.isfinite(res.X).all()) and float(res.X.abs().max()) > 0.0:
                drift = pair_coefficients(res.X).to(pairs) @ pairs
        theta = theta - dt * lr * (grad + 0.5 * drift)
    out.theta_next = theta
    return out


# -- the process ------------------------------------------------------------------------------------
class CentralFlow(Process):
    """The central flow (module docstring) in lockstep with GD: one :func:`central_flow_step` per GD step.

    Records at ``t``: the flow's ``loss``, ``predicted_loss = L + tr(X)/η``,
    ``k_crit`` (eigenvalues ``≥ threshold·2/η``) and ``x_rank`` (the directions
    that oscillate), ``x_eig_i``, the tracked block ``lambda_i`` and
    ``next_ratio``, ``substeps``, the largest KKT residual of the step's SDCP
    solves (``sdcp_residual``; ``sdcp_solves`` of them), ``pair_refreshes``, and
    against GD (``ctx.theta``, when a GD process runs before it): ``dist_gd =
    ‖θ_GD − θ_cf‖``, and for each eigenvector ``v_i`` of ``Σ = UXUᵀ`` GD's
    displacement energy ``gd_disp_sq_i = (v_i·(θ_GD − θ_cf))²`` beside
    ``sigma_i``.  The step is integrated in :meth:`record` (its first substep
    gives the records) and taken in :meth:`advance`.  Options (named for the
    run's ``track`` section): ``critical_threshold``/``track_threshold`` (the
    critical set and the tracked block, × 2/η; ``None``: the critical one), ``central_eig_tol`` (the
    block's eigen-solves), ``central_substeps`` (``None``: adaptive, see :func:`substep_count`),
    ``central_chord``, ``central_chord_tol``, ``central_pairs_every`` and ``central_exact_drift`` (the
    cost levers, :func:`central_flow_step`), ``sdcp_tol`` and ``sdcp_on_fail``.  It also records its own
    cost: ``cost_hvps``, ``cost_grads`` and ``cost_d3s`` of the step (a pair vector counts as one d3).
    """

    name = "central"
    retires = True
    default = False

    def __init__(self, *, central_eig_tol: float = 1e-5, critical_threshold: float = 0.975, track_threshold: float | None = None,
                 central_substeps: int | None = None, central_min_substeps: int = 2, central_max_substeps: int = 32,
                 central_stiffness: float = 0.5, central_chord: bool = True, central_chord_tol: float = 1e-3,
                 central_pairs_every: int = 2, central_exact_drift: bool = True, sdcp_tol: float = 1e-8,
                 block_max_k: int | None = None, sdcp_on_fail: Literal["raise", "warn"] = "warn"):
        # one solve per GD step at a loose tolerance: a single warm block often suffices (min_history 1)
        self.tracker = EigenTracker(1, **{**tracker_options(central_eig_tol), "min_history": 1})
        self.options = dict(threshold=critical_threshold, track_threshold=track_threshold, substeps=central_substeps,
                            min_substeps=central_min_substeps, max_substeps=central_max_substeps,
                            stiffness=central_stiffness, chord=central_chord, chord_tol=central_chord_tol,
                            pairs_every=central_pairs_every, exact_drift=central_exact_drift, sdcp_tol=sdcp_tol,
                            max_k=block_max_k, on_fail=sdcp_on_fail)
        self.cache = PairCache()
        self.theta: Tensor | None = None
        self.step: CentralStep | None = None
        self.last: Fields = {}

    def start(self, ctx: Context) -> None:
        self.theta = ctx.theta.clone()
        if ctx.warm is not None:
            warm = ctx.warm.reshape(-1, ctx.warm.shape[-1])
            self.tracker.k = max(1, min(warm.shape[0], self.objective.dim))
            self.tracker.seed(warm.to(self.theta))

    def record(self, ctx: Context) -> Fields:
        lr = ctx.lr
        counts = dict(ctx.objective.counts)
        step = self.step = central_flow_step(ctx.objective, self.theta, lr, self.tracker, cache=self.cache,
                                               **self.options)
        x_eig, v = step.sigma
        fields: Fields = {"loss": step.loss, "predicted_loss": step.predicted_loss(lr), "grad_norm": step.grad_norm,
                          "k_crit": float(step.k_crit), "x_rank": float(step.x_rank), "x_trace": step.x_trace,
                          **{f"x_eig_{i + 1}": float(w) for i, w in enumerate(x_eig)},
                          **block_fields(step.values, step.k_crit, lr),
                          "substeps": float(step.substeps), "sdcp_residual": step.sdcp_residual,
                          "sdcp_solves": float(sum(r.solver_calls for r in step.sdcp)),
                          "pair_refreshes": float(step.pair_refreshes), "chord_error": step.chord_error,
                          "eig_residual": float(self.tracker.last.residuals.max()) if self.tracker.last else math.nan,
                          **spent_since(ctx.objective, counts)}
        if ctx.theta is not None:
            disp = ctx.theta.to(self.theta) - self.theta
            fields["dist_gd"] = float(disp.norm())
            for i in range(step.x_rank):
                fields[f"sigma_{i + 1}"] = float(x_eig[i])
                fields[f"gd_disp_sq_{i + 1}"] = float(v[i] @ disp) ** 2
        self.last = fields
        return fields

    def advance(self, ctx: Context) -> None:
        if self.step is None:       # advanced without a record: integrate now
            self.step = central_flow_step(ctx.objective, self.theta, ctx.lr, self.tracker, cache=self.cache,
                                          **self.options)
        self.theta = self.step.theta_next
        self.step = None

    def finite(self) -> bool:
        return all_finite(self.last.get("loss", 0.0), self.last.get("predicted_loss", 0.0)) and tensor_finite(self.theta)

    def state_dict(self) -> dict:
        return {"theta": self.theta.cpu(), "tracker": self.tracker.state_dict(), "k": self.tracker.k,
                "pairs": self.cache.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        obj = self.objective
        self.theta = state["theta"].to(obj.theta0)
        self.tracker.load_state_dict(state["tracker"], obj.device)
        self.tracker.k = int(state["k"])
        self.cache = PairCache()
        if state.get("pairs") is not None:      # checkpoints from before the pair cache start without one
            self.cache.load_state_dict(state["pairs"], self.theta)
        self.step = None
