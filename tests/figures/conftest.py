"""Synthetic run directories for the figure tests: tracked series that follow eq. (3)
(``simplified_dynamics``), GD oscillating around θ† as the theory says, with small made-up deviations,
a NaN gap, sparse diagnostics and, on request, only some of the processes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from selfstab.records import RunDir, load_run
from selfstab.theory import simplified_dynamics

ALL = ("train", "gd", "predicted", "generalized", "constrained", "flow", "diagnostics", "cost")
ONSET = 120


def make_run(path, lr=0.02, steps=200, processes=ALL, schedule="constant", alpha=10.0, beta=10.0):
    """A run directory whose tracked series follow eq. (3) from x₀ = 0.05, the edge at step ONSET."""
    cfg = {"seed": 0, "model": {"name": "mlp", "width": 16}, "data": {"name": "digits"}, "loss": "mse",
           "lr": lr, "train": {"schedule": schedule}, "track": {"steps": steps, "stop_lambda2": 1.9}}
    rd = RunDir.create(path, cfg)
    x, y = simplified_dynamics(alpha, beta, lr, 0.05, 0.0, steps)
    t = np.arange(steps + 1)
    l_dag = 0.3 * np.exp(-t / 500)
    pred_loss, pred_s = l_dag + x**2 / lr, 2 / lr + y + 0.5 * x
    gd_loss, gd_s = pred_loss * (1 + 0.01 * np.sin(t)), pred_s + 0.05 * np.cos(t)
    gd_s_avg2 = np.insert((gd_s[:-1] + gd_s[1:]) / 2, 0, np.nan)   # as recorded: (S_{t-1} + S_t)/2
    lam2 = (1.5 + 0.3 * t / steps) / lr
    if "train" in processes:
        rec = rd.recorder("train")
        for s in range(ONSET + 1):
            measured = s % 10 == 0 or s == ONSET
            sharp = 2 / lr * (0.3 + 0.7 * s / ONSET) * (1.001 if s == ONSET else 1.0)
            rec.append(s, loss=2 * math.exp(-s / 60), grad_norm=1.0, lr=lr if schedule == "constant" else 1 / sharp,
                       sharpness=sharp if measured else None, test_loss=1.0 if measured else None,
                       test_accuracy=0.5 + 0.3 * s / ONSET if measured else None)
    for s in t:
        gap = 50 <= s <= 52  # a few steps with nothing measured
        if "gd" in processes:
            rd.recorder("gd").append(s, loss=np.nan if gap else gd_loss[s], sharpness=gd_s[s],
                                     sharpness_avg2=gd_s_avg2[s], dist_constrained=math.hypot(x[s], 0.01))
        if "predicted" in processes:
            rd.recorder("predicted").append(s, x=x[s], y=y[s], v_norm=abs(x[s]), loss=pred_loss[s],
                                            sharpness=pred_s[s], dist_gd=1e-3 * abs(x[s]))
        if "generalized" in processes:
            rd.recorder("generalized").append(s, x=0.99 * x[s], y=y[s], v_norm=0.99 * abs(x[s]),
                                              loss=l_dag[s] + (0.99 * x[s]) ** 2 / lr, sharpness=pred_s[s] - 0.1)
        if "constrained" in processes:
            rd.recorder("constrained").append(s, loss=l_dag[s], sharpness=2 / lr, alpha=alpha, beta=beta,
                                              delta=math.sqrt(2 * alpha / beta), epsilon=lr * math.sqrt(alpha),
                                              proj_steps=3)
        if "flow" in processes:
            rd.recorder("flow").append(s, time=lr * s, loss=0.9 * l_dag[s], sharpness=2 / lr + 0.1 * s,
                                       dist_gd=0.01 * s, dist_constrained=0.01 * s, nfev=10)
        if "diagnostics" in processes and s % 20 == 0:
            rd.recorder("diagnostics").append(
                s, alpha=alpha, epsilon=lr * math.sqrt(alpha), grad_alignment=0.9, gradS_perp_over_rho3=0.3,
                rho4_over_eta_rho3sq=2.0, ratio_d3_v=0.1, ratio_d3_g=np.nan if s == 40 else 0.2, ratio_d2_v=0.05,
                lambda2=lam2[s], eig_0=2 / lr, eig_1=lam2[s], eig_2=1.0 / lr)
        if "cost" in processes:
            rd.recorder("cost").append(s, hvps=20, grads=5, d3=4, seconds=0.01)
    rd.flush()
    rd.write_summary({"lr": lr, "onset_step": ONSET if "train" in processes else None,
                      "onset_sharpness": 2 / lr * 1.001 if "train" in processes else None,
                      "stop_reason": "steps", "tracked_steps": steps})
    return load_run(path)


@pytest.fixture(name="make_run", scope="session")
def _make_run():
    """The :func:`make_run` factory (the edge at step ``ONSET``)."""
    return make_run


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    return [make_run(root / "lr0.02", lr=0.02), make_run(root / "lr0.01", lr=0.01)]


# A tiny real problem that reaches the edge in a few steps (as in tests/test_cli.py).
TINY = ["--data.name", "synthetic", "--data.n", "64", "--data.n_test", "32", "--model.width", "8", "--lr", "0.5",
        "--quiet", "--track.diagnostics_every", "5", "--track.checkpoint_every", "4", "--track.stop_lambda2", "50"]


@pytest.fixture(scope="session")
def tracked_run(tmp_path_factory):
    """A real run (``selfstab run`` on TINY, 8 tracked steps), figures drawn by the run command."""
    from selfstab.cli.main import main

    out = tmp_path_factory.mktemp("tracked") / "run"
    assert main(["run", "--out", str(out), "--track.steps", "8", *TINY]) == 0
    return load_run(out)
