"""A process written outside the package runs in lockstep with the built-in ones and survives SIGKILL + resume."""

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import torch

from selfstab.processes import PROCESSES, default_processes, register_process, track
from selfstab.records import load_run
from selfstab.records.reading import read_latest_checkpoint
from selfstab.theory import toy_objective

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from custom_process import HeavyBall  # noqa: E402

# A tiny problem that reaches the edge in a few steps (see tests/test_cli.py).
CONFIG = {"lr": 0.5, "quiet": True, "data": {"name": "synthetic", "n": 64, "n_test": 32}, "model": {"width": 8},
          "track": {"steps": 16, "checkpoint_every": 3, "diagnostics_every": 5, "stop_lambda2": 50.0,
                    "processes": ["gd", "constrained", "predicted", "flow", "heavy_ball"]}}

CHILD = textwrap.dedent("""
    import sys
    sys.path.insert(0, {here!r})
    from custom_process import HeavyBall
    from selfstab.processes import register_process
    from selfstab import experiment
    register_process(HeavyBall)
    if sys.argv[1] == "run-killed":   # kill -9 at a known step: after the flush of step 8's rows (checkpoint: 6)
        import os, signal
        from selfstab.records import RunDir
        real = RunDir.tick
        def tick(self):
            if "gd" in self.recorders and len(self.recorders["gd"]) == 8:
                self.flush()
                os.kill(os.getpid(), signal.SIGKILL)
            return real(self)
        RunDir.tick = tick
    if sys.argv[1].startswith("run"):
        config = {config!r}
        config["out"] = sys.argv[2]
        experiment.run(config, figures=False)
    else:
        experiment.resume(sys.argv[2])
""")


def _child(mode: str, path: Path) -> subprocess.Popen:
    code = CHILD.format(here=str(HERE), config=CONFIG)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-c", code, mode, str(path)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def _finish(proc: subprocess.Popen, timeout: float = 240) -> None:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    assert proc.returncode == 0, err[-2000:]


def test_heavy_ball_against_its_definition_in_lockstep():
    lr = 0.05
    obj = toy_objective(1.0, 1.0, lr, x0=0.1)
    res = track(obj, obj.theta0, lr, 6, processes=[*default_processes(["gd", "constrained"]), HeavyBall()])
    assert res.stop_reason.startswith("steps") and list(res.records) == ["gd", "constrained", "heavy_ball", "cost"]
    # the same recursion written out here
    phi, m = obj.theta0.clone(), torch.zeros_like(obj.theta0)
    for r, g in zip(res.records["heavy_ball"], res.records["gd"]):
        assert r["loss"] == pytest.approx(float(obj.loss(phi)), rel=1e-14)
        m = 0.5 * m + obj.grad(phi)
        phi = phi - lr * m
    assert res.records["heavy_ball"][0]["dist_gd"] == 0.0 and res.records["heavy_ball"][-1]["dist_gd"] > 0


def test_registered_process_is_chosen_by_name_and_validated():
    register_process(HeavyBall)
    assert PROCESSES["heavy_ball"] is HeavyBall and not HeavyBall.default
    procs = default_processes(["constrained", "gd", "heavy_ball"], momentum=0.9)
    assert [p.name for p in procs][-1] == "heavy_ball" and procs[-1].momentum == 0.9
    with pytest.raises(Exception, match="'predicted' needs the 'constrained' process"):
        default_processes(["gd", "predicted", "heavy_ball"])
    assert [p.name for p in default_processes(["gd", "heavy_ball"])] == ["gd", "heavy_ball"]
    assert "heavy_ball" not in [p.name for p in default_processes()]   # opt-in only
    with pytest.raises(Exception, match="did you mean 'heavy_ball'"):
        default_processes(["heavy_bal"])


def test_sigkill_and_resume_give_bit_identical_records(tmp_path):
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    _finish(_child("run", ref))
    proc = _child("run-killed", killed)
    try:
        proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    assert proc.returncode == -signal.SIGKILL
    partial = load_run(killed)
    assert len(partial.records["heavy_ball"]) == 8 and read_latest_checkpoint(killed)["state"]["lockstep"]["t"] == 6
    _finish(_child("resume", killed))
    a, b = load_run(ref).records, load_run(killed).records
    assert set(a) == set(b) and len(a["heavy_ball"]) == CONFIG["track"]["steps"]
    for name in a:
        if name != "timing":   # wall-clock seconds: the one table that differs
            pd.testing.assert_frame_equal(a[name], b[name], check_exact=True)
