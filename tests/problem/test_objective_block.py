"""Block third derivatives of a Point (``d3_form``, ``d3_pairs``) against dense torch.func third derivatives."""

import pytest
import torch
from torch import nn

from references import dense_d3, module_function
from selfstab import Objective

F64 = torch.float64


def _function():
    torch.manual_seed(3)
    A = torch.randn(5, 5, dtype=F64)

    def f(t):
        return torch.log1p((A @ t).pow(2).sum()) + (t.sin() * t.cos()).sum() + 0.1 * t.pow(4).sum()

    return Objective.from_function(f, torch.randn(5, dtype=F64)), f


def _mlp():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.SiLU(), nn.Linear(4, 2)).double()
    x, y = torch.randn(7, 3, dtype=F64), torch.randn(7, 2, dtype=F64)
    obj = Objective.from_module(model, x, y, "mse")
    return obj, module_function(model, x, lambda out: (out - y).pow(2).sum(1).mean())


@pytest.mark.parametrize("case", ["function", "mlp"])
def test_d3_form_and_pairs_match_dense_third_derivative(case):
    obj, f = {"function": _function, "mlp": _mlp}[case]()
    theta = obj.theta0 + 0.1
    T = dense_d3(f, theta)                             # (d, d, d): T[a, b, c] = ∂_c H_ab
    d = obj.dim
    g = torch.Generator().manual_seed(1)
    k = 3
    U = torch.linalg.qr(torch.randn(d, k, generator=g, dtype=F64))[0].T          # (k, d)
    Xh = torch.randn(k, k, generator=g, dtype=F64)
    X = Xh + Xh.T
    X[0, 0] = 0.0
    p = obj.at(theta)
    before = obj.counts["d3"]
    D = p.d3_form(U, X)
    assert obj.counts["d3"] == before + 1
    ref = torch.einsum("ij,ia,jb,abc->c", X, U, U, T)
    assert float((D - ref).norm() / ref.norm()) < 1e-12
    pairs = p.d3_pairs(U)
    assert obj.counts["d3"] == before + 1 + k * (k + 1) // 2
    iu, ju = torch.triu_indices(k, k)
    ref_pairs = torch.einsum("ka,kb,abc->kc", U[iu], U[ju], T)
    assert pairs.shape == (k * (k + 1) // 2, d)
    assert float((pairs - ref_pairs).norm() / ref_pairs.norm()) < 1e-12
    # D(X) is the pairs contracted with X, off-diagonal pairs counted twice
    w = torch.where(iu == ju, 1.0, 2.0).to(F64) * X[iu, ju]
    assert float((w @ pairs - D).norm() / D.norm()) < 1e-12
    # a rank-one X gives the Lemma 2 product d3(v, v)
    c = torch.tensor([0.6, 0.0, 0.8], dtype=F64)
    v = c @ U
    assert float((p.d3_form(U, torch.outer(c, c)) - p.d3(v, v)).norm() / p.d3(v, v).norm()) < 1e-12
    # zero X: zero vector
    assert float(p.d3_form(U, torch.zeros(k, k)).norm()) == 0.0


def test_d3_block_with_chunks_equals_unchunked():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    x, y = torch.randn(9, 3, dtype=F64), torch.randn(9, 2, dtype=F64)
    whole = Objective.from_module(model, x, y, "mse")
    chunked = Objective.from_module(model, x, y, "mse", chunk_size=4, cache_graphs=False)
    U = torch.linalg.qr(torch.randn(whole.dim, 2, dtype=F64))[0].T
    X = torch.tensor([[1.0, 0.3], [0.3, -0.5]], dtype=F64)
    a, b = whole.at(whole.theta0), chunked.at(chunked.theta0)
    assert float((a.d3_form(U, X) - b.d3_form(U, X)).norm() / a.d3_form(U, X).norm()) < 1e-12
    assert float((a.d3_pairs(U) - b.d3_pairs(U)).norm() / a.d3_pairs(U).norm()) < 1e-12
