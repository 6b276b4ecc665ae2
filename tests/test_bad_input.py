"""Bad input, through the API and the command line: one clear line naming the field and the fix, no traceback,
and nothing half-made left behind."""

import math

import pytest
import torch
from torch import nn

import selfstab
from selfstab import ConfigError, Objective
from selfstab.train import EdgeNotReachedWarning, gd_to_edge

F64 = torch.float64


def _dense_sharpness(obj) -> float:
    """λ_max of the dense Hessian built column by column (eigvalsh, independent of selfstab's eigen-solvers)."""
    eye = torch.eye(obj.dim, dtype=F64)
    return float(torch.linalg.eigvalsh(obj.hvp(obj.theta0, eye))[-1])


def _one_line(exc) -> str:
    msg = str(exc.value)
    assert "\n" not in msg and "Traceback" not in msg
    return msg


def _mlp_objective(n=40, seed=0, loss="mse", out=3):
    torch.manual_seed(seed)
    x = torch.randn(n, 5)
    y = torch.nn.functional.one_hot(torch.randint(0, out, (n,)), out).float() if loss == "mse" else \
        torch.randint(0, out, (n,))
    model = nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, out))
    return Objective.from_module(model, x, y, loss, dtype=F64)


def test_track_from_a_point_far_from_the_edge_is_refused_with_the_numbers():
    obj = _mlp_objective()
    s = _dense_sharpness(obj)
    lr = 0.2 * 2 / s          # 2/η is five times S(θ₀)
    with pytest.raises(ConfigError) as info:
        selfstab.track(obj, obj.theta0, lr, steps=3)
    msg = _one_line(info)
    assert f"S(θ₀) = {s:.4g}" in msg and "80% below" in msg and "gd_to_edge" in msg and "allow_off_edge" in msg
    res = selfstab.track(obj, obj.theta0, lr, steps=2, allow_off_edge=True, flow=False)   # the escape hatch
    assert res.steps == 2


def test_gd_to_edge_warns_when_it_stops_below_the_edge():
    obj = _mlp_objective(loss="ce")
    with pytest.warns(EdgeNotReachedWarning, match="did not reach 2/η"):
        edge = gd_to_edge(obj, 0.01, max_steps=20)
    assert not edge.reached and math.isfinite(edge.sharpness) and edge.sharpness < 2 / 0.01


def test_gd_to_edge_refuses_to_start_past_the_edge():
    obj = _mlp_objective()
    s = _dense_sharpness(obj)
    with pytest.raises(ConfigError) as info:
        gd_to_edge(obj, 4.0 / s)    # 2/η = S/2: past the edge from the first step
    msg = _one_line(info)
    assert "past the edge" in msg and f"2/S(θ_init) = {2 / s:.4g}" in msg


@pytest.mark.parametrize("kwargs,expected", [
    ({"stepz": 3}, "unknown option 'stepz'; did you mean 'steps'?"),
    ({"eig_tl": 1e-6}, "did you mean 'eig_tol'?"),
    ({"steps": -1}, "steps: the number of steps to track must be an int ≥ 0, got -1"),
    ({"steps": 2.5}, "must be an int"),
    ({"processes": ["gd", "constrianed"]}, "unknown process 'constrianed'; did you mean 'constrained'?"),
])
def test_track_arguments(kwargs, expected):
    obj = _mlp_objective()
    with pytest.raises(ConfigError) as info:
        selfstab.track(obj, obj.theta0, 0.1, **{"steps": 3, **kwargs})
    msg = _one_line(info)
    assert expected in msg and "--" not in msg   # the Python argument, not a command-line flag


@pytest.mark.parametrize("lr", [0.0, -1.0, float("nan"), "fast"])
def test_learning_rate(lr):
    obj = _mlp_objective()
    for call in (lambda: gd_to_edge(obj, lr), lambda: selfstab.track(obj, obj.theta0, lr, steps=1)):
        with pytest.raises(ConfigError) as info:
            call()
        assert _one_line(info).startswith("lr: ") and "--" not in str(info.value)


# ----------------------------------------------------------------------------- the command line: sweep, report,
# plot, export (exit code 2, one line, no traceback, the folders as they were)

def _tree(folder):
    return {p.relative_to(folder): (p.stat().st_mtime_ns, p.read_bytes() if p.is_file() else None)
            for p in sorted(folder.rglob("*"))}


def _cli(argv, capsys) -> str:
    from selfstab.cli.main import main

    assert main(argv) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in captured.err + captured.out, captured.err
    return err


def _finished_run(path, **config):
    from selfstab.records import RunDir

    rd = RunDir.create(path, {"lr": 0.5, **config})
    rd.recorder("train").append(0, loss=1.0, sharpness=3.0)
    rd.flush()
    rd.write_summary({"status": "finished", "stop_reason": "steps", "lr": 0.5})
    return rd.path


def test_cli_sweep_into_a_folder_of_another_config(tmp_path, capsys):
    from selfstab.cli.sweep import sweep_configs
    from selfstab.config import RunConfig, load_config
    from selfstab.records import RunDir

    base = load_config(RunConfig, None, ["--out", str(tmp_path / "s"), "--data.name", "synthetic", "--lr", "0.5"])
    for cfg in sweep_configs(base, [0.5], [0], ["constant"]):
        RunDir.create(cfg.out, cfg)
    before = _tree(tmp_path)
    err = _cli(["sweep", "--out", str(tmp_path / "s"), "--data.name", "digits", "--lr", "0.5", "--quiet"], capsys)
    assert err.startswith("selfstab sweep: error: --out: ") and "(data.name is 'synthetic' there, 'digits' now)" in err
    assert "--overwrite" in err and _tree(tmp_path) == before


@pytest.mark.parametrize("command", [["export"], ["report"], ["plot"], ["export", "--format", "parquet"]])
def test_cli_commands_on_a_folder_that_is_not_a_run(tmp_path, capsys, command):
    (tmp_path / "notes.txt").write_text("not a run")
    before = _tree(tmp_path)
    err = _cli([command[0], str(tmp_path), *command[1:]], capsys)
    assert err.startswith(f"selfstab {command[0]}: error: ") and f"{tmp_path} is not a selfstab run directory" in err
    assert _tree(tmp_path) == before


def test_cli_report_of_a_run_and_a_non_run_writes_nothing(tmp_path, capsys):
    run = _finished_run(tmp_path / "r")
    before = _tree(tmp_path)
    err = _cli(["report", str(run), str(tmp_path / "missing")], capsys)
    assert f"{tmp_path / 'missing'} is not a selfstab run directory" in err and _tree(tmp_path) == before


def test_cli_export_unknown_format(tmp_path, capsys):
    run = _finished_run(tmp_path / "r")
    before = _tree(tmp_path)
    err = _cli(["export", str(run), "--format", "xlsx"], capsys)
    assert err == "selfstab export: error: export: --format must be csv or parquet, got 'xlsx'"
    assert _tree(tmp_path) == before


# -------------------------------------------------------------- nothing half-made (the command line)

from selfstab.cli.main import main  # noqa: E402

SMALL = ["--quiet", "--data.name", "synthetic", "--data.n", "64", "--data.n_test", "32", "--model.width", "8",
         "--track.steps", "2", "--track.stop_lambda2", "50"]


def _cli_error(capsys, argv) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    lines = [ln for ln in err.strip().splitlines() if ln]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("bad,expected", [
    (["--model.name", "mlpp"], "model.name: unknown model 'mlpp'"),
    (["--model.options.nonsense", "3"], "model.options.nonsense: not an option of 'mlp'"),
    (["--data.name", "nosuch"], "nosuch"),
    (["--data.name", "cifar10", "--data.data_root", "{tmp}/empty"], "cifar10: no cifar-10-python.tar.gz"),
    (["--tensorboard"], "tensorboard: the tensorboard package is not installed"),
    (["--device", "cuda"], "device: 'cuda' asked for but this torch has no CUDA device"),
    (["--lr", "50"], "lr: GD starts past the edge of stability"),
    (["--track.processes", "gd,flow,central"], "'flow' needs the 'constrained' process"),
    (["--track.processes", "gd,centrall"], "unknown process 'centrall'; did you mean 'central'?"),
])
def test_a_run_that_fails_its_checks_leaves_no_folder(tmp_path, capsys, monkeypatch, bad, expected):
    if "--device" in bad and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    if "--tensorboard" in bad:
        monkeypatch.setitem(__import__("sys").modules, "torch.utils.tensorboard", None)   # as if not installed
    out = tmp_path / "run"
    line = _cli_error(capsys, ["run", "--out", str(out), *SMALL, *[b.format(tmp=tmp_path) for b in bad]])
    assert expected in line
    assert not out.exists()


def test_after_a_failed_start_the_corrected_command_uses_the_same_folder(tmp_path, capsys):
    out = tmp_path / "run"
    line = _cli_error(capsys, ["run", "--out", str(out), *SMALL, "--lr", "50"])   # past the edge at step 0
    assert "2/S(θ_init)" in line and not out.exists()
    (tmp_path / "empty").mkdir()   # a folder that existed before the start stays, empty
    _cli_error(capsys, ["train", "--out", str(tmp_path / "empty"), *SMALL, "--lr", "50"])
    assert (tmp_path / "empty").is_dir() and not list((tmp_path / "empty").iterdir())
    assert main(["train", "--out", str(out), *SMALL, "--lr", "0.5"]) == 0
    assert (out / "config.toml").is_file() and selfstab.load_run(out).summary["reached_edge"]


def test_a_failed_overwrite_keeps_the_old_run(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), *SMALL, "--lr", "0.5"]) == 0
    before = (out / "records.h5").read_bytes()
    _cli_error(capsys, ["train", "--out", str(out), *SMALL, "--overwrite", "--model.name", "mlpp"])
    assert (out / "records.h5").read_bytes() == before


def test_resume_refuses_fewer_steps_and_other_keys(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), *SMALL, "--lr", "0.5"]) == 0
    config = (out / "config.toml").read_text()
    assert "track.steps can only grow" in _cli_error(capsys, ["resume", str(out), "--track.steps", "1"])
    assert "the config changed (model.width)" in _cli_error(capsys, ["resume", str(out), "--model.width", "9"])
    assert (out / "config.toml").read_text() == config


def test_shape_errors_name_the_users_data_not_an_internal_probe():
    model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3))
    with pytest.raises(ConfigError) as info:
        Objective.from_module(model, torch.randn(50, 7), torch.randn(50, 3), "mse")
    msg = _one_line(info)
    assert "(50, 7)" in msg and "(4, 7)" not in msg
    with pytest.raises(ConfigError) as info:
        Objective.from_module(model, torch.randn(50, 5), torch.randn(50, 3), "ce")
    msg = _one_line(info)
    assert "of shape (50, 3)" in msg and "(4, 3)" not in msg
    labels = torch.zeros(50, dtype=torch.long)
    labels[40] = 7     # out of range far beyond the first few examples
    with pytest.raises(ConfigError, match=r"class indices must lie in \[0, 3\)"):
        Objective.from_module(model, torch.randn(50, 5), labels, "ce")


# ----------------------------------------------------------------------------- the Python API (issue §4.6): the
# argument's own name and the keyword that fixes it, never a command-line flag nor a raw torch error

def _api_error(call, error=ConfigError) -> str:
    with pytest.raises(error) as info:
        call()
    msg = _one_line(info)
    assert "--" not in msg, msg   # the Python API names keyword arguments, not flags
    return msg


def test_api_process_that_needs_another_names_the_keyword():
    obj = _mlp_objective()
    msg = _api_error(lambda: selfstab.track(obj, obj.theta0, 0.1, steps=1, processes=["predicted"]))
    assert "processes=['gd', 'constrained', 'predicted']" in msg and "needs the 'constrained' and 'gd' processes" in msg


@pytest.mark.parametrize("warm", [torch.randn(5), torch.randn(2, 3, 4), "vectors"])
def test_api_warm_of_the_wrong_shape(warm):
    obj = _mlp_objective()
    msg = _api_error(lambda: selfstab.track(obj, obj.theta0, 0.1, steps=1, warm=warm))
    assert msg.startswith("warm:") and f"({obj.dim},) or (m, {obj.dim})" in msg


def test_api_top_eigenpairs_given_an_objective_and_a_point():
    obj = _mlp_objective()
    msg = _api_error(lambda: selfstab.top_eigenpairs(obj, obj.theta0))
    assert "Boolean value" not in msg and "objective.at(theta).hvp, objective.dim" in msg
    point = obj.at(obj.theta0)   # what it suggests works, against the dense Hessian
    assert selfstab.top_eigenpairs(point.hvp, obj.dim).sharpness == pytest.approx(_dense_sharpness(obj), rel=1e-6)


def test_api_nan_data_is_bad_input_not_a_learning_rate_to_lower():
    torch.manual_seed(0)
    x = torch.randn(40, 5)
    x[3, 2] = math.nan
    y = torch.nn.functional.one_hot(torch.randint(0, 3, (40,)), 3).float()
    obj = Objective.from_module(nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, 3)), x, y, "mse", dtype=F64)
    for call in (lambda: gd_to_edge(obj, 0.1), lambda: selfstab.track(obj, obj.theta0, 0.1, steps=1)):
        msg = _api_error(call)
        assert "NaN" in msg and "lower the learning rate" not in msg and "nan%" not in msg


def test_api_nan_starting_points_name_their_argument():
    obj = _mlp_objective()
    theta = obj.theta0.clone()
    theta[0] = math.nan
    msg = _api_error(lambda: selfstab.track(obj, theta, 0.1, steps=1))
    assert msg.startswith("theta0:") and "NaN" in msg and "nan%" not in msg and "choose lr" not in msg
    msg = _api_error(lambda: gd_to_edge(obj, 0.1, theta=theta))
    assert msg.startswith("theta:") and "NaN" in msg and "lower the learning rate" not in msg


@pytest.mark.parametrize("option,value,expected", [
    ("proj_tol", -1, "proj_tol must be > 0, got -1"),
    ("proj_max_iter", 0, "proj_max_iter must be ≥ 1, got 0"),
    ("active_rtol", 1.5, "active_rtol must be in [0, 1), got 1.5"),
    ("eig_tol", "small", "eig_tol has the wrong type"),
])
def test_api_process_options_obey_the_configs_rules(option, value, expected):
    obj = _mlp_objective()
    msg = _api_error(lambda: selfstab.track(obj, obj.theta0, 0.1, steps=1, allow_off_edge=True, **{option: value}))
    assert expected in msg
    from selfstab.config import TrackConfig
    if not isinstance(value, str):   # the same rule as the config's (one owner): the CLI refuses it too
        assert any(name == option for name, _ in TrackConfig(**{option: value}).validate())


@pytest.mark.parametrize("call,expected", [
    (lambda obj: gd_to_edge(obj, lrr=0.1), "gd_to_edge: unknown keyword argument 'lrr'; did you mean 'lr'?"),
    (lambda obj: gd_to_edge(obj, 0.1, max_step=3), "did you mean 'max_steps'?"),
    (lambda obj: selfstab.top_eigenpairs(obj.at(obj.theta0).hvp, obj.dim, kk=2), "did you mean 'k'?"),
])
def test_api_misspelt_keyword_arguments(call, expected):
    assert expected in _api_error(lambda: call(_mlp_objective()))


def test_api_shape_error_names_theta0():
    obj = _mlp_objective()
    msg = _api_error(lambda: selfstab.track(obj, torch.randn(5), 0.1, steps=1))
    assert msg.startswith("theta0:") and f"length {obj.dim}" in msg


def test_counts_in_messages_agree_with_their_noun():
    from selfstab.wording import plural

    assert (plural(1, "step"), plural(2, "step"), plural(0, "step")) == ("1 step", "2 steps", "0 steps")
    assert plural(1, "entry", "entries") == "1 entry" and plural(3, "entry", "entries") == "3 entries"


def test_track_into_a_read_only_place_names_the_flag_track_reads(tmp_path, capsys, monkeypatch):
    """§4.7: `track RUN --out NEW` on a read-only place suggested `out = … in the config`, a key track does not
    use."""
    import errno
    from pathlib import Path

    trained = tmp_path / "trained"
    assert main(["train", "--out", str(trained), *SMALL, "--lr", "0.5"]) == 0
    capsys.readouterr()

    def read_only(self, *args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(self))

    monkeypatch.setattr(Path, "mkdir", read_only)
    new = tmp_path / "ro" / "new"
    line = _cli_error(capsys, ["track", str(trained), "--out", str(new)])
    assert line == f"selfstab track: error: cannot write {new} (read-only file system); choose a writable folder " \
                   f"with --out NEW"
