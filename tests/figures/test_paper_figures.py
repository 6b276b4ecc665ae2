"""The paper's figures from synthetic run directories: files, panels, gaps, half-finished runs, the CLI.

The synthetic runs follow eq. (3) (``simplified_dynamics``): GD oscillates around θ† as the theory
says, with small made-up deviations, a NaN gap, and a second learning rate.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from selfstab.cli.main import main
from selfstab.figures import paper
from selfstab.figures.style import pyplot, two_step_average
from selfstab.records import RunDir, load_run
from selfstab.theory import simplified_dynamics

ALL = ("train", "gd", "predicted", "generalized", "constrained", "flow", "diagnostics", "cost")
ONSET = 120


def make_run(path, lr=0.02, steps=200, processes=ALL, schedule="constant", alpha=10.0, beta=10.0):
    """A run directory whose tracked series follow eq. (3) from x₀ = 0.05, the edge at step ONSET."""
    cfg = {"seed": 0, "model": {"name": "mlp", "width": 16}, "data": {"name": "digits"}, "loss": "mse",
           "train": {"lr": lr, "schedule": schedule}, "track": {"steps": steps, "stop_lambda2": 1.9}}
    rd = RunDir.create(path, cfg)
    x, y = simplified_dynamics(alpha, beta, lr, 0.05, 0.0, steps)
    t = np.arange(steps + 1)
    l_dag = 0.3 * np.exp(-t / 500)
    pred_loss, pred_s = l_dag + x**2 / lr, 2 / lr + y + 0.5 * x
    gd_loss, gd_s = pred_loss * (1 + 0.01 * np.sin(t)), pred_s + 0.05 * np.cos(t)
    gd_s_avg2 = np.append((gd_s[:-1] + gd_s[1:]) / 2, np.nan)
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
                                              lambda2=lam2[s], proj_steps=3)
        if "flow" in processes:
            rd.recorder("flow").append(s, time=lr * s, loss=0.9 * l_dag[s], sharpness=2 / lr + 0.1 * s,
                                       dist_gd=0.01 * s, dist_constrained=0.01 * s, nfev=10)
        if "diagnostics" in processes and s % 20 == 0:
            rd.recorder("diagnostics").append(
                s, alpha=alpha, epsilon=lr * math.sqrt(alpha), grad_alignment=0.9, gradS_perp_over_rho3=0.3,
                rho4_over_eta_rho3sq=2.0, ratio_d3_v=0.1, ratio_d3_g=np.nan if s == 40 else 0.2, ratio_d2_v=0.05,
                eig_0=2 / lr, eig_1=lam2[s], eig_2=1.0 / lr)
        if "cost" in processes:
            rd.recorder("cost").append(s, hvps=20, grads=5, d3=4, seconds=0.01)
    rd.flush()
    rd.write_summary({"lr": lr, "onset_step": ONSET if "train" in processes else None,
                      "onset_sharpness": 2 / lr * 1.001 if "train" in processes else None,
                      "stop_reason": "steps", "tracked_steps": steps})
    return load_run(path)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    return [make_run(root / "lr0.02", lr=0.02), make_run(root / "lr0.01", lr=0.01)]


def _check_files(paths, stems):
    assert sorted(p.name for p in paths) == sorted(f"{s}.{e}" for s in stems for e in ("png", "pdf"))
    for p in paths:
        head = p.read_bytes()[:8]
        assert head.startswith(b"\x89PNG" if p.suffix == ".png" else b"%PDF-") and p.stat().st_size > 3000, p


def _close(fig):
    pyplot().close(fig)


def test_every_figure_writes_png_and_pdf(runs, tmp_path):
    run = runs[0]
    _check_files(paper.figure1(run, tmp_path), ["figure1"])
    _check_files(paper.figure4(runs, tmp_path), ["figure4", "figure4_zoom"])
    _check_files(paper.appendix_e(run, tmp_path), ["appendix_e"])
    _check_files(paper.figure5(run, tmp_path), ["figure5"])
    _check_files(paper.figure6(runs, tmp_path), ["figure6"])


def test_panel_counts_and_curves(runs):
    cases = [(paper.make_figure1(runs[0]), 2), (paper.make_figure4(runs), 6), (paper.make_figure4(runs[:1]), 3),
             (paper.make_appendix_e(runs[0]), 8),
             (paper.make_figure5(runs[0]), 1), (paper.make_figure6(runs), 3)]
    for fig, n in cases:
        assert len(fig.axes) == n
        assert all(ax.lines for ax in fig.axes)  # every panel has data
        _close(fig)
    fig = paper.make_figure4(runs)
    # rows sorted by η: 0.01 first; each row: 5 processes in loss and distance, 5 + the 2/η line in sharpness
    assert "0.01" in fig.axes[0].get_title(loc="left") and "0.02" in fig.axes[3].get_title(loc="left")
    assert [len(ax.lines) for ax in fig.axes[:3]] == [5, 6, 5]
    _close(fig)


def test_sharpness_is_two_step_averaged_and_gaps_stay_gaps(runs):
    run = runs[0]
    fig = paper.make_figure4([run])
    ax_loss, ax_s, _ = fig.axes
    gd_loss = ax_loss.lines[0]
    assert np.isnan(gd_loss.get_ydata()[50:53]).all() and np.isfinite(gd_loss.get_ydata()[:50]).all()
    pred_s = ax_s.lines[1]  # predicted, drawn as (S_t + S_{t+1})/2
    s = run["predicted"]["sharpness"].to_numpy()
    np.testing.assert_allclose(pred_s.get_ydata()[:-1], (s[:-1] + s[1:]) / 2)
    assert np.isnan(pred_s.get_ydata()[-1])
    _close(fig)
    np.testing.assert_allclose(two_step_average(run["predicted"]["sharpness"].iloc[[0, 1, 3]]).to_numpy(),
                               [(s[0] + s[1]) / 2, np.nan, np.nan, np.nan])  # step 2 missing: no average across it


def test_zoom_window_isolates_the_first_cycle(runs):
    run = runs[0]
    a, b = paper.zoom_window(run)
    absx = run["predicted"]["x"].abs()
    first_peak = int(absx.loc[:120].idxmax())
    assert a < first_peak < b and b - a >= 20
    assert absx.loc[a] < 0.1 * absx.loc[first_peak] and b < 150  # the second cycle (peak near 186) is outside
    fig = paper.make_figure4([run], zoomed=True)
    xs = fig.axes[0].lines[0].get_xdata()
    assert xs.min() == a and xs.max() == b
    _close(fig)
    fig = paper.make_figure4([run], (10, 30), zoomed=True)
    assert fig.axes[2].lines[0].get_xdata().tolist() == list(range(10, 31))
    _close(fig)


def test_figure5_marks_where_each_eigenvalue_reaches_the_edge(tmp_path):
    run = make_run(tmp_path / "r", lr=0.02)
    fig = paper.make_figure5(run)
    ax = fig.axes[0]
    vertical = sorted(line.get_xdata()[0] for line in ax.lines if len(set(line.get_xdata())) == 1
                      and line.get_linestyle() in ("-", ":"))
    # λ₁ reaches 2/η at the onset; λ₂ climbs to 1.8/η: never at the edge, never at the 1.9/η stop line
    assert vertical == [ONSET]
    labels = ax.get_legend_handles_labels()[1]
    assert any("lambda_{3}" in lab for lab in labels) and any("1.9" in lab for lab in labels)
    _close(fig)


@pytest.mark.parametrize("processes", [(), ("train",), ("gd", "constrained"), ("diagnostics",)])
def test_half_finished_runs_still_plot(tmp_path, processes):
    run = make_run(tmp_path / "r", processes=processes)
    makers = [paper.make_figure1, lambda r: paper.make_figure4([r]), lambda r: paper.make_figure4([r], zoomed=True),
              paper.make_appendix_e, paper.make_figure5, lambda r: paper.make_figure6([r])]
    for make in makers:
        fig = make(run)
        texts = [t.get_text() for ax in fig.axes for t in ax.texts]
        if not processes:
            assert any("not recorded" in t or "no " in t or "not reached" in t for t in texts)
        _close(fig)
    if "gd" in processes:
        fig = paper.make_figure4([run])
        assert any("not recorded: predicted, generalized, flow" in t.get_text() for t in fig.axes[0].texts)
        _close(fig)


def test_plot_command_one_run(runs, tmp_path, capsys):
    out = tmp_path / "figs"
    assert main(["plot", str(runs[0].path), "--out", str(out), "--figures", "5"]) == 0
    printed = capsys.readouterr().out
    _check_files(sorted(out.iterdir()), ["figure5"])
    assert str(out / "figure5.png") in printed and str(out / "figure5.pdf") in printed


def test_plot_command_several_runs_combines_figures_4_and_6(tmp_path, capsys):
    a = make_run(tmp_path / "sweep" / "a", lr=0.02, processes=("train", "gd", "predicted"), steps=60)
    b = make_run(tmp_path / "sweep" / "b", lr=0.01, processes=("train",), schedule="inverse_sharpness", steps=60)
    assert main(["plot", str(a.path), str(b.path), "--figures", "4,6"]) == 0
    combined = tmp_path / "sweep" / "figures"
    _check_files(sorted(combined.iterdir()), ["figure4", "figure4_zoom", "figure6"])
    assert not (a.path / "figures").exists()  # no per-run figure was asked for
    assert "figure6.png" in capsys.readouterr().out


def test_plot_command_default_figures_follow_the_records(tmp_path, capsys):
    run = make_run(tmp_path / "r", processes=("gd", "predicted"), steps=60)
    assert main(["plot", str(run.path)]) == 0
    out = capsys.readouterr().out
    assert "skipped figure 1" in out and "skipped figure e" in out
    _check_files(sorted((run.path / "figures").iterdir()), ["figure4", "figure4_zoom"])


def test_plot_command_errors(tmp_path, runs, capsys):
    assert main(["plot", str(tmp_path / "nowhere")]) == 2
    assert str(tmp_path / "nowhere") in capsys.readouterr().err
    assert main(["plot", str(runs[0].path), "--figures", "1,7"]) == 2
    assert "--figures: unknown figure 7" in capsys.readouterr().err
