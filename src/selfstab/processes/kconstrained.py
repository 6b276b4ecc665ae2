"""The k-constrained trajectory ``θ†_k`` (docs/theory.md §10; the paper's §8.2 conjecture).

Projected GD onto ``M_k = {θ : λ_i(θ) ≤ 2/η for the critical i, u_i·∇L(θ) = 0
for the active i}``: ``θ†_{t+1} = proj(θ†_t − η∇L(θ†_t))``, the projection by
repeated linearized steps at the current ``ψ``.  With ``U`` (k, d) the
critical eigenvectors (``λ_i ≥ threshold·2/η``, the top one always), the
pair vectors ``p_ij = ∇³L(u_i, u_j)`` and ``p⊥_ij = P⊥_U p_ij`` their parts
orthogonal to the critical span, one step is

    b_i = u_i·∇L / λ_i                         (active i; 0 otherwise)
    A   = (2/η) I − Λ + C,   C_ij = Σ_m b_m p_ij·u_m
    Y   = SDCP(A, G⊥),       G⊥ the Gram operator of the p⊥_ij
    ψ  ← ψ − D⊥(Y) − Σ_i b_i u_i,     D⊥(Y) = Σ_ij Y_ij p⊥_ij.

Why: to first order the block ``UᵀH(ψ + Δ)U`` is ``Λ + [p_ij·Δ]`` and
``u_i·∇L(ψ + Δ) = u_i·∇L + λ_i u_i·Δ``.  Taking ``Δ = −D⊥(Y) − Σ b_i u_i``
makes ``u_i·Δ = −b_i`` exactly (the ``u``-part zeroes ``u_i·∇L``) and leaves the
block at ``Λ − C − G⊥(Y)``; the KKT conditions of the smallest ``D⊥`` step that
keeps it ``⪯ (2/η)I`` are ``SDCP(A, G⊥)``.  ``coupled=False`` drops ``C`` (it
vanishes at convergence, where ``u_i·∇L = 0``); ``perp=False`` uses the full
pair vectors (the plain form ``Y = SDCP((2/η)I − Λ, G)``).  With ``k = 1`` this is
exactly the single-eigenvalue projection of
:mod:`~selfstab.processes.constrained` (``Y = max(0, S − 2/η − b∇S·u)/‖∇S⊥‖²``),
and a test holds the two to 1e-12.

The ``u``-part holds each ``u_i`` fixed.  In a near-degenerate cluster the
active eigenvectors turn as ``ψ`` moves, and ``u_i·∇L`` then shrinks only by a
constant factor per step; the turning term ``q_i = ∇³L(u_i, (λ_i − H)⁺∇L)``
(:func:`~selfstab.processes.turning.turning_vectors`) restores fast convergence: the shift solves
``(Λ + Q_U) b = g − Q·D⊥(Y)`` on the active set, alternated with the SDCP.
``turning="auto"`` adds it once a step after the first shrinks the gradient
residual less than tenfold with several critical eigenvalues (docs/theory.md §10).

Active constraints ``u_i·∇L = 0``: the top eigenvector always (as in ``M``),
and every critical ``i`` with ``λ_i ≥ (1 − active_rtol)·2/η``
(:func:`~selfstab.processes.block.active_set`).  The loop stops
when ``η·max(0, λ_max − 2/η)`` over the critical block and ``max |u_i·∇L|/‖∇L‖``
over the active ones are both below ``tol``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from ..problem.objective import Objective, Point
from ..spectrum import EigenTracker
from ..spectrum.sdcp import SDCPResult, gram_matrix, pair_coefficients, smat, solve_sdcp, svec_weights
from .base import Context, Fields, Process, all_finite, spent_since, tensor_finite, tracker_options
from .block import (KGeometry, active_set, block_fields, critical_count, refresh_block, rotate_pairs, rotation,
                    same_subspace)
from .turning import TURN_ROUNDS, TURN_WHEN, TURNING, Turning, active_shift, turning_vectors


class KProjectionWarning(RuntimeWarning):
    """The k-constrained projection hit its step cap above tolerance."""


def k_residuals(geom: KGeometry, lr: float, active_rtol: float = 1e-3) -> tuple[float, float, int]:
    """``(η·max(0, λ_max − 2/η), max_active |u_i·∇L|/‖∇L‖, number active)`` at ``geom``."""
    vals = geom.values
    res_s = lr * max(0.0, float(vals.max()) - 2.0 / lr) if vals.numel() else 0.0
    act = active_set(vals, lr, active_rtol)
    g = geom.point.grad
    gn = float(g.norm())
    ug = (geom.U @ g).abs()[act.to(g.device)]
    res_g = float(ug.max()) / gn if gn > 0 and ug.numel() else 0.0
    return res_s, res_g, int(act.sum())


def k_projection_step(geom: KGeometry, lr: float, *, coupled: bool = True, perp: bool = True,
                      active_rtol: float = 1e-3, pairs: Tensor | None = None, sdcp_tol: float = 1e-8,
                      on_fail: Literal["raise", "warn"] = "raise", turn: Tensor | None = None
                      ) -> tuple[Tensor, SDCPResult]:
    """One linearized step towards ``M_k`` from ``geom.theta`` (module docstring): ``(ψ_next, SDCP result)``.

    ``pairs``: pair vectors to use instead of those at ``geom`` (a chord, in the basis ``geom.U``).
    ``turn``: :func:`turning_vectors` at ``geom`` (or a nearby point's, in the same basis): the shift along
    the active ``u_i`` then also accounts for their turning, solved jointly with the SDCP by a few rounds.
    """
    U, vals, grad = geom.U, geom.values, geom.point.grad
    k = U.shape[0]
    P = geom.pairs if pairs is None else pairs
    act = active_set(vals, lr, active_rtol).to(U.device)
    g = U @ grad
    b = torch.where(act, g / vals.to(U), torch.zeros_like(vals.to(U)))
    Pp = P - (P @ U.T) @ U if perp else P
    M = gram_matrix(Pp)
    base = (2.0 / lr) * np.eye(k) - np.diag(vals.double().cpu().numpy())
    for _ in range(TURN_ROUNDS if turn is not None else 1):
        A = base
        if coupled:
            c = (P @ U.T) @ b                                     # Σ_m b_m p_ij·u_m, pairs in triu order
            A = A + smat(c.double().cpu().numpy() * svec_weights(k), k)
        res = solve_sdcp(A, M, tol=sdcp_tol, on_fail=on_fail)
        Y = res.X
        step = None
        if bool(torch.isfinite(Y).all()) and float(Y.abs().max()) > 0:
            step = pair_coefficients(Y).to(Pp) @ Pp
        if turn is None:
            break
        b_new = active_shift(turn, U, g, vals, act, step)
        done = not coupled or float((b_new - b).abs().max()) <= 1e-3 * float(b_new.abs().max())
        b = b_new
        if done:
            break
    psi = geom.theta if step is None else geom.theta - step
    return psi - b @ U, res


@dataclass
class KProjection:
    geometry: KGeometry         # at the projected point
    steps: int
    residual_sharpness: float
    residual_grad: float
    active: int
    converged: bool
    sdcp: list[SDCPResult] = field(default_factory=list)


def k_geometry(objective: Objective, theta: Tensor, tracker: EigenTracker, lr: float, *, threshold: float = 0.975,
               track_threshold: float | None = None, max_k: int | None = None, point: Point | None = None,
               from_last: bool = False) -> KGeometry:
    """The critical block at ``theta`` (the tracker's block grown to cover ``track_threshold``, default
    ``threshold``; see :mod:`~selfstab.processes.central`)."""
    point = point if point is not None else objective.at(theta)
    track = threshold if track_threshold is None else track_threshold
    eig = refresh_block(tracker, point, lr, track, max_k, from_last=from_last)
    return KGeometry(point, eig, max(1, critical_count(eig.values, lr, threshold)))


def _chord_pairs(chord: KGeometry | None, geom: KGeometry, rotation_tol: float = 1e-3) -> Tensor | None:
    """The chord's pair vectors in ``geom``'s basis, when both blocks span nearly the same subspace."""
    if chord is None or not same_subspace(geom.U, chord.U, rotation_tol):
        return None
    return rotate_pairs(chord.pairs, chord.U, geom.U)


def k_project(objective: Objective, psi: Tensor, lr: float, tracker: EigenTracker, *, tol: float = 1e-9,
              max_steps: int = 10, threshold: float = 0.975, track_threshold: float | None = None,
              max_k: int | None = None,
              coupled: bool = True, perp: bool = True, turning: Turning = "auto", active_rtol: float = 1e-3,
              sdcp_tol: float = 1e-8, on_fail: Literal["raise", "warn"] = "raise", geometry: KGeometry | None = None,
              chord: KGeometry | None = None, warm_correctors: bool = True) -> KProjection:
    """``proj_{M_k}(ψ)`` by linearized steps until both residuals are ``≤ tol`` (or ``max_steps``).

    ``chord``: the geometry of a nearby point (``θ†_t``) whose pair vectors,
    rotated into each point's eigenbasis, serve every linearized step instead
    of fresh ones (the chord method of the single-eigenvalue projection; used
    only while the critical count and subspace match).  ``warm_correctors``:
    the eigen-solve at each corrected point starts from the previous point's
    block alone (the points differ by a small Newton correction).  The
    residuals are always those of the true eigenpairs and gradient.
    """
    opts = dict(threshold=threshold, track_threshold=track_threshold, max_k=max_k)
    geom = geometry or k_geometry(objective, psi, tracker, lr, **opts)
    if turning not in TURNING:
        raise ValueError(f"turning must be one of {', '.join(TURNING)}, got {turning!r}")
    steps, solves, last_g, turn_on, kept = 0, [], None, turning == "on", None
    while True:
        res_s, res_g, n_act = k_residuals(geom, lr, active_rtol)
        if (res_s <= tol and res_g <= tol) or steps >= max_steps:
            break
        steps += 1
        # u_i·∇L shrinks slowly: the active eigenvectors turn (see turning_vectors).  Judged from the second
        # linearized step on: the first one mostly corrects the sharpness and may even raise u_i·∇L.
        if turning == "auto" and geom.k > 1 and steps >= 3 and res_g > TURN_WHEN * last_g:
            turn_on = True
        last_g = res_g
        turn = None
        if turn_on:     # a chord: the turning vectors of an earlier step while the block keeps its subspace
            act = active_set(geom.values, lr, active_rtol)
            if kept is not None and torch.equal(act, kept[2]) and same_subspace(geom.U, kept[1], 1e-3):
                turn = rotation(geom.U, kept[1]).to(kept[0]) @ kept[0]
            else:
                turn = turning_vectors(geom, lr, active_rtol)
                kept = (turn, geom.U, act) if turn is not None else None
        psi, res = k_projection_step(geom, lr, coupled=coupled, perp=perp, active_rtol=active_rtol,
                                     pairs=_chord_pairs(chord, geom), sdcp_tol=sdcp_tol, on_fail=on_fail, turn=turn)
        solves.append(res)
        geom = k_geometry(objective, psi, tracker, lr, from_last=warm_correctors, **opts)
    converged = res_s <= tol and res_g <= tol
    if not converged:
        warnings.warn(f"k-projection: residuals η·max(0, λ−2/η) = {res_s:.2e}, max |u_i·∇L|/‖∇L‖ = {res_g:.2e} "
                      f"above tol {tol:.1e} after {steps} linearized steps; raise max_steps or tol",
                      KProjectionWarning, stacklevel=2)
    return KProjection(geom, steps, res_s, res_g, n_act, converged, solves)


def k_constrained_step(objective: Objective, geom: KGeometry, lr: float, tracker: EigenTracker, *,
                       chord: bool = False, **kwargs) -> KProjection:
    """``θ†_{t+1} = proj_{M_k}(θ†_t − η∇L(θ†_t))`` from the critical block at ``θ†_t``.

    ``chord=True``: the projection's steps use the pair vectors at ``θ†_t`` (see :func:`k_project`).
    """
    return k_project(objective, geom.theta - lr * geom.point.grad, lr, tracker, chord=geom if chord else None,
                     **kwargs)


def projection_fields(proj: KProjection) -> Fields:
    return {"proj_steps": float(proj.steps), "residual_sharpness": proj.residual_sharpness,
            "residual_grad": proj.residual_grad, "active": float(proj.active), "proj_converged": float(proj.converged),
            "sdcp_residual": max((r.residual for r in proj.sdcp), default=0.0)}


class KConstrained(Process):
    """``θ†_k`` (module docstring) as a process, in lockstep with GD.

    ``θ†_{k,0}`` is ``θ₀`` projected onto ``M_k`` (one-sided: ``λ_i ≤ 2/η``);
    each step is :func:`k_constrained_step`.  Records at ``t``: ``loss``,
    ``k_crit``, ``active`` (constraints ``u_i·∇L = 0`` imposed), the tracked
    block ``lambda_i`` and ``next_ratio``, the last projection's residuals,
    steps and largest SDCP residual, and ``dist_gd = ‖θ_GD − θ†_k‖`` when a GD
    process runs before it — the distance that tests the paper's §8.2
    conjecture; and the cost of the step from ``t`` to ``t+1`` (``cost_hvps``,
    ``cost_grads``, ``cost_d3s``; a pair vector counts as one d3).

    Options (named for the run's ``track`` section; the ``kproj_*`` ones are
    this projection's own, independent of the single-eigenvalue projection's
    ``proj_*``): ``kproj_tol``, ``kproj_max_iter``, ``kproj_coupled``,
    ``kproj_perp``, ``kproj_turning``, ``kproj_chord`` and ``active_rtol`` (:func:`k_project`);
    ``critical_threshold``, ``track_threshold``, ``block_max_k``, ``eig_tol``,
    ``sdcp_tol`` and ``sdcp_on_fail`` are shared with the central flow (the
    same critical set and solver settings for both).
    """

    name = "kconstrained"
    retires = True
    default = False

    def __init__(self, *, eig_tol: float = 1e-7, kproj_tol: float = 1e-9, kproj_max_iter: int = 10,
                 critical_threshold: float = 0.975, track_threshold: float | None = None, block_max_k: int | None = None,
                 kproj_coupled: bool = True, kproj_perp: bool = True, kproj_turning: Turning = "auto",
                 kproj_chord: bool = True, active_rtol: float = 1e-3,
                 sdcp_tol: float = 1e-8, sdcp_on_fail: Literal["raise", "warn"] = "warn"):
        self.tracker = EigenTracker(1, **tracker_options(eig_tol))
        self.options = dict(tol=kproj_tol, max_steps=kproj_max_iter, threshold=critical_threshold,
                            track_threshold=track_threshold, max_k=block_max_k, coupled=kproj_coupled, perp=kproj_perp,
                            turning=kproj_turning,
                            active_rtol=active_rtol, sdcp_tol=sdcp_tol, on_fail=sdcp_on_fail)
        self.chord = kproj_chord
        self.geometry: KGeometry | None = None
        self.proj: Fields = {}
        self.last: Fields = {}

    def start(self, ctx: Context) -> None:
        if ctx.warm is not None:
            warm = ctx.warm.reshape(-1, ctx.warm.shape[-1])
            self.tracker.k = max(1, min(warm.shape[0], self.objective.dim))
            self.tracker.seed(warm.to(ctx.theta))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", KProjectionWarning)   # recorded in proj_converged
            proj = k_project(ctx.objective, ctx.theta, ctx.lr, self.tracker, **self.options)
        self.geometry, self.proj = proj.geometry, projection_fields(proj)

    def record(self, ctx: Context) -> Fields:
        geom, lr = self.geometry, ctx.lr
        fields: Fields = {"loss": float(geom.point.loss), "grad_norm": float(geom.point.grad.norm()),
                          "k_crit": float(geom.k), **block_fields(geom.eig.values, geom.k, lr),
                          "eig_residual": float(geom.eig.residuals[:geom.k].max()), **self.proj}
        if ctx.theta is not None:
            fields["dist_gd"] = float((ctx.theta.to(geom.theta) - geom.theta).norm())
        self.last = fields
        return fields

    def advance(self, ctx: Context) -> Fields:
        counts = dict(ctx.objective.counts)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", KProjectionWarning)
            proj = k_constrained_step(ctx.objective, self.geometry, ctx.lr, self.tracker, chord=self.chord,
                                      **self.options)
        self.geometry, self.proj = proj.geometry, projection_fields(proj)
        return spent_since(ctx.objective, counts)

    def finite(self) -> bool:
        return all_finite(self.last.get("loss", 0.0)) and tensor_finite(self.geometry.theta if self.geometry else None)

    def state_dict(self) -> dict:
        return {"geometry": self.geometry.state_dict(), "proj": dict(self.proj),
                "tracker": self.tracker.state_dict(), "k": self.tracker.k}

    def load_state_dict(self, state: dict) -> None:
        obj = self.objective
        self.geometry = KGeometry.from_state(obj, state["geometry"])
        self.proj = dict(state["proj"])
        self.tracker.load_state_dict(state["tracker"], obj.device)
        self.tracker.k = int(state["k"])
