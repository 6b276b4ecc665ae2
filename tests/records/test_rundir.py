"""Run directories: records round trips, checkpoints, resume, and survival of SIGKILL at any moment."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
import tomllib

import h5py
import numpy as np
import pandas as pd
import pytest
import torch

from selfstab.config import RunConfig, from_dict, load_config
from selfstab.errors import ConfigError
from selfstab.records import Recorder, RunDir, load_run


def test_records_round_trip_with_gaps_and_late_fields(tmp_path):
    run = RunDir.create(tmp_path / "r", {"seed": 0})
    gd = run.recorder("gd")
    for t in range(10):
        fields = {"loss": 1.0 / (t + 1), "sharpness": np.float32(t) if t % 2 == 0 else None}
        if t >= 6:
            fields["late"] = torch.tensor(2.0 * t, dtype=torch.float64)  # a field that appears late
        gd.append(t, **fields)
    gd.append(9, extra=np.int64(7))  # same step: joins the row
    run.recorder("train").append(0, loss=float("inf"), x=True)
    run.flush()

    frame = load_run(tmp_path / "r").records["gd"]
    assert list(frame.columns) == ["loss", "sharpness", "late", "extra"]
    assert frame.index.name == "step" and frame.index.dtype == np.int64
    assert list(frame.index) == list(range(10)) and all(frame.dtypes == np.float64)
    np.testing.assert_array_equal(frame["loss"], 1.0 / np.arange(1, 11))
    assert frame["sharpness"].isna().tolist() == [t % 2 == 1 for t in range(10)]
    assert frame["late"].isna().sum() == 6 and frame.loc[7, "late"] == 14.0
    assert frame["extra"].isna().sum() == 9 and frame.loc[9, "extra"] == 7.0
    pd.testing.assert_frame_equal(frame, gd.frame())

    # plain h5py, no selfstab: one line per column
    with h5py.File(tmp_path / "r" / "records.h5") as f:
        np.testing.assert_array_equal(f["gd/loss"][:], 1.0 / np.arange(1, 11))
        assert f["gd/step"].dtype == np.int64 and f["train/loss"][0] == np.inf and f["train/x"][0] == 1.0
        direct = pd.DataFrame({k: v[:] for k, v in f["gd"].items()}).set_index("step")
    pd.testing.assert_frame_equal(direct[frame.columns], frame)


def test_bad_values_are_one_line_errors(tmp_path):
    rec = RunDir.create(tmp_path / "r", {}).recorder("gd")
    rec.append(3, loss=1.0)
    for bad, message in [
        (dict(name="mlp"), "records: gd.name = 'mlp' is text"),
        (dict(v=torch.ones(3)), "records: gd.v must be a number"),
        ({"a/b": 1.0}, "is not a valid name"),
    ]:
        with pytest.raises(ConfigError, match=message):
            rec.append(4, **bad)
    assert len(rec) == 1 and rec.fields == ["loss"]  # a refused append changes nothing
    with pytest.raises(ConfigError, match="step must be an int, got 4.5"):
        rec.append(4.5, loss=1.0)
    rec.append(np.int64(4), loss=2.0)
    with pytest.raises(ConfigError, match="step 2 after step 4"):
        rec.append(2, loss=1.0)
    with pytest.raises(ConfigError, match="not a valid name"):
        RunDir.open(tmp_path / "r").recorder("a/b")


def test_create_open_and_overwrite(tmp_path):
    cfg = load_config(RunConfig, None, ["--lr", "0.05", "--data.n", "100"])
    run = RunDir.create(tmp_path / "r", cfg)
    assert from_dict(RunConfig, run.config) == cfg
    assert from_dict(RunConfig, tomllib.loads((tmp_path / "r" / "config.toml").read_text())) == cfg
    run.recorder("gd").append(0, loss=1.0)
    run.flush()
    with pytest.raises(ConfigError, match="already holds a run"):
        RunDir.create(tmp_path / "r", cfg)

    # reopening continues where the records stop
    again = RunDir.open(tmp_path / "r")
    again.recorder("gd").append(1, loss=2.0)
    again.flush()
    assert load_run(tmp_path / "r")["gd"]["loss"].tolist() == [1.0, 2.0]

    fresh = RunDir.create(tmp_path / "r", {"seed": 1}, overwrite=True)
    assert fresh.config == {"seed": 1} and load_run(tmp_path / "r").records == {}

    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="not a selfstab run directory; refusing"):
        RunDir.create(other, {}, overwrite=True)
    assert (other / "notes.txt").read_text() == "keep me"


def test_open_a_non_run_directory(tmp_path):
    for opener in (RunDir.open, load_run):
        with pytest.raises(ConfigError) as info:
            opener(tmp_path)
        assert str(info.value).startswith(f"run: {tmp_path} is not a selfstab run directory (no config.toml);")


def test_summary(tmp_path):
    run = RunDir.create(tmp_path / "r", {})
    run.write_summary({"onset_step": np.int64(2200), "lr": 0.02, "note": "ok"})
    run.write_summary({"final_loss": float("nan"), "eigs": torch.tensor([2.0, 1.5])})
    expected = {"onset_step": 2200, "lr": 0.02, "note": "ok", "final_loss": None, "eigs": [2.0, 1.5]}
    assert run.summary == expected
    assert json.loads((tmp_path / "r" / "summary.json").read_text()) == expected  # strict JSON
    assert load_run(tmp_path / "r").summary == expected == RunDir.open(tmp_path / "r").summary


def _state(step):
    torch.manual_seed(step)
    np.random.seed(step)
    return {
        "theta": torch.arange(5, dtype=torch.float64) * step,
        "view": torch.zeros(1000)[:3],
        "torch_rng": torch.get_rng_state(),
        "numpy_rng": np.random.get_state(),
        "generator": np.random.default_rng(step).bit_generator.state,
        "arrays": [np.arange(step % 4, dtype=np.uint32), np.eye(2, dtype=np.float32), np.array(3.5),
                   np.array(["ab", "c"]), np.array([True, False]), np.zeros((0, 3))],
        "scalars": (np.float64(0.1), 3, 2.5, "swish", None, True, b"\x00\xff", b"", 2**100, 1 + 2j),
        7: {"int key": np.int16(-3)},
        "dtype": torch.float64,
    }


def test_checkpoint_round_trip_and_rng_restore(tmp_path):
    run = RunDir.create(tmp_path / "r", {})
    run.save_checkpoint(4, _state(4))
    step, state = RunDir.open(tmp_path / "r").latest_checkpoint()
    assert step == 4
    assert torch.equal(state["theta"], torch.arange(5, dtype=torch.float64) * 4)
    assert state["view"].untyped_storage().nbytes() == 3 * 4
    for got, want in zip(state["arrays"], _state(4)["arrays"]):
        assert got.dtype == want.dtype and got.shape == want.shape and np.array_equal(got, want)
    assert state["scalars"] == (0.1, 3, 2.5, "swish", None, True, b"\x00\xff", b"", 2**100, 1 + 2j)
    assert state[7]["int key"] == -3 and type(state[7]["int key"]) is np.int16
    assert type(state["scalars"][0]) is np.float64 and state["dtype"] is torch.float64
    torch.set_rng_state(state["torch_rng"])
    np.random.set_state(state["numpy_rng"])
    gen = np.random.default_rng()
    gen.bit_generator.state = state["generator"]
    torch.manual_seed(4), np.random.seed(4)
    assert torch.equal(torch.rand(3), (torch.set_rng_state(state["torch_rng"]), torch.rand(3))[1])
    assert np.array_equal(np.random.rand(3), (np.random.set_state(state["numpy_rng"]), np.random.rand(3))[1])
    assert np.array_equal(gen.random(3), np.random.default_rng(4).random(3))

    with pytest.raises(ConfigError, match=r"checkpoint: state\['opt'\]\[1\] has unsupported type object"):
        run.save_checkpoint(5, {"opt": [1, object()]})
    with pytest.raises(ConfigError, match="use str or int keys"):
        run.save_checkpoint(5, {np.int64(1): 2})
    assert run.latest_checkpoint()[0] == 4  # a refused state writes nothing


def test_keep_rewind_and_corrupt_newest_checkpoint(tmp_path):
    run = RunDir.create(tmp_path / "r", {})
    gd = run.recorder("gd")
    for t in range(10):
        gd.append(t, loss=float(t))
        if t % 3 == 2:
            run.save_checkpoint(t, {"t": t})
    files = sorted((tmp_path / "r" / "checkpoints").iterdir())
    assert [f.name for f in files] == ["ckpt-000001-step5.pt", "ckpt-000002-step8.pt"]  # keep=2
    run.flush()

    files[-1].write_bytes(b"garbage" * 10)
    reopened = RunDir.open(tmp_path / "r")
    with pytest.warns(UserWarning, match="skipping unreadable checkpoint"):
        step, state = reopened.latest_checkpoint()
    assert (step, state) == (5, {"t": 5})
    with pytest.warns(UserWarning):
        assert reopened.rewind_to_checkpoint() == (5, {"t": 5})
    assert load_run(tmp_path / "r")["gd"].index.tolist() == list(range(6))

    reopened.rewind_to(3)
    assert reopened.recorder("gd").frame().index.tolist() == [0, 1, 2, 3]
    assert load_run(tmp_path / "r")["gd"].index.tolist() == [0, 1, 2, 3]

    # steps count from 0 again in the tracking phase: the newest checkpoint is the last written
    reopened.recorder("track").append(0, x=1.0)
    reopened.save_checkpoint(0, {"phase": "track"})
    assert reopened.latest_checkpoint() == (0, {"phase": "track"})
    for f in (tmp_path / "r" / "checkpoints").iterdir():
        f.write_bytes(b"")
    with pytest.warns(UserWarning):
        assert reopened.latest_checkpoint() is None
    with pytest.warns(UserWarning):
        assert reopened.rewind_to_checkpoint() is None  # no checkpoint: start from scratch
    assert load_run(tmp_path / "r").records == {}


def _steps(run, steps):
    for t in steps:
        gd = run.recorder("gd")
        gd.append(t, loss=np.sin(t), diag=np.cos(t) if t % 3 == 0 else None)
        if t >= 9:
            gd.append(t, late=2.0 * t)  # born after the last checkpoint of the interrupted run
        if t >= 10:
            run.recorder("track").append(t - 10, x=float(t))  # a process born after it, with its own clock
        if t % 4 == 0:
            run.save_checkpoint(t, {"t": t})
    run.flush()


def test_resume_matches_an_uninterrupted_run(tmp_path):
    _steps(RunDir.create(tmp_path / "a", {}), range(14))
    _steps(RunDir.create(tmp_path / "b", {}), range(11))  # then "killed": records ran past checkpoint 8
    resumed = RunDir.open(tmp_path / "b")
    step, state = resumed.rewind_to_checkpoint()
    assert step == state["t"] == 8
    assert list(load_run(tmp_path / "b").records) == ["gd"]
    assert list(load_run(tmp_path / "b")["gd"].columns) == ["loss", "diag"]
    _steps(resumed, range(step + 1, 14))

    a, b = load_run(tmp_path / "a").records, load_run(tmp_path / "b").records
    assert list(a) == list(b) == ["gd", "track"]
    for name in a:
        pd.testing.assert_frame_equal(a[name], b[name])


def _seconds(action, repeat=3):
    """The fastest of ``repeat`` timings of ``action()`` (the least disturbed by other work on the machine)."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        action()
        best = min(best, time.perf_counter() - start)
    return best


def test_flush_of_20k_steps_by_60_fields_is_fast(tmp_path):
    run = RunDir.create(tmp_path / "r", {})
    rec = run.recorder("gd")
    row = {f"field{i}": float(i) for i in range(60)}
    for t in range(20_000):
        rec.append(t, **row)
    columns = np.random.default_rng(0).random((60, 20_000))

    def plain_write():   # the same 60 columns written by h5py directly and synced: what any flush must cost
        with h5py.File(tmp_path / "plain.h5", "w") as f:
            for i, col in enumerate(columns):
                f.create_dataset(f"gd/field{i}", data=col)
        with open(tmp_path / "plain.h5", "rb+") as fh:
            os.fsync(fh.fileno())

    def flush():
        rec.append(len(rec), **row)   # a new row, so that the flush rewrites the file
        run.flush()

    # against the plain write timed in the same run, not a number of seconds measured on one machine: the
    # flush is whole columns (measured at ~1× the plain write); a per-row or per-field write would be
    # hundreds of times slower
    plain, flushed = _seconds(plain_write), _seconds(flush)
    assert flushed < 10 * plain + 0.05, f"flush took {flushed:.3f} s, the plain write {plain:.3f} s"
    assert load_run(tmp_path / "r")["gd"].shape == (20_003, 60)


def test_recorder_grows_past_its_capacity():
    rec = Recorder("gd")
    for t in range(200):
        rec.append(t, **({"a": t} if t % 50 else {"b": -t}))
    frame = rec.frame()
    assert frame.shape == (200, 2) and frame["b"].notna().sum() == 4 and frame.loc[199, "a"] == 199


# --------------------------------------------------------------------------- SIGKILL

# Imports torch once, then forks one writer per trial (a fresh interpreter per kill would
# spend ~2 s importing torch each time).  A writer flushes every step, checkpoints every
# 5th, and prints "ready PID" once it has flushed a few steps; the parent reaps it and
# prints "dead PID STATUS".
SPAWNER = textwrap.dedent(
    """
    import os, sys
    import numpy as np, torch
    import selfstab.records.io as rio
    from selfstab.records import RunDir

    def write(path):
        run = RunDir.create(path, {"seed": 0})
        gd, flow = run.recorder("gd"), run.recorder("flow")
        t = 0
        while True:
            gd.append(t, loss=np.sin(t), sharpness=t * 0.5, even=t if t % 2 == 0 else None)
            if t >= 30:
                gd.append(t, late=t * 3.0)
            flow.append(t, loss=np.cos(t))
            if t % 5 == 0:
                torch.manual_seed(t)
                run.save_checkpoint(t, {"t": t, "theta": torch.full((200,), float(t), dtype=torch.float64),
                                        "rng": torch.get_rng_state(), "np": np.random.get_state()})
            else:
                run.flush()
            if t == 3:
                print("ready", os.getpid(), flush=True)
            t += 1

    for line in sys.stdin:
        path, fsync = line.rstrip("\\n").rsplit(" ", 1)
        pid = os.fork()
        if pid == 0:
            rio.FSYNC = fsync == "1"
            try:
                write(path)
            finally:
                os._exit(1)
        _, status = os.waitpid(pid, 0)
        print("dead", pid, status, flush=True)
    """
)


def _check_prefix(frame, n):
    steps = np.arange(n)
    assert frame.index.tolist() == steps.tolist()  # contiguous, nothing torn
    np.testing.assert_array_equal(frame["loss"].to_numpy(), np.sin(steps))
    np.testing.assert_array_equal(frame["sharpness"].to_numpy(), steps * 0.5)
    np.testing.assert_array_equal(frame["even"].to_numpy(), np.where(steps % 2 == 0, steps, np.nan))
    if n > 30:
        np.testing.assert_array_equal(frame["late"].to_numpy(), np.where(steps >= 30, steps * 3.0, np.nan))


def _check_killed_run(path, pid):
    run = load_run(path)  # stray temp files (if any) must not matter
    gd, flow = run.records["gd"], run.records["flow"]
    n = len(gd)
    assert n >= 4 and len(flow) == n
    _check_prefix(gd, n)
    np.testing.assert_array_equal(flow["loss"].to_numpy(), np.cos(np.arange(n)))

    writer = RunDir.open(path)  # removes the dead writer's temp files
    assert not list(path.rglob(f".*.tmp-{pid}-*"))
    step, state = writer.latest_checkpoint()
    assert step % 5 == 0 and step <= n - 1 and state["t"] == step
    assert torch.equal(state["theta"], torch.full((200,), float(step), dtype=torch.float64))
    torch.manual_seed(step)
    assert torch.equal(state["rng"], torch.get_rng_state())

    # resume: cut back to the checkpoint, continue, and match an uninterrupted run
    assert writer.rewind_to_checkpoint()[0] == step
    assert load_run(path)["gd"].index.tolist() == list(range(step + 1))
    for t in range(step + 1, step + 40):
        writer.recorder("gd").append(t, loss=np.sin(t), sharpness=t * 0.5, even=t if t % 2 == 0 else None)
        if t >= 30:
            writer.recorder("gd").append(t, late=t * 3.0)
    writer.flush()
    _check_prefix(load_run(path)["gd"], step + 40)


def test_sigkill_at_random_moments_leaves_a_readable_consistent_run(tmp_path):
    """Kill writers 0.05–0.5 s into their loop and check what they leave.

    Every other writer skips fsync (SELFSTAB_FSYNC=0): its flushes are ~5×
    faster, so more kills land inside h5py's own writing than inside fsync.
    """
    rng = random.Random(1234)
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    spawner = subprocess.Popen([sys.executable, "-c", SPAWNER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               text=True, bufsize=1, env=env)
    try:
        for trial in range(8):
            path = tmp_path / f"run{trial}"
            spawner.stdin.write(f"{path} {trial % 2}\n")
            spawner.stdin.flush()
            word, pid = spawner.stdout.readline().split()
            assert word == "ready"
            time.sleep(rng.uniform(0.05, 0.5))
            os.kill(int(pid), signal.SIGKILL)
            word, _, status = spawner.stdout.readline().split()
            assert word == "dead" and os.WIFSIGNALED(int(status)) and os.WTERMSIG(int(status)) == signal.SIGKILL
            _check_killed_run(path, int(pid))
    finally:
        spawner.stdin.close()
        try:
            spawner.wait(timeout=10)
        except subprocess.TimeoutExpired:
            spawner.kill()
            spawner.wait()
        spawner.stdout.close()


def test_stray_temp_files_are_ignored_and_cleaned(tmp_path):
    run = RunDir.create(tmp_path / "r", {})
    run.recorder("gd").append(0, loss=1.0)
    run.save_checkpoint(0, {"t": 0})
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    junk = [tmp_path / "r" / f".records.h5.tmp-{dead.pid}-00ff", tmp_path / "r" / f".summary.json.tmp-{dead.pid}-01",
            tmp_path / "r" / "checkpoints" / f".ckpt-000009-step9.pt.tmp-{dead.pid}-ab"]
    live = tmp_path / "r" / f".records.h5.tmp-{os.getpid()}-cd"  # a write in progress in this process
    for f in [*junk, live]:
        f.write_bytes(b"half a file")
    assert load_run(tmp_path / "r")["gd"]["loss"].tolist() == [1.0]
    reopened = RunDir.open(tmp_path / "r")
    assert reopened.latest_checkpoint() == (0, {"t": 0})
    assert not any(f.exists() for f in junk) and live.exists()
