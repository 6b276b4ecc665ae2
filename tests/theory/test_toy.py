"""Appendix B: GD on the toy model is eq. (3), and its closed forms equal what the generic
Objective computes (dense Hessian, eigh, ∇³L(u, u), finite differences)."""

import math

import numpy as np
import pytest
import torch

from references import central_difference, dense_hessian
from selfstab.theory import (simplified_dynamics, toy_alpha, toy_beta, toy_eigvec, toy_gd, toy_grad_sharpness,
                             toy_loss, toy_objective, toy_sharpness, toy_sharpness_exact)

ALPHA, BETA, LR, X0 = 1.3, 0.7, 0.01, 0.1


@pytest.fixture(scope="module")
def obj():
    return toy_objective(ALPHA, BETA, LR, X0)


def _dense_hessian(theta):
    return dense_hessian(lambda th: toy_loss(th, ALPHA, BETA, LR), theta)


def test_gd_with_objective_grad_is_eq3(obj):
    theta = obj.theta0.clone()
    traj = [theta]
    for _ in range(500):
        theta = theta - LR * obj.grad(theta)
        traj.append(theta)
    traj = torch.stack(traj).numpy()
    x, y = simplified_dynamics(ALPHA, BETA, LR, X0, 0.0, 500)
    np.testing.assert_allclose(traj[:, 0], x, rtol=0, atol=1e-12)
    np.testing.assert_allclose(math.sqrt(BETA) * traj[:, 1], y, rtol=0, atol=1e-12)
    np.testing.assert_allclose(traj[:, 2], LR * np.arange(501), rtol=1e-12)  # θ† moves along z only
    assert np.abs(x).max() > 1.0  # the run went through a blow-up, not just the quiet start
    np.testing.assert_allclose(toy_gd(ALPHA, BETA, LR, X0, 500), traj, rtol=0, atol=1e-12)


def test_hvp_matches_dense_hessian(obj):
    theta = torch.tensor([0.3, -0.8, 2.0], dtype=torch.float64)
    H = _dense_hessian(theta)
    np.testing.assert_allclose(obj.hvp(theta, torch.eye(3, dtype=torch.float64)).numpy(), H.numpy(), atol=1e-12)


@pytest.mark.parametrize("y", [0.0, -0.9, 2.5])
def test_closed_forms_at_x0(obj, y):
    theta = torch.tensor([0.0, y, 1.7], dtype=torch.float64)
    evals, evecs = torch.linalg.eigh(_dense_hessian(theta))
    S, u = evals[-1], evecs[:, -1]
    assert float(toy_sharpness(theta, BETA, LR)) == pytest.approx(float(S), rel=1e-14)
    assert abs(float(u @ toy_eigvec(theta))) == pytest.approx(1.0, rel=1e-14)
    gS = obj.d3(theta, u, u)                                       # Lemma 2
    np.testing.assert_allclose(gS.numpy(), toy_grad_sharpness(theta, BETA).numpy(), atol=1e-12)
    gL = obj.grad(theta)
    assert float(-gL @ gS) == pytest.approx(toy_alpha(ALPHA), rel=1e-13)
    perp = gS - (u @ gS) * u
    assert float(perp @ perp) == pytest.approx(toy_beta(BETA), rel=1e-13)


def test_sharpness_off_x0_is_not_the_x0_formula(obj):
    """At x ≠ 0 the off-diagonal √β x tilts u: S = (a + sqrt(a² + 4βx²))/2 > 2/η + √β y."""
    theta = torch.tensor([0.8, 0.4, 0.0], dtype=torch.float64)
    evals, evecs = torch.linalg.eigh(_dense_hessian(theta))
    S, u = float(evals[-1]), evecs[:, -1]
    assert float(toy_sharpness_exact(theta, BETA, LR)) == pytest.approx(S, rel=1e-14)
    assert float(toy_sharpness(theta, BETA, LR)) < S
    # Lemma 2 off x = 0: ∇³L(u, u) equals central differences of the exact S
    gS = obj.d3(theta, u, u).numpy()
    fd = np.array([central_difference(lambda s: float(toy_sharpness_exact(theta + s * e, BETA, LR)), 1e-4)
                   for e in torch.eye(3, dtype=torch.float64)])
    np.testing.assert_allclose(gS, fd, rtol=1e-7, atol=1e-8)
