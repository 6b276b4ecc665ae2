"""The SDCP solver against closed forms and its KKT conditions checked independently (docs/theory.md §10)."""

import math

import numpy as np
import pytest
import torch

from selfstab.errors import ConfigError, ConvergenceError
from selfstab.spectrum.sdcp import SDCPWarning, gram_matrix, pair_coefficients, smat, solve_sdcp, svec

F64 = torch.float64


def _pairs(k, d, seed):
    return torch.randn(k * (k + 1) // 2, d, generator=torch.Generator().manual_seed(seed), dtype=F64)


def _D(pairs, X):
    return pair_coefficients(X) @ pairs


def _check_kkt(A, pairs, scale, X, tol=1e-8):
    """KKT of SDCP(A, scale·G) recomputed from the pair vectors, not from the solver's matrices."""
    X = X.numpy()
    k = X.shape[0]
    DX = _D(pairs, torch.as_tensor(X)).numpy()
    iu, ju = np.triu_indices(k)
    GX = np.zeros((k, k))
    for r, (i, j) in enumerate(zip(iu, ju)):
        GX[i, j] = GX[j, i] = pairs[r].numpy() @ DX
    Z = A + scale * GX
    s = max(np.linalg.norm(A), np.linalg.norm(scale * GX))
    assert np.linalg.eigvalsh(X)[0] >= -tol * np.linalg.norm(X)
    assert np.linalg.eigvalsh(Z)[0] >= -tol * s
    assert abs(np.sum(X * Z)) <= tol * s * max(np.linalg.norm(X), 1e-300)
    return Z


def test_svec_is_an_isometry_and_the_gram_matrix_is_the_operator():
    rng = np.random.default_rng(0)
    k = 4
    X, Y = rng.standard_normal((k, k)), rng.standard_normal((k, k))
    X, Y = X + X.T, Y + Y.T
    assert abs(svec(X) @ svec(Y) - np.sum(X * Y)) < 1e-12
    assert np.allclose(smat(svec(X), k), X)
    pairs = _pairs(k, 30, 1)
    M = gram_matrix(pairs)
    DX = _D(pairs, torch.as_tensor(X)).numpy()
    assert abs(svec(X) @ M @ svec(X) - DX @ DX) < 1e-9 * (DX @ DX)
    assert np.linalg.eigvalsh(M)[0] > -1e-10


def test_stable_block_needs_no_solver():
    A = np.diag([0.3, 0.0, 1.0])
    res = solve_sdcp(A, gram_matrix(_pairs(3, 10, 2)))
    assert res.status == "stable" and res.solver_calls == 0
    assert float(res.X.abs().max()) == 0.0 and res.residual == 0.0


def test_k1_closed_form():
    res = solve_sdcp(np.array([[-0.6]]), np.array([[0.4]]))
    assert res.status == "closed_form" and res.solver_calls == 0
    assert abs(float(res.X[0, 0]) - 1.5) < 1e-15
    assert float(solve_sdcp(np.array([[0.2]]), np.array([[0.4]])).X[0, 0]) == 0.0


def test_diagonal_operator_decouples():
    A = np.diag([-0.5, 0.7, -2.0, -1e-3])
    k = 4
    m = k * (k + 1) // 2
    b = np.linspace(0.5, 3.0, m)          # a diagonal B in svec coordinates: B(E_ii) = b_ii E_ii
    res = solve_sdcp(A, np.diag(b))
    diag_b = b[[r for r, (i, j) in enumerate(zip(*np.triu_indices(k))) if i == j]]
    want = np.diag(np.maximum(0.0, -np.diag(A) / diag_b))
    assert res.converged and res.status == "solved"
    assert np.abs(res.X.numpy() - want).max() < 1e-10 * np.abs(want).max()
    assert res.rank == 3


@pytest.mark.parametrize("k", [2, 3, 5])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_instances_satisfy_kkt(k, seed):
    rng = np.random.default_rng(seed)
    pairs = _pairs(k, 3 * k * k, 10 + seed)
    Q = rng.standard_normal((k, k))
    A = 0.5 * (Q + Q.T) - 0.3 * np.eye(k)
    scale = 0.07
    res = solve_sdcp(A, scale * gram_matrix(pairs))
    assert res.converged and res.residual <= 1e-8
    Z = _check_kkt(A, pairs, scale, res.X)
    assert np.allclose(Z, res.Z.numpy(), atol=1e-10 * np.linalg.norm(A))
    # the minimum of the convex program: no feasible perturbation lowers the objective
    f = lambda X: 0.5 * scale * float(np.sum(_D(pairs, torch.as_tensor(X)).numpy() ** 2)) + float(np.sum(A * X))
    X = res.X.numpy()
    for _ in range(20):
        E = rng.standard_normal((k, k))
        Y = X + 1e-3 * (E @ E.T)            # stays PSD
        assert f(Y) >= f(X) - 1e-12


def test_degenerate_A_and_isotropic_B():
    k = 3
    a, b = 0.8, 2.0
    res = solve_sdcp(-a * np.eye(k), b * np.eye(k * (k + 1) // 2))
    assert np.abs(res.X.numpy() - (a / b) * np.eye(k)).max() < 1e-10
    # equal eigenvalues of A with a generic B: still the KKT point
    pairs = _pairs(k, 15, 7)
    res = solve_sdcp(-a * np.eye(k), 0.3 * gram_matrix(pairs))
    assert res.converged
    _check_kkt(-a * np.eye(k), pairs, 0.3, res.X)


def test_callable_operator_equals_matrix():
    pairs = _pairs(3, 12, 3)
    M = gram_matrix(pairs)
    A = np.diag([-1.0, -0.2, 0.5])

    def G(X):
        DX = _D(pairs, torch.as_tensor(X))
        iu, ju = torch.triu_indices(3, 3)
        out = np.zeros((3, 3))
        for r, (i, j) in enumerate(zip(iu.tolist(), ju.tolist())):
            out[i, j] = out[j, i] = float(pairs[r] @ DX)
        return out

    assert torch.allclose(solve_sdcp(A, G).X, solve_sdcp(A, M).X, atol=1e-10)


def test_unbounded_problem_raises_or_warns():
    A = np.diag([-1.0, 0.5])
    M = np.diag([0.0, 1.0, 1.0])           # B does not act on E_11, where A is negative
    with pytest.raises(ConvergenceError, match="SDCP"):
        solve_sdcp(A, M)
    with pytest.warns(SDCPWarning):
        res = solve_sdcp(A, M, on_fail="warn")
    assert not res.converged
    with pytest.raises(ConvergenceError):
        solve_sdcp(np.array([[-1.0]]), np.array([[0.0]]))


def test_bad_input_is_a_one_line_error():
    with pytest.raises(ConfigError, match="B: expected a 3×3"):
        solve_sdcp(-np.eye(2), np.eye(2))
    with pytest.raises(ConfigError, match="A: expected a square"):
        solve_sdcp(np.ones((2, 3)), np.eye(3))
    with pytest.raises(ConfigError, match="on_fail"):
        solve_sdcp(-np.eye(2), np.eye(3), on_fail="ignore")


def test_singular_operator_gives_the_minimum_norm_solution_in_any_basis():
    # a zero off-diagonal pair vector (two decoupled directions): only X_11 and X_22 are determined
    A = -np.diag([0.3, 0.3])
    M = np.diag([2.0, 0.0, 2.0])
    want = np.diag([0.15, 0.15])
    assert np.abs(solve_sdcp(A, M).X.numpy() - want).max() < 1e-10
    # the same problem in a rotated basis: the operator is rotated with it, and so is the answer
    c, s = math.cos(0.4), math.sin(0.4)
    R = np.array([[c, s], [-s, c]])

    def rotated(X):
        return R @ smat(M @ svec(R.T @ X @ R), 2) @ R.T

    res = solve_sdcp(R @ A @ R.T, rotated)
    assert res.converged
    assert np.abs(res.X.numpy() - R @ want @ R.T).max() < 1e-10
