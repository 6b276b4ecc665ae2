"""The predicted dynamics (docs/theory.md §6): ``predicted_step`` against eq. (6) written out with a dense
Hessian, its eigh and the dense ``∇³L`` on a tiny explicit objective; the generalized form (Appendix F) against
``F_t'`` from ``torch.func.grad``; Theorem 1's predictions; and GD on the toy model of §8, which eq. (6)
reproduces exactly."""

import math

import numpy as np
import pytest
import torch

from references import d3_contract, dense_d3, dense_hessian, dense_top
from selfstab import Objective
from selfstab.processes.geometry import geometry_at
from selfstab.processes.predicted import predicted_fields, predicted_step, theorem1_predictions
from selfstab.spectrum import EigenTracker
from selfstab.theory import toy_gd, toy_objective

F64 = torch.float64
Q = torch.diag(torch.tensor([10.0, 6.0, 3.0, 1.0, 0.5], dtype=F64))
THETA = torch.tensor([0.2, -0.1, 0.05, 0.3, -0.2], dtype=F64)
V = torch.tensor([0.03, -0.02, 0.01, 0.02, -0.01], dtype=F64)   # x = u·v ≈ 0.03: a displacement along u and off it
LR = 0.19
# torch.func.hessian's forward mode loads decompositions through torch.jit.script, which warns in torch 2.13.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")


def _curved(t):
    """Quadratic + coupled cubic and quartic terms (∇S not parallel to u; ∇²L far from quadratic along u)."""
    return (0.5 * t @ Q @ t + 0.7 * t[0] * t[1] * t[2] + 0.3 * t[0] ** 2 * t[3] + 0.2 * t[0] ** 2 * t[1]
            + 0.05 * (t ** 4).sum())


def _sharpening(t):
    """The same with ``α > 0`` at THETA (progressive sharpening)."""
    return _curved(t) - 2.0 * t[1] - 1.0 * t[3]


def _setting(f):
    """The geometry at θ† = THETA, and ``u_{t+1}``: the dense top eigenvector one GD step on, its sign by the
    rule ``u_{t+1}·u_t > 0``."""
    obj = Objective.from_function(f, THETA)
    here = geometry_at(obj, THETA, EigenTracker(1, tol=1e-12))
    nxt = THETA - LR * torch.func.grad(f)(THETA)
    u_next = dense_top(dense_hessian(f, nxt))[1][0]
    return obj, here, u_next * torch.sign(u_next @ here.u)


def _eq6(f, v, u_sign, u_next, lr, coef_extra=0.0):
    """Eq. (6) from dense references only; ``u`` is eigh's top vector with the sign of ``u_sign``."""
    H, T = dense_hessian(f, THETA), dense_d3(f, THETA)
    u = dense_top(H)[1][0]
    u = u * torch.sign(u @ u_sign)
    g = torch.func.grad(f)(THETA)
    gs = d3_contract(T, u, u)
    gs_perp = gs - (u @ gs) * u
    alpha, beta = -float(g @ gs), float(gs_perp @ gs_perp)
    delta_sq = 2 * alpha / beta
    x, y = float(u @ v), float(gs_perp @ v)
    eye = torch.eye(THETA.numel(), dtype=F64)
    P, P_next = eye - torch.outer(u, u), eye - torch.outer(u_next, u_next)
    return (P_next @ (eye - lr * H) @ P @ v
            + lr * P_next @ gs_perp * (delta_sq - x * x) / 2
            + (-(1 + lr * y) * x - lr * coef_extra) * u_next), x, y


@pytest.mark.parametrize("f", [_sharpening, _curved], ids=["alpha>0", "alpha<0"])
def test_predicted_step_is_eq6(f):
    """With ``α ≤ 0`` the step uses ``δ² = 2α/β < 0`` and stays finite (docs/theory.md §2)."""
    obj, here, u_next = _setting(f)
    assert (here.alpha > 0) == (f is _sharpening)
    ref, x, y = _eq6(f, V, here.u, u_next, LR)
    fields = predicted_fields(V, here, LR)
    assert fields["x"] == pytest.approx(x, rel=1e-12) and fields["y"] == pytest.approx(y, rel=1e-10)
    here.grad_sharpness   # ∇S is the geometry's (shared); what the step itself spends is one HVP
    counts = dict(obj.counts)
    got = predicted_step(V, here, u_next, LR, fields)
    assert obj.counts["hvp"] == counts["hvp"] + 1 and obj.counts["grad"] == counts.get("grad", 0)
    assert torch.isfinite(got).all()
    assert torch.allclose(got, ref, rtol=0, atol=1e-12 * float(ref.norm()))
    # without fields it computes the same ones
    assert torch.equal(predicted_step(V, here, u_next, LR), got)
    # the coefficient along u_{t+1} is −(1 + ηy)x (eq. (6), line 3)
    assert float(got @ u_next) == pytest.approx(-(1 + LR * y) * x, rel=1e-12)


@pytest.mark.parametrize("even_part", [False, True])
def test_generalized_step_replaces_the_u_coefficient_with_f_prime(even_part):
    """Appendix F: ``x_{t+1} = −(1 + ηy)x − ηF'(x)``, ``F'(x) = u·∇L(θ† + xu) − 2x/η`` (even part:
    ``(F'(x) − F'(−x))/2``); the rest of eq. (6) is unchanged."""
    f = _sharpening
    obj, here, u_next = _setting(f)
    u = here.u

    def f_prime(x):
        return float(u @ torch.func.grad(f)(THETA + x * u)) - 2 * x / LR

    x = float(u @ V)
    fp = 0.5 * (f_prime(x) - f_prime(-x)) if even_part else f_prime(x)
    counts = obj.counts["grad"]
    fields = predicted_fields(V, here, LR, generalized=True, even_part=even_part)
    assert obj.counts["grad"] == counts + (2 if even_part else 1)     # one gradient per F' evaluation
    assert fields["F_prime"] == pytest.approx(fp, rel=1e-10)
    ref, _, _ = _eq6(f, V, u, u_next, LR, coef_extra=fp)
    got = predicted_step(V, here, u_next, LR, fields)
    assert torch.allclose(got, ref, rtol=0, atol=1e-12 * float(ref.norm()))


def test_theorem1_predictions_are_the_closed_forms():
    _, here, _ = _setting(_sharpening)
    x, y = 0.04, -0.3
    pred = theorem1_predictions(here, x, y, LR)
    assert pred["loss"] == pytest.approx(float(_sharpening(THETA)) + x * x / LR, rel=1e-14)
    u = here.u
    gs = d3_contract(dense_d3(_sharpening, THETA), u, u)
    assert pred["sharpness"] == pytest.approx(2 / LR + y + float(gs @ u) * x, rel=1e-13)


def test_eq6_reproduces_gd_on_the_toy_model():
    """Appendix B (docs/theory.md §8): with θ†_t = (0, 0, ηt) and v₀ = θ₀ − θ†₀, eq. (6) iterated with the
    geometry solved at each θ†_t gives GD's displacement θ_t − θ†_t to rounding, through a blow-up."""
    alpha, beta, lr, x0, steps = 1.3, 0.7, 0.01, 0.1, 500
    obj = toy_objective(alpha, beta, lr, x0)
    gd = torch.from_numpy(toy_gd(alpha, beta, lr, x0, steps))
    tracker = EigenTracker(1, tol=1e-12)

    def dagger(t):
        return torch.tensor([0.0, 0.0, lr * t], dtype=F64)

    here = geometry_at(obj, dagger(0), tracker)
    assert here.alpha == pytest.approx(alpha, rel=1e-12) and here.beta == pytest.approx(beta, rel=1e-12)
    v = gd[0] - dagger(0)
    worst = 0.0
    for t in range(steps):
        nxt = geometry_at(obj, dagger(t + 1), tracker)
        v = predicted_step(v, here, nxt.u, lr)
        worst = max(worst, float((v - (gd[t + 1] - dagger(t + 1))).abs().max()))
        here = nxt
    assert float(gd[:, 0].abs().max()) > 1.0          # GD went through a blow-up of x, not just the quiet start
    assert worst < 1e-12
    assert math.isfinite(worst) and np.isfinite(v.numpy()).all()
