"""Appendix E diagnostics along ``θ†`` (SPEC.md §4).

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


def tensor_power_norm(apply, u: Tensor, order: int, iters: int = 8) -> float:
    """Estimate ``‖T‖_op`` of a symmetric order-``order`` tensor from ``apply(w) = T(w, …, w)`` (a vector)."""
    w = u / u.norm()
    best = 0.0
    for _ in range(iters):
        tw = apply(w)
        best = max(best, abs(float(tw @ w)))
        n = tw.norm()
        if not math.isfinite(float(n)) or n == 0:
            break
        w = tw / n
    return best


def diagnostics(geom: Geometry, v: Tensor, lr: float, *, power_iters: int = 8) -> dict:
    """The Appendix E quantities at ``θ†_t`` for the predicted displacement ``v = v_t``."""
    point, u = geom.point, geom.u
    rho3 = tensor_power_norm(lambda w: point.d3(w, w), u, 3, power_iters)
    rho4 = tensor_power_norm(point.d4, u, 4, power_iters)
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
