"""Top eigenpairs and ∇S against torch.linalg.eigh of the dense Hessian and finite differences of S."""

import warnings

import pytest
import torch
from torch import nn

from references import central_difference, dense_hessian, dense_top, module_function, stencil
from selfstab import ConvergenceError, Objective
from selfstab.spectrum import EigenTracker, EigenWarning, sharpness_gradient, top_eigenpairs

F64 = torch.float64


def _objective(width=12, n=40, seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(5, width), nn.SiLU(), nn.Linear(width, width), nn.SiLU(), nn.Linear(width, 3))
    return Objective.from_module(model, torch.randn(n, 5), torch.randn(n, 3), "mse", dtype="float64")


def _dense_hessian(obj, theta):
    """Independent reference: torch.func.hessian of the loss written out by hand."""
    torch.manual_seed(0)   # the tests' later random draws start from here (as they always have)
    x, y = _INPUTS[obj.info["n"]]
    return dense_hessian(module_function(obj.model, x, lambda out: (out - y).pow(2).sum(1).mean()), theta)


_INPUTS = {}


@pytest.fixture
def problem():
    obj = _objective()
    torch.manual_seed(0)
    x, y = torch.randn(40, 5, dtype=F64), torch.randn(40, 3, dtype=F64)
    _INPUTS[40] = (x, y)
    obj = Objective.from_module(obj.model, x, y, "mse")
    theta = obj.theta0 + 0.3 * torch.randn(obj.dim, dtype=F64)
    return obj, theta, *dense_top(_dense_hessian(obj, theta))


@pytest.mark.parametrize("method", ["dense", "lobpcg", "eigsh"])
@pytest.mark.parametrize("k", [1, 3])
def test_top_eigenpairs_equal_dense_eigh(problem, method, k):
    obj, theta, w, V = problem
    point = obj.at(theta)
    res = top_eigenpairs(point.hvp, obj.dim, k, method=method, tol=1e-9)
    assert res.converged and res.hvps > 0
    assert torch.allclose(res.values, w[:k], rtol=1e-10, atol=0)
    for i in range(k):  # same direction up to sign, and the sign convention: largest entry positive
        assert abs(float(res.vectors[i] @ V[i])) > 1 - 1e-8
        assert res.vectors[i][res.vectors[i].abs().argmax()] > 0
    # residual check is honest: recompute H u exactly
    for i in range(k):
        r = obj.hvp(theta, res.vectors[i]) - res.values[i] * res.vectors[i]
        assert float(r.norm() / abs(res.values[i])) <= 1e-9 * 1.01


def test_warm_start_is_cheap_and_keeps_sign(problem):
    obj, theta, w, V = problem
    tracker = EigenTracker(1, tol=1e-8, method="lobpcg", history=3)   # a random (not GD) path: 3 blocks
    first = tracker.refresh(obj.at(theta))
    direction = torch.randn(obj.dim, dtype=F64)
    costs = []
    for s in range(1, 6):  # a slowly moving θ, as along GD
        t = theta + 1e-3 * s * direction
        res = tracker.refresh(obj.at(t))
        ref = torch.linalg.eigvalsh(_dense_hessian(obj, t))[-1]
        assert abs(res.sharpness - float(ref)) <= 1e-10 * float(ref)
        assert float(res.u @ tracker._history[1][0]) > 0      # u_t · u_{t−1} > 0
        costs.append(res.hvps)
    assert max(costs[2:]) < first.hvps and sum(costs[2:]) / 3 <= 0.5 * first.hvps


def test_sharpness_gradient_equals_finite_difference_of_sharpness(problem):
    obj, theta, w, V = problem
    u = top_eigenpairs(obj.at(theta).hvp, obj.dim, 1, method="dense").u
    grad_s = sharpness_gradient(obj, theta, u)
    direction = torch.randn(obj.dim, dtype=F64)
    h = 1e-4

    def S(t):
        return float(torch.linalg.eigvalsh(_dense_hessian(obj, t))[-1])

    fd = stencil(lambda s: S(theta + s * direction), h)
    assert abs(float(grad_s @ direction) - fd) <= 1e-7 * abs(fd)
    # Lemma 2 in full: the whole vector, coordinate-wise, on a few coordinates
    for i in (0, 7, obj.dim - 1):
        e = torch.zeros(obj.dim, dtype=F64)
        e[i] = 1
        fd_i = central_difference(lambda s: S(theta + s * e), h)
        assert abs(float(grad_s[i]) - fd_i) <= 1e-6 * max(1.0, float(grad_s.abs().max()))


def test_non_convergence_raises_or_warns(problem):
    obj, theta, *_ = problem
    start = torch.randn(1, obj.dim, dtype=F64)
    with pytest.raises(ConvergenceError, match="did not converge"):
        top_eigenpairs(obj.at(theta).hvp, obj.dim, 1, method="lobpcg", warm=start, tol=1e-14, max_iter=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = top_eigenpairs(obj.at(theta).hvp, obj.dim, 1, method="lobpcg", warm=start, tol=1e-14, max_iter=2,
                             on_fail="warn")
    assert not res.converged and float(res.residuals[0]) > 1e-14
    assert any(issubclass(c.category, EigenWarning) for c in caught)
