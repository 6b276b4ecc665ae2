"""The paper's figures from synthetic run directories (conftest.py): files, panels, gaps, half-finished
runs, what a reader sees (legends, markers, titles), and ``selfstab plot``."""

from __future__ import annotations

import numpy as np
import pytest

from selfstab.cli.main import main
from selfstab.figures import paper
from selfstab.figures.style import pyplot, two_step_average

ONSET = 120   # conftest.make_run: the edge of its synthetic runs

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
    pred_s = ax_s.lines[1]  # predicted, drawn as (S_{t-1} + S_t)/2, the pairing GD's records use
    s = run["predicted"]["sharpness"].to_numpy()
    np.testing.assert_allclose(pred_s.get_ydata()[1:], (s[:-1] + s[1:]) / 2)
    assert np.isnan(pred_s.get_ydata()[0])
    gd_s = ax_s.lines[0]    # GD: its recorded sharpness_avg2, as recorded
    np.testing.assert_array_equal(gd_s.get_ydata(), run["gd"]["sharpness_avg2"].to_numpy())
    _close(fig)
    np.testing.assert_allclose(two_step_average(run["predicted"]["sharpness"].iloc[[0, 1, 3]]).to_numpy(),
                               [np.nan, (s[0] + s[1]) / 2, np.nan, np.nan])  # step 2 missing: no average across it
    np.testing.assert_allclose(two_step_average(s[:4]), [np.nan, (s[0] + s[1]) / 2, (s[1] + s[2]) / 2,
                                                         (s[2] + s[3]) / 2])   # arrays: consecutive steps


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


def test_figure5_marks_where_each_eigenvalue_reaches_the_edge(make_run, tmp_path):
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
def test_half_finished_runs_still_plot(make_run, tmp_path, processes):
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


def test_plot_command_several_runs_combines_figures_4_and_6(make_run, tmp_path, capsys):
    a = make_run(tmp_path / "sweep" / "a", lr=0.02, processes=("train", "gd", "predicted"), steps=60)
    b = make_run(tmp_path / "sweep" / "b", lr=0.01, processes=("train",), schedule="inverse_sharpness", steps=60)
    assert main(["plot", str(a.path), str(b.path), "--figures", "4,6"]) == 0
    combined = tmp_path / "sweep" / "figures"
    _check_files(sorted(combined.iterdir()), ["figure4", "figure4_zoom", "figure6"])
    assert not (a.path / "figures").exists()  # no per-run figure was asked for
    assert "figure6.png" in capsys.readouterr().out


def test_plot_command_default_figures_follow_the_records(make_run, tmp_path, capsys):
    run = make_run(tmp_path / "r", processes=("gd", "predicted"), steps=60)
    assert main(["plot", str(run.path)]) == 0
    out = capsys.readouterr().out
    assert "skipped: figure 1 needs training records (train); this run has only gd, predicted" in out
    assert "skipped: figure e needs records along θ† (diagnostics, constrained)" in out
    _check_files(sorted((run.path / "figures").iterdir()), ["figure4", "figure4_zoom"])


def test_plot_command_errors(tmp_path, runs, capsys):
    assert main(["plot", str(tmp_path / "nowhere")]) == 2
    assert str(tmp_path / "nowhere") in capsys.readouterr().err
    assert main(["plot", str(runs[0].path), "--figures", "1,7"]) == 2
    assert "--figures: unknown figure 7" in capsys.readouterr().err
