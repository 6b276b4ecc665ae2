"""Figures follow what was tracked (issue §3, §4.8): a run tracked with ``gd,central`` gets no Figure 4 of empty
panels, and says why; Figure 5 marks λ₁'s edge at the run's onset; the central figure's title names only the
processes that were tracked."""

from __future__ import annotations

import re

import numpy as np

from selfstab.cli.main import main
from selfstab.figures import registry
from selfstab.figures.assumptions import make_figure5
from selfstab.figures.central import make_central
from selfstab.figures.style import pyplot
from selfstab.records import RunDir, load_run
from selfstab.report import write_report

LR = 0.4
ONSET = 106


def gd_central_run(path, processes=("gd", "central")):
    """Trained to the edge at step ONSET, then ``processes`` tracked (the recommended form at a larger η)."""
    rd = RunDir.create(path, {"lr": LR, "track": {"steps": 40, "stop_lambda2": 1.9, "processes": list(processes)}})
    edge = 2 / LR
    for s in range(ONSET + 1):
        # measured every 10 steps and at the replay's steps: within 0.1% of 2/η at step 100, ≥ 2/η only at ONSET
        sharp = {100: 0.9995 * edge, 104: 0.9998 * edge, 105: 0.9999 * edge, ONSET: 1.0004 * edge}.get(
            s, edge * (0.3 + 0.6 * s / 100) if s % 10 == 0 and s < 100 else None)
        rd.recorder("train").append(s, loss=2 * np.exp(-s / 60), sharpness=sharp)
    for t in range(40):
        rd.recorder("gd").append(t, loss=0.2 * (1 + 0.1 * np.sin(2.5 * t)), sharpness=edge)
        if "central" in processes:
            rd.recorder("central").append(t, loss=0.19, predicted_loss=0.2, k_crit=1.0 + (t >= 20),
                                          x_rank=float(t >= 20), dist_gd=1e-3 * (t + 1), lambda_1=edge,
                                          lambda_2=edge * min(1, 0.9 + t / 200))
        if "kconstrained" in processes:
            rd.recorder("kconstrained").append(t, loss=0.18, dist_gd=2e-3 * (t + 1), lambda_1=edge, lambda_2=edge)
        rd.recorder("cost").append(t, hvps=20, grads=5, d3=4)
    rd.flush()
    rd.write_summary({"lr": LR, "onset_step": ONSET, "onset_sharpness": 1.0004 * edge, "reached_edge": True,
                      "stop_reason": "steps", "tracked_steps": 40, "status": "finished"})
    return load_run(path)


def test_a_gd_central_run_gets_the_figures_about_what_it_tracked(tmp_path):
    run = gd_central_run(tmp_path / "r")
    assert registry.available(run) == ["1", "5", "c"]
    why = registry.missing("4", run)
    assert "predicted, generalized, constrained, flow" in why and "this run has only train, gd, central, cost" in why
    assert f"selfstab track {run.path} --out NEW --track.processes gd,constrained,predicted,flow" in why
    notes = []
    paths = registry.draw_figures(run, on_note=notes.append)
    assert {p.stem for p in paths} == {"figure1", "figure5", "central"}
    assert [n.split(" needs")[0] for n in notes] == ["skipped: figure 4", "skipped: figure e", "skipped: figure 6"]


def test_the_report_leads_with_the_figures_that_apply_and_says_why_the_others_are_left_out(tmp_path):
    run = gd_central_run(tmp_path / "r")
    page = write_report(run).read_text()
    ids = re.findall(r'<figure id="([^"]+)"', page)
    assert ids == ["figure1", "figure5", "central"]
    left_out = page.index("<h3>Left out</h3>")
    assert left_out > page.index('<figure id="central"') and "figure 4 needs tracked records" in page[left_out:]
    assert "not recorded: predicted, generalized, constrained, flow" not in page
    md = write_report(run, tmp_path / "r.md", fmt="md").read_text()
    assert "### Left out" in md and "r_figure4.png" not in md and md.index("r_central.png") < md.index("### Left out")


def test_the_comparison_page_draws_figure4_of_the_runs_that_tracked_its_subject(tmp_path, make_run):
    several = gd_central_run(tmp_path / "gc")
    single = make_run(tmp_path / "single", lr=0.02, steps=60)
    page = write_report([several, single], tmp_path / "cmp.html").read_text()
    assert re.findall(r'<figure id="([^"]+)"', page) == ["figure4", "figure4_zoom", "figure6"]
    left = page[page.index("<h3>Left out</h3>"):]
    assert "left out of figure 4: figure 4 needs tracked records of the predictions" in left


def test_figure5_marks_lambda1_at_the_runs_onset(tmp_path):
    run = gd_central_run(tmp_path / "r")
    fig = make_figure5(run)
    labels = [line.get_label() for line in fig.axes[0].lines]
    assert rf"$\lambda_{{1}}$ reaches $2/\eta$ (step {ONSET})" in labels   # as Figure 1 and the summary say
    assert not any("(step 100)" in label for label in labels)
    pyplot().close(fig)


def test_central_figure_title_names_only_what_was_tracked(tmp_path):
    fig = make_central(gd_central_run(tmp_path / "gc"))
    assert "θ†_k" not in fig._suptitle.get_text() and "GD and the central flow" in fig._suptitle.get_text()
    pyplot().close(fig)
    fig = make_central(gd_central_run(tmp_path / "both", processes=("gd", "central", "kconstrained")))
    assert "GD, the central flow and θ†_k" in fig._suptitle.get_text()
    pyplot().close(fig)


def test_a_real_gd_central_run_says_which_figures_it_left_out(tmp_path, capsys):
    from .conftest import TINY

    out = tmp_path / "run"
    assert main(["run", "--out", str(out), "--track.steps", "3", "--track.processes", "gd,central", *TINY]) == 0
    printed = capsys.readouterr().out
    assert not list((out / "figures").glob("figure4*")) and (out / "figures" / "central.png").is_file()
    assert "skipped: figure 4 needs tracked records of the predictions" in printed
    assert main(["report", str(out)]) == 0
    page = (out / "report.html").read_text()
    assert 'id="figure4"' not in page and "Left out" in page
