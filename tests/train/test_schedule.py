"""gd_run (Figure 6's path): a constant step is plain GD; η_t = 1/S(θ_t) follows the measured sharpness."""

import math

import pytest
import torch

from selfstab import ConfigError, DivergenceError, Objective
from selfstab.train import gd_run

F64 = torch.float64


def _quartic():
    """L(θ) = ¼ Σ c_i θ_i⁴ + ½ θᵀAθ: a Hessian that changes along the run, known in closed form."""
    A = torch.tensor([[2.0, 0.3, 0.0], [0.3, 1.0, 0.1], [0.0, 0.1, 0.5]], dtype=F64)
    c = torch.tensor([1.0, 0.5, 2.0], dtype=F64)

    def loss(t):
        return 0.25 * (c * t ** 4).sum() + 0.5 * t @ A @ t

    def hessian(t):
        return A + torch.diag(3 * c * t ** 2)

    return Objective.from_function(loss, torch.tensor([1.0, -0.8, 0.6], dtype=F64)), loss, hessian


def test_constant_schedule_is_plain_gd_and_records_every_step():
    obj, loss, _ = _quartic()
    records = []
    last = gd_run(obj, 0.1, 30, measure_every=7, on_record=records.append)
    theta = obj.theta0.clone()
    for t in range(30):
        g = torch.func.grad(loss)(theta)
        assert records[t]["loss"] == pytest.approx(float(loss(theta)), rel=1e-13)
        assert records[t]["lr"] == 0.1
        theta = theta - 0.1 * g
    assert torch.allclose(last, theta, rtol=0, atol=1e-13)
    assert [r["step"] for r in records] == list(range(31))
    assert [r["step"] for r in records if "sharpness" in r] == [0, 7, 14, 21, 28, 30]


def test_inverse_sharpness_schedule_uses_one_over_the_dense_sharpness():
    obj, loss, hessian = _quartic()
    records = []
    gd_run(obj, 0.05, 12, schedule="inverse_sharpness", measure_every=4, on_record=records.append)
    theta = obj.theta0.clone()
    step = None
    for r in records[:-1]:
        if r["step"] % 4 == 0:   # measured here: the dense top eigenvalue sets η_t until the next check
            s = float(torch.linalg.eigvalsh(hessian(theta))[-1])
            assert r["sharpness"] == pytest.approx(s, rel=1e-8)
            step = 1.0 / s
        assert r["lr"] == pytest.approx(step, rel=1e-8)
        theta = theta - step * torch.func.grad(loss)(theta)
    assert not math.isnan(records[-1]["sharpness"])


def test_bad_input_and_divergence_keep_the_history():
    obj, _, _ = _quartic()
    with pytest.raises(ConfigError, match="schedule"):
        gd_run(obj, 0.1, 3, schedule="cosine")
    with pytest.raises(ConfigError, match="lr"):
        gd_run(obj, -0.1, 3)
    records = []
    with pytest.raises(DivergenceError):
        gd_run(obj, 5.0, 200, on_record=records.append)
    last = records[-1]["loss"]   # the step that diverged was recorded before the error
    assert len(records) > 1 and (not math.isfinite(last) or last > 1e3 * records[0]["loss"])
