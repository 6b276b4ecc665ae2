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

from torch import Tensor

from .geometry import Geometry, perp


def tensor_power_norm(apply, start: Tensor, order: int, iters: int = 8, rtol: float = 0.0) -> tuple[float, Tensor]:
    """Estimate ``‖T‖_op`` of a symmetric order-``order`` tensor from ``apply(w) = T(w, …, w)`` (a vector).

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
    for name, apply, order in (("rho3", lambda w: point.d3(w, w), 3), ("rho4", point.d4, 4)):
        start = starts.get(name)
        warm = start is not None
        norms[name], starts[name] = tensor_power_norm(apply, start if warm else u, order, power_iters,
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
