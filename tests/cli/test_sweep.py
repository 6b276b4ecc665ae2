"""``selfstab sweep`` into a folder that already holds runs (refused, --overwrite, --resume, as ``run`` does),
and its progress lines while the runs go."""

from __future__ import annotations

import json

import pytest

from selfstab.cli import sweep
from selfstab.cli.main import main
from selfstab.config import RunConfig, load_config
from selfstab.records import RunDir, load_run

# A tiny problem that reaches the edge in a few steps (as in test_cli.py, without --quiet)
TINY = ["--data.name", "synthetic", "--data.n", "64", "--data.n_test", "32", "--model.width", "8",
        "--track.diagnostics_every", "5", "--track.checkpoint_every", "4", "--track.stop_lambda2", "50",
        "--track.steps", "6"]


def _planned(out, *extra, lrs=(0.4, 0.5)):
    base = load_config(RunConfig, None, [*TINY, "--out", str(out), *extra])
    return sweep.sweep_configs(base, list(lrs), [base.seed], ["constant"])


def _snapshot(folder):
    return {p.relative_to(folder): (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(folder.rglob("*"))
            if p.is_file()}


def _one_line(err):
    err = err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("flags, hint", [
    ((), "pass --overwrite to replace the sweep's runs, or choose another --out"),
    (("--resume",), "--resume continues only runs of the same config; pass --overwrite to replace them"),
])
def test_a_folder_of_another_config_is_refused_naming_the_key(tmp_path, capsys, flags, hint):
    out = tmp_path / "sweep"
    for cfg in _planned(out, "--model.width", "16"):      # an earlier sweep of a wider model
        RunDir.create(cfg.out, cfg)
    before = _snapshot(out)
    assert main(["sweep", "--lrs", "0.4", "0.5", "--out", str(out), *TINY, "--quiet", *flags]) == 2
    err = _one_line(capsys.readouterr().err)
    assert err == (f"selfstab sweep: error: --out: {out / 'lr0.4'} holds a run of another config (model.width is 16 "
                   f"there, 8 now); {hint}, or choose another --out" if flags else
                   f"selfstab sweep: error: --out: {out / 'lr0.4'} holds a run of another config (model.width is 16 "
                   f"there, 8 now); {hint}")
    assert _snapshot(out) == before


def test_a_changed_model_data_set_and_width_names_the_first_key(tmp_path, capsys):
    out = tmp_path / "sweep"
    for cfg in _planned(out):
        RunDir.create(cfg.out, cfg)
    before = _snapshot(out)
    argv = ["sweep", "--lrs", "0.4", "0.5", "--out", str(out), *TINY, "--quiet", "--model.name", "cnn",
            "--data.name", "digits", "--model.width", "4"]
    assert main(argv) == 2
    err = _one_line(capsys.readouterr().err)
    assert "holds a run of another config (model.name is 'mlp' there, 'cnn' now and 2 more keys)" in err
    assert _snapshot(out) == before


def test_matching_runs_and_neither_flag_suggest_resume(tmp_path, capsys):
    out = tmp_path / "sweep"
    for cfg in _planned(out):
        RunDir.create(cfg.out, cfg)                  # killed before their first record: unfinished
    before = _snapshot(out)
    assert main(["sweep", "--lrs", "0.4", "0.5", "--out", str(out), *TINY, "--quiet"]) == 2
    err = _one_line(capsys.readouterr().err)
    assert err == (f"selfstab sweep: error: --out: {out} already holds 2 runs of this sweep (2 of them unfinished: "
                   f"lr0.4, lr0.5); pass --resume to continue them, or --overwrite to start over")
    assert main(["sweep", "--lrs", "0.4", "--out", str(out), *TINY, "--overwrite", "--resume"]) == 2
    assert "not both" in _one_line(capsys.readouterr().err)
    assert _snapshot(out) == before


@pytest.mark.parametrize("summary, full, train_only", [
    ({}, False, False),                                                   # nothing written yet
    ({"status": "running", "pid": 1}, False, False),
    ({"status": "stopped: interrupted at tracking step 3"}, False, False),
    ({"status": "failed: eigen-solver did not converge"}, False, False),
    ({"status": "finished", "reached_edge": True, "tracked_steps": 6}, True, True),
    ({"status": "finished", "reached_edge": True}, False, True),          # trained by a --train-only sweep
    ({"stop_reason": "steps: reached the step limit 6"}, True, True),     # written before runs had a status
    ({"onset_step": 12, "reached_edge": True}, False, True),
])
def test_finished_follows_the_status(tmp_path, summary, full, train_only):
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    assert sweep.finished(tmp_path, False) is full and sweep.finished(tmp_path, True) is train_only


def test_resume_continues_matching_runs_and_keeps_finished_ones(tmp_path, capsys):
    out = tmp_path / "sweep"
    unfinished, done = _planned(out)
    RunDir.create(unfinished.out, unfinished)
    rd = RunDir.create(done.out, done)
    rd.recorder("train").append(0, loss=1.0, sharpness=2.0)
    rd.flush()
    rd.write_summary({"status": "finished", "stop_reason": "steps: reached the step limit 6", "tracked_steps": 6})
    kept = _snapshot(out / "lr0.5")
    assert main(["sweep", "--lrs", "0.4", "0.5", "--out", str(out), *TINY, "--quiet", "--resume"]) == 0
    text = capsys.readouterr().out
    assert f"{out / 'lr0.5'}: already finished" in text
    assert "track step" not in text and "train step" not in text   # --quiet: no progress lines
    run = load_run(out / "lr0.4")
    assert run.summary["status"] == "finished" and run.summary["tracked_steps"] == 6 and len(run["gd"]) == 6
    assert _snapshot(out / "lr0.5") == kept
    assert (out / "figures" / "figure4.png").is_file()


def test_overwrite_replaces_runs_of_another_config_with_progress_lines(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sweep, "POLL_SECONDS", 0.02)
    out = tmp_path / "sweep"
    old = _planned(out, "--model.width", "16", lrs=(0.4,))[0]
    RunDir.create(old.out, old)
    assert main(["sweep", "--lrs", "0.4", "0.5", "--jobs", "2", "--out", str(out), *TINY, "--flush_seconds", "0.01",
                 "--overwrite"]) == 0
    text = capsys.readouterr().out
    for name in ("lr0.4", "lr0.5"):
        cfg = load_run(out / name).config
        assert cfg["model"]["width"] == 8 and load_run(out / name).summary["tracked_steps"] == 6
        lines = [ln for ln in text.splitlines() if ln.startswith(f"{name}: ")]
        # one line per change of its recorded progress, then how it ended
        assert any(ln.startswith(f"{name}: train step ") or ln.startswith(f"{name}: track step ") for ln in lines), text
        assert lines[-1] == f"{name}: steps: reached the step limit 6"
    steps = [int(ln.split("track step ")[1].split("/")[0]) for ln in text.splitlines() if "track step" in ln]
    assert all(1 <= s <= 6 for s in steps) and all(ln.endswith("/6") for ln in text.splitlines() if "track step" in ln)


def test_progress_text_reads_the_last_recorded_step(tmp_path):
    cfg = _planned(tmp_path / "s", lrs=(0.5,))[0]
    rd = RunDir.create(cfg.out, cfg)
    assert sweep.progress_text(cfg.out, cfg) is None           # nothing on disk yet
    rd.recorder("train").append(0, loss=1.0, sharpness=1.5)
    rd.recorder("train").append(7, loss=0.9)
    rd.flush()
    assert sweep.progress_text(cfg.out, cfg) == "train step 7 (to the edge, S = 1.5 of 2/η = 4)"
    rd.recorder("gd").append(0, loss=0.5)
    rd.recorder("gd").append(1, loss=0.4)
    rd.flush()
    assert sweep.progress_text(cfg.out, cfg) == "track step 2/6"


def test_resume_with_more_tracked_steps_extends_the_runs_as_resume_does(tmp_path, capsys):
    """§4.7: `sweep --resume` with a larger track.steps was refused as another config, though `selfstab resume RUN
    --track.steps N` extends a run; the sweep now extends each run under the same rule."""
    out = tmp_path / "sweep"
    sweep_args = ["sweep", "--lrs", "0.5", "--out", str(out), *TINY, "--quiet"]
    assert main(sweep_args) == 0
    assert load_run(out / "lr0.5").summary["tracked_steps"] == 6
    capsys.readouterr()
    assert main([*sweep_args, "--resume", "--track.steps", "9"]) == 0
    run = load_run(out / "lr0.5")
    assert run.summary["tracked_steps"] == 9 and len(run["gd"]) == 9 and run.config["track"]["steps"] == 9
    assert [(e["from"], e["to"]) for e in run.summary["extensions"]] == [(6, 9)]   # noted as resume notes it
    before = _snapshot(out)
    assert main([*sweep_args, "--resume", "--track.steps", "7"]) == 2   # only up, as resume says
    assert "track.steps can only grow" in _one_line(capsys.readouterr().err)
    assert _snapshot(out) == before
