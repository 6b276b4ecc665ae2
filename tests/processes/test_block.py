"""The critical block (docs/theory.md §10): rotations between bases of one subspace, pair vectors
``p_ij = ∇³L(u_i, u_j)`` carried into a rotated basis, the block's first-order change ``[p_ij·v]``, the critical
count and the carried model of the block, against a dense ``∇³L``, a dense Hessian and closed forms
(tests/references.py).  The block's eigen-solve itself is tested in test_central.py."""

import math

import numpy as np
import pytest
import torch

from references import central_difference, d3_contract, dense_d3, dense_hessian, dense_top
from selfstab.processes.block import (PairCache, block_fields, critical_count, pair_matrix, rotate_pairs, rotation,
                                      same_subspace)

F64 = torch.float64
THETA = torch.tensor([0.2, -0.1, 0.05, 0.3, -0.2, 0.1], dtype=F64)
# torch.func.hessian's forward mode loads decompositions through torch.jit.script, which warns in torch 2.13.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")


def _loss(t):
    """Quadratic + coupled cubic and quartic terms: ∇³L is a full tensor that varies with θ."""
    q = torch.arange(6, 0, -1, dtype=F64)
    return (0.5 * (q * t * t).sum() + 0.7 * t[0] * t[1] * t[2] + 0.3 * t[0] ** 2 * t[3] + 0.4 * t[1] * t[4] * t[5]
            + 0.05 * (t ** 4).sum())


def _orthogonal(k, seed):
    return torch.linalg.qr(torch.randn(k, k, generator=torch.Generator().manual_seed(seed), dtype=F64))[0]


def _dense_pairs(T, U):
    """``∇³L(u_i, u_j)`` for ``i ≤ j`` in ``triu_indices`` order (the layout of ``Point.d3_pairs``)."""
    iu, ju = torch.triu_indices(U.shape[0], U.shape[0])
    return torch.stack([d3_contract(T, U[i], U[j]) for i, j in zip(iu.tolist(), ju.tolist())])


@pytest.fixture(scope="module")
def block():
    """The top three eigenvectors (3, 6) of the dense Hessian at THETA and the dense ∇³L there."""
    H = dense_hessian(_loss, THETA)
    return dense_top(H)[1][:3], dense_d3(_loss, THETA)


def test_rotation_is_the_orthogonal_polar_factor_of_the_overlap(block):
    U, _ = block
    R0 = _orthogonal(3, 1)
    assert torch.allclose(rotation(R0 @ U, U), R0, rtol=0, atol=1e-14)       # an exact rotation is found
    # a drifted basis (not the same span): the polar factor M (MᵀM)^(-1/2) of M = new·oldᵀ, by eigh
    drift = U + 0.05 * torch.randn(U.shape, generator=torch.Generator().manual_seed(2), dtype=F64)
    new = torch.linalg.qr(drift.T)[0].T
    M = new @ U.T
    w, E = torch.linalg.eigh(M.T @ M)
    polar = M @ E @ torch.diag(w.rsqrt()) @ E.T
    R = rotation(new, U)
    assert torch.allclose(R, polar, rtol=0, atol=1e-13)
    assert torch.allclose(R @ R.T, torch.eye(3, dtype=F64), rtol=0, atol=1e-14)


def test_rotated_pairs_equal_the_dense_pairs_of_the_new_basis(block):
    U, T = block
    new = _orthogonal(3, 3) @ U
    got = rotate_pairs(_dense_pairs(T, U), U, new)
    ref = _dense_pairs(T, new)
    assert got.shape == (6, THETA.numel())
    assert torch.allclose(got, ref, rtol=0, atol=1e-13 * float(ref.abs().max()))


def test_same_subspace(block):
    U, _ = block
    assert same_subspace(U, _orthogonal(3, 4) @ U, tol=1e-12)
    other = torch.cat([U[:2], dense_top(dense_hessian(_loss, THETA))[1][3:4]])
    assert not same_subspace(U, other, tol=1e-3)
    assert not same_subspace(U, U[:2], tol=1.0)                            # another dimension


def test_pair_matrix_is_the_first_order_change_of_the_block(block):
    """``[p_ij·v] = d/ds (Uᵀ H(θ + s v) U)`` at s = 0: against the dense ∇³L, and against a central difference of
    the dense Hessian's block (h = 1e-5: truncation ~h²·‖∇⁴L‖ ≈ 1e-11, rounding ~ε‖H‖/h ≈ 1e-10)."""
    U, T = block
    v = torch.tensor([0.3, -0.2, 0.5, 0.1, 0.4, -0.6], dtype=F64)
    got = pair_matrix(_dense_pairs(T, U), v)
    assert isinstance(got, np.ndarray) and got.shape == (3, 3)
    np.testing.assert_allclose(got, got.T, rtol=0, atol=0)
    ref = torch.einsum("abc,ia,jb,c->ij", T, U, U, v).numpy()
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-14)
    fd = central_difference(lambda s: U @ dense_hessian(_loss, THETA + s * v) @ U.T, 1e-5).numpy()
    np.testing.assert_allclose(got, fd, rtol=0, atol=1e-9)


def test_critical_count_and_block_fields():
    lr = 0.1
    values = torch.tensor([2.05, 2.0, 1.96, 1.94, 1.5], dtype=F64) / lr    # 0.975·2/η = 1.95/η
    assert critical_count(values, lr) == 3
    assert critical_count(values, lr, threshold=1.0) == 2 and critical_count(values, lr, threshold=0.5) == 5
    fields = block_fields(values, 3, lr)
    assert [fields[f"lambda_{i}"] for i in range(1, 6)] == [float(x) for x in values]
    assert fields["next_ratio"] == pytest.approx(1.94 / 2, rel=1e-14)          # η λ₄ / 2
    assert math.isnan(block_fields(values[:3], 3, lr)["next_ratio"])            # the block holds no λ₄


def _separable(c3, c4):
    """``½ Σ q_i θ_i² + Σ c3_i θ_i³/6 + Σ c4_i θ_i⁴/24``: a diagonal Hessian ``q + c3 θ + c4 θ²/2``, whose
    eigenvectors are the axes at every θ; with c4 = 0 it is affine in θ."""
    q = torch.tensor([10.0, 9.0, 3.0, 1.0], dtype=F64)

    def f(t):
        return 0.5 * (q * t * t).sum() + (c3 * t ** 3).sum() / 6 + (c4 * t ** 4).sum() / 24
    return f


@pytest.mark.parametrize("quartic", [False, True])
def test_pair_cache_model_error_is_the_second_order_remainder(quartic):
    """The carried block model ``block + [p·Δθ]`` against the block solved at ``θ + Δθ``: exact when the Hessian is
    affine in θ; otherwise off by ``c4_i Δ_i²/2`` on the diagonal (times η/2), the closed form."""
    lr = 0.2
    c3 = torch.tensor([1.0, -2.0, 0.5, 0.3], dtype=F64)
    c4 = torch.tensor([3.0, -1.5, 0.0, 0.0], dtype=F64) if quartic else torch.zeros(4, dtype=F64)
    f = _separable(c3, c4)
    theta = torch.tensor([0.1, -0.05, 0.2, 0.0], dtype=F64)
    step = torch.tensor([0.02, 0.03, -0.1, 0.05], dtype=F64)

    def top2(t):
        w, V = dense_top(dense_hessian(f, t))
        return w[:2], V[:2]

    values, U = top2(theta)
    cache = PairCache(_dense_pairs(dense_d3(f, theta), U), U, theta, np.diag(values.numpy()), 0)
    new_values, new_U = top2(theta + step)
    err = cache.model_error(new_U, theta + step, new_values, lr)
    expected = float((c4[:2] * step[:2] ** 2 / 2).abs().max()) * lr / 2
    assert err == pytest.approx(expected, abs=1e-13)
    # reusable: same dimension and (nearly) the same span, and younger than pairs_every
    assert cache.reusable(new_U, pairs_every=2, rotation_tol=1e-10)
    assert not cache.reusable(new_U, pairs_every=0, rotation_tol=1e-10)
    assert not PairCache().reusable(new_U, pairs_every=2, rotation_tol=1e-10)
    assert not cache.reusable(dense_top(dense_hessian(f, theta))[1][1:3], pairs_every=2, rotation_tol=1e-3)
    # the state round trip keeps everything
    back = PairCache()
    back.load_state_dict(cache.state_dict(), like=theta)
    assert back.model_error(new_U, theta + step, new_values, lr) == err and back.age == 0
