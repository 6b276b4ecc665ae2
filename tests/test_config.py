"""The typed config system: TOML round trips, CLI overrides, one-line errors naming the field."""

from __future__ import annotations

import dataclasses
import inspect
import tomllib
import typing
from dataclasses import dataclass, field
from typing import Literal, Optional

import pytest

from selfstab.config import (
    TRACK_READERS,
    TRACK_RUN_KEYS,
    RunConfig,
    TrackConfig,
    diff_configs,
    dumps_toml,
    from_dict,
    load_config,
    to_dict,
    to_toml,
)
from selfstab.errors import ConfigError


@dataclass
class Inner:
    width: int = 3
    scale: Optional[float] = None


@dataclass
class Schema:
    name: str  # required: no default
    lrs: list[float] = field(default_factory=lambda: [0.1, 0.2])
    shape: tuple[int, ...] = (2, 3)
    kind: Literal["a", "b"] = "a"
    flag: bool = False
    extra: dict[str, int] = field(default_factory=dict)
    inner: Inner = field(default_factory=Inner)


def _leaves(d, prefix=""):
    for k, v in d.items():
        if isinstance(v, dict):
            yield from _leaves(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}"


def test_defaults_round_trip_through_toml():
    cfg = RunConfig()
    text = to_toml(cfg)
    assert from_dict(RunConfig, tomllib.loads(text)) == cfg
    # every field is written out: a value, or a comment for None
    for key in _leaves(to_dict(cfg)):
        assert key.rsplit(".", 1)[-1] in text


def test_non_default_values_round_trip():
    cfg = load_config(RunConfig, None, ["--data.n", "500", "--train.chunk_size=128", "--train.every", "7,3,1",
                                        "--track.generalized", "false", "--data.data_root", 'C:\\data "x"'])
    assert from_dict(RunConfig, tomllib.loads(to_toml(cfg))) == cfg
    assert cfg.data.data_root == 'C:\\data "x"'


def test_none_is_written_as_a_comment_and_read_back_as_default():
    text = to_toml(RunConfig())
    assert "# n is unset (None)" in text
    assert "n" not in tomllib.loads(text)["data"]
    # omitting a None is lossless only if every Optional field defaults to None
    def check(cls):
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            value = getattr(cls(), f.name)
            if dataclasses.is_dataclass(value):
                check(type(value))
            elif type(None) in typing.get_args(hints[f.name]):
                assert value is None, f"{cls.__name__}.{f.name}"

    check(RunConfig)


def test_writer_escapes_strings_and_special_floats():
    data = {"s": 'a"b\\c\nd\te\x7f\x01é', "x": float("nan"), "y": float("-inf"), "z": 1e-300,
            "l": [1, 2.5, "q"], "t": {"u v": 1, "sub": {"k": True}}}
    back = tomllib.loads(dumps_toml(data, header="hello\nworld"))
    assert back["s"] == data["s"] and back["z"] == 1e-300 and back["y"] == float("-inf")
    assert back["x"] != back["x"] and back["l"] == [1, 2.5, "q"] and back["t"] == {"u v": 1, "sub": {"k": True}}


@pytest.mark.parametrize(
    "overrides",
    [
        ["--lr", "0.02"],
        ["--lr=0.02"],
        ["lr=0.02"],
    ],
)
def test_override_forms(overrides):
    assert load_config(RunConfig, None, overrides).lr == 0.02


@pytest.mark.parametrize("overrides", [["--train.lr", "0.02"], ["--train.lr=2e-2"], ["train.lr=0.02"]])
def test_old_train_lr_still_sets_the_learning_rate_with_a_warning(overrides):
    with pytest.warns(DeprecationWarning, match="train.lr is deprecated"):
        cfg = load_config(RunConfig, None, overrides)
    assert cfg.lr == 0.02 and cfg.train.lr is None


def test_old_config_file_with_train_lr(tmp_path):
    path = tmp_path / "old.toml"
    path.write_text("[train]\nlr = 0.1\nmax_steps = 5\n")
    with pytest.warns(DeprecationWarning):
        assert load_config(RunConfig, path, []).lr == 0.1
        # the command line beats the file's old key
        assert load_config(RunConfig, path, ["--lr", "0.3"]).lr == 0.3
        assert from_dict(RunConfig, {"train": {"lr": 0.05}}).lr == 0.05
    assert RunConfig(lr=0.25).edge == 8.0


def test_model_options_table_from_the_command_line():
    cfg = load_config(RunConfig, None, ["--model.options.heads", "4", "--model.options.layers=3",
                                        "--model.options.blocks", "[1, 1, 1, 1]", "--model.options.activation", "relu"])
    assert cfg.model.options == {"heads": 4, "layers": 3, "blocks": [1, 1, 1, 1], "activation": "relu"}
    assert from_dict(RunConfig, tomllib.loads(to_toml(cfg))).model.options == cfg.model.options


def test_overrides_parse_by_field_type(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('seed = 3\nlr = 0.1\n[model]\nwidth = 200\n[train]\nevery = [5, 5, 5]\n')
    cfg = load_config(RunConfig, path, [
        "--model.width", "100", "--train.dtype=float32", "--quiet", "--track.even-part", "yes",
        "--max_steps", "2e4", "--every", "[9, 8, 7]", "--data.n", "none", "--seed", "4", "--seed=5",
    ])
    assert cfg.model.width == 100 and cfg.train.dtype == "float32" and cfg.quiet is True
    assert cfg.track.even_part is True and cfg.train.max_steps == 20000 and isinstance(cfg.train.max_steps, int)
    assert cfg.train.every == [9, 8, 7] and cfg.data.n is None and cfg.seed == 5 and cfg.lr == 0.1
    assert load_config(RunConfig, path, []).model.width == 200
    # a dict (a run's config.toml, already parsed) works as the base too
    assert load_config(RunConfig, to_dict(cfg), ["--seed", "6"]).model.width == 100


@pytest.mark.parametrize("word,value", [("true", True), ("0", False), ("No", False), ("on", True)])
def test_bool_words(word, value):
    assert load_config(RunConfig, None, [f"--quiet={word}"]).quiet is value


def test_generic_schema_types():
    obj = from_dict(Schema, {"name": "x", "lrs": [1, 0.5], "shape": [4], "extra": {"k": 1}, "inner": {"scale": 2}})
    assert obj.lrs == [1.0, 0.5] and all(type(v) is float for v in obj.lrs)
    assert obj.shape == (4,) and obj.extra == {"k": 1} and obj.inner == Inner(3, 2.0)
    cli = load_config(Schema, {"name": "y"}, ["--lrs", "1e-3, 2e-3", "--shape", "", "--inner.scale", "0.5", "--kind", "b"])
    assert cli.lrs == [1e-3, 2e-3] and cli.shape == () and cli.inner.scale == 0.5 and cli.kind == "b"
    assert from_dict(Schema, tomllib.loads(to_toml(cli))) == cli


@pytest.mark.parametrize(
    "data,message",
    [
        ({"model": {"widht": 3}}, "config: unknown key 'model.widht'; did you mean 'model.width'? valid keys: model.name, model.width"),
        ({"lrr": 0.1}, "did you mean 'lr'?"),
        ({"model": {"width": "abc"}}, "config: model.width must be an int, got 'abc'"),
        ({"model": {"width": 2.5}}, "config: model.width must be an int, got 2.5"),
        ({"lr": "1e-3"}, "config: lr must be a float, got '1e-3'"),
        ({"train": {"dtype": "float16"}}, "config: train.dtype must be one of float32, float64"),
        ({"loss": "l1"}, "config: loss must be one of mse, half_mse, ce, logistic"),
        ({"quiet": 1}, "config: quiet must be a bool"),
        ({"train": {"every": [1, "x", 3]}}, "config: train.every[1] must be an int, got 'x'"),
        ({"lr": -0.5}, "config: lr must be > 0, got -0.5"),
        ({"model": 3}, "config: model must be a table, got 3"),
        ({"data": {"n": "all"}}, "config: data.n must be an int or none, got 'all'"),
    ],
)
def test_bad_file_values_name_the_field(data, message):
    with pytest.raises(ConfigError) as info:
        from_dict(RunConfig, data)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["--model.widht", "3"], "unknown key 'model.widht'; did you mean 'model.width'?"),
        (["--widht=3"], "did you mean 'model.width'?"),
        (["--model.width", "abc"], "config: model.width must be an int, got 'abc'"),
        (["--train.dtype", "float16"], "config: train.dtype must be one of float32, float64"),
        (["--quiet=maybe"], "config: quiet must be a bool"),
        (["--every", "1,x,3"], "config: train.every[1] must be an int, got 'x'"),
        (["--name", "mlp"], "'name' is ambiguous; use one of model.name, data.name"),
        (["--train", "x"], "config: train is a section"),
        (["--model.width.x=1"], "model.width is a value, not a section"),
        (["--lr"], "override --lr needs a value"),
        (["lr"], "cannot read override 'lr'"),
        (["--every", "[1, 2"], "config: train.every: cannot read"),
    ],
)
def test_bad_overrides_name_the_field(overrides, message):
    with pytest.raises(ConfigError) as info:
        load_config(RunConfig, None, overrides)
    assert message in str(info.value)


def test_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(RunConfig, tmp_path / "missing.toml", [])
    bad = tmp_path / "bad.toml"
    bad.write_text("seed = = 1\n")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        load_config(RunConfig, bad, [])
    with pytest.raises(ConfigError, match="config: name is required"):
        from_dict(Schema, {})


def test_diff_configs():
    a = RunConfig()
    b = load_config(RunConfig, None, ["--lr", "0.3", "--data.n", "10", "--quiet"])
    assert diff_configs(a, b) == ["lr", "quiet", "data.n"]
    assert diff_configs(a, a) == []
    # a config.toml read back (None omitted) equals the dataclass it came from
    assert diff_configs(tomllib.loads(to_toml(b)), b) == []
    assert diff_configs(a, b, ignore=["quiet", "data"]) == ["lr"]


def test_a_section_with_a_name_stands_for_its_name():
    cfg = load_config(RunConfig, None, ["--model", "cnn", "--data=digits"])
    assert (cfg.model.name, cfg.data.name) == ("cnn", "digits")


# ----------------------------------------------------------------------------- track keys ↔ process constructors


def _keyword_defaults(cls) -> dict:
    return {p.name: p.default for p in inspect.signature(cls.__init__).parameters.values()
            if p.kind is inspect.Parameter.KEYWORD_ONLY}


def _builtin_processes() -> dict:
    from selfstab.processes.lockstep import PROCESSES
    # a test elsewhere may register a process of its own; only selfstab's processes have track keys
    return {n: c for n, c in PROCESSES.items() if c.__module__.startswith("selfstab.")}


def test_each_process_option_has_the_track_keys_default():
    """A process constructor's keyword default and the track key of that name are two copies of one
    default: they must agree, in type as in value, or the Python API and the CLI run different things."""
    track = TrackConfig()
    for name, cls in _builtin_processes().items():
        for option, default in _keyword_defaults(cls).items():
            assert hasattr(track, option), f"{name}: option {option!r} has no track key"
            value = getattr(track, option)
            assert (type(value), value) == (type(default), default), \
                f"track.{option} = {value!r}, but {cls.__name__}({option}={default!r})"


def test_track_readers_are_the_constructors_keywords():
    """config.TRACK_READERS (read by `run --help` without importing torch) is what the constructors take,
    and every track key is read by a process or is the run's."""
    processes = _builtin_processes()
    assert list(TRACK_READERS) == list(processes)
    for name, cls in processes.items():
        assert sorted(TRACK_READERS[name]) == sorted(_keyword_defaults(cls)), name
    read = {k for keys in TRACK_READERS.values() for k in keys}
    fields = [f.name for f in dataclasses.fields(TrackConfig)]
    assert not read & set(TRACK_RUN_KEYS)
    assert sorted(read | set(TRACK_RUN_KEYS)) == sorted(fields)
