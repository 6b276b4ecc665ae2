"""Unwritable places give one clear line (path and fix), and a run says whether it is running."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from selfstab.cli.main import main
from selfstab.errors import ConfigError, NotWritableError
from selfstab.records import RunDir, load_run, writable_folder
from selfstab.records import io as records_io

ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def _erofs(*args, **kwargs):
    raise OSError(errno.EROFS, "Read-only file system", str(args[0]) if args else None)


def _one_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln]
    assert len(lines) == 1 and "Traceback" not in text, text
    return lines[0]


def test_create_on_a_read_only_file_system_names_the_folder_and_out(tmp_path, monkeypatch):
    monkeypatch.setattr(Path, "mkdir", _erofs)
    with pytest.raises(NotWritableError) as info:
        RunDir.create(tmp_path / "new", {"lr": 0.1})
    msg = str(info.value)
    assert msg.startswith(f"cannot write {tmp_path / 'new'} (read-only file system)") and "--out DIR" in msg
    assert info.value.path == str(tmp_path / "new") and not (tmp_path / "new").exists()


def test_every_write_of_a_run_names_its_file(tmp_path, monkeypatch):
    run = RunDir.create(tmp_path / "r", {"lr": 0.1})
    run.recorder("gd").append(0, loss=1.0)
    real_replace = os.replace
    read_only = [True]

    def replace(src, dst):
        if read_only[0]:
            _erofs(dst)
        return real_replace(src, dst)

    monkeypatch.setattr(records_io.os, "replace", replace)   # the atomic rename of every file
    for action, name in [(run.flush, "records.h5"), (lambda: run.write_summary({"a": 1}), "summary.json"),
                         (lambda: run.update_config({"lr": 0.2}), "config.toml")]:
        with pytest.raises(NotWritableError) as info:
            action()
        assert str(info.value).startswith(f"cannot write {run.path / name} (read-only file system);")
    read_only[0] = False
    run.flush()
    read_only[0] = True
    with pytest.raises(NotWritableError) as info:
        run.save_checkpoint(0, {"x": 1})
    assert str(info.value).startswith(f"cannot write {run.path / 'checkpoints'} (read-only file system);")
    leftovers = [p for p in run.path.rglob("*") if ".tmp-" in p.name]
    assert leftovers == []


def test_other_os_errors_are_not_disguised(tmp_path, monkeypatch):
    run = RunDir.create(tmp_path / "r", {"lr": 0.1})

    def broken(*args, **kwargs):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(records_io.os, "replace", broken)
    with pytest.raises(OSError) as info:
        run.write_summary({"a": 1})
    assert not isinstance(info.value, NotWritableError) and info.value.errno == errno.EIO


def test_open_refuses_an_unwritable_run_at_once(tmp_path, monkeypatch):
    RunDir.create(tmp_path / "r", {"lr": 0.1})
    real_open = os.open

    def read_only_open(path, flags, *args):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise OSError(errno.EROFS, "Read-only file system", path)
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", read_only_open)
    with pytest.raises(NotWritableError) as info:
        RunDir.open(tmp_path / "r")
    assert str(info.value) == (f"cannot write {tmp_path / 'r'} (read-only file system); copy the run somewhere "
                               f"writable (cp -r {tmp_path / 'r'} DIR) and continue it there")
    assert load_run(tmp_path / "r").config == {"lr": 0.1}   # reading still works


def test_resume_and_run_on_a_read_only_place_through_the_command_line(tmp_path, monkeypatch, capsys):
    RunDir.create(tmp_path / "r", {"lr": 0.1})
    real_open = os.open

    def read_only_open(path, flags, *args):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) and str(path).startswith(str(tmp_path)):
            raise OSError(errno.EROFS, "Read-only file system", path)
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", read_only_open)
    assert main(["resume", str(tmp_path / "r")]) == 2
    line = _one_line(capsys.readouterr().err)
    assert line.startswith(f"selfstab resume: error: cannot write {tmp_path / 'r'} (read-only file system)")
    monkeypatch.setattr(Path, "mkdir", _erofs)
    assert main(["run", "--out", str(tmp_path / "new"), "--quiet", "--data.name", "synthetic", "--data.n", "32"]) == 2
    line = _one_line(capsys.readouterr().err)
    assert f"cannot write {tmp_path / 'new'}" in line and "--out DIR" in line
    assert not (tmp_path / "new").exists()


def test_writable_folder_for_figures_and_reports(tmp_path, monkeypatch):
    assert writable_folder(tmp_path / "a" / "figures") == tmp_path / "a" / "figures"
    assert (tmp_path / "a" / "figures").is_dir() and not list((tmp_path / "a" / "figures").iterdir())
    monkeypatch.setattr(Path, "mkdir", _erofs)
    with pytest.raises(NotWritableError) as info:
        writable_folder(tmp_path / "b" / "figures")
    assert str(info.value) == f"cannot write {tmp_path / 'b' / 'figures'} (read-only file system); use --out DIR " \
                              f"to write somewhere else"


@pytest.mark.skipif(ROOT or not hasattr(os, "geteuid"), reason="root writes into read-only folders")
def test_a_real_read_only_folder(tmp_path):
    run = RunDir.create(tmp_path / "r", {"lr": 0.1})
    run.recorder("gd").append(0, loss=1.0)
    os.chmod(run.path, 0o555)
    try:
        with pytest.raises(NotWritableError, match="permission denied"):
            run.flush()
        with pytest.raises(NotWritableError, match=r"cp -r"):
            RunDir.open(run.path)
    finally:
        os.chmod(run.path, 0o755)


# ---------------------------------------------------------------------------------------------- status


def test_status_running_then_finished_and_who_is_alive(tmp_path):
    run = RunDir.create(tmp_path / "r", {"lr": 0.1})
    assert load_run(run.path).status is None and not load_run(run.path).running
    run.set_status("running")
    seen = load_run(run.path)
    assert seen.status == "running" and seen.running and seen.summary["pid"] == os.getpid()
    run.set_status("finished")
    assert load_run(run.path).status == "finished" and not load_run(run.path).running
    # a writer that died without saying so (SIGKILL): its pid is gone, so the run is not running
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    summary = json.loads((run.path / "summary.json").read_text())
    summary.update(status="running", pid=int(dead.stdout))
    (run.path / "summary.json").write_text(json.dumps(summary))
    assert load_run(run.path).status == "running" and not load_run(run.path).running


def test_tick_flushes_on_the_time_budget(tmp_path, monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr("selfstab.records.rundir.time.monotonic", lambda: clock[0])
    run = RunDir.create(tmp_path / "r", {"lr": 0.1})
    run.flush_seconds = 10.0
    run.set_status("running")
    beat = json.loads((run.path / "summary.json").read_text())["heartbeat"]
    for t in range(5):
        run.position = {"phase": "tracking", "step": t}
        run.recorder("gd").append(t, loss=float(t))
        clock[0] += 3.0
        flushed = run.tick()
        assert flushed == (t == 3)          # 12 s after the start, not before
    assert list(load_run(run.path)["gd"].index) == [0, 1, 2, 3]
    assert "heartbeat" in load_run(run.path).summary and load_run(run.path).summary["heartbeat"] >= beat
    assert load_run(run.path).summary["progress"] == {"phase": "tracking", "step": 3}   # where it was then
    run.flush_seconds = None
    clock[0] += 1e6
    assert not run.tick()


def test_a_run_being_written_by_a_live_process_is_not_reopened(tmp_path):
    run = RunDir.create(tmp_path / "r", {"lr": 0.1})
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        run.write_summary({"status": "running", "pid": other.pid, "host": __import__("socket").gethostname()})
        assert load_run(run.path).running
        with pytest.raises(ConfigError) as info:
            RunDir.open(run.path)
        assert str(info.value) == (f"run: {run.path} is being written by another process (pid {other.pid} on "
                                   f"{__import__('socket').gethostname()}); wait for it to finish, or stop it first")
    finally:
        other.kill()
        other.wait()
    assert not load_run(run.path).running     # killed: its "running" is stale, and the run can be resumed
    RunDir.open(run.path)


def test_track_in_place_on_a_read_only_run_offers_out(tmp_path, monkeypatch, capsys):
    RunDir.create(tmp_path / "r", {"lr": 0.1})
    real_open = os.open

    def read_only_open(path, flags, *args):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) and str(path).startswith(str(tmp_path)):
            raise OSError(errno.EROFS, "Read-only file system", path)
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", read_only_open)
    assert main(["track", str(tmp_path / "r")]) == 2
    line = _one_line(capsys.readouterr().err)
    assert line == (f"selfstab track: error: cannot write {tmp_path / 'r'} (read-only file system); track it into "
                    f"a new folder with --out NEW")


def test_overwrite_refuses_a_run_that_is_being_written(tmp_path):
    run = RunDir.create(tmp_path / "r", {"lr": 0.1})
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        run.write_summary({"status": "running", "pid": other.pid, "host": __import__("socket").gethostname()})
        with pytest.raises(ConfigError, match="is being written by another process"):
            RunDir.create(tmp_path / "r", {"lr": 0.2}, overwrite=True)
        assert load_run(tmp_path / "r").config == {"lr": 0.1}
    finally:
        other.kill()
        other.wait()
    RunDir.create(tmp_path / "r", {"lr": 0.2}, overwrite=True)
