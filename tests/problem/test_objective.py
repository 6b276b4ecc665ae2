"""Objective against independent references: torch.func dense derivatives and finite differences (float64)."""

import pytest
import torch
from torch import nn
from torch.func import grad

from references import dense_hessian, fd_d3, module_function, rel
from selfstab import ConfigError, Objective

F64 = torch.float64


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), nn.SiLU(), nn.Linear(6, 6), nn.SiLU(), nn.Linear(6, 3)), \
        torch.randn(23, 4), torch.randn(23, 3)


def _cnn():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.SiLU(), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(8, 3))
    return model, torch.randn(11, 1, 4, 4), torch.randn(11, 3)


def _layernorm():
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(3, 5), nn.LayerNorm(5), nn.Tanh(), nn.Linear(5, 2))
    return model, torch.randn(9, 3), torch.randn(9, 2)


def _function():
    torch.manual_seed(3)
    A = torch.randn(5, 5, dtype=F64)

    def f(t):  # a hand-written non-quadratic function: exact third derivatives are non-trivial
        return torch.log1p((A @ t).pow(2).sum()) + (t.sin() * t.cos()).sum() + 0.1 * t.pow(4).sum()

    return f, torch.randn(5, dtype=F64)


CASES = ["mlp", "cnn", "layernorm", "function"]


def _build(case, chunk_size=None):
    """(objective, a pure reference function of the flat θ built without selfstab's machinery)."""
    if case == "function":
        f, t0 = _function()
        return Objective.from_function(f, t0), f
    model, x, y = {"mlp": _mlp, "cnn": _cnn, "layernorm": _layernorm}[case]()
    model = model.double()
    x, y = x.double(), y.double()
    obj = Objective.from_module(model, x, y, "mse", chunk_size=chunk_size)
    # torch.func on the original module (the fused LayerNorm is fine to second order)
    return obj, module_function(model, x, lambda out: (out - y).pow(2).sum(dim=1).mean())


@pytest.mark.parametrize("case", CASES)
def test_grad_and_hvp_equal_dense_torch_func(case):
    obj, ref = _build(case)
    theta = obj.theta0 + 0.05 * torch.randn(obj.dim, dtype=F64)
    assert torch.allclose(obj.loss(theta), ref(theta), rtol=1e-13, atol=0)
    assert rel(obj.grad(theta), grad(ref)(theta)) < 1e-12
    if case == "layernorm":
        # torch.func's transforms of the fused layer_norm's double backward are ~3% off (torch 2.13,
        # both jacfwd∘jacrev and jacrev∘jacrev); plain autograd row by row is right, so use it here.
        H = torch.autograd.functional.hessian(ref, theta)
    else:
        H = dense_hessian(ref, theta)
    V = torch.randn(3, obj.dim, dtype=F64)
    assert rel(obj.hvp(theta, V[0]), H @ V[0]) < 1e-12
    assert rel(obj.hvp(theta, V), V @ H) < 1e-12          # batched
    point = obj.at(theta)                                   # shared graph gives the same numbers
    assert rel(point.hvp(V), V @ H) < 1e-12 and rel(point.grad, grad(ref)(theta)) < 1e-12


@pytest.mark.parametrize("case", CASES)
def test_d3_equals_finite_difference_of_hvp(case):
    obj, _ = _build(case)
    theta = obj.theta0 + 0.05 * torch.randn(obj.dim, dtype=F64)
    u, v = torch.randn(obj.dim, dtype=F64), torch.randn(obj.dim, dtype=F64)
    fd = fd_d3(obj.hvp, theta, u, v, h=2e-4)  # 4-point stencil: truncation O(h⁴), rounding O(ε/h)
    assert rel(obj.d3(theta, u, v), fd) < 1e-7
    assert rel(obj.d3(theta, u, v), obj.d3(theta, v, u)) < 1e-12   # symmetric


@pytest.mark.parametrize("case", ["mlp", "cnn", "layernorm"])
@pytest.mark.parametrize("chunk", [1, 4, 7])
def test_chunking_does_not_change_values(case, chunk):
    whole, _ = _build(case)
    parts, _ = _build(case, chunk_size=chunk)
    assert parts.n_chunks > 1
    theta = whole.theta0 + 0.05 * torch.randn(whole.dim, dtype=F64)
    v, u = torch.randn(whole.dim, dtype=F64), torch.randn(whole.dim, dtype=F64)
    assert abs(float(whole.loss(theta) - parts.loss(theta))) <= 1e-14 * float(whole.loss(theta))
    assert rel(parts.grad(theta), whole.grad(theta)) < 1e-13
    assert rel(parts.hvp(theta, v), whole.hvp(theta, v)) < 1e-13
    assert rel(parts.d3(theta, u, v), whole.d3(theta, u, v)) < 1e-13


def test_dtype_conversion_and_weight_decay():
    model, x, y = _mlp()
    obj32 = Objective.from_module(model, x, y, "mse")
    assert obj32.dtype == torch.float32
    obj64 = obj32.to(torch.float64)
    assert obj64.dtype == F64 and obj64.theta0.dtype == F64
    assert abs(float(obj32.loss(obj32.theta0)) - float(obj64.loss(obj64.theta0))) < 1e-5
    wd = Objective.from_module(model, x, y, "mse", dtype="float64", weight_decay=0.3)
    t = obj64.theta0
    assert torch.allclose(wd.loss(t), obj64.loss(t) + 0.15 * t.pow(2).sum(), rtol=1e-14)
    v = torch.randn(obj64.dim, dtype=F64)
    assert rel(wd.hvp(t, v), obj64.hvp(t, v) + 0.3 * v) < 1e-13


def test_counts_tally_evaluations():
    obj, _ = _build("mlp")
    point = obj.at(obj.theta0)
    point.hvp(torch.randn(4, obj.dim, dtype=F64))
    point.grad
    point.d3(obj.theta0, obj.theta0)
    assert obj.counts["grad"] == 1 and obj.counts["hvp"] == 4 and obj.counts["d3"] == 1


@pytest.mark.parametrize("kind,match", [
    ("loss", "loss: unknown loss 'msee'"),
    ("shape", "inputs: 5 examples but targets have 23"),
    ("batchnorm", "GroupNorm or LayerNorm"),
    ("targets", "one-hot"),
    ("inputs", "the model failed on the inputs of shape"),
])
def test_bad_input_gives_one_line_error(kind, match):
    model, x, y = _mlp()
    with pytest.raises(ConfigError, match=match) as info:
        if kind == "loss":
            Objective.from_module(model, x, y, "msee")
        elif kind == "shape":
            Objective.from_module(model, x[:5], y, "mse")
        elif kind == "batchnorm":
            Objective.from_module(nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3)), x, y, "mse")
        elif kind == "targets":
            Objective.from_module(model, x, torch.zeros(23, dtype=torch.long), "mse")
        else:
            Objective.from_module(model, torch.randn(23, 7), y, "mse")
    assert "\n" not in str(info.value)
