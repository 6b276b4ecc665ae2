"""Appendix E diagnostics against closed forms: tensor power norms and the ratios (docs/theory.md §7)."""

import math

import pytest
import torch

from references import d3_contract, dense_d3, dense_hessian
from selfstab import Objective
from selfstab.processes.diagnostics import diagnostics, tensor_power_norm
from selfstab.processes.geometry import geometry_at, perp
from selfstab.spectrum import EigenTracker

C3 = torch.tensor([0.5, -3.0, 1.0, 2.0, 0.2], dtype=torch.float64)
C4 = torch.tensor([1.0, 0.5, -6.0, 2.0, 0.1], dtype=torch.float64)
Q = torch.diag(torch.tensor([10.0, 6.0, 3.0, 1.0, 0.5], dtype=torch.float64))


R, _ = torch.linalg.qr(torch.randn(5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1)))


def _separable(theta):
    """Quadratic + separable cubic and quartic terms in rotated coordinates ``z = Rθ``: at θ = 0, ∇³L and ∇⁴L
    are diagonal tensors in ``z``, whose operator norms are max |C3| and max |C4| (a rotation keeps them)."""
    z = R @ theta
    return 0.5 * z @ Q @ z + (C3 * z ** 3).sum() / 6 + (C4 * z ** 4).sum() / 24


def _loss(theta):
    """The same with coupled cubic terms, so that ∇S is not parallel to u."""
    return _separable(theta) + 0.7 * theta[0] * theta[1] * theta[2] + 0.3 * theta[0] ** 2 * theta[3]


def test_power_iteration_finds_the_operator_norm_of_diagonal_tensors():
    # at θ = 0: ∇³L = diag(C3), ∇⁴L = diag(C4); for a diagonal symmetric tensor max_{‖w‖=1} |Σ c_i w_i^k| = max |c_i|
    obj = Objective.from_function(_separable, torch.zeros(5, dtype=torch.float64))
    point = obj.at(obj.theta0)
    start = R.T @ torch.tensor([0.3, 0.5, 0.6, 0.4, 0.1], dtype=torch.float64)
    rho3, w3 = tensor_power_norm(lambda w: point.d3(w, w), start, iters=60)
    rho4, w4 = tensor_power_norm(point.d4, start, iters=60)
    assert rho3 == pytest.approx(3.0, rel=1e-6) and abs(float((R @ w3)[1])) == pytest.approx(1.0, rel=1e-6)
    assert rho4 == pytest.approx(6.0, rel=1e-6) and abs(float((R @ w4)[2])) == pytest.approx(1.0, rel=1e-6)
    # the estimate is a lower bound after any number of iterations, and continuing from w keeps it
    few, _ = tensor_power_norm(lambda w: point.d3(w, w), start, iters=2)
    assert few <= rho3 + 1e-12
    again, _ = tensor_power_norm(lambda w: point.d3(w, w), w3, iters=8, rtol=1e-3)
    assert again == pytest.approx(rho3, rel=1e-9)


def test_ratios_match_their_definitions_at_a_point():
    theta = torch.tensor([0.2, -0.1, 0.05, 0.3, -0.2], dtype=torch.float64)
    obj = Objective.from_function(_loss, theta)
    geom = geometry_at(obj, theta, EigenTracker(1, tol=1e-12))
    lr = 1.9 / geom.sharpness
    v = torch.tensor([0.01, 0.02, -0.01, 0.005, 0.0], dtype=torch.float64)
    starts = {}
    out = diagnostics(geom, v, lr, power_iters=200, starts=starts)
    assert set(starts) == {"rho3", "rho4"}
    # independent references: dense derivative tensors from torch.func
    H = dense_hessian(_loss, theta)
    T3 = dense_d3(_loss, theta)
    u = torch.linalg.eigh(H).eigenvectors[:, -1]
    u = u * torch.sign(u @ geom.u)
    grad = torch.func.grad(_loss)(theta)
    gs = d3_contract(T3, u, u)
    gs_perp = perp(u, gs)
    assert out["alpha"] == pytest.approx(-float(grad @ gs), rel=1e-9)
    assert out["grad_alignment"] == pytest.approx(-float(grad @ gs) / float(grad.norm() * gs_perp.norm()), rel=1e-9)
    # ρ₃ is a lower bound of ‖∇³L‖_op, which no unit vector's |T(w,w,w)| exceeds
    ws = torch.nn.functional.normalize(torch.randn(4000, 5, dtype=torch.float64,
                                                   generator=torch.Generator().manual_seed(0)), dim=1)
    sampled = torch.einsum("ijk,ni,nj,nk->n", T3, ws, ws, ws).abs().max()
    assert out["rho3"] >= 0.99 * float(sampled)
    assert out["gradS_perp_over_rho3"] == pytest.approx(float(gs_perp.norm()) / out["rho3"], rel=1e-9)
    vp = perp(u, v)
    assert out["ratio_d3_v"] == pytest.approx(float(d3_contract(T3, vp, vp).norm())
                                              / (out["rho3"] * float(vp @ vp)), rel=1e-7)
    assert out["ratio_d2_v"] == pytest.approx(abs(float(vp @ H @ vp)) / (geom.sharpness * float(vp @ vp)), rel=1e-9)
    assert out["rho4_over_eta_rho3sq"] == pytest.approx(out["rho4"] / (lr * out["rho3"] ** 2), rel=1e-12)
    # ε = η√α is recorded as missing where α ≤ 0 (as here); everything else is a number
    assert out["alpha"] < 0 and math.isnan(out["epsilon"])
    assert all(math.isfinite(x) for k, x in out.items() if k != "epsilon"), out
