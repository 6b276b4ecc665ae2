"""The run report: key numbers against hand-computed values, the HTML and Markdown pages, the CLI."""

from __future__ import annotations

import base64
import math
import re

import numpy as np
import pytest

from selfstab.cli.main import main
from selfstab.records import RunDir, load_run
from selfstab.report import key_numbers, relative_error, write_report
from selfstab.theory import simplified_dynamics

NAN = math.nan
CONFIG = {"seed": 0, "model": {"name": "mlp"}, "data": {"name": "digits"}, "loss": "mse", "lr": 0.1,
          "track": {"stop_lambda2": 1.7}}


def _append(rd, process, columns):
    n = len(next(iter(columns.values())))
    for t in range(n):
        rd.recorder(process).append(t, **{k: v[t] for k, v in columns.items()})


def hand_run(path):
    """Five tracked steps with known answers (see test_key_numbers_by_hand)."""
    rd = RunDir.create(path, CONFIG)
    # GD oscillates around 10; its recorded two-step average (S_{t-1} + S_t)/2 is 10 from step 1 on
    _append(rd, "gd", {"loss": [1.0, 2.0, NAN, 4.0, 5.0], "sharpness": [9.0, 11.0, 9.0, 11.0, 9.0],
                       "sharpness_avg2": [NAN, 10.0, 10.0, 10.0, 10.0],
                       "dist_constrained": [0.1, 0.3, 0.2, 0.5, 0.4]})
    _append(rd, "predicted", {"loss": [1.1, 1.0, 3.0, 5.0, 5.0], "sharpness": [11.0, 9.0, 12.0, 10.0, 10.0],
                              "dist_gd": [1.0, 3.0, 2.0, NAN, NAN]})
    _append(rd, "constrained", {"delta": [0.2, 0.4, 0.6, 0.8, 1.0], "epsilon": [0.1, 0.1, 0.2, 0.2, 0.3]})
    for t, lam2 in ((0, 14.0), (2, 18.0), (4, 16.0)):   # λ₂ is measured with the diagnostics, every k steps
        rd.recorder("diagnostics").append(t, lambda2=lam2, eig_0=20.0, eig_1=lam2)
    _append(rd, "flow", {"dist_gd": [0.0, 1.0, 2.0, 3.0, NAN], "dist_constrained": [0.0, 0.5, 1.0, 1.5, 2.5]})
    _append(rd, "cost", {"hvps": [10, 20, 30, 40, 50], "grads": [1, 1, 2, 2, 4], "d3": [3, 3, 3, 3, 3],
                         "seconds": [0.1, 0.2, 0.3, 0.4, 0.5]})
    _append(rd, "train", {"loss": [3.0, 2.0, 1.5], "sharpness": [5.0, NAN, 20.5]})
    rd.flush()
    rd.write_summary({"lr": 0.1, "onset_step": 2, "onset_sharpness": 20.5, "stop_reason": "lambda2",
                      "tracked_steps": 4, "seconds_train": 12.5, "seconds_track": 30.0, "parameters": 8970})
    return load_run(path)


def test_key_numbers_by_hand(tmp_path):
    k = key_numbers(hand_run(tmp_path / "r"), min_steps=1)   # the arithmetic, on a hand-sized run
    assert (k["lr"], k["onset_step"], k["onset_sharpness"], k["stop_reason"], k["tracked_steps"], k["parameters"]) \
        == (0.1, 2, 20.5, "lambda2", 4, 8970)
    # loss: |pred − gd|/|gd| at steps 0, 1, 3, 4 (gd missing at 2) = 0.1, 0.5, 0.25, 0
    assert k["median_rel_err_loss"] == pytest.approx(0.175) and k["max_rel_err_loss"] == pytest.approx(0.5)
    # sharpness: predicted two-step averages (S_{t-1} + S_t)/2 = 10, 10.5, 11, 10 at steps 1-4 against 10
    assert k["median_rel_err_sharpness"] == pytest.approx(0.025) and k["max_rel_err_sharpness"] == pytest.approx(0.1)
    assert k["median_dist_gd"] == pytest.approx(2.0)
    assert k["median_dist_constrained"] == pytest.approx(0.3) and k["median_delta"] == pytest.approx(0.6)
    assert k["median_epsilon"] == pytest.approx(0.2) and k["max_lambda2_times_lr"] == pytest.approx(1.8)
    assert k["stop_lambda2"] == 1.7   # the config's track.stop_lambda2, not a constant
    assert k["gd_dist_constrained_end"] == pytest.approx(0.4)
    assert k["flow_dist_gd_end"] == pytest.approx(3.0)  # the last recorded value; step 4 is NaN
    assert k["flow_dist_constrained_end"] == pytest.approx(2.5)
    assert (k["mean_hvps"], k["mean_grads"], k["mean_d3"]) == pytest.approx((30.0, 2.0, 3.0))
    assert k["mean_seconds"] == pytest.approx(0.3)
    assert (k["seconds_train"], k["seconds_track"]) == (12.5, 30.0)
    assert k["generalized_median_rel_err_loss"] is None  # no generalized records


def test_key_numbers_of_a_bare_run_fall_back_to_records(tmp_path):
    rd = RunDir.create(tmp_path / "r", CONFIG)
    _append(rd, "train", {"loss": [3.0, 2.0, 1.0, 0.5], "sharpness": [5.0, NAN, 19.0, 20.0]})
    _append(rd, "gd", {"loss": [1.0, 1.0, 1.0], "sharpness_avg2": [NAN, 20.0, 21.0]})
    _append(rd, "predicted", {"sharpness": [20.0, 22.0, 22.0, 20.0]})
    _append(rd, "timing", {"seconds": [1.0, 2.0, 6.0]})  # wall clock kept apart from cost
    rd.flush()
    k = key_numbers(load_run(tmp_path / "r"), min_steps=1)
    assert k["onset_step"] == 3 and k["onset_sharpness"] == 20.0 and k["lr"] == 0.1  # first S ≥ 2/η = 20
    assert k["tracked_steps"] == 2 and k["median_rel_err_loss"] is None and k["mean_hvps"] is None
    assert k["mean_seconds"] == pytest.approx(3.0)
    # no raw gd.sharpness: the recorded two-step averages (20, 21 at steps 1, 2) against the prediction's
    # (S_{t-1} + S_t)/2 = 21, 22 there
    assert k["median_rel_err_sharpness"] == pytest.approx((0.05 + 1 / 21) / 2)


def test_lambda2_threshold_and_lr_come_from_the_run(tmp_path):
    """λ₂ from diagnostics.lambda2, the stop threshold from track.stop_lambda2, η from the run-level lr."""
    text = write_report(hand_run(tmp_path / "r")).read_text(encoding="utf-8")
    assert "<td>max η·λ₂(θ†)</td><td>1.8</td>" in text
    assert "<td>the λ₂ rule acts at η·λ₂ =</td><td>1.7</td>" in text and "1.9" not in text
    rd = RunDir.create(tmp_path / "new", {**CONFIG, "lr": 0.25,
                                          "train": {"schedule": "constant"}})
    _append(rd, "train", {"loss": [3.0, 2.0], "sharpness": [5.0, 8.0]})
    rd.flush()
    k = key_numbers(load_run(tmp_path / "new"))
    assert k["lr"] == 0.25 and k["onset_step"] == 1   # first S ≥ 2/η = 8


def test_relative_error_drops_missing_and_zero_references():
    import pandas as pd

    err = relative_error(pd.Series([1.0, 2.0, 3.0, 1.0]), pd.Series([0.0, 1.0, NAN, 2.0]))
    assert err.to_dict() == {1: 1.0, 3: 0.5}
    assert relative_error(None, pd.Series([1.0])) is None


def realistic_run(path, steps=120, lr=0.02):
    """A run whose tracked series follow eq. (3), as in test_paper_figures (smaller)."""
    rd = RunDir.create(path, {**CONFIG, "lr": lr})
    x, y = simplified_dynamics(10.0, 10.0, lr, 0.05, 0.0, steps)
    l_dag = 0.3 * np.exp(-np.arange(steps + 1) / 500)
    for t in range(steps + 1):
        rd.recorder("gd").append(t, loss=l_dag[t] + x[t] ** 2 / lr * 1.01, sharpness=2 / lr + y[t] + 0.5 * x[t],
                                 dist_constrained=abs(x[t]))
        rd.recorder("predicted").append(t, x=x[t], y=y[t], v_norm=abs(x[t]), loss=l_dag[t] + x[t] ** 2 / lr,
                                        sharpness=2 / lr + y[t] + 0.5 * x[t], dist_gd=0.01)
        rd.recorder("constrained").append(t, loss=l_dag[t], sharpness=2 / lr, alpha=10.0, epsilon=lr * 10 ** 0.5,
                                          delta=2 ** 0.5, lambda2=1.6 / lr)
        if t % 30 == 0:
            rd.recorder("diagnostics").append(t, alpha=10.0, ratio_d3_v=0.1, eig_0=2 / lr, eig_1=1.6 / lr)
    for t in range(51):
        sharp = (30 + 70 * t / 50) / lr / 50 if t % 10 == 0 else None
        rd.recorder("train").append(t, loss=2.0 - t / 50, sharpness=sharp)
    rd.flush()
    rd.write_summary({"lr": lr, "onset_step": 50, "onset_sharpness": 100.0, "stop_reason": "steps",
                      "tracked_steps": steps})
    return load_run(path)


def test_html_report_embeds_the_figures_and_the_numbers(tmp_path):
    run = realistic_run(tmp_path / "r")
    out = write_report(run.path)
    assert out == run.path / "report.html"
    text = out.read_text(encoding="utf-8")
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    assert len(images) == 5  # figures 1, 4, 4-zoom, Appendix E, 5
    assert all(base64.b64decode(img)[:8] == b"\x89PNG\r\n\x1a\n" for img in images)
    assert "<td>edge reached (θ₀) at step</td><td>50</td>" in text
    assert "tracking stopped because</td><td>steps" in text
    assert "[track]" in text and "lr = 0.02" in text  # the config, as TOML
    assert 'id="figure4_zoom"' in text and "src=\"figure" not in text  # self-contained: no file references


def test_markdown_report_writes_pngs_beside_it(tmp_path):
    run = realistic_run(tmp_path / "r", steps=60)
    out = write_report(run.path, tmp_path / "rep" / "run.md", fmt="md")
    text = out.read_text(encoding="utf-8")
    pngs = sorted(p.name for p in out.parent.glob("*.png"))
    assert pngs == sorted(f"run_{s}.png" for s in ("figure1", "figure4", "figure4_zoom", "appendix_e", "figure5"))
    assert all(f"]({name})" in text for name in pngs)
    assert "| edge reached (θ₀) at step | 50 |" in text and "```toml" in text


def test_report_of_a_half_finished_run_has_only_its_figures(tmp_path):
    rd = RunDir.create(tmp_path / "r", CONFIG)
    _append(rd, "train", {"loss": [3.0, 2.0, 1.0], "sharpness": [5.0, NAN, 12.0]})
    rd.flush()
    text = write_report(tmp_path / "r").read_text(encoding="utf-8")
    assert text.count("data:image/png;base64,") == 1 and 'id="figure1"' in text
    assert "<td>edge reached (θ₀) at step</td><td>—</td>" in text
    assert "HVPs per tracked step" not in text and "Theorem 1" not in text  # not recorded: left out


def test_report_command(tmp_path, capsys):
    rd = RunDir.create(tmp_path / "r", CONFIG)
    _append(rd, "train", {"loss": [3.0, 2.0, 1.0], "sharpness": [5.0, NAN, 21.0]})
    rd.flush()
    assert main(["report", str(tmp_path / "r"), "--out", str(tmp_path / "x.md")]) == 0  # format from the suffix
    assert f"wrote {tmp_path / 'x.md'}" in capsys.readouterr().out
    assert "| edge reached (θ₀) at step | 2 |" in (tmp_path / "x.md").read_text(encoding="utf-8")
    assert (tmp_path / "x_figure1.png").is_file()
    assert main(["report", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert "selfstab report: error:" in err and str(tmp_path / "nowhere") in err
    with pytest.raises(SystemExit):
        main(["report", str(tmp_path / "r"), "--format", "pdf"])


def test_a_run_of_too_few_tracked_steps_shows_no_agreement(tmp_path):
    """§4.3: a run tracked for one step reported "Theorem 1 loss median relative error 5.64e-06" and "gradient
    flow: distance from GD 0"; from fewer than MIN_TRACKED_STEPS steps, agreement numbers say so instead."""
    from selfstab.report import AGREEMENT, MIN_TRACKED_STEPS

    run = hand_run(tmp_path / "r")   # 4 tracked steps
    assert MIN_TRACKED_STEPS >= 20
    k = key_numbers(run)
    few = "too few steps (4 tracked; at least 20 needed)"
    for key in ("median_rel_err_loss", "max_rel_err_sharpness", "median_dist_gd", "flow_dist_gd_end",
                "median_dist_constrained", "gd_dist_constrained_end"):
        assert k[key] == few, key
    assert all(k.get(key) in (None, few) for key in AGREEMENT)
    assert k["tracked_steps"] == 4 and k["mean_hvps"] == 30.0 and k["median_delta"] == pytest.approx(0.6)
    text = write_report(run).read_text(encoding="utf-8")
    assert f"<td>Theorem 1 loss L(θ†)+x²/η vs GD: median relative error</td><td>{few}</td>" in text
    assert f"<td>gradient flow: distance from GD at the end</td><td>{few}</td>" in text
    md = write_report(run, tmp_path / "r.md", fmt="md").read_text(encoding="utf-8")
    assert f"| Theorem 1 loss L(θ†)+x²/η vs GD: median relative error | {few} |" in md


def test_a_real_one_step_run_reports_too_few_steps(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", "--out", str(out), "--quiet", "--data.name", "synthetic", "--data.n", "64", "--data.n_test",
                 "32", "--model.width", "8", "--lr", "0.5", "--track.steps", "1"]) == 0
    printed = capsys.readouterr().out
    assert "tracked 1 step from the edge" in printed and "1 steps" not in printed   # §4.7: "tracked 1 steps"
    k = key_numbers(load_run(out))
    assert k["tracked_steps"] == 1
    assert k["median_rel_err_loss"] == k["flow_dist_gd_end"] == "too few steps (1 tracked; at least 20 needed)"
