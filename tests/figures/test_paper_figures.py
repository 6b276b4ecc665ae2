"""The paper's figures from synthetic run directories (conftest.py): files, panels, gaps, half-finished
runs, what a reader sees (legends, markers, titles), and ``selfstab plot``."""

from __future__ import annotations

import numpy as np
import pytest

from selfstab.cli.main import main
from selfstab.figures import paper
from selfstab.figures.style import pyplot, style_of
from selfstab.records.series import two_step_average

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


# ----------------------------------------------------------------------------- what a reader sees


def _renderer(fig):
    fig.canvas.draw()
    return fig.canvas.get_renderer()


def _legend_labels(legend):
    return [t.get_text() for t in legend.get_texts()]


def test_figure4_legend_names_the_shading_and_sits_against_the_panels(runs):
    from matplotlib.patches import Rectangle

    fig = paper.make_figure4(runs)
    legend = fig.legends[0]
    labels = _legend_labels(legend)
    assert labels[:5] == [style_of(p).label for p in paper.TRACKED] and r"$2/\eta$" in labels
    shade = [h for h, lab in zip(legend.legend_handles, labels) if lab.startswith("shaded")]
    assert len(shade) == 1 and isinstance(shade[0], Rectangle)
    assert all(ax.patches for ax in fig.axes)   # the band it names is drawn on every panel
    r = _renderer(fig)
    box = legend.get_window_extent(r)
    panels_bottom = min(ax.get_tightbbox(r).y0 for ax in fig.axes[-3:])
    gap_inches = (panels_bottom - box.y1) / fig.dpi
    assert -0.02 < gap_inches < 0.3                            # right under the panels, no empty band
    assert box.y0 / fig.dpi < 0.3                              # and nothing below it
    _close(fig)
    fig = paper.make_figure4(runs, zoomed=True)
    assert not any(lab.startswith("shaded") for lab in _legend_labels(fig.legends[0]))
    _close(fig)


@pytest.mark.parametrize("make", [lambda rs: paper.make_figure4(rs), lambda rs: paper.make_figure4(rs, zoomed=True),
                                  lambda rs: paper.make_figure5(rs[0]), lambda rs: paper.make_figure1(rs[0])],
                         ids=["figure4", "figure4_zoom", "figure5", "figure1"])
def test_legends_do_not_cover_the_curves(runs, make):
    fig = make(runs)
    r = _renderer(fig)
    legends = [ax for ax in fig.axes if ax.get_legend() is not None]
    assert legends
    for ax in legends:
        box = ax.get_legend().get_window_extent(r)
        for line in ax.lines:
            xy = np.column_stack([line.get_xdata(), line.get_ydata()]).astype(float)
            xy = xy[np.isfinite(xy).all(axis=1)]
            if not len(xy):
                continue
            px = ax.transData.transform(xy)
            inside = ((px[:, 0] > box.x0) & (px[:, 0] < box.x1) & (px[:, 1] > box.y0) & (px[:, 1] < box.y1))
            assert not inside.any(), f"{ax.get_legend()} covers {line.get_label()}"
    _close(fig)


def test_figure5_names_its_vertical_lines_and_keeps_lambda1_visible(runs):
    fig = paper.make_figure5(runs[0])
    ax = fig.axes[0]
    by_label = {line.get_label(): line for line in ax.lines}
    assert rf"$\lambda_{{1}}$ reaches $2/\eta$ (step {ONSET})" in _legend_labels(ax.get_legend())
    vertical = by_label[rf"$\lambda_{{1}}$ reaches $2/\eta$ (step {ONSET})"]
    assert set(vertical.get_xdata()) == {ONSET}
    lam1, edge = by_label[r"$\lambda_{1}(\theta^\dagger_t)$"], by_label[r"$2/\eta$"]
    np.testing.assert_allclose(lam1.get_ydata(), edge.get_ydata()[0])   # λ₁(θ†) sits on 2/η ...
    assert lam1.get_zorder() > edge.get_zorder()                        # ... drawn above it,
    assert lam1.get_linestyle() == "-" and edge.get_linestyle() == "--" and lam1.get_linewidth() > edge.get_linewidth()
    lam2 = by_label[r"$\lambda_{2}(\theta^\dagger_t)$"]                  # measured every 20 steps: markers
    assert lam2.get_linestyle() == "None" and lam2.get_marker() not in ("None", None, "")
    _close(fig)


def test_figure5_stop_line_crossing_is_named(make_run, tmp_path):
    run = make_run(tmp_path / "r", lr=0.02)
    run.config["track"]["stop_lambda2"] = 1.7   # λ₂ climbs to 1.8/η: it crosses this stop line, not 2/η
    fig = paper.make_figure5(run)
    ax = fig.axes[0]
    dotted = [line for line in ax.lines if line.get_label().startswith(r"$\lambda_{2}$ reaches the stop line")]
    assert len(dotted) == 1 and dotted[0].get_linestyle() == ":"
    assert r"stop: $\lambda_2 = 1.7/\eta$" in _legend_labels(ax.get_legend())
    _close(fig)


def test_appendix_e_draws_sparse_diagnostics_as_markers(runs):
    fig = paper.make_appendix_e(runs[0])
    data = [ax.lines[0] for ax in fig.axes]
    for line in data[:2]:     # α and ε: every step, along constrained
        assert line.get_linestyle() == "-" and len(line.get_xdata()) == 201
    for line in data[2:]:     # the rest: every 20 steps (diagnostics), no line between the measurements
        assert line.get_linestyle() == "None" and line.get_marker() == "o"
        assert set(np.diff(line.get_xdata())) <= {20, 40}   # step 40 of ratio_d3_g is NaN: left out
    _close(fig)


def test_figure6_title_says_how_many_step_sizes(runs):
    fig = paper.make_figure6(runs[:1])
    title = fig.get_suptitle()
    assert "several" not in title and r"$\eta$ = 0.02" in title
    _close(fig)
    fig = paper.make_figure6(runs)
    assert "several step sizes" in fig.get_suptitle()
    _close(fig)
