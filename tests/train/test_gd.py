"""GD to the edge of stability: stability on a quadratic, the exact onset step, divergence, bad input."""

import math

import pytest
import torch
from torch import nn

from selfstab import ConfigError, DivergenceError, Objective
from selfstab.train import EdgeNotReachedWarning, gd_to_edge

F64 = torch.float64


def _quadratic(eigs):
    A = torch.diag(torch.tensor(eigs, dtype=F64))
    return Objective.from_function(lambda t: 0.5 * t @ A @ t, torch.ones(len(eigs), dtype=F64))


@pytest.mark.parametrize("factor,stable", [(0.99, True), (1.01, False)])
def test_quadratic_gd_is_stable_iff_lr_below_two_over_S(factor, stable):
    S = 4.0
    obj = _quadratic([S, 1.0, 0.25])
    lr = factor * 2 / S
    theta = obj.theta0
    for _ in range(2000):
        theta = theta - lr * obj.grad(theta)
    # along the top direction |1 − ηS|^t: shrinks iff η < 2/S
    assert (float(theta[0].abs()) < 1e-3) == stable
    assert math.isclose(float(theta[0]), (1 - lr * S) ** 2000, rel_tol=1e-9)


def _growing_sharpness(lr, slope, s0):
    """L(x, z) = ½ (s0 + z) x² − slope·z.  From x = 0, x stays 0 and z_t = η·slope·t, so the Hessian is
    diag(s0 + z, 0): the midpoint sharpness at step t is s0 + η·slope·(t + ½), known in closed form."""
    return Objective.from_function(lambda t: 0.5 * (s0 + t[1]) * t[0] ** 2 - slope * t[1],
                                   torch.zeros(2, dtype=F64))


@pytest.mark.parametrize("lr,slope,s0,every", [(0.1, 0.37, 1.0, (50, 10, 2)), (0.05, 3.3, 2.0, (7, 3, 1)),
                                                (0.1, 0.37, 1.0, (1, 1, 1))])
def test_onset_is_the_exact_first_step_past_the_edge(lr, slope, s0, every):
    obj = _growing_sharpness(lr, slope, s0)
    expected = math.ceil((2 / lr - s0) / (lr * slope) - 0.5)   # first t with s0 + η·slope·(t+½) ≥ 2/η
    records = []
    res = gd_to_edge(obj, lr, every=every, on_record=records.append)
    assert res.reached and res.step == expected
    assert res.sharpness >= 2 / lr > s0 + lr * slope * (expected - 0.5)
    assert math.isclose(float(res.theta0[1]), lr * slope * expected, rel_tol=1e-12)
    assert [r["step"] for r in records] == list(range(expected + 1))   # every step, in order, none past θ₀
    assert records[-1]["sharpness"] == res.sharpness


def test_onset_on_an_mlp_matches_brute_force():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 8), nn.SiLU(), nn.Linear(8, 8), nn.SiLU(), nn.Linear(8, 1))
    x = torch.randn(32, 3)
    y = torch.sin(2 * x[:, :1]) * torch.cos(x[:, 1:2])
    obj = Objective.from_module(model, x, y, "mse", dtype="float64")
    lr = 0.6
    theta, brute = obj.theta0, None
    eye = torch.eye(obj.dim, dtype=F64)
    for t in range(3000):   # reference: dense Hessian (HVPs are tested against torch.func) at every midpoint
        nxt = theta - lr * obj.grad(theta)
        mid = 0.5 * (theta + nxt)
        H = obj.hvp(mid, eye)
        if float(torch.linalg.eigvalsh(H)[-1]) >= 2 / lr:
            brute = t
            break
        theta = nxt
    assert brute is not None and brute > 30   # several sparse checks happen first
    res = gd_to_edge(obj, lr, every=(25, 5, 2))
    assert res.step == brute
    assert torch.allclose(res.theta0, theta, rtol=0, atol=1e-12)


def test_divergence_stops_with_lr_and_keeps_history():
    # L = θ⁴/4 from θ = 2 with η = 0.6: the first midpoint is at −0.4 (sharpness 0.48 < 2/η, no edge),
    # but ηθ² > 2 so the iterates blow up: 2 → −2.8 → 10.4 → …
    obj = Objective.from_function(lambda t: 0.25 * t.pow(4).sum(), torch.tensor([2.0], dtype=F64))
    records = []
    with pytest.raises(DivergenceError, match=r"diverged at step \d+ with learning rate η = 0.6") as info:
        gd_to_edge(obj, 0.6, every=(1000, 1000, 1000), on_record=records.append, max_steps=10000)
    assert "\n" not in str(info.value)
    assert len(records) == info.value.step + 1 and records[-1]["step"] == info.value.step


@pytest.mark.parametrize("lr", [0, -0.1, float("nan"), "fast"])
def test_non_positive_lr_is_a_one_line_error(lr):
    with pytest.raises(ConfigError, match="lr: the learning rate must be"):
        gd_to_edge(_quadratic([1.0]), lr)


def test_not_reached_within_max_steps():
    obj = _growing_sharpness(0.1, 0.37, 1.0)
    with pytest.warns(EdgeNotReachedWarning, match="did not reach 2/η = 20 within max_steps = 100"):
        res = gd_to_edge(obj, 0.1, max_steps=100)
    assert not res.reached and res.step == 100
    assert math.isclose(float(res.theta0[1]), 0.1 * 0.37 * 100, rel_tol=1e-12)


def test_the_progress_bar_shows_no_sharpness_that_the_past_the_edge_error_contradicts():
    """§4.8: `train --lr 50` showed S=1591 (the midpoint of a wild first step) just before the error said
    S(θ_init) = 2.734; the refusal comes before the step is shown."""
    torch.manual_seed(0)
    x, y = torch.randn(40, 5), torch.randn(40, 3)
    obj = Objective.from_module(nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, 3)), x, y, "mse", dtype=F64)
    shown = []
    with pytest.raises(ConfigError, match="past the edge") as info:
        gd_to_edge(obj, 50.0, progress=lambda t, rec: shown.append(rec.get("sharpness")))
    assert all(s is None or f"{s:.4g}" in str(info.value) for s in shown), (shown, str(info.value))
