"""``lobpcg(above=...)``: every eigenpair above an edge, the block following the spectrum, guards unconverged.

References: ``torch.linalg.eigh`` of the same dense matrix.
"""

import pytest
import torch

from selfstab.spectrum.eigen import lobpcg, top_eigenpairs

F64 = torch.float64


def _operator(values: torch.Tensor, seed: int = 0):
    """A symmetric matrix with the given spectrum in a random basis, its matvec (counted) and its eigenpairs."""
    d = values.numel()
    g = torch.Generator().manual_seed(seed)
    Q = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=F64))[0]
    H = Q @ torch.diag(values.to(F64)) @ Q.T
    calls = [0]

    def matvec(V):
        calls[0] += V.shape[0]
        return V @ H

    w, V = torch.linalg.eigh(H)
    order = torch.argsort(w, descending=True)
    return matvec, calls, w[order], V[:, order].T


def _cluster_and_bulk(d=300, seed=1):
    """Seven eigenvalues in a tight cluster around the edge 1.0 (five above), a dense bulk well below."""
    g = torch.Generator().manual_seed(seed)
    top = torch.tensor([1.06, 1.05, 1.04, 1.02, 1.005, 0.99, 0.97], dtype=F64)
    bulk = torch.rand(d - top.numel(), generator=g, dtype=F64) * 0.4
    return torch.cat([top, bulk])


def test_every_eigenvalue_above_the_edge_from_a_one_vector_start():
    matvec, calls, w, V = _operator(_cluster_and_bulk())
    start = V[:1] + 1e-3 * torch.randn(1, V.shape[1], generator=torch.Generator().manual_seed(3), dtype=F64)
    eig = lobpcg(matvec, start, 1, tol=1e-8, guard=2, above=1.0)
    assert eig.values.numel() == 5 and eig.converged                 # 1.06 … 1.005, nothing less
    assert torch.allclose(eig.values, w[:5], rtol=1e-12, atol=0)
    assert float(eig.residuals.max()) <= 1e-8
    overlap = (eig.vectors @ V[:5].T).abs()                           # the same invariant subspace
    assert torch.allclose(torch.linalg.svdvals(overlap), torch.ones(5, dtype=F64), atol=1e-10)
    # the guards: Ritz values below the edge, lower bounds on λ₆, λ₇ (Cauchy interlacing)
    gv = eig.extra["guard_values"]
    assert gv.numel() == 2 and float(gv[0]) < 1.0 and bool((gv <= w[5:7] + 1e-12).all())
    assert eig.hvps == calls[0]                                       # every HVP counted


def test_a_warm_start_that_already_spans_the_block_is_cheap_and_the_guards_do_not_converge():
    values = _cluster_and_bulk()
    matvec, calls, w, V = _operator(values)
    g = torch.Generator().manual_seed(4)
    start = V[:7] + 1e-4 * torch.randn(7, V.shape[1], generator=g, dtype=F64)     # a nearby point's block
    eig = lobpcg(matvec, start, 1, tol=1e-6, guard=2, above=1.0)
    assert eig.values.numel() == 5 and eig.converged and torch.allclose(eig.values, w[:5], rtol=1e-10)
    assert eig.hvps <= 7 + 5 * 5                                      # the start, then a few per wanted vector
    assert float(eig.extra["guard_residuals"].min()) > 1e-6           # the guards were not converged
    # a converge-all solve of the same six (the five and the next one) from the same start, for comparison
    full = lobpcg(matvec, start, 6, tol=1e-6, guard=1)
    assert full.converged and eig.hvps < full.hvps


def test_max_k_caps_the_wanted_block():
    matvec, _, w, V = _operator(_cluster_and_bulk())
    eig = lobpcg(matvec, V[:2], 1, tol=1e-8, guard=2, above=1.0, max_k=3)
    assert eig.values.numel() == 3 and torch.allclose(eig.values, w[:3], rtol=1e-10)


def test_degenerate_eigenvalues_above_the_edge_do_not_stall():
    values = torch.cat([torch.tensor([1.1, 1.1, 1.1, 0.8], dtype=F64), torch.linspace(0.0, 0.5, 96, dtype=F64)])
    matvec, _, w, V = _operator(values, seed=2)
    eig = lobpcg(matvec, torch.randn(2, 100, generator=torch.Generator().manual_seed(0), dtype=F64), 1, tol=1e-9,
                 guard=2, above=1.0, max_iter=100)
    assert eig.converged and eig.iterations < 100
    assert eig.values.numel() == 3 and torch.allclose(eig.values, torch.full((3,), 1.1, dtype=F64), rtol=1e-12)


@pytest.mark.parametrize("method", ["dense", "lobpcg"])
def test_top_eigenpairs_above_dense_and_iterative_agree(method):
    values = torch.cat([torch.tensor([2.0, 1.5, 1.2, 0.9], dtype=F64), torch.linspace(0.0, 0.6, 36, dtype=F64)])
    matvec, _, w, V = _operator(values, seed=5)
    warm = None if method == "dense" else V[:2]
    eig = top_eigenpairs(matvec, 40, 1, method=method, warm=warm, tol=1e-10, above=1.0, guard=2)
    assert eig.values.numel() == 3 and torch.allclose(eig.values, w[:3], rtol=1e-10)
    assert float(eig.extra["guard_values"][0]) <= float(w[3]) + 1e-12
    assert float(eig.extra["guard_values"][0]) < 1.0


def test_an_eigenvalue_a_hair_below_the_edge_ends_the_solve_once_converged():
    values = torch.cat([torch.tensor([1.3, 1.1, 1.0 - 1e-13], dtype=F64), torch.linspace(0.0, 0.5, 97, dtype=F64)])
    matvec, _, w, V = _operator(values, seed=6)
    eig = lobpcg(matvec, V[:3] + 1e-3 * V[3:6], 1, tol=1e-8, guard=2, above=1.0, max_iter=200)
    assert eig.converged and eig.iterations < 40
    assert eig.values.numel() == 2 and torch.allclose(eig.values, w[:2], rtol=1e-12)
    assert abs(float(eig.extra["guard_values"][0]) - float(w[2])) <= 1e-12       # the hair-below one, converged
