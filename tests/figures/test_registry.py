"""The figure registry: which figures a run's records allow, the one-line reasons when they don't,
where draw_figures writes, and ``selfstab plot`` on runs without the records a figure needs."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from selfstab.cli.main import main
from selfstab.errors import ConfigError
from selfstab.figures import paper
from selfstab.figures.registry import FIGURES, available, draw_figures, missing, parse_names
from selfstab.figures.style import pyplot
from selfstab.records import RunDir, load_run

TRACK_NEED = ("figure 4 needs tracked records of the predictions, θ† or gradient flow (predicted, generalized, "
              "constrained, flow)")


def _stems(folder):
    return sorted(p.name for p in folder.iterdir())


def _files(*stems):
    return sorted(f"{s}.{e}" for s in stems for e in ("png", "pdf"))


@pytest.mark.parametrize("processes, figures", [
    (("train",), ["1", "6"]), (("gd", "predicted"), ["4"]), (("diagnostics",), ["e", "5"]),
    (("constrained",), ["4", "e", "5"]), (("train", "gd", "constrained", "diagnostics"), ["1", "4", "e", "5", "6"]),
    ((), [])])
def test_available_follows_the_records(make_run, tmp_path, processes, figures):
    assert available(make_run(tmp_path / "r", processes=processes)) == figures


def test_registry_entries():
    assert list(FIGURES) == ["1", "4", "e", "5", "6", "c"]
    stems = [o.stem for spec in FIGURES.values() for o in spec.outputs]
    assert len(stems) == len(set(stems)) and "figure4_zoom" in stems
    assert {n for n, spec in FIGURES.items() if spec.combined} == {"4", "6"}
    assert all(o.caption for spec in FIGURES.values() for o in spec.outputs)


def test_missing_says_what_and_how(make_run, tmp_path):
    run = make_run(tmp_path / "r", processes=("train",))
    assert missing("4", run) == f"{TRACK_NEED}; this run has only train: run `selfstab track {run.path}`"
    assert missing("1", run) is None and missing("6", run) is None
    empty = load_run(RunDir.create(tmp_path / "empty", {"lr": 0.1}).path)
    assert missing("1", empty).endswith("this run has no records yet: run `selfstab resume " + str(empty.path) + "` "
                                        "to train it")


def test_parse_names():
    assert parse_names("E, 1") == ["1", "e"] and parse_names("all") == list(FIGURES)
    assert parse_names(None) is None and parse_names(["6", "4"]) == ["4", "6"]
    with pytest.raises(ConfigError, match="--figures: unknown figure 7; choose from 1,4,e,5,6,c"):
        parse_names("1,7")


def test_draw_figures_layout(make_run, tmp_path):
    a = make_run(tmp_path / "sweep" / "a", lr=0.02, processes=("train", "gd", "predicted"), steps=40)
    b = make_run(tmp_path / "sweep" / "b", lr=0.01, processes=("train", "gd", "predicted"), steps=40)
    notes = []
    paths = draw_figures([a, b], names=None, out=tmp_path / "o", on_note=notes.append)
    assert _stems(tmp_path / "o") == sorted(["a", "b", *_files("figure4", "figure4_zoom", "figure6")])
    assert _stems(tmp_path / "o" / "a") == _files("figure1")          # per-run figures, one folder per run
    assert len(paths) == 10 and any("figure e needs records along θ†" in n for n in notes)
    # without out: per-run figures in RUN/figures, the combined ones in figures/ beside the runs
    paths = draw_figures([a, b], names="4")
    assert _stems(tmp_path / "sweep" / "figures") == _files("figure4", "figure4_zoom")
    assert not (a.path / "figures").exists()
    assert draw_figures(a.path, names=["1"]) == [a.path / "figures" / "figure1.png", a.path / "figures" / "figure1.pdf"]


def test_a_figure_asked_for_without_its_records_is_an_error_before_anything_is_drawn(make_run, tmp_path):
    run = make_run(tmp_path / "r", processes=("train",))
    with pytest.raises(ConfigError, match=r"figure 4 needs tracked records .*selfstab track"):
        draw_figures(run, names="1,4")
    assert not (run.path / "figures").exists()   # figure 1 was not drawn either
    assert draw_figures(run, names="4", strict=False) == []
    other = make_run(tmp_path / "r2", processes=("train",))
    with pytest.raises(ConfigError, match=re.escape(f"{TRACK_NEED}; none of the 2 runs has them")):
        draw_figures([run, other], names="4")


def test_plot_a_run_that_was_never_tracked(make_run, tmp_path, capsys):
    run = make_run(tmp_path / "r", processes=("train",))
    assert main(["plot", str(run.path), "--figures", "4"]) == 2
    captured = capsys.readouterr()
    assert captured.err == (f"selfstab plot: error: {TRACK_NEED}; this run has only train: "
                            f"run `selfstab track {run.path}`\n")
    assert "Traceback" not in captured.err and not (run.path / "figures").exists()
    # by default: what the records allow, and why the rest is left out
    assert main(["plot", str(run.path)]) == 0
    out = capsys.readouterr().out
    assert f"skipped: {TRACK_NEED}" in out and "skipped: figure e needs records along θ†" in out
    assert _stems(run.path / "figures") == _files("figure1", "figure6")


def test_plot_a_run_without_records(tmp_path, capsys):
    rd = RunDir.create(tmp_path / "r", {"lr": 0.1})
    assert main(["plot", str(rd.path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("selfstab plot: error: nothing to plot: figure 1 needs training records (train); "
                          "this run has no records yet") and err.count("\n") == 1
    assert not (rd.path / "figures").exists()


def test_zoom_window_outside_the_records(make_run, tmp_path, capsys):
    run = make_run(tmp_path / "r", processes=("gd", "predicted", "constrained"), steps=125)
    assert main(["plot", str(run.path), "--figures", "4", "--zoom", "500", "600"]) == 0
    out = capsys.readouterr().out
    assert f"figure 4 zoom of {run.path}: steps 500–600 are outside the recorded steps 0–125" in out
    fig = paper.make_figure4([run], (500, 600), zoomed=True)
    texts = [[t.get_text() for t in ax.texts] for ax in fig.axes]
    assert texts == [["steps 500–600 are outside the recorded steps 0–125"]] * 3
    assert not any(ax.lines for ax in fig.axes)
    pyplot().close(fig)
    fig = paper.make_figure4([run], (500, 600))       # the full figure: drawn, unshaded, the window named
    assert all(ax.lines for ax in fig.axes) and not any(ax.patches for ax in fig.axes)
    notes = [t.get_text() for t in fig.axes[1].texts]
    assert "zoom window: steps 500–600 are outside the recorded steps 0–125" in notes
    assert not any("shaded" in t.get_text() for t in fig.legends[0].get_texts())
    pyplot().close(fig)
    fig = paper.make_figure4([run], (100, 600), zoomed=True)   # partly outside: what is there, and a note
    assert fig.axes[0].lines[0].get_xdata().tolist() == list(range(100, 126))
    assert "recorded steps: 0–125 only" in [t.get_text() for t in fig.axes[1].texts]
    assert [t.get_text() for t in fig.axes[0].texts] == ["not recorded: generalized, flow"]   # only the absent
    pyplot().close(fig)


def test_the_run_command_draws_through_the_registry(tracked_run, tmp_path):
    folder = tracked_run.path / "figures"
    drawable = [spec for spec in FIGURES.values() if spec.name in available(tracked_run)]
    assert [spec.name for spec in FIGURES.values() if spec not in drawable] == ["c"]   # no central flow tracked
    assert _stems(folder) == _files(*(o.stem for spec in drawable for o in spec.outputs))
    assert len(draw_figures(tracked_run, "5", out=tmp_path)) == 2


@pytest.mark.parametrize("module", ["selfstab.cli.plot", "selfstab.figures.registry"])
def test_importing_the_plot_command_imports_no_matplotlib_or_scipy(module):
    code = (f"import sys, selfstab; before = set(sys.modules); import {module}; "
            "new = set(sys.modules) - before; "
            "print(sorted(m for m in new if m.split('.')[0] in ('matplotlib', 'scipy')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
