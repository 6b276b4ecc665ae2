"""The central-flow figure ("c") and Figure 5 on a run that tracked several unstable eigenvalues."""

import numpy as np
import pytest

from selfstab.figures import registry
from selfstab.figures.assumptions import make_figure5
from selfstab.figures.central import make_central
from selfstab.figures.style import pyplot
from selfstab.records.series import moving_average
from selfstab.records import RunDir, load_run

LR = 0.4
STEPS = 60
CROSS2, CROSS3 = 20, 45   # steps at which λ₂ and λ₃ of θ†_k reach 2/η


def _several_run(path, central=True):
    cfg = {"lr": LR, "track": {"steps": STEPS, "stop_lambda2": 1.9, "lambda2_rule": "auto",
                               "processes": ["gd", "constrained", "predicted", "flow", "central", "kconstrained"]}}
    rd = RunDir.create(path, cfg)
    t = np.arange(STEPS)
    gd_loss = 0.2 * np.exp(-t / 80) * (1 + 0.1 * np.sin(2.5 * t))
    k_crit = 1 + (t >= CROSS2) + (t >= CROSS3)
    edge = 2 / LR
    for s in t:
        lam2 = min(edge, edge * (0.9 + 0.1 * s / CROSS2))
        lam3 = min(edge, edge * (0.8 + 0.2 * s / CROSS3))
        rd.recorder("gd").append(int(s), loss=gd_loss[s], sharpness=edge)
        rd.recorder("flow").append(int(s), loss=0.9 * gd_loss[s], dist_gd=0.01 * (s + 1))
        if central:
            rd.recorder("central").append(int(s), loss=0.19 * np.exp(-s / 80), predicted_loss=0.2 * np.exp(-s / 80),
                                          k_crit=float(k_crit[s]), x_rank=float(max(0, k_crit[s] - 1)),
                                          dist_gd=1e-3 * (s + 1), lambda_1=edge, lambda_2=lam2, lambda_3=lam3)
        rd.recorder("kconstrained").append(int(s), loss=0.18, dist_gd=0.002 * (s + 1), lambda_1=edge,
                                           lambda_2=lam2, lambda_3=lam3)
    rd.flush()
    rd.write_summary({"lr": LR, "stop_reason": "steps", "tracked_steps": STEPS})
    return load_run(path), gd_loss, k_crit


def test_central_figure_draws_every_series(tmp_path):
    run, gd_loss, k_crit = _several_run(tmp_path / "r")
    fig = make_central(run)
    ax_loss, ax_k, ax_d = fig.axes[:3]
    lines = {line.get_label(): line for line in ax_loss.lines}
    np.testing.assert_allclose(lines["GD loss"].get_ydata(), gd_loss)
    avg = lines["GD loss, 10-step moving average"].get_ydata()
    ref = np.full(STEPS, np.nan)
    for i in range(STEPS):        # centred 10-step window: steps i−5 … i+4
        if i - 5 >= 0 and i + 4 < STEPS:
            ref[i] = gd_loss[i - 5:i + 5].mean()
    np.testing.assert_allclose(avg, ref, equal_nan=True, rtol=1e-12)
    pred = [line for label, line in lines.items() if "prediction" in label]
    assert len(pred) == 1 and np.allclose(pred[0].get_ydata(), 0.2 * np.exp(-np.arange(STEPS) / 80))
    k_lines = {line.get_label().split(":")[0]: line for line in ax_k.lines}
    np.testing.assert_array_equal(k_lines["$k_{crit}$"].get_ydata(), k_crit)
    np.testing.assert_array_equal(k_lines["rank$(X)$"].get_ydata(), np.maximum(0, k_crit - 1))
    d = {line.get_label(): line for line in ax_d.lines}
    assert len(d) == 3 and ax_d.get_yscale() == "log"
    flow = next(line for label, line in d.items() if "gradient flow" in label)
    np.testing.assert_allclose(flow.get_ydata(), 0.01 * (np.arange(STEPS) + 1))
    kc = next(line for label, line in d.items() if "constrained)" in label)
    np.testing.assert_allclose(kc.get_ydata(), 0.002 * (np.arange(STEPS) + 1))
    pyplot().close(fig)


def test_central_figure_is_registered_and_needs_central_records(tmp_path):
    run, _, _ = _several_run(tmp_path / "with")
    assert "c" in registry.available(run)
    without, _, _ = _several_run(tmp_path / "without", central=False)
    assert "central" in registry.missing("c", without)
    paths = registry.draw_figures(run, "c", tmp_path / "out")
    assert {p.name for p in paths} == {"central.png", "central.pdf"}


def test_figure5_marks_each_eigenvalue_of_the_critical_block_where_it_becomes_unstable(tmp_path):
    run, _, _ = _several_run(tmp_path / "r")
    fig = make_figure5(run)
    ax = fig.axes[0]
    by_label = {line.get_label(): line for line in ax.lines}
    for i, at in ((2, CROSS2), (3, CROSS3)):
        vertical = by_label[rf"$\lambda_{{{i}}}$ reaches $2/\eta$ (step {at})"]
        assert set(vertical.get_xdata()) == {at}
        series = by_label[rf"$\lambda_{{{i}}}(\theta^\dagger_{{k,t}})$"]
        assert len(series.get_xdata()) == STEPS        # every step, from the block of θ†_k
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert r"single-eigenvalue theory flagged: $\lambda_2 = 1.9/\eta$" in labels
    pyplot().close(fig)


def test_moving_average_is_centred_and_leaves_the_ends_empty():
    import pandas as pd

    s = pd.Series(np.arange(20, dtype=float))
    avg = moving_average(s)
    assert avg.isna().sum() == 9 and avg[5] == pytest.approx(np.arange(10).mean())
