"""Help that teaches: every config key with its comment, per-command key lists, plain-text help, models' widths."""

import dataclasses
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Literal, Optional

import pytest

import selfstab.config as config
from selfstab.cli import keys
from selfstab.cli import run as cli_run
from selfstab.cli.catalog import run_options
from selfstab.cli.main import main


def _help(capsys, *argv) -> str:
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--help"])
    assert exc.value.code == 0
    return capsys.readouterr().out


def _flat(text: str) -> str:
    return " ".join(text.split())


def _leaves(cls, prefix=""):
    """Dotted leaf keys of a dataclass tree, walked independently of cli.keys."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            yield from _leaves(tp, prefix + f.name + ".")
        else:
            yield prefix + f.name


def _trailing_comments() -> dict[str, str]:
    """``class.field`` → the comment on the field's own line in config.py, read with a regular expression."""
    out, cls = {}, None
    for line in Path(config.__file__).read_text(encoding="utf-8").splitlines():
        m = re.match(r"class (\w+)", line)
        if m:
            cls = m.group(1)
        m = re.match(r"    (\w+): [^=]+=.*?  # (.+)$", line)
        if m and cls:
            out[f"{cls}.{m.group(1)}"] = m.group(2).strip()
    return out


# ----------------------------------------------------------------------------- reading the comments


@dataclass
class Toy:
    """A docstring # that is not a comment."""

    plain: int = 1  # the trailing comment
    wrapped: float = 2.0  # first part;
    #                       second part
    no_comment: str = "a # b"
    # the comment block above
    # of this field
    above: Optional[int] = None
    choice: Literal["x", "y"] = "x"  # a choice
    # a block that belongs to the next field, not to `choice`
    last: list[int] = field(default_factory=lambda: [1, 2])

    def validate(self):  # a method: not a field
        yield from ()  # not a field either


def test_field_comments_trailing_continued_and_above():
    assert keys.field_comments(Toy) == {
        "plain": "the trailing comment",
        "wrapped": "first part; second part",
        "above": "the comment block above of this field",
        "choice": "a choice",
        "last": "a block that belongs to the next field, not to `choice`",
    }


def test_config_keys_of_a_toy_schema():
    got = {k.name: (k.default, k.kind, k.help) for k in keys.config_keys(Toy)}
    assert got == {
        "plain": (1, "int", "the trailing comment"),
        "wrapped": (2.0, "float", "first part; second part"),
        "no_comment": ("a # b", "str", ""),
        "above": (None, "int or none", "the comment block above of this field"),
        "choice": ("x", "x | y", "a choice"),
        "last": ([1, 2], "list of int", "a block that belongs to the next field, not to `choice`"),
    }


# ----------------------------------------------------------------------------- the commands' help


def test_run_help_lists_every_key_with_its_comment(capsys):
    text = _help(capsys, "run")
    flat = _flat(text)
    leaves = list(_leaves(config.RunConfig))
    assert [k.name for k in keys.config_keys()] == leaves
    listed = re.findall(r"^  ([\w.]+) = ", text, flags=re.M)
    assert sorted(listed) == sorted(leaves)
    # in field order, but for the track keys, which are grouped by the process that reads them
    assert [k for k in listed if not k.startswith("track.")] == [k for k in leaves if not k.startswith("track.")]
    # keys whose default is None are listed too, with what they take
    for key in ("data.n", "data.kind", "model.depth"):
        assert f"{key} = none (" in flat
    # each field's own comment, as written in config.py, is its description
    comments = _trailing_comments()
    hints = typing.get_type_hints(config.RunConfig)
    sections = {hints[f.name].__name__: f.name for f in dataclasses.fields(config.RunConfig)
                if dataclasses.is_dataclass(hints[f.name])}
    checked = 0
    for qual, comment in comments.items():
        cls, name = qual.split(".")
        key = name if cls == "RunConfig" else f"{sections.get(cls, '?')}.{name}"
        if key in leaves:
            assert _flat(comment) in flat, key
            checked += 1
    assert checked >= 0.8 * len(leaves)


def test_run_help_groups_the_track_keys_by_the_processes_that_read_them(capsys):
    """Under each heading, exactly the track keys that those processes' constructors take (and no other
    process); config.TRACK_READERS is pinned to the constructors in tests/test_config.py."""
    text = _help(capsys, "run")
    groups: dict[str, list[str]] = {}
    heading = None
    for line in text.splitlines():
        m = re.match(r"^ track keys (?:read by (.+)|of the run itself):$", line)
        if m:
            heading = m.group(1) or ""
            assert heading not in groups, f"two groups for {heading!r}"
            groups[heading] = []
            continue
        m = re.match(r"^  ([\w.]+) = ", line)
        if m and heading is not None and m.group(1).startswith("track."):
            groups[heading].append(m.group(1).removeprefix("track."))
    assert sorted(groups.pop("")) == sorted(config.TRACK_RUN_KEYS)
    assert groups and all(groups.values())
    for heading, names in groups.items():
        readers = set(re.split(r", | and ", heading))
        for name in names:
            assert {p for p, taken in config.TRACK_READERS.items() if name in taken} == readers, (heading, name)
    assert sorted(n for names in groups.values() for n in names) == \
        sorted({n for taken in config.TRACK_READERS.values() for n in taken})


def test_track_and_resume_help_list_only_the_keys_they_accept(capsys):
    track = re.findall(r"^  ([\w.]+) = ", _help(capsys, "track"), flags=re.M)
    assert track and set(track) == {k for k in _leaves(config.RunConfig)
                                    if k.startswith("track.") or k in cli_run.TRACK_KEYS}
    resume = re.findall(r"^  ([\w.]+) = ", _help(capsys, "resume"), flags=re.M)
    assert set(resume) == {k for k in _leaves(config.RunConfig) if keys.accepts(k, cli_run.RESUME_KEYS)}
    assert not any(k.startswith(("model.", "data.", "train.")) for k in resume)


def test_resume_refuses_a_key_its_help_does_not_list(tmp_path, capsys):
    from selfstab.records import RunDir

    out = tmp_path / "r"
    RunDir.create(out, config.RunConfig())
    assert main(["resume", str(out), "--track.flow", "false"]) == 2
    err = capsys.readouterr().err
    assert "config changed (track.flow)" in err and len(err.strip().splitlines()) == 1


def test_help_is_plain_text(capsys):
    for command in ("sweep", "run", "track", "resume", "train", "models", "datasets", "theory", "plot", "report"):
        text = _help(capsys, command)
        assert "``" not in text and ":class:" not in text and ":func:" not in text, command
    assert "One run per learning rate (or seed)" in _help(capsys, "sweep")


def test_format_keys_wraps_and_marks_choices():
    ks = [keys.Key("a.b", None, "int or none", "word " * 30), keys.Key("c", "x", "x | y | z", "pick one"),
          keys.Key("m.options", {}, "table", "constructor options")]
    lines = keys.format_keys(ks, width=60).splitlines()
    assert max(map(len, lines)) <= 60
    assert lines[0].startswith("  a.b = none (int or none)")
    flat = _flat("\n".join(lines))
    assert 'c = "x" pick one [x | y | z]' in flat                 # choices the comment does not name
    assert "m.options = {} (table: --m.options.NAME value) constructor options" in flat
    assert keys.accepts("track.steps", ["track"]) and not keys.accepts("tracking", ["track"])


# ----------------------------------------------------------------------------- models


def test_models_shows_the_width_run_uses(capsys):
    from selfstab.problem.models import MODELS

    assert main(["models"]) == 0
    text = capsys.readouterr().out
    width = config.ModelConfig().width
    blocks = re.split(r"^(?=\S)", text, flags=re.M)
    for spec in MODELS.values():
        block = next(b for b in blocks if b.startswith(spec.name + " "))
        key = {"transformer": "hidden"}.get(spec.name, "width")   # what model.width sets, stated here
        expected = width if width is not None else spec.options[key]
        assert f"selfstab run uses: {key}={expected!r}" in block, spec.name


def test_run_options_falls_back_to_the_models_default(monkeypatch):
    @dataclass
    class Unset:
        name: str = "mlp"
        width: Optional[int] = None
        depth: Optional[int] = 5
        activation: Optional[str] = None

    monkeypatch.setattr(config, "ModelConfig", Unset)
    mlp = SimpleNamespace(options={"width": 200, "depth": 3, "activation": "swish"}, width_option="width")
    assert run_options(mlp) == {"width": 200, "depth": 5}
    transformer = SimpleNamespace(options={"hidden": 64, "heads": 2}, width_option="hidden")
    assert run_options(transformer) == {"hidden": 64}


def test_models_width_is_what_run_builds():
    # the options `selfstab models` reports are among those the run's problem builder passes to the model
    from selfstab.problem.build import model_options
    from selfstab.problem.data import load_dataset
    from selfstab.problem.models import MODELS

    ds = load_dataset("digits", loss="mse", n=10)
    for name in ("mlp", "cnn", "resnet18"):
        built = model_options(config.RunConfig(model=config.ModelConfig(name=name)), ds)
        shown = run_options(MODELS[name])
        assert shown and shown.items() <= built.items(), name
