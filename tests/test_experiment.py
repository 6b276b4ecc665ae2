"""experiment.py directly: selfstab.run from Python is the CLI's main job; config → process options; resume."""

import pandas as pd
import pytest

import selfstab
from selfstab import experiment
from selfstab.cli.main import main
from selfstab.config import RunConfig, TrackConfig, load_config
from selfstab.processes import default_processes
from selfstab.records import load_run

TINY = {"lr": 0.5, "quiet": True, "data": {"name": "synthetic", "n": 64, "n_test": 32}, "model": {"width": 8},
        "track": {"steps": 8, "diagnostics_every": 5, "checkpoint_every": 4, "stop_lambda2": 50.0}}
TINY_ARGS = ["--lr", "0.5", "--quiet", "--data.name", "synthetic", "--data.n", "64", "--data.n_test", "32",
             "--model.width", "8", "--track.steps", "8", "--track.diagnostics_every", "5",
             "--track.checkpoint_every", "4", "--track.stop_lambda2", "50"]


def test_python_run_equals_the_command_line(tmp_path):
    api = selfstab.run({**TINY, "out": str(tmp_path / "api")})
    assert main(["run", "--out", str(tmp_path / "cli"), *TINY_ARGS]) == 0
    a, b = load_run(api.path), load_run(tmp_path / "cli")
    assert a.summary["onset_step"] == b.summary["onset_step"] and a.summary["tracked_steps"] == 8
    for name in a.records:
        if name != "timing":
            pd.testing.assert_frame_equal(a.records[name], b.records[name], check_exact=True)
    assert sorted(p.name for p in (api.path / "figures").glob("*.png")) == \
        sorted(p.name for p in (tmp_path / "cli" / "figures").glob("*.png"))


def test_track_options_are_the_process_keywords():
    tc = TrackConfig(eig_tol=1e-8, flow=False, diagnostics_every=7)
    opts = experiment.track_options(tc)
    assert opts["eig_tol"] == 1e-8 and opts["diagnostics_every"] == 7 and "stop_lambda2" not in opts
    assert "steps" not in opts and "checkpoint_every" not in opts   # run settings, not process options
    procs = default_processes(tc.processes, **opts)
    assert [p.name for p in procs] == ["gd", "constrained", "predicted", "generalized", "diagnostics"]
    assert procs[-1].every == 7 and procs[1].trackers[0].tol == 1e-8


def test_chosen_processes_from_the_config(tmp_path):
    cfg = load_config(RunConfig, {**TINY, "out": str(tmp_path / "r")}, ["--track.processes", "gd,constrained,flow"])
    run = experiment.run(cfg, figures=False)
    assert {"gd", "constrained", "flow", "cost", "timing", "train"} == set(load_run(run.path).records)


def test_resume_continues_a_stopped_track_phase(tmp_path):
    ref = experiment.run({**TINY, "out": str(tmp_path / "ref")}, figures=False)
    short = experiment.run({**TINY, "out": str(tmp_path / "short"), "track": {**TINY["track"], "steps": 4}},
                           figures=False)
    # the same run, told to go on to 8 steps: it continues from its checkpoint at 4
    (short.path / "config.toml").write_text((short.path / "config.toml").read_text().replace("steps = 4", "steps = 8"))
    experiment.resume(short.path)
    a, b = load_run(ref.path).records, load_run(short.path).records
    for name in a:
        if name != "timing":
            pd.testing.assert_frame_equal(a[name], b[name], check_exact=True)


def test_bad_config_type():
    with pytest.raises(selfstab.ConfigError, match="expected a RunConfig"):
        experiment.run(42)
