"""The geometry at a point (docs/theory.md §2): ``S, u, ∇L, ∇S = ∇³L(u, u), ∇S⊥, α, β, δ, ε`` against a dense
Hessian, its eigh, the dense ``∇³L`` and finite differences of the dense top eigenvalue (tests/references.py)."""

import math

import pytest
import torch

from references import central_difference, d3_contract, dense_d3, dense_hessian, dense_sharpness, dense_top, stencil
from selfstab import Objective
from selfstab.processes.geometry import Geometry, from_cpu_state, geometry_at, perp, to_cpu_state
from selfstab.spectrum import EigenTracker

F64 = torch.float64
Q = torch.diag(torch.tensor([10.0, 6.0, 3.0, 1.0, 0.5], dtype=F64))
THETA = torch.tensor([0.2, -0.1, 0.05, 0.3, -0.2], dtype=F64)
LR = 0.19   # S(THETA) ≈ 10.17: near the edge 2/η ≈ 10.5 (only ε depends on η)
# torch.func.hessian's forward mode loads decompositions through torch.jit.script, which warns in torch 2.13.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")


def _curved(t):
    """A quadratic with coupled cubic and quartic terms: ∇³L varies with θ and ∇S is not parallel to u."""
    return (0.5 * t @ Q @ t + 0.7 * t[0] * t[1] * t[2] + 0.3 * t[0] ** 2 * t[3] + 0.2 * t[0] ** 2 * t[1]
            + 0.05 * (t ** 4).sum())


def _sharpening(t):
    """The same pulled along θ₁ and θ₃, on which L₀₀ grows: ``α = −∇L·∇S > 0`` at THETA (progressive
    sharpening)."""
    return _curved(t) - 2.0 * t[1] - 1.0 * t[3]


def _geometry(f, theta=THETA):
    obj = Objective.from_function(f, theta)
    return obj, geometry_at(obj, theta, EigenTracker(1, tol=1e-12))


def test_geometry_equals_dense_references():
    obj, geom = _geometry(_sharpening)
    H = dense_hessian(_sharpening, THETA)
    w, V = dense_top(H)
    S, u = float(w[0]), V[0] * torch.sign(V[0] @ geom.u)
    assert geom.sharpness == pytest.approx(S, rel=1e-13)
    assert float(geom.u @ u) == pytest.approx(1.0, abs=1e-12)
    assert geom.u[geom.u.abs().argmax()] > 0                         # a first u: its largest entry positive
    grad = torch.func.grad(_sharpening)(THETA)
    assert torch.allclose(geom.grad, grad, rtol=1e-14, atol=1e-15)
    assert geom.loss == pytest.approx(float(_sharpening(THETA)), rel=1e-15)
    # Lemma 2: ∇S = ∇³L(u, u), against the dense third derivative ...
    gs = d3_contract(dense_d3(_sharpening, THETA), u, u)
    assert torch.allclose(geom.grad_sharpness, gs, rtol=0, atol=1e-12 * float(gs.norm()))
    # ... and against finite differences of S, the top eigenvalue of the dense Hessian: coordinate-wise
    # (a gap of 4 to λ₂ keeps S smooth; h = 1e-4, 4-point: truncation ~h⁴ = 1e-16, rounding ~ε·S/h ≈ 2e-11)
    fd = torch.tensor([stencil(lambda s: dense_sharpness(_sharpening, THETA + s * e), 1e-4)
                       for e in torch.eye(5, dtype=F64)], dtype=F64)
    assert torch.allclose(geom.grad_sharpness, fd, rtol=0, atol=1e-9)
    # the definitions of Definitions 2, 4 and 6 (docs/theory.md §2), from the references
    gs_perp = gs - (u @ gs) * u
    assert torch.allclose(geom.grad_sharpness_perp, gs_perp, rtol=0, atol=1e-12)
    assert abs(float(geom.grad_sharpness_perp @ geom.u)) < 1e-14
    alpha, beta = -float(grad @ gs), float(gs_perp @ gs_perp)
    assert alpha > 0 and beta > 0                                   # the regime of Theorem 1
    assert geom.alpha == pytest.approx(alpha, rel=1e-11)
    assert geom.beta == pytest.approx(beta, rel=1e-11)
    assert geom.delta_sq == pytest.approx(2 * alpha / beta, rel=1e-11)
    assert geom.delta == pytest.approx(math.sqrt(2 * alpha / beta), rel=1e-11)
    assert geom.epsilon(LR) == pytest.approx(LR * math.sqrt(alpha), rel=1e-11)
    # α as progressive sharpening: S(θ − η∇L) ≈ S + ηα to first order in η (docs/theory.md §2)
    step = 1e-5
    assert (dense_sharpness(_sharpening, THETA - step * grad) - S) / step == pytest.approx(alpha, rel=1e-3)


def test_alpha_from_finite_differences_along_the_gradient():
    """``α = −∇L·∇S`` is minus the derivative of S along ∇L: a central difference of the dense S."""
    _, geom = _geometry(_sharpening)
    fd = central_difference(lambda s: dense_sharpness(_sharpening, THETA - s * geom.grad), 1e-5)
    assert geom.alpha == pytest.approx(fd, rel=1e-7)


def test_nonpositive_alpha_leaves_delta_and_epsilon_missing():
    """``α ≤ 0``: ``δ`` and ``ε`` are NaN, while ``δ² = 2α/β`` stays finite (and negative) for the predicted step."""
    _, geom = _geometry(_curved)
    assert geom.alpha < 0 < geom.beta
    assert math.isnan(geom.delta) and math.isnan(geom.epsilon(LR))
    assert geom.delta_sq == pytest.approx(2 * geom.alpha / geom.beta, rel=1e-14) and geom.delta_sq < 0


def test_quadratic_has_no_sharpness_gradient():
    """On a quadratic ``∇³L = 0``: ``∇S = 0``, ``α = β = 0``, ``δ² = 0`` (the ``∇S⊥`` term is absent), δ and ε
    missing."""
    _, geom = _geometry(lambda t: 0.5 * t @ Q @ t - t.sum())
    assert float(geom.grad_sharpness.abs().max()) == 0.0
    assert geom.alpha == 0.0 and geom.beta == 0.0 and geom.delta_sq == 0.0
    assert math.isnan(geom.delta) and math.isnan(geom.epsilon(LR))
    assert geom.sharpness == pytest.approx(10.0, rel=1e-14)


def test_perp_removes_the_component_along_u():
    u = torch.tensor([0.6, 0.0, 0.8], dtype=F64)
    v = torch.tensor([1.0, 2.0, -1.0], dtype=F64)
    p = perp(u, v)
    assert torch.allclose(p, v - (0.6 - 0.8) * u, rtol=0, atol=1e-15)
    assert abs(float(p @ u)) < 1e-15 and torch.equal(perp(u, u * 0), u * 0)


def test_sharpness_gradient_is_computed_once_and_the_state_rebuilds_it_without_counting():
    obj, geom = _geometry(_sharpening)
    before = obj.counts["d3"]
    first = geom.grad_sharpness
    assert geom.grad_sharpness is first and geom.beta > 0 and obj.counts["d3"] == before + 1   # one product
    state = to_cpu_state(geom)
    counts = dict(obj.counts)
    back = from_cpu_state(obj, state)
    assert isinstance(back, Geometry)
    for name in ("theta", "grad", "grad_sharpness", "u"):
        assert torch.equal(getattr(back, name), getattr(geom, name)), name
    assert (back.loss, back.sharpness, back.alpha, back.beta, back.delta) == \
        (geom.loss, geom.sharpness, geom.alpha, geom.beta, geom.delta)                       # bit for bit
    assert dict(obj.counts) == counts                                 # nothing recomputed nor counted
    # a geometry saved before ∇S was needed computes it on first use after the restore, to the same value
    _, fresh = _geometry(_sharpening)
    again = Geometry.from_state(obj, fresh.state_dict())
    assert fresh.state_dict()["grad_sharpness"] is None
    assert torch.allclose(again.grad_sharpness, geom.grad_sharpness, rtol=0, atol=1e-15)
    assert to_cpu_state(None) is None and from_cpu_state(obj, None) is None
