"""Appendix E diagnostics along ``θ†`` (docs/theory.md §7).

``ρ₃ = ‖∇³L‖_op`` and ``ρ₄ = ‖∇⁴L‖_op`` are *estimates* by tensor power
iteration started from ``u``: for a symmetric tensor the operator norm is
``max_{‖w‖=1} |T(w, …, w)|`` (Banach), and the iteration ``w ← T(w, …, w)/‖·‖``
climbs towards a maximizer; the largest ``|T(w, …, w)|`` seen is a lower
bound of the true norm.  ``‖∇²L‖`` in the last ratio is taken as ``S``
(``λ_max``), which dominates the spectrum at the edge; a very negative
``λ_min`` would make the recorded ratio an over-estimate.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..spectrum import EigenTracker
from .base import Context, Fields, Process, tracker_options
from .geometry import Geometry, perp


def tensor_power_norm(apply, start: Tensor, iters: int = 8, rtol: float = 0.0) -> tuple[float, Tensor]:
    """Estimate ``‖T‖_op`` of a symmetric tensor from ``apply(w) = T(w, …, w)`` (a vector; any order).

    Starts from ``start``; stops after ``iters`` iterations, or earlier once the
    estimate grew by less than ``rtol`` (relative) in one iteration.  Returns the
    estimate (the largest ``|T(w, …, w)|`` seen, a lower bound) and the last
    ``w``, from which the next call at a nearby point can continue climbing.
    """
    w = start / start.norm()
    best = 0.0
    for _ in range(iters):
        tw = apply(w)
        value = abs(float(tw @ w))
        grew = value - best
        best = max(best, value)
        n = tw.norm()
        if not math.isfinite(float(n)) or n == 0:
            break
        w = tw / n
        if grew <= rtol * best:
            break
    return best, w


def diagnostics(geom: Geometry, v: Tensor, lr: float, *, power_iters: int = 8,
                starts: dict[str, Tensor] | None = None) -> dict:
    """The Appendix E quantities at ``θ†_t`` for the predicted displacement ``v = v_t``.

    ``starts``: the tensor power iterations' last vectors from the previous
    diagnostics (keys ``rho3``, ``rho4``), updated in place.  Without them the
    iterations start from ``u`` and take ``power_iters`` steps; with them they
    continue from where they were — one diagnostics step later the maximizer
    has barely moved, so they stop as soon as the estimate grows by less than
    1e-3 in an iteration: ρ₃ then settles in far fewer iterations than from
    ``u``, and ρ₄, which climbs slowly, keeps climbing from one diagnostics
    step to the next instead of restarting (benchmarks/RESULTS.md).
    """
    point, u = geom.point, geom.u
    starts = {} if starts is None else starts
    norms = {}
    for name, apply in (("rho3", lambda w: point.d3(w, w)), ("rho4", point.d4)):
        start = starts.get(name)
        warm = start is not None
        norms[name], starts[name] = tensor_power_norm(apply, start if warm else u, power_iters,
                                                      rtol=1e-3 if warm else 0.0)
    rho3, rho4 = norms["rho3"], norms["rho4"]
    gs, gs_perp, g = geom.grad_sharpness, geom.grad_sharpness_perp, geom.grad
    gs_perp_norm, g_norm = float(gs_perp.norm()), float(g.norm())
    out = {
        "alpha": geom.alpha,
        "epsilon": geom.epsilon(lr),
        "grad_alignment": -float(g @ gs) / (g_norm * gs_perp_norm) if g_norm * gs_perp_norm > 0 else math.nan,
        "gradS_perp_over_rho3": gs_perp_norm / rho3 if rho3 > 0 else math.nan,
        "rho4_over_eta_rho3sq": rho4 / (lr * rho3 ** 2) if rho3 > 0 else math.nan,
        "rho3": rho3,
        "rho4": rho4,
    }
    for name, vec in (("v", perp(u, v)), ("g", perp(u, g))):
        n2 = float(vec.pow(2).sum())
        out[f"ratio_d3_{name}"] = float(point.d3(vec, vec).norm()) / (rho3 * n2) if rho3 > 0 and n2 > 0 else math.nan
    vp = perp(u, v)
    n2 = float(vp.pow(2).sum())
    out["ratio_d2_v"] = abs(float(vp @ point.hvp(vp))) / (abs(geom.sharpness) * n2) if n2 > 0 else math.nan
    return out


class Diagnostics(Process):
    """An observer along ``θ†``: the Appendix E quantities, ``λ₂`` and the top ``k_eigs`` eigenvalues,
    every ``diagnostics_every`` steps (docs/theory.md §7).

    Reads the predicted displacement ``v_t`` from the ``predicted`` process when
    there is one (else the ``v``-ratio is missing).  The eigenvalues are only
    recorded (and read by the ``λ₂`` stop rule), so they are solved to
    ``sharpness_tol``.
    """

    name = "diagnostics"
    needs = ("here",)

    def __init__(self, *, diagnostics_every: int = 25, k_eigs: int = 2, power_iters: int = 8,
                 sharpness_tol: float = 1e-5):
        self.every, self.power_iters = diagnostics_every, power_iters
        self.tracker = EigenTracker(k_eigs, **tracker_options(sharpness_tol))
        self.power_starts: dict[str, Tensor] = {}   # the tensor power iterations continue from here

    def start(self, ctx: Context) -> None:
        if ctx.warm is not None:
            self.tracker.seed(ctx.warm.to(ctx.theta))

    def record(self, ctx: Context) -> Fields | None:
        if ctx.t % self.every:
            return None
        here = ctx.need("here", self.name)
        # its history is diagnostics_every steps old: u(θ†_t), known exactly, joins the warm subspace
        eig = self.tracker.refresh(here.point, extra=here.u)
        predicted = ctx.get("predicted")
        v = predicted.v if predicted is not None else torch.zeros_like(here.theta)
        out = diagnostics(here, v, ctx.lr, power_iters=self.power_iters, starts=self.power_starts)
        out["lambda2"] = float(eig.values[1]) if eig.values.numel() > 1 else math.nan
        for i, val in enumerate(eig.values.tolist()):
            out[f"eig_{i}"] = val
        return out

    def state_dict(self) -> dict:
        return {"tracker": self.tracker.state_dict(),
                "power_starts": {k: w.cpu() for k, w in self.power_starts.items()}}

    def load_state_dict(self, state: dict) -> None:
        obj = self.objective
        self.tracker.load_state_dict(state["tracker"], obj.device)
        self.power_starts = {k: w.to(obj.theta0) for k, w in state.get("power_starts", {}).items()}
