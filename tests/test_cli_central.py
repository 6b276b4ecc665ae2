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
    expected = (np.arange(10) >= crossed[0]).astype(float)
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
    assert off.summary["tracked_steps"] == 6 and "outside_assumptions" not in off.records["constrained"]
