"""The whole tracking machinery on the Appendix B toy model, where the theory is exact (docs/theory.md §8)."""

import math

import numpy as np
import pytest
import torch

from selfstab import Objective
from selfstab.processes import Lockstep, default_processes, track
from selfstab.theory import simplified_dynamics, toy_objective

CASES = [(1.0, 1.0, 0.01, 0.1), (0.5, 4.0, 0.02, 0.05)]


@pytest.fixture(scope="module", params=CASES, ids=lambda c: f"alpha{c[0]}-beta{c[1]}-lr{c[2]}")
def toy_run(request):
    alpha, beta, lr, x0 = request.param
    obj = toy_objective(alpha, beta, lr, x0=x0)
    ls = Lockstep(obj, lr, default_processes(flow=False)).start(obj.theta0)
    thetas_c = [ls.ctx.here.theta.clone()]
    records = {}
    for t in range(500):
        rec = ls.step()
        for k, v in rec.items():
            records.setdefault(k, []).append(v)
        thetas_c.append(ls.ctx.here.theta.clone())
    x, y = simplified_dynamics(alpha, beta, lr, x0, 0.0, 500)
    return request.param, records, torch.stack(thetas_c), x, y


def _col(records, process, field):
    return np.array([r[field] for r in records[process]])


def test_gd_follows_eq3_exactly(toy_run):
    (alpha, beta, lr, x0), rec, _, x, y = toy_run
    # GD's displacement from θ† = (0, 0, z) along u = e_x and ∇S⊥ = √β e_y is eq. (3)'s (x, y) (Appendix B)
    assert np.abs(_col(rec, "gd", "x") - x[:500]).max() < 1e-12 * max(1, np.abs(x).max())
    assert np.abs(_col(rec, "gd", "y") - y[:500]).max() < 1e-12 * max(1, np.abs(y).max())
    assert np.abs(x).max() > 10 * x0   # the window holds a real blow-up, not just small oscillations


def test_constrained_trajectory_keeps_x_and_y_at_zero(toy_run):
    (alpha, beta, lr, _), rec, thetas_c, _, _ = toy_run
    assert float(thetas_c[:, :2].abs().max()) < 1e-12
    # it moves only along z, by η per step (∂L/∂z = −1)
    assert torch.allclose(thetas_c[:, 2], lr * torch.arange(501, dtype=torch.float64), atol=1e-12)
    assert np.abs(_col(rec, "constrained", "sharpness") - 2 / lr).max() < 1e-9


def test_predicted_dynamics_equal_gd(toy_run):
    (alpha, beta, lr, _), rec, _, x, y = toy_run
    for name in ("predicted", "generalized"):
        assert _col(rec, name, "dist_gd").max() < 1e-10
        assert np.abs(_col(rec, name, "x") - x[:500]).max() < 1e-10
        assert np.abs(_col(rec, name, "y") - y[:500]).max() < 1e-10
    # Theorem 1's loss L(θ†) + x²/η misses exactly ½ y x² − (α/β) y on the toy (y in eq. (3)'s units)
    gd_loss, pred_loss = _col(rec, "gd", "loss"), _col(rec, "predicted", "loss")
    xs, ys = x[:500], y[:500]
    assert np.abs(gd_loss - pred_loss - (0.5 * ys * xs ** 2 - alpha / beta * ys)).max() < 1e-9 * np.abs(gd_loss).max()


def test_alpha_beta_delta_equal_closed_forms(toy_run):
    (alpha, beta, lr, _), rec, _, _, _ = toy_run
    assert np.allclose(_col(rec, "constrained", "alpha"), alpha, rtol=1e-12)
    assert np.allclose(_col(rec, "constrained", "beta"), beta, rtol=1e-12)
    assert np.allclose(_col(rec, "constrained", "delta"), math.sqrt(2 * alpha / beta), rtol=1e-12)
    assert np.allclose(_col(rec, "constrained", "epsilon"), lr * math.sqrt(alpha), rtol=1e-12)


def test_negative_alpha_is_recorded_not_nan_flowing():
    # α < 0 (sharpness decreasing): δ is missing (NaN, flagged), but x, y, v stay finite
    lr, alpha = 0.01, -0.5
    obj = Objective.from_function(lambda t: 0.5 * (2 / lr + t[1]) * t[0] ** 2 - alpha * t[1] - t[2],
                                  torch.tensor([0.01, 0.0, 0.0], dtype=torch.float64))
    res = track(obj, obj.theta0, lr, 50, flow=False)
    c, p = res.frames()["constrained"], res.frames()["predicted"]
    assert c["delta"].isna().all() and (c["alpha_nonpositive"] == 1).all()
    assert np.isfinite(p[["x", "y", "v_norm", "loss", "sharpness"]].to_numpy()).all()
    assert res.stop_reason.startswith("steps")
