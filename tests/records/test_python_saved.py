"""A run saved from Python (``result.save``) is never retrained, overwritten or tracked by the command line
when its model cannot be rebuilt from its config; the refusal says how to continue in Python."""

import hashlib

import pytest
import torch
from torch import nn

import selfstab
from selfstab.cli.main import main


def _files(path):
    return {p.relative_to(path).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """The issue's case in small: a user's own module to the edge and tracked, saved with ``edge=``."""
    torch.manual_seed(0)
    data = selfstab.load_dataset("digits", loss="mse", n=200)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.Tanh(), nn.Linear(16, 10))
    objective = selfstab.Objective.from_module(net, data.inputs, data.targets, "mse")
    edge = selfstab.gd_to_edge(objective, lr=0.2)
    assert edge.reached
    result = selfstab.track(objective, edge.theta0, lr=0.2, steps=6, warm=edge.eig.vectors,
                            processes=["gd", "constrained", "predicted"])
    path = tmp_path_factory.mktemp("saved") / "mine"
    result.save(path, edge=edge)
    return path, objective.dim


@pytest.mark.parametrize("argv", [["resume"], ["resume", "--track.steps", "40"], ["track"],
                                  ["track", "--out", "OUT"]], ids=" ".join)
def test_the_command_line_refuses_and_changes_nothing(saved, argv, capsys, tmp_path):
    path, dim = saved
    before = _files(path)
    argv = [a if a != "OUT" else str(tmp_path / "new") for a in argv]
    code = main([argv[0], str(path), *argv[1:]])
    err = capsys.readouterr().err.strip()
    assert code != 0 and len(err.splitlines()) == 1, err
    assert "saved from Python" in err and "selfstab.track(" in err and "nothing was changed" in err
    assert "800" not in err and "resume first" not in err     # the old misleading messages
    assert _files(path) == before                             # not a byte of the saved run changed
    assert not (tmp_path / "new").exists()
    run = selfstab.load_run(path)
    assert run.summary["parameters"] == dim and run.summary["tracked_steps"] == 6
    assert len(run.records["gd"]) == 6 and len(run.records["train"]) > 0


def test_the_saved_config_says_what_it_is(saved):
    path, _ = saved
    text = (path / "config.toml").read_text()
    assert "every field, defaults included" not in text and "saved from Python" in text
    summary = selfstab.load_run(path).summary
    assert summary["source"] == "python" and summary["rebuildable"] is False


def test_resume_from_python_refuses_too(saved):
    path, _ = saved
    with pytest.raises(selfstab.ConfigError, match="saved from Python"):
        selfstab.experiment.resume(path)


def test_saving_over_a_run_names_the_keyword(saved):
    from selfstab.records.results import save_results
    path, _ = saved
    with pytest.raises(selfstab.ConfigError, match=r"pass overwrite=True") as err:
        save_results(path, lr=0.3, track=_Track())
    assert "--overwrite" not in str(err.value)


class _Track:
    """The least a TrackResult-like object needs for save_results."""
    records, stop_reason, steps, lockstep = {}, "", 0, None
