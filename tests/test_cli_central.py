"""`selfstab run` with the central flow and θ†_k among the processes, end to end on a tiny problem."""

import numpy as np

from selfstab import load_run
from selfstab.cli.main import main
from selfstab.report import key_numbers

# tests/test_cli.py's tiny problem (edge in a few steps), with λ₂ rule at its default 1.9/η
TINY = ["--data.name", "synthetic", "--data.n", "64", "--data.n_test", "32", "--model.width", "8", "--lr", "0.5",
        "--quiet", "--track.diagnostics_every", "5", "--track.checkpoint_every", "4"]
ALL = "gd,constrained,predicted,flow,central,kconstrained,diagnostics"


def test_run_with_every_process_goes_past_lambda2_and_flags(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", "--out", str(out), "--track.steps", "10", "--track.processes", ALL,
                 "--track.critical_threshold", "0.95", "--track.kproj_max_iter", "6", *TINY]) == 0
    text = capsys.readouterr().out
    assert "central.png" in text
    run = load_run(out)
    assert {"gd", "constrained", "predicted", "flow", "central", "kconstrained", "diagnostics"} <= set(run.records)
    assert run.summary["tracked_steps"] == 10 and run.summary["stop_reason"].startswith("steps")
    assert run.config["track"]["critical_threshold"] == 0.95 and run.config["track"]["kproj_max_iter"] == 6
    central, kc = run.records["central"], run.records["kconstrained"]
    assert len(central) == 10 and len(kc) == 10
    # the λ₂ rule flagged instead of stopping: from the first step where a recorded λ₂ reaches 1.9/η
    diag = run.records["diagnostics"]["lambda2"].reindex(central.index).to_numpy()
    lam2 = np.nanmax(np.vstack([diag, central["lambda_2"].to_numpy(), kc["lambda_2"].to_numpy()]), axis=0)
    crossed = np.flatnonzero(lam2 >= 1.9 / 0.5)
    assert len(crossed) and crossed[0] < 9
    # ... and at any step where ε = η√α is above 0.1 (Theorem 1's relative errors of order ε)
    expected = ((np.arange(10) >= crossed[0]) | (run.records["constrained"]["epsilon"].to_numpy() > 0.1)).astype(float)
    for name in ("constrained", "predicted"):
        np.testing.assert_array_equal(run.records[name]["outside_assumptions"].to_numpy(), expected)
    assert "outside_assumptions" not in run.records["gd"]
    assert (central["sdcp_residual"] <= 1e-8).all() and (kc["sdcp_residual"] <= 1e-8).all()
    assert (central["predicted_loss"] >= central["loss"]).all()
    assert (out / "figures" / "central.png").exists() and (out / "figures" / "figure5.png").exists()
    numbers = key_numbers(run)
    assert sum(numbers[f"regime_k{k}_steps"] for k in range(10) if f"regime_k{k}_steps" in numbers) == 10


def test_stop_rule_can_be_forced_or_switched_off(tmp_path):
    base = ["--track.steps", "6", "--track.processes", "gd,constrained,predicted,central,diagnostics",
            "--track.diagnostics_every", "1", *TINY, "--track.stop_lambda2", "1.0"]   # λ₂(θ†) ≥ 1/η at once
    assert main(["run", "--out", str(tmp_path / "stop"), *base, "--track.lambda2_rule", "stop"]) == 0
    stopped = load_run(tmp_path / "stop")
    assert stopped.summary["stop_reason"].startswith("lambda2") and stopped.summary["tracked_steps"] < 6
    assert main(["run", "--out", str(tmp_path / "off"), *base, "--track.lambda2_rule", "stop",
                 "--track.stop_lambda2", "0"]) == 0
    off = load_run(tmp_path / "off")
    assert off.summary["tracked_steps"] == 6
    # no λ₂ flag; the ε flag alone marks exactly the steps where ε = η√α > 0.1
    con = off.records["constrained"]
    flag = con["outside_assumptions"] if "outside_assumptions" in con else np.full(len(con), np.nan)
    np.testing.assert_array_equal(np.nan_to_num(np.asarray(flag, dtype=float)),
                                  (con["epsilon"].to_numpy() > 0.1).astype(float))


def test_the_default_set_brings_the_central_flow_where_lambda2_reaches_the_edge(tmp_path, capsys):
    """No --track.processes: the λ₂ rule's default kind puts the central flow in the run (from θ₀ when
    λ₂(θ₀) ≥ 1.9/η, else joining where a recorded λ₂ reaches it), flags the single-eigenvalue processes,
    tracks to the step limit, and the closing lines, summary and report say which theory held when."""
    out = tmp_path / "run"
    # the line at 1.8/η = 3.6: λ₂(θ₀) ≈ 3.54 sits below it and the diagnostics' λ₂(θ†) ≈ 3.7–3.8 from step 5
    # on above it, so this run is the joining case either side of rounding (both cases are checked below)
    assert main(["run", "--out", str(out), "--track.steps", "10", "--track.diagnostics_every", "1", *TINY,
                 "--track.stop_lambda2", "1.8"]) == 0
    text = capsys.readouterr().out
    run = load_run(out)
    s = run.summary
    assert s["tracked_steps"] == 10 and s["stop_reason"].startswith("steps") and s["lambda2_rule"] == "central"
    central = run.records["central"]
    if s["lambda2_theta0"] >= 1.8 / 0.5:       # at the edge from the start: in the run from step 0
        assert "central" in s["processes"] and central.index[0] == 0 and "joined" not in s
    else:                                      # joins the step after a recorded λ₂ reaches the line
        lam2 = run.records["diagnostics"]["lambda2"]
        crossed = int(lam2.index[(lam2 >= 1.8 / 0.5).to_numpy()][0])
        assert s["joined"] == {"central": crossed + 1} and central.index[0] == crossed + 1
        assert central["dist_gd"].iloc[0] == 0.0
    assert list(central.index) == list(range(central.index[0], 10))
    flagged = run.records["predicted"]["outside_assumptions"]
    assert (flagged.dropna() == 1.0).all() and flagged.notna().any()
    assert any(p["what"].startswith("central tracked") for p in s["theory"])
    assert "steps 0–" in text and "central tracked" in text
    from selfstab.report import write_report
    page = write_report(out, out / "report.md").read_text()
    assert "Which theory held when" in page and "central tracked" in page


def test_a_default_run_below_the_line_says_why_figure_c_is_not_there(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", "--out", str(out), "--track.steps", "3", *TINY, "--track.stop_lambda2", "1.99"]) == 0
    text = capsys.readouterr().out
    s = load_run(out).summary
    assert "central" not in s["processes"] and "joined" not in s
    assert "skipped: figure c (several unstable eigenvalues): λ₂ stayed below the λ₂ rule's line" in text
    assert "--track.processes gd,central" not in text
