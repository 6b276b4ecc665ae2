"""Continuing a run from Python: the same functions ``selfstab resume`` and ``selfstab track`` call, under one
rule for what may change (config.RESUME_KEYS / TRACK_KEYS)."""

import ast
from pathlib import Path

import pytest

from selfstab import ConfigError, experiment, load_run
from selfstab.cli.main import main

TINY = ["--data.name", "synthetic", "--data.n", "64", "--data.n_test", "32", "--model.width", "8", "--lr", "0.5",
        "--quiet", "--track.processes", "gd,constrained,predicted", "--track.checkpoint_every", "2"]


@pytest.fixture
def tracked(tmp_path):
    out = tmp_path / "run"
    assert main(["run", "--out", str(out), "--track.steps", "3", *TINY]) == 0
    return out


def test_resume_extends_and_refuses_other_changes(tracked, tmp_path):
    with pytest.raises(ConfigError, match=r"resume: the config changed \(lr\)"):
        experiment.resume(tracked, {"lr": 0.3})
    with pytest.raises(ConfigError, match="track.steps can only grow"):
        experiment.resume(tracked, ["--track.steps", "2"])
    run = experiment.resume(tracked, {"track.steps": 5})
    s = load_run(run.path).summary
    assert s["tracked_steps"] == 5 and [(e["from"], e["to"]) for e in s["extensions"]] == [(3, 5)]
    # the same run made at 5 steps from the start has the same records (an extension continues it)
    ref = tmp_path / "ref"
    assert main(["run", "--out", str(ref), "--track.steps", "5", *TINY]) == 0
    a, b = load_run(run.path).records, load_run(ref).records
    for name in ("gd", "constrained", "predicted"):
        assert a[name].equals(b[name]), name


def test_track_trained_into_a_new_folder_keeps_the_source(tracked, tmp_path):
    before = (tracked / "records.h5").read_bytes()
    with pytest.raises(ConfigError, match="only track.* settings can change after training; lr differs"):
        experiment.track_trained(tracked, {"lr": 0.3}, out=tmp_path / "new")
    run = experiment.track_trained(tracked, {"track.steps": 2, "track.processes": ["gd", "constrained"]},
                                   out=tmp_path / "new")
    new = load_run(run.path)
    assert new.summary["tracked_steps"] == 2 and set(new.records) >= {"train", "gd", "constrained"}
    assert "predicted" not in new.records and (tracked / "records.h5").read_bytes() == before


def test_the_change_rule_has_one_owner():
    """RESUME_KEYS and TRACK_KEYS are assigned in config.py only; the CLI and the sweep import them."""
    src = Path(__file__).resolve().parents[1] / "src" / "selfstab"
    owners = [p.relative_to(src).as_posix() for p in src.rglob("*.py")
              for node in ast.walk(ast.parse(p.read_text(encoding="utf-8")))
              if isinstance(node, ast.Assign) and any(getattr(t, "id", None) in ("RESUME_KEYS", "TRACK_KEYS")
                                                      for t in node.targets)]
    assert sorted(owners) == ["config.py", "config.py"]
