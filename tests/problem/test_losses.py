"""The loss conventions of docs/theory.md §1 against values computed by hand.

Each case goes through the whole objective: a model that returns its inputs
times a scalar parameter w = 1, so ``obj.loss(theta0)`` is the mean of the
per-example losses of the written-out outputs.
"""

import math

import pytest
import torch
from torch import nn

from selfstab.errors import ConfigError
from selfstab.problem import Objective
from selfstab.problem.data import encode_targets
from selfstab.problem.losses import LOSSES


class Scale(nn.Module):
    """f(x) = w·x with w = 1: the outputs are the inputs."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones((), dtype=torch.float64))

    def forward(self, x):
        return self.w * x


def loss_value(outputs, targets, loss):
    out = torch.tensor(outputs, dtype=torch.float64)
    obj = Objective.from_module(Scale(), out, targets, loss)
    return float(obj.loss(obj.theta0))


def test_mse_sums_outputs_without_half():
    # (1−1)² + (2−0)² = 4 and (0−0)² + (−1−1)² = 4: mean 4.
    targets = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    assert loss_value([[1.0, 2.0], [0.0, -1.0]], targets, "mse") == pytest.approx(4.0, rel=1e-15)


def test_half_mse_is_half_of_mse():
    targets = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    assert loss_value([[1.0, 2.0], [0.0, -1.0]], targets, "half_mse") == pytest.approx(2.0, rel=1e-15)


def test_binary_mse_with_one_output_and_pm1_targets():
    # (0.5 − 1)² = 0.25 and (−2 − (−1))² = 1: mean 0.625.
    targets = torch.tensor([1.0, -1.0], dtype=torch.float64)
    assert loss_value([[0.5], [-2.0]], targets, "mse") == pytest.approx(0.625, rel=1e-15)


def test_cross_entropy():
    # Logits (0, ln 2, ln 5), class 2: −ln(5/8) = ln 1.6.  Logits (0, 0, 0), class 0: ln 3.
    outputs = [[0.0, math.log(2), math.log(5)], [0.0, 0.0, 0.0]]
    expected = (math.log(1.6) + math.log(3)) / 2
    assert loss_value(outputs, torch.tensor([2, 0]), "ce") == pytest.approx(expected, rel=1e-14)


def test_logistic():
    # log(1 + e^{−y f}): y=1, f=0 → ln 2;  y=−1, f=ln 3 → ln 4;  y=1, f=−ln 3 → ln 4.  Mean 5 ln 2 / 3.
    outputs = [[0.0], [math.log(3)], [-math.log(3)]]
    targets = torch.tensor([1.0, -1.0, 1.0], dtype=torch.float64)
    assert loss_value(outputs, targets, "logistic") == pytest.approx(5 * math.log(2) / 3, rel=1e-14)


def test_logistic_does_not_overflow():
    out = torch.tensor([[800.0], [-800.0]], dtype=torch.float64)
    values = LOSSES["logistic"](out, torch.tensor([-1.0, -1.0], dtype=torch.float64))
    assert values.tolist() == pytest.approx([800.0, 0.0])


def test_targets_that_do_not_fit_the_loss_are_refused():
    out = [[0.1, 0.2, 0.3], [0.3, 0.2, 0.1]]
    with pytest.raises(ConfigError, match="integer class indices"):
        loss_value(out, torch.tensor([0, 2]), "mse")
    with pytest.raises(ConfigError, match="'ce' needs integer class indices"):
        loss_value(out, torch.eye(3, dtype=torch.float64)[[0, 2]], "ce")
    with pytest.raises(ConfigError, match=r"\+1 or -1"):
        loss_value([[0.1], [0.2]], torch.tensor([0.0, 1.0], dtype=torch.float64), "logistic")


def test_encode_targets_follows_the_spec_conventions():
    y = torch.tensor([0, 2, 1])
    assert torch.equal(encode_targets(y, "multiclass", "mse", 3), torch.eye(3)[[0, 2, 1]])
    assert torch.equal(encode_targets(y, "multiclass", "ce", 3), y)
    b = torch.tensor([0, 1, 1])
    for loss in ("mse", "half_mse", "logistic"):
        assert encode_targets(b, "binary", loss).tolist() == [-1.0, 1.0, 1.0]
    assert torch.equal(encode_targets(b, "binary", "ce"), b)
    r = torch.tensor([0.5, -1.5])
    assert torch.equal(encode_targets(r, "regression", "half_mse"), r)
    with pytest.raises(ConfigError, match="'logistic' is for binary tasks"):
        encode_targets(y, "multiclass", "logistic", 3)
    with pytest.raises(ConfigError, match="regression; use mse or half_mse"):
        encode_targets(r, "regression", "ce")
    with pytest.raises(ConfigError, match="class indices must lie in"):
        encode_targets(torch.tensor([0, 3]), "multiclass", "mse", 3)
