"""Nothing lost, nothing silently wrong: checksummed records, damaged files, lost checkpoints, two creators at once."""

from __future__ import annotations

import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import time

import h5py
import numpy as np
import pandas as pd
import pytest
import torch

from selfstab import experiment
from selfstab.cli.main import main
from selfstab.config import RunConfig, from_dict
from selfstab.errors import ConfigError
from selfstab.records import RunDir, load_run
LOCK = ".selfstab-lock"   # the creation lock (selfstab.records.lock)

# A tiny problem that reaches the edge in a few steps (as tests/test_cli.py's).
TINY = ["--data.name", "synthetic", "--data.n", "64", "--data.n_test", "32", "--model.width", "8", "--lr", "0.5",
        "--quiet", "--track.diagnostics_every", "5", "--track.checkpoint_every", "4", "--track.stop_lambda2", "50"]
HOST = socket.gethostname()


def _cfg(out, steps=4):
    return from_dict(RunConfig, {"lr": 0.5, "quiet": True, "out": str(out), "data": {"name": "synthetic", "n": 64,
                                 "n_test": 32}, "model": {"width": 8}, "track": {"steps": steps,
                                 "diagnostics_every": 5, "checkpoint_every": 4, "stop_lambda2": 50.0}})


def _one_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln]
    assert len(lines) == 1 and "Traceback" not in text, text
    return lines[0]


def _small_run(path, rows=3000):
    """A run written through the RunDir API: gd (3 fields) and train, checkpointed at rows // 2 and at the end."""
    run = RunDir.create(path, {"lr": 0.5})
    gd, train = run.recorder("gd"), run.recorder("train")
    for t in range(rows):
        gd.append(t, loss=1.0 / (t + 1), sharpness=np.sin(t), late=float(t) if t >= rows // 3 else None)
        if t % 100 == 0:
            train.append(t, loss=2.0 / (t + 1))
        if t == rows // 2:
            run.save_checkpoint(t, {"t": t})
    run.save_checkpoint(rows - 1, {"t": rows - 1})
    run.write_summary({"status": "finished"})
    return run


def _overwrite(file, offset: int, data: bytes) -> None:
    with open(file, "r+b") as f:
        f.seek(offset)
        f.write(data)


def _loss_offset(file, row: int) -> int:
    """The byte offset of ``gd/loss[row]`` in the raw file (in its first chunk)."""
    with h5py.File(file, "r") as f:
        data = f["gd/loss"]
        assert data.chunks is not None and row < data.chunks[0]
        return data.id.get_chunk_info(0).byte_offset + 8 * row


# ----------------------------------------------------------------------------------------------- checksums


def test_records_carry_checksums_and_files_without_them_still_read(tmp_path):
    run = _small_run(tmp_path / "r", rows=50)
    with h5py.File(tmp_path / "r" / "records.h5") as f:
        assert all(f[f"gd/{k}"].fletcher32 for k in ("step", "loss", "sharpness", "late"))
        assert f["train/loss"].fletcher32 and f["gd/loss"].chunks == (50,)
    frame = load_run(run.path)["gd"]
    # a file written before the checksums (contiguous datasets, no filter) reads as before
    with h5py.File(tmp_path / "old.h5", "w", track_order=True) as f:
        g = f.create_group("gd", track_order=True)
        g.create_dataset("step", data=frame.index.to_numpy())
        for k in frame:
            g.create_dataset(k, data=frame[k].to_numpy()).attrs["first_row"] = 0 if k != "late" else 16
    shutil.copyfile(tmp_path / "old.h5", tmp_path / "r" / "records.h5")
    pd.testing.assert_frame_equal(load_run(run.path)["gd"], frame, check_exact=True)


@pytest.mark.parametrize("damage", ["random bytes in the middle", "one float of gd/loss"])
def test_a_damaged_records_file_is_one_line_in_every_reader(tmp_path, capsys, damage):
    run = _small_run(tmp_path / "r")
    file = run.path / "records.h5"
    if damage == "random bytes in the middle":
        _overwrite(file, file.stat().st_size // 2, np.random.default_rng(0).bytes(64))
    else:
        before = load_run(run.path)["gd"]["loss"].iloc[7]
        _overwrite(file, _loss_offset(file, 7), struct.pack("<d", 12345.678))
        with h5py.File(file) as f:   # the stored chunk (unchecked) now holds the new value where loss[7] was
            _, raw = f["gd/loss"].id.read_direct_chunk((0,))
        assert before == 1.0 / 8 and np.frombuffer(raw[:-4], dtype="<f8")[7] == 12345.678
    with pytest.raises(ConfigError) as info:
        load_run(run.path)
    assert str(info.value).startswith(f"run: {file} is unreadable (")
    if damage == "one float of gd/loss":   # found by the checksum, and named
        assert str(info.value).startswith(f"run: {file} is unreadable (gd/loss: checksum mismatch: the file is damaged)")
    assert f"selfstab resume {run.path} rebuilds it" in str(info.value)
    for command in (["plot"], ["report"], ["export"]):
        assert main([*command, str(run.path)]) == 2
        line = _one_line(capsys.readouterr().err)
        assert line.startswith(f"selfstab {command[0]}: error: run: {file} is unreadable ("), line
    assert not (run.path / "figures").exists() and not (run.path / "export").exists()


def test_bytes_damaged_anywhere_are_refused_or_harmless_never_a_traceback_or_wrong_values(tmp_path):
    run = _small_run(tmp_path / "r", rows=50)
    file = run.path / "records.h5"
    good, ref = file.read_bytes(), load_run(run.path).records
    rng = np.random.default_rng(1)
    refused = 0
    for _ in range(100):   # 16 random bytes at a random place, headers included
        file.write_bytes(good)
        _overwrite(file, int(rng.integers(0, len(good) - 16)), rng.bytes(16))
        try:
            records = load_run(run.path).records
        except ConfigError as exc:
            assert str(exc).startswith(f"run: {file} is unreadable (") and "\n" not in str(exc)
            refused += 1
            continue
        assert set(records) == set(ref)   # unused bytes were hit: every value as written
        for name, frame in ref.items():
            pd.testing.assert_frame_equal(records[name], frame, check_exact=True)
    assert refused >= 10


def test_resume_rebuilds_damaged_records_from_the_last_checkpoint(tmp_path, capsys):
    run = _small_run(tmp_path / "r")
    good = load_run(run.path)
    file = run.path / "records.h5"
    _overwrite(file, _loss_offset(file, 7), struct.pack("<d", 12345.678))
    damaged = file.read_bytes()
    capsys.readouterr()
    reopened = RunDir.open(run.path)
    err = _one_line(capsys.readouterr().err)
    (aside,) = run.path.glob("records.h5.damaged-*")
    assert err == (f"selfstab: warning: {file} is unreadable (gd/loss: checksum mismatch: the file is damaged); "
                   f"moved to {aside.name} and rebuilt from the checkpoint of step 2999, which the resume continues "
                   f"from")
    assert aside.read_bytes() == damaged   # kept, not deleted
    for name in ("gd", "train"):   # the last checkpoint was taken at the end: everything is back, bit for bit
        pd.testing.assert_frame_equal(load_run(run.path)[name], good[name], check_exact=True)
        pd.testing.assert_frame_equal(reopened.recorder(name).frame(), good[name], check_exact=True)
    (note,) = load_run(run.path).summary["records_rebuilt"]
    assert note["damaged"] == aside.name and note["from"] == "checkpoint step 2999"
    assert reopened.rewind_to_checkpoint() == (2999, {"t": 2999})


def test_resume_says_what_is_lost_when_the_checkpoint_carries_no_records(tmp_path, capsys):
    run = _small_run(tmp_path / "r", rows=30)
    for ckpt in (run.path / "checkpoints").glob("*.pt"):   # as written before checkpoints carried the records
        payload = torch.load(ckpt, weights_only=True)
        del payload["records_file"]
        torch.save(payload, ckpt)
    file = run.path / "records.h5"
    _overwrite(file, _loss_offset(file, 3), struct.pack("<d", 0.5))
    damaged = file.read_bytes()
    assert main(["resume", str(run.path)]) == 2
    line = _one_line(capsys.readouterr().err)
    assert line == (f"selfstab resume: error: run: {file} is unreadable (gd/loss: checksum mismatch: the file is "
                    f"damaged) and the newest checkpoint (step 29) cannot rebuild it (it was written before "
                    f"checkpoints carried the records): the records up to it are lost (rows: gd 30, train 1). To go "
                    f"on from that checkpoint with records from there on only, move the file aside (mv {file} "
                    f"{file}.damaged) and resume again; or start over with selfstab run --out {run.path} --overwrite")
    assert file.read_bytes() == damaged and not list(run.path.glob("records.h5.*"))   # nothing moved or deleted
    # as told: moved aside, the run goes on from the checkpoint, and says which rows are missing
    file.rename(file.with_name("records.h5.damaged"))
    reopened = RunDir.open(run.path)
    assert reopened.rewind_to_checkpoint() == (29, {"t": 29})
    err = _one_line(capsys.readouterr().err)
    assert err == (f"selfstab: warning: {file} holds fewer rows than the checkpoint of step 29 (gd 0 of 30, train 0 "
                   f"of 1 rows): the missing rows are lost; the run goes on from that checkpoint")
    (lost,) = load_run(run.path).summary["records_lost"]
    assert lost["checkpoint_step"] == 29 and lost["rows"] == {"gd": "0 of 30", "train": "0 of 1"}


def test_a_damaged_run_resumed_end_to_end_equals_the_undamaged_one(tmp_path, capsys):
    ref = tmp_path / "ref"
    experiment.start(_cfg(ref, steps=8))
    damaged = tmp_path / "damaged"
    shutil.copytree(ref, damaged)
    file = damaged / "records.h5"
    _overwrite(file, _loss_offset(file, 2), struct.pack("<d", 7.0))
    capsys.readouterr()
    assert main(["report", str(damaged)]) == 2
    assert "is unreadable (gd/loss: checksum mismatch" in _one_line(capsys.readouterr().err)
    experiment.resume(damaged)   # as selfstab resume does, less the figures
    assert "rebuilt from the checkpoint of step" in _one_line(capsys.readouterr().err)
    a, b = load_run(ref), load_run(damaged)
    assert b.status == "finished" and set(a.records) == set(b.records)
    for name in a.records:
        if name != "timing":
            pd.testing.assert_frame_equal(a[name], b[name], check_exact=True)


# ----------------------------------------------------------------------------------------------- 4.5


def test_resume_with_every_checkpoint_deleted_says_it_starts_over(tmp_path, capsys):
    out = tmp_path / "r"
    experiment.start(_cfg(out), train_only=True)
    before = load_run(out)
    old_records = (out / "records.h5").read_bytes()
    for ckpt in (out / "checkpoints").glob("*.pt"):
        ckpt.unlink()
    capsys.readouterr()
    experiment.resume(out)   # as selfstab resume does, less the figures
    err = capsys.readouterr().err
    (bak,) = out.glob("records.h5.bak-*")
    rows = ", ".join(f"{k} {len(v)}" for k, v in before.records.items())
    assert _one_line(err) == (f"selfstab: warning: {out} has no readable checkpoint: the run starts over from step 0 "
                              f"(its records, rows {rows}, moved to {bak.name})")
    assert bak.read_bytes() == old_records   # the old records are kept
    (old_summary,) = out.glob("summary.json.bak-*")
    assert json.loads(old_summary.read_text())["onset_step"] == before.summary["onset_step"]
    after = load_run(out)
    (note,) = after.summary["restarted"]
    assert note["reason"] == "no readable checkpoint" and note["old_records"] == bak.name
    # started over from step 0: the same deterministic training again
    assert after.status == "finished" and after.summary["onset_step"] == before.summary["onset_step"]
    pd.testing.assert_frame_equal(after["train"], before["train"], check_exact=True)


# ----------------------------------------------------------------------------------------------- two creators


def _holder(path):
    """A process that creates a run in ``path`` and keeps it (no status written: it holds the creation lock)."""
    code = ("import sys, time; from selfstab.records import RunDir; run = RunDir.create(sys.argv[1], {'lr': 0.1}); "
            "print('ready', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.stdout.readline().strip() == "ready"
    return proc


def test_a_folder_being_created_is_refused_with_the_creators_pid_then_taken_over(tmp_path, capsys):
    path = tmp_path / "r"
    proc = _holder(path)
    try:
        holder = json.loads((path / LOCK).read_text())
        assert (holder["pid"], holder["host"]) == (proc.pid, HOST)
        expected = (f"run: another selfstab process (pid {proc.pid} on {HOST}) is creating {path}; wait for it or "
                    f"choose another --out")
        for overwrite in (False, True):
            with pytest.raises(ConfigError) as info:
                RunDir.create(path, {"lr": 0.2}, overwrite=overwrite)
            assert str(info.value) == expected
        assert main(["run", "--out", str(path), "--overwrite", *TINY]) == 2
        assert _one_line(capsys.readouterr().err) == f"selfstab run: error: {expected}"
        assert main(["resume", str(path)]) == 2
        assert _one_line(capsys.readouterr().err) == f"selfstab resume: error: {expected}"
        assert load_run(path).config == {"lr": 0.1}
    finally:
        proc.kill()
        proc.wait(timeout=30)
    # its creator is gone: the stale lock is taken over
    run = RunDir.create(path, {"lr": 0.2}, overwrite=True)
    assert json.loads((path / LOCK).read_text())["pid"] == os.getpid()
    run.write_summary({"status": "finished"})   # a status: the summary says who wrote it, the lock goes
    assert not (path / LOCK).exists() and load_run(path).config == {"lr": 0.2}


def test_two_runs_started_at_once_into_one_folder(tmp_path):
    out = tmp_path / "r"
    env = dict(os.environ, OMP_NUM_THREADS="1", SELFSTAB_FSYNC="0")
    # long enough (200 tracked steps) that the winner is still running when the loser has given up
    argv = [sys.executable, "-m", "selfstab.cli.main", "run", "--out", str(out), "--track.steps", "200", *TINY]
    procs = [subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    try:
        deadline = time.monotonic() + 120
        while all(p.poll() is None for p in procs):
            assert time.monotonic() < deadline, "neither run ended"
            time.sleep(0.05)
        loser = next(p for p in procs if p.poll() is not None)
        winner = next(p for p in procs if p is not loser)
        err = loser.stderr.read()
        assert loser.returncode == 2 and winner.poll() is None, err
        line = _one_line(err)
        assert line.startswith(f"selfstab run: error: run: ") and f"(pid {winner.pid} on {HOST})" in line, line
        assert "is creating" in line or "is being written by another process" in line
    finally:
        for p in procs:
            p.kill()
            p.communicate(timeout=30)
    assert load_run(out).summary["pid"] == winner.pid   # the winner's run, not a mix
