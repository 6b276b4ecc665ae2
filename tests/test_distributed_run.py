"""Runs on two gloo ranks (docs/theory.md §11): ``torchrun … -m selfstab run`` against one process, rank 0
alone writing, a rank killed with SIGKILL and the run resumed, and a world size that changes.

Every launch runs in its own session with a bounded timeout.  torchrun starts each rank in a session of its
own, so the ranks are found by a tag in their environment and killed (with their process groups) in a
``finally``, whatever happened.  The launches use ``--standalone`` (a free port on 127.0.0.1).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from selfstab.cli.main import main
from selfstab.records import load_run
from selfstab.records.reading import read_latest_checkpoint

ARGS = ["--data.name", "synthetic", "--data.n", "64", "--data.n_test", "32", "--model.width", "8", "--lr", "0.5",
        "--quiet", "--track.diagnostics_every", "5", "--track.checkpoint_every", "4", "--track.stop_lambda2", "50",
        "--train.dtype", "float64", "--track.steps", "30"]
LAUNCH_TIMEOUT_S = 300   # one 2-rank run: two torch imports and 30 tracked steps on a shared 2-core machine
RTOL = 1e-9


def _tagged(tag: str) -> list[int]:
    """Pids of the live processes whose environment carries ``tag`` (what this test started)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            env = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"SELFSTAB_TEST_TAG={tag}".encode() in env:
            found.append(int(entry.name))
    return found


class Launch:
    """A command started in its own session; :meth:`close` kills it and every process it started."""

    def __init__(self, cmd: list[str], cwd: Path, env: dict[str, str] | None = None):
        self.tag = uuid.uuid4().hex
        env = dict(os.environ, OMP_NUM_THREADS="1", SELFSTAB_TEST_TAG=self.tag, **(env or {}))
        for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
            env.pop(key, None)
        self.proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, start_new_session=True)

    def wait(self, timeout: float) -> tuple[int, str, str]:
        out, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, out, err

    def close(self) -> None:
        for pid in [self.proc.pid, *_tagged(self.tag)]:
            try:
                os.killpg(os.getpgid(pid), signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        try:
            self.proc.communicate(timeout=10)
        except (subprocess.TimeoutExpired, ValueError):
            pass


def _run(cmd: list[str], cwd: Path, timeout: float = LAUNCH_TIMEOUT_S) -> tuple[int, str, str]:
    launch = Launch(cmd, cwd)
    try:
        return launch.wait(timeout)
    finally:
        launch.close()


def _tables(path: Path) -> dict:
    """Every record table but the wall-clock ``timing`` one."""
    return {k: v for k, v in load_run(path).records.items() if k != "timing"}


def _assert_close(ref: dict, got: dict) -> None:
    """Same tables, steps and fields; values within RTOL of the column's scale (eigen-solver residuals,
    rounding-level numbers themselves, within 1e-12 absolute)."""
    assert sorted(ref) == sorted(got)
    for name, a in ref.items():
        b = got[name]
        assert list(a.columns) == list(b.columns) and list(a.index) == list(b.index), name
        for col in a.columns:
            x, y = a[col].to_numpy(float), b[col].to_numpy(float)
            assert np.array_equal(np.isnan(x), np.isnan(y)), (name, col)
            m = ~np.isnan(x)
            if not m.any():
                continue
            err = np.abs(x[m] - y[m]).max()
            if col.endswith("eig_residual"):
                assert err <= 1e-12, (name, col, err)
            else:
                assert err <= RTOL * max(np.abs(x[m]).max(), 1e-300), (name, col, err)


def _assert_identical(ref: dict, got: dict) -> None:
    assert sorted(ref) == sorted(got)
    for name, a in ref.items():
        b = got[name]
        assert list(a.columns) == list(b.columns) and list(a.index) == list(b.index), name
        for col in a.columns:
            assert np.array_equal(a[col].to_numpy(), b[col].to_numpy(), equal_nan=True), (name, col)


def _files(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    """An uninterrupted 2-rank run, each rank in its own working folder with a relative ``--out``."""
    work = tmp_path_factory.mktemp("two_ranks")
    (work / "rank0").mkdir()
    (work / "rank1").mkdir()
    script = 'cd "rank$RANK" && exec "$0" -m selfstab "$@"'
    code, out, err = _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           "--no-python", "sh", "-c", script, sys.executable, "run", "--out", "run", *ARGS], work)
    assert code == 0, err[-3000:]
    return work, out, err


def test_two_ranks_agree_with_one_process_and_only_rank0_writes(two_ranks, tmp_path):
    work, out, _ = two_ranks
    one = tmp_path / "one"
    assert main(["run", "--out", str(one), *ARGS]) == 0
    run = work / "rank0" / "run"
    _assert_close(_tables(one), _tables(run))
    assert len(load_run(run).records["gd"]) == 30
    # rank 1 made nothing (not even the folder); rank 0 wrote what one process writes, nothing else
    assert _files(work / "rank1") == []
    assert sorted(p.name for p in work.iterdir()) == ["rank0", "rank1"]
    assert [p.name for p in (work / "rank0").iterdir()] == ["run"]
    assert _files(run) == _files(one)
    assert load_run(run).summary["world_size"] == 2 and load_run(one).summary["world_size"] == 1
    assert out.count("edge of stability reached") == 1   # rank 0 alone prints the report


# Loaded by every interpreter that the launch starts (a sitecustomize on PYTHONPATH): rank 1 kills itself with
# SIGKILL once it has tracked KILL_AT steps, at a step between two checkpoints (every 4), after noting the time.
# A known step, not a moment: the test does not depend on how fast this machine tracks.
KILL_AT = 10
KILL_RANK_1 = f"""
import os, signal, time
if os.environ.get("RANK") == "1" and "LOCAL_RANK" in os.environ:
    from selfstab.records.rundir import RunDir

    real = RunDir.tick

    def tick(self):
        if "gd" in self.recorders and len(self.recorders["gd"]) == {KILL_AT}:
            with open(os.environ["SELFSTAB_TEST_KILLED_AT"], "w") as f:
                f.write(repr(time.time()))
            os.kill(os.getpid(), signal.SIGKILL)
        return real(self)

    RunDir.tick = tick
"""


def test_sigkill_of_a_rank_then_resume_is_the_uninterrupted_run(two_ranks, tmp_path):
    work, _, _ = two_ranks
    killed, hook, stamp = tmp_path / "killed", tmp_path / "hook", tmp_path / "killed_at"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(KILL_RANK_1)
    path = os.pathsep.join(filter(None, [str(hook), os.environ.get("PYTHONPATH")]))
    launch = Launch([sys.executable, "-m", "selfstab", "run", "--nproc", "2", "--out", str(killed), *ARGS], tmp_path,
                    env={"PYTHONPATH": path, "SELFSTAB_TEST_KILLED_AT": str(stamp)})
    try:
        code, _, err = launch.wait(LAUNCH_TIMEOUT_S)
        # rank 0 does not hang on the dead rank: torchrun stops the launch within a minute (its monitor
        # polls every few seconds; a collective's own timeout would be far longer)
        assert stamp.exists() and time.time() - float(stamp.read_text()) < 60
    finally:
        launch.close()
    assert code != 0
    assert re.search(r"rank\s*: 1 \(local_rank: 1\)", err), err[-3000:]   # torchrun's summary names it
    lines = [x for x in err.splitlines() if x.startswith("selfstab run: error: rank 0: a collective failed")]
    assert len(lines) <= 1   # rank 0 says so in one line, when it saw the failure before torchrun stopped it
    # killed mid-run: on disk, everything through the checkpoint at step 8, and rank 0 was held at step 10
    steps = len(load_run(killed).records.get("gd", []))
    assert 8 <= steps <= KILL_AT and read_latest_checkpoint(killed)["state"]["lockstep"]["t"] == 8

    # resumed with another world size (one process): it continues, warns, and notes it in the summary
    other = tmp_path / "other"
    shutil.copytree(killed, other)

    code, _, err = _run([sys.executable, "-m", "selfstab", "resume", str(killed), "--nproc", "2"], tmp_path)
    assert code == 0, err[-3000:]
    _assert_identical(_tables(work / "rank0" / "run"), _tables(killed))
    assert "world_size_changes" not in load_run(killed).summary


def test_resume_with_another_world_size_warns_and_track_refuses(two_ranks, tmp_path, capsys):
    work, _, _ = two_ranks
    ref = work / "rank0" / "run"
    part = tmp_path / "part"
    shutil.copytree(ref, part)
    # as if stopped after its checkpoint at tracking step 28 (written by world size 2); resume on one process
    newest = sorted((part / "checkpoints").glob("*.pt"))[-1]
    assert newest.name.endswith("-step30.pt")
    newest.unlink()
    assert main(["resume", str(part)]) == 0
    err = capsys.readouterr().err
    assert "warning" in err and "world size 2, resumed with 1 from tracking step 28" in err
    assert "reduction order changed" in err
    changes = load_run(part).summary["world_size_changes"]
    assert [(c["from"], c["to"]) for c in changes] == [(2, 1)]
    _assert_close(_tables(ref), _tables(part))

    # track refuses another world size than the training's: one line, nothing made
    copy = tmp_path / "copy"
    shutil.copytree(ref, copy)
    new = tmp_path / "new"
    assert main(["track", str(copy), "--out", str(new)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "trained with world size 2 but this launch has 1" in err[0] and "--nproc 2" in err[0]
    assert not new.exists()
    assert main(["track", str(copy)]) == 2
    assert "trained with world size 2" in capsys.readouterr().err


def test_launch_errors_are_one_line(tmp_path, monkeypatch, capsys):
    out = tmp_path / "x"
    assert main(["run", "--nproc", "0", "--out", str(out), *ARGS]) == 2
    assert capsys.readouterr().err.strip() == "selfstab run: error: --nproc: must be at least 1, got 0"
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    for key in ("MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    assert main(["run", "--nproc", "2", "--out", str(out), *ARGS]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "already running under torchrun" in err[0]
    # torchrun's environment without its rendezvous: the process group cannot start; one line naming the rank
    assert main(["run", "--out", str(out), *ARGS]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["selfstab run: error: rank 0: distributed: MASTER_ADDR, MASTER_PORT not set; launch with "
                   "`torchrun --nproc-per-node N ...` (or set them as torchrun does)"]
    assert not out.exists()


def test_fewer_examples_than_ranks_is_one_line_per_rank(tmp_path):
    out = tmp_path / "few"
    code, _, err = _run([sys.executable, "-m", "selfstab", "run", "--nproc", "2", "--out", str(out),
                         "--data.name", "synthetic", "--data.n", "1", "--model.width", "8", "--quiet"], tmp_path)
    assert code != 0
    for rank in (0, 1):
        assert (f"selfstab run: error: rank {rank}: data: 1 examples for 2 ranks; every rank needs at least one "
                f"example, so use at most 1 ranks or more data") in err.splitlines(), err[-3000:]
    assert not out.exists()


MISMATCH = '''
import sys, torch
from selfstab import distributed
from selfstab.distributed import RankMismatchError
from selfstab.experiment import _checkpoint
from selfstab.records import RunDir
distributed.init(backend="gloo", timeout=60)
r = distributed.rank()


def say(line):   # one write per line: two ranks share the pipe, and a write under PIPE_BUF is never split
    sys.stdout.write(line + "\\n")
    sys.stdout.flush()

run = RunDir.create(sys.argv[1], {"seed": 0})
_checkpoint(run, 3, {"theta": torch.arange(5.0), "warm": torch.ones(2, 5)})       # the same on both ranks
try:
    _checkpoint(run, 4, {"theta": torch.arange(5.0) + 1e-12 * r, "warm": torch.ones(2, 5)})
except RankMismatchError as exc:
    say(f"rank {r}: {exc}")
latest = run.rewind_to_checkpoint()           # barrier, then both ranks read what rank 0 wrote
say(f"rank {r}: read step {latest[0]} theta {latest[1]['theta'].tolist()} world {run.checkpoint_world_size}")
distributed.shutdown()
'''


def test_state_check_at_checkpoints_and_the_barrier_read(tmp_path):
    """θ that differs by one ulp-sized change on rank 1 is caught at the checkpoint, which is not written; both
    ranks then read rank 0's earlier checkpoint after the barrier."""
    script = tmp_path / "mismatch.py"
    script.write_text(MISMATCH)
    out = tmp_path / "run"
    code, text, err = _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                            str(script), str(out)], tmp_path, timeout=120)
    assert code == 0, err[-3000:]
    lines = set(x for x in text.splitlines() if x.startswith("rank "))
    mismatch = ("state at checkpoint step 4: rank 1 holds a different state at checkpoint step 4 than rank 0 "
                "(bitwise checksums differ); the replicated computation diverged across ranks")
    assert lines == {*(f"rank {r}: {mismatch}" for r in (0, 1)),
                     *(f"rank {r}: read step 3 theta [0.0, 1.0, 2.0, 3.0, 4.0] world 2" for r in (0, 1))}, text
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["ckpt-000000-step3.pt"]
