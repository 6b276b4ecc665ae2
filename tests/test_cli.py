"""The command line end to end on a tiny problem: run, kill -9, resume, sweep, bad input."""

import os
import signal
import subprocess
import sys

import h5py
import pandas as pd
import pytest

from selfstab import load_run
from selfstab.cli.main import main
from selfstab.records import RunDir
from selfstab.records.reading import read_latest_checkpoint

# A tiny problem that reaches the edge in a few steps and tracks at ~0.3 s a step.
TINY = ["--data.name", "synthetic", "--data.n", "64", "--data.n_test", "32", "--model.width", "8", "--lr", "0.5", "--quiet",
        "--track.diagnostics_every", "5", "--track.checkpoint_every", "4", "--track.stop_lambda2", "50"]


def _selfstab(*args, **kw):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-m", "selfstab.cli.main", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def _records_equal(a, b):
    assert set(a.records) == set(b.records)
    for name in a.records:
        if name == "timing":   # wall-clock seconds: the one table that differs between runs
            continue
        pd.testing.assert_frame_equal(a.records[name], b.records[name], check_exact=True)


def test_run_writes_records_summary_and_figures(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", "--out", str(out), "--track.steps", "12", *TINY]) == 0
    text = capsys.readouterr().out
    assert "edge of stability reached at step" in text and "figures:" in text
    run = load_run(out)
    assert {"train", "gd", "constrained", "predicted", "generalized", "flow", "diagnostics", "cost"} <= set(run.records)
    assert len(run.records["gd"]) == 12 and run.summary["tracked_steps"] == 12
    with h5py.File(out / "records.h5") as f:   # opens in one line without selfstab
        assert f["gd/loss"][:].shape == (12,)
    for stem in ("figure1", "figure4"):
        assert (out / "figures" / f"{stem}.png").stat().st_size > 1000
    assert (out / "config.toml").read_text().count("=") > 30   # every default written out


# `selfstab ARGS` that kills itself with SIGKILL once tracking has recorded `at` steps: at a step between two
# checkpoints, right after a flush of the records (what the flush_seconds budget does in a long run), so the
# records on disk run past the last checkpoint.  A known step, not a moment: the test does not depend on how
# fast this machine tracks.
KILL_AT_STEP = """
import os, signal, sys
from selfstab.cli.main import main
from selfstab.records import RunDir

at, real = int(sys.argv[1]), RunDir.tick

def tick(self):
    if "gd" in self.recorders and len(self.recorders["gd"]) == at:
        self.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    return real(self)

RunDir.tick = tick
sys.exit(main(sys.argv[2:]))
"""


def test_sigkill_then_resume_equals_uninterrupted(tmp_path):
    steps = ["--track.steps", "20"]
    ref = tmp_path / "ref"
    assert main(["run", "--out", str(ref), *steps, *TINY]) == 0
    killed = tmp_path / "killed"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", KILL_AT_STEP, "10", "run", "--out", str(killed), *steps, *TINY],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    partial = load_run(killed)                 # readable after SIGKILL
    assert len(partial.records["gd"]) == 10    # the rows flushed past the last checkpoint (step 8, every 4)
    assert read_latest_checkpoint(killed)["state"]["lockstep"]["t"] == 8
    assert main(["resume", str(killed)]) == 0
    _records_equal(load_run(killed), load_run(ref))


@pytest.mark.parametrize("argv,expected", [
    (["run", "--model.widht", "8"], "unknown key 'model.widht'; did you mean 'model.width'"),
    (["run", "--model.width", "abc"], "model.width must be an int"),
    (["run", "--model.name", "vgg"], "unknown model 'vgg'"),
    (["run", "--lr", "-1"], "lr"),
    (["run", "--loss", "hinge"], "loss must be one of"),
    (["run", "--data.name", "imagenet"], "unknown dataset 'imagenet'"),
])
def test_bad_input_is_one_line_naming_the_field(tmp_path, capsys, argv, expected):
    assert main([*argv, "--out", str(tmp_path / "x"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert expected in err and len(err.splitlines()) == 1


def test_not_a_run_and_changed_config_on_resume(tmp_path, capsys):
    assert main(["resume", str(tmp_path)]) == 2
    assert "is not a selfstab run directory" in capsys.readouterr().err
    out = tmp_path / "r"
    RunDir.create(out, {"lr": 0.5})
    assert main(["resume", str(out), "--lr", "0.3"]) == 2
    err = capsys.readouterr().err
    assert "config changed (lr)" in err and len(err.strip().splitlines()) == 1


def test_sweep_three_lrs_two_jobs(tmp_path, capsys):
    out = tmp_path / "sweep"
    assert main(["sweep", "--lrs", "0.4", "0.5", "0.6", "--jobs", "2", "--out", str(out), "--track.steps", "6",
                 *TINY]) == 0
    runs = sorted(p for p in out.iterdir() if (p / "config.toml").exists())
    assert [p.name for p in runs] == ["lr0.4", "lr0.5", "lr0.6"]
    for stem in ("figure4", "figure6"):
        assert (out / "figures" / f"{stem}.png").stat().st_size > 1000


def test_models_and_datasets_list_everything(capsys):
    assert main(["models"]) == 0 and main(["datasets"]) == 0
    text = capsys.readouterr().out
    for name in ("mlp", "cnn", "resnet18", "transformer", "digits", "mnist1d", "cifar10", "cifar10-catdog", "sst2",
                 "synthetic"):
        assert name in text
    assert "parameters" in text


def test_tensorboard_without_the_package_is_a_clear_error(tmp_path, capsys):
    pytest.importorskip("torch")
    try:
        import tensorboard  # noqa: F401
        pytest.skip("tensorboard is installed here")
    except ImportError:
        pass
    assert main(["train", "--out", str(tmp_path / "tb"), "--tensorboard", *TINY]) == 2
    assert "pip install tensorboard" in capsys.readouterr().err
