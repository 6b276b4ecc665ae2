"""A run's life: training checkpoints and Ctrl-C, records flushed on a time budget, a status, extending a
finished run, tracking a trained run into a new folder, and API results saved as a run folder."""

from __future__ import annotations


import numpy as np
import pandas as pd
import pytest
import torch

import selfstab
from selfstab import experiment, phases
from selfstab.cli.main import main
from selfstab.config import RunConfig, from_dict
from selfstab.problem.build import build_problem
from selfstab.records import RunDir, load_run
from selfstab.records.reading import read_latest_checkpoint
from selfstab.train import gd_to_edge

DATA = {"name": "synthetic", "n": 64, "n_test": 32}
# lr 0.3 reaches the edge near step 98 of training (float32, the default train.dtype): long enough to interrupt
# at step 70.  The step itself is compared with a float64 reference run in the same test, not written down.
TRAIN = {"lr": 0.3, "quiet": True, "data": DATA, "model": {"width": 8}, "train": {"checkpoint_every": 20}}
TRAIN_ARGS = ["--lr", "0.3", "--quiet", "--data.name", "synthetic", "--data.n", "64", "--data.n_test", "32",
              "--model.width", "8", "--train.checkpoint_every", "20"]
TINY = {"lr": 0.5, "quiet": True, "data": DATA, "model": {"width": 8},
        "track": {"steps": 12, "diagnostics_every": 5, "checkpoint_every": 4, "stop_lambda2": 50.0}}
TINY_ARGS = ["--lr", "0.5", "--quiet", "--data.name", "synthetic", "--data.n", "64", "--data.n_test", "32",
             "--model.width", "8", "--track.diagnostics_every", "5", "--track.checkpoint_every", "4",
             "--track.stop_lambda2", "50"]


def _cfg(base: dict, out, **top) -> RunConfig:
    return from_dict(RunConfig, {**base, "out": str(out), **top})


def _same_records(a, b, skip=("timing",)):
    ra, rb = load_run(a).records, load_run(b).records
    assert set(ra) == set(rb)
    for name in ra:
        if name not in skip:
            pd.testing.assert_frame_equal(ra[name], rb[name], check_exact=True)


def _edge_state(path):
    state = read_latest_checkpoint(path)["state"]
    return state if state["phase"] == "edge" else state["edge"]


# ------------------------------------------------------------------------------------- training checkpoints


def test_gd_to_edge_resumed_from_any_checkpoint_is_the_uninterrupted_search():
    cfg = _cfg(TRAIN, "unused")
    ref_records, states = [], []
    ref = gd_to_edge(build_problem(cfg).objective, 0.3, on_record=ref_records.append, checkpoint_every=20,
                     on_checkpoint=lambda t, s: states.append((t, s)))
    # the onset step against a float64 run of the same search: near the edge S grows ≈ 0.03 a step and the
    # crossing of 2/η lies ≈ 0.013 past it, while float32 rounding moves S by ~1e-6, so a CPU's rounding
    # cannot move the step by more than one
    exact = gd_to_edge(build_problem(cfg, dtype="float64").objective, 0.3)
    assert ref.reached and exact.reached and abs(ref.step - exact.step) <= 1 and ref.step > 70
    assert [t for t, _ in states] and all(b - a >= 20 for (a, _), (b, _) in zip(states, states[1:]))
    for t, state in (states[0], states[-1]):
        obj = build_problem(cfg).objective
        later = []
        again = gd_to_edge(obj, 0.3, on_record=later.append, checkpoint_every=20, state=state)
        assert later == [r for r in ref_records if r["step"] > t]      # every field, bit for bit
        assert again.step == ref.step and again.sharpness == ref.sharpness
        assert torch.equal(again.theta0, ref.theta0) and again.counts == ref.counts


def _interrupted_at(real, step: int):
    """``real`` (gd_to_edge or gd_run) with a Ctrl-C arriving when step ``step`` is reported."""
    def interrupted(*args, progress=None, **kwargs):
        def stop(t, r):
            if t == step:
                raise KeyboardInterrupt
            progress(t, r)
        return real(*args, progress=stop, **kwargs)
    return interrupted


def test_ctrl_c_in_training_says_where_and_resume_continues_it_bit_for_bit(tmp_path, monkeypatch, capsys):
    reference = experiment.start(_cfg(TRAIN, tmp_path / "ref"), train_only=True)
    real = phases.gd_to_edge
    run = tmp_path / "run"
    monkeypatch.setattr(phases, "gd_to_edge", _interrupted_at(real, 70))
    assert main(["train", "--out", str(run), *TRAIN_ARGS]) == 130
    err = capsys.readouterr().err.strip()
    last = read_latest_checkpoint(run)
    assert last["state"]["phase"] == "train" and 40 < last["state"]["gd"]["t"] <= 70
    assert err == (f"selfstab train: interrupted at training step 70; selfstab resume {run} continues from "
                   f"training step {last['state']['gd']['t']}")
    assert load_run(run).status.startswith("stopped: interrupted at training step 70")
    monkeypatch.setattr(phases, "gd_to_edge", real)
    assert main(["resume", str(run)]) == 0
    _same_records(reference.path, run)
    assert torch.equal(_edge_state(run)["theta0"], _edge_state(reference.path)["theta0"])
    s, r = load_run(run).summary, reference.summary
    assert s["status"] == "finished" and s["onset_step"] == r["onset_step"] > 70   # the reference of the same run
    assert (s["train_grads"], s["train_hvps"]) == (r["train_grads"], r["train_hvps"])


def test_fixed_step_training_checkpoints_and_resumes_bit_for_bit(tmp_path, monkeypatch, capsys):
    """Figure 6's path (train.stop_at_edge = false, or η_t = 1/S) checkpoints like the edge search."""
    args = [*TRAIN_ARGS, "--train.stop_at_edge", "false", "--train.max_steps", "45", "--train.schedule",
            "inverse_sharpness"]
    ref = tmp_path / "ref"
    assert main(["train", "--out", str(ref), *args]) == 0
    real = phases.gd_run
    run = tmp_path / "run"
    monkeypatch.setattr(phases, "gd_run", _interrupted_at(real, 33))
    assert main(["train", "--out", str(run), *args]) == 130
    last = read_latest_checkpoint(run)
    assert last["state"]["phase"] == "train" and last["state"]["gd"]["t"] == 20
    assert "continues from training step 20" in capsys.readouterr().err
    monkeypatch.setattr(phases, "gd_run", real)
    assert main(["resume", str(run)]) == 0
    _same_records(ref, run)
    assert len(load_run(run).records["train"]) == 46


# ------------------------------------------------------------------------------------- watching a run


def _flushes(monkeypatch):
    """The row counts of the gd table at every flush of records.h5."""
    seen = []
    real = RunDir.flush

    def flush(self):
        seen.append(len(self.recorders["gd"]) if "gd" in self.recorders else 0)
        return real(self)

    monkeypatch.setattr(RunDir, "flush", flush)
    return seen


def test_records_are_flushed_on_a_time_budget_between_checkpoints(tmp_path, monkeypatch):
    track = {**TINY["track"], "steps": 6, "checkpoint_every": 100}
    seen = _flushes(monkeypatch)
    experiment.start(_cfg({**TINY, "track": track}, tmp_path / "slow", flush_seconds=1e9))
    assert {n for n in seen if 0 < n < 6} == set()       # only the final checkpoint writes gd rows
    seen.clear()
    run = experiment.start(_cfg({**TINY, "track": track}, tmp_path / "fast", flush_seconds=1e-9))
    assert {1, 2, 3, 4, 5} <= set(seen)                  # every step, with a budget that always ran out
    assert run.summary["status"] == "finished" and load_run(run.path).status == "finished"
    assert not load_run(run.path).running


def test_a_running_run_says_so(tmp_path, monkeypatch):
    statuses = []
    real = experiment.track_phase

    def peek(cfg, run, *args, **kwargs):
        seen = load_run(run.path)
        statuses.append((seen.status, seen.running, seen.summary["progress"]["phase"]))
        return real(cfg, run, *args, **kwargs)

    monkeypatch.setattr(experiment, "track_phase", peek)
    experiment.start(_cfg({**TINY, "track": {**TINY["track"], "steps": 2}}, tmp_path / "r"))
    assert statuses == [("running", True, "training")]   # the edge checkpoint's heartbeat, just before tracking


# ------------------------------------------------------------------------------------- extending a run


def test_resume_with_more_track_steps_equals_the_longer_run(tmp_path, capsys):
    assert main(["run", "--out", str(tmp_path / "long"), *TINY_ARGS, "--track.steps", "12"]) == 0
    assert main(["run", "--out", str(tmp_path / "short"), *TINY_ARGS, "--track.steps", "6"]) == 0
    assert load_run(tmp_path / "short").summary["tracked_steps"] == 6
    capsys.readouterr()
    assert main(["resume", str(tmp_path / "short"), "--track.steps", "4"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("selfstab resume: error: resume: track.steps can only grow (this run tracks 6 steps, "
                          "asked for 4)") and "\n" not in err
    assert main(["resume", str(tmp_path / "short"), "--track.steps", "12"]) == 0
    _same_records(tmp_path / "long", tmp_path / "short")
    short = load_run(tmp_path / "short")
    assert short.summary["tracked_steps"] == 12 and short.status == "finished"
    assert short.config["track"]["steps"] == 12
    (ext,) = short.summary["extensions"]
    assert (ext["key"], ext["from"], ext["to"]) == ("track.steps", 6, 12)
    assert "# extended: track.steps 6 → 12" in (tmp_path / "short" / "config.toml").read_text()
    capsys.readouterr()
    assert main(["resume", str(tmp_path / "short"), "--lr", "0.4"]) == 2
    assert "resume accepts quiet, flush_seconds, track.steps" in capsys.readouterr().err


def test_track_into_a_new_folder_leaves_the_trained_run_alone(tmp_path):
    trained = tmp_path / "trained"
    assert main(["train", "--out", str(trained), *TINY_ARGS, "--track.steps", "3"]) == 0
    before = {p.relative_to(trained): p.read_bytes() for p in trained.rglob("*") if p.is_file()}
    assert main(["track", str(trained), "--out", str(tmp_path / "new"), "--track.eig_tol", "1e-8"]) == 0
    after = {p.relative_to(trained): p.read_bytes() for p in trained.rglob("*") if p.is_file()}
    assert after == before
    new = load_run(tmp_path / "new")
    assert new.config["track"]["eig_tol"] == 1e-8 and new.config["out"] == str(tmp_path / "new")
    pd.testing.assert_frame_equal(new["train"], load_run(trained)["train"], check_exact=True)
    assert new.summary["tracked_steps"] == 3 and new.summary["onset_step"] == load_run(trained).summary["onset_step"]
    assert new.summary["tracked_from"] == str(trained) and list(new["gd"].index) == [0, 1, 2]
    # tracked from the same θ₀ as the trained run's: the first GD record is the edge's
    assert new["gd"]["loss"].iloc[0] == pytest.approx(new["train"]["loss"].iloc[-1], rel=1e-5)


# ------------------------------------------------------------------------------------- API → run folder


@pytest.mark.filterwarnings("ignore:projection")
def test_api_results_saved_as_a_run_folder(tmp_path):
    obj = build_problem(_cfg(TINY, "unused")).objective
    edge = gd_to_edge(obj, 0.5)
    assert list(edge.history.index) == [r["step"] for r in edge.records] and edge.history.index.name == "step"
    assert edge.history.loc[edge.step, "sharpness"] == edge.sharpness
    res = selfstab.track(obj, edge.theta0, 0.5, steps=4, warm=edge.eig.vectors, flow=False, stop_lambda2=50.0)
    res.save(tmp_path / "api", edge=edge)
    run = load_run(tmp_path / "api")
    assert run.config == {"lr": 0.5, "out": str(tmp_path / "api")} and run.status == "finished"
    assert run.summary["onset_step"] == edge.step and run.summary["tracked_steps"] == 4
    pd.testing.assert_frame_equal(run["train"], edge.history.astype(np.float64), check_exact=True)
    frames = res.frames()
    for name in ("gd", "constrained", "predicted"):
        pd.testing.assert_frame_equal(run[name], frames[name].astype(np.float64), check_exact=True)
    assert "seconds" not in run["cost"] and list(run["timing"]["seconds"]) == list(frames["cost"]["seconds"])
    from selfstab.figures.registry import draw_figures
    assert any(p.name == "figure1.png" for p in draw_figures(run.path, out=tmp_path / "figs"))
    from selfstab.report import write_report
    assert "| tracked steps | 4 |" in write_report(run.path, tmp_path / "report.md", fmt="md").read_text()
    # the edge alone, with the run's config: a folder `selfstab track` tracks from
    cfg = _cfg({**TINY, "track": {**TINY["track"], "steps": 2}}, tmp_path / "edge")
    edge.save(tmp_path / "edge", config=cfg)
    assert load_run(tmp_path / "edge").config["model"]["width"] == 8
    assert main(["track", str(tmp_path / "edge")]) == 0
    assert load_run(tmp_path / "edge").summary["tracked_steps"] == 2
    with pytest.raises(selfstab.ConfigError, match="lr = 0.3 is not the results' learning rate 0.5"):
        edge.save(tmp_path / "wrong", config={"lr": 0.3})
    with pytest.raises(selfstab.ConfigError, match="already holds a run"):
        res.save(tmp_path / "api", edge=edge)
