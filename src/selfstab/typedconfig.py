"""Typed, nested configuration on plain dataclasses, read from TOML and the command line.

A config is a tree of dataclasses (the run's schema, :class:`~selfstab.config.RunConfig`,
is in :mod:`selfstab.config`).  Field annotations are the types: ``int``, ``float``
(ints accepted), ``bool``, ``str``, ``Optional[X]``, ``Literal[...]``,
``list[X]``/``tuple[X, ...]``, ``dict[str, X]`` and nested dataclasses.

- :func:`from_dict` builds the tree from nested dicts (a parsed TOML file) and
  refuses unknown keys (with a "did you mean"), wrong types and bad choices in
  one-line :class:`~selfstab.errors.ConfigError` messages naming the dotted key.
  Values are taken literally: the string ``"1e-3"`` is not a float here.
- :func:`load_config` reads a TOML file, then applies command-line overrides
  (``--train.lr 0.02``, ``--train.lr=0.02``, ``train.lr=0.02``, or ``--lr 0.02``
  when ``lr`` names one field of the tree; dashes count as underscores); only
  these strings are parsed by the target field's type: bools read
  true/false/1/0/yes/no/on/off (a bare ``--quiet`` is true), lists read
  ``1,2,3`` or ``[1, 2, 3]``, and ``none``/``null``/empty sets an Optional to None.
- :func:`to_toml` writes every field, defaults included.  TOML has no null:
  a ``None`` is written as a comment (``# n is unset (None)``) and so reads
  back as a missing key, i.e. as the field's default.  Give every ``Optional``
  field the default ``None`` and this round-trips exactly.
- :func:`diff_configs` lists the dotted keys where two configs differ.

A dataclass may define ``validate(self)`` yielding ``(field, problem)`` pairs
for values of the right type that are still wrong (a negative step size);
the first becomes ``config: <dotted field> <problem>``.
"""


from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import os
import tomllib
import types
import typing
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, Union

from .errors import ConfigError
from .tomlio import dumps_toml, to_dict

__all__ = ["diff_configs", "dumps_toml", "from_dict", "load_config", "parse_overrides", "section_type",
           "to_dict", "to_toml"]

_NONE_WORDS = ("none", "null", "")
_BOOL_WORDS = {"true": True, "1": True, "yes": True, "on": True, "false": False, "0": False, "no": False, "off": False}


# ----------------------------------------------------------------------------- reading


@lru_cache(maxsize=None)
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _fields(cls: type) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(cls) if f.init]


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else str(key)


def section_type(tp: Any) -> type | None:
    """The dataclass behind ``tp`` (``X`` or ``Optional[X]``), or None for a leaf."""
    if dataclasses.is_dataclass(tp):
        return tp
    if typing.get_origin(tp) in (Union, types.UnionType):
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(inner) == 1 and dataclasses.is_dataclass(inner[0]):
            return inner[0]
    return None


def _leaf_paths(cls: type, path: str = "") -> list[str]:
    out = []
    for f in _fields(cls):
        sub = section_type(_hints(cls)[f.name])
        out += _leaf_paths(sub, _join(path, f.name)) if sub else [_join(path, f.name)]
    return out


def _unknown(key: Any, cls: type, path: str) -> ConfigError:
    names = [f.name for f in _fields(cls)]
    leaves = _leaf_paths(cls)
    guess = difflib.get_close_matches(str(key), names, n=1)
    guess = guess or [p for p in leaves if p.rsplit(".", 1)[-1] == str(key)][:1]
    if not guess:  # a near miss of a field in another section: "widht" → model.width
        by_name = {}
        for p in leaves:
            by_name.setdefault(p.rsplit(".", 1)[-1], p)
        guess = [by_name[g] for g in difflib.get_close_matches(str(key), list(by_name), n=1)]
    hint = f"; did you mean '{_join(path, guess[0])}'?" if guess else ";"
    valid = [_join(path, n) + (".*" if section_type(_hints(cls)[n]) else "") for n in names]
    return ConfigError(f"config: unknown key '{_join(path, key)}'{hint} valid keys: {', '.join(valid)}")


def _describe(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    simple = {int: "an int", float: "a float", bool: "a bool (true/false)", str: "a string"}
    if tp in simple:
        return simple[tp]
    if origin is Literal:
        return "one of " + ", ".join(map(str, args))
    if origin in (Union, types.UnionType):
        parts = [_describe(a) for a in args if a is not type(None)]
        return " or ".join(parts) + (" or none" if type(None) in args else "")
    if origin in (list, tuple) or tp in (list, tuple):
        plural = {int: "ints", float: "floats", bool: "bools", str: "strings"}
        return f"a list of {plural.get(args[0], 'values')}" if args else "a list"
    if origin is dict or tp is dict or section_type(tp):
        return "a table"
    return getattr(tp, "__name__", str(tp))


def _wrong(path: str, tp: Any, value: Any) -> ConfigError:
    return ConfigError(f"config: {path} must be {_describe(tp)}, got {value!r}")


def _cli_list(text: str, path: str) -> list:
    text = text.strip()
    if text.startswith("["):
        try:
            return tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config: {path}: cannot read {text!r} as a TOML array ({exc})") from None
    return [p.strip() for p in text.split(",")] if text else []


def _coerce(value: Any, tp: Any, path: str, cli: bool) -> Any:
    """Check ``value`` against the annotation ``tp``; with ``cli``, strings are parsed by ``tp``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    text = value.strip() if cli and isinstance(value, str) else None
    if tp is Any:
        if text is not None:   # from the command line: a TOML scalar (4, 0.5, true, [2, 2]) or else a string
            try:
                return tomllib.loads(f"v = {text}")["v"]
            except tomllib.TOMLDecodeError:
                return text
        return value
    if dataclasses.is_dataclass(tp):
        if text is not None:
            first = _fields(tp)[0].name
            raise ConfigError(f"config: {path} is a section; set its fields, e.g. --{path}.{first}")
        return _build(tp, value, path, cli)
    if origin in (Union, types.UnionType):
        if type(None) in args and (value is None or (text is not None and text.lower() in _NONE_WORDS)):
            return None
        for member in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, member, path, cli)
            except ConfigError:
                continue
        raise _wrong(path, tp, value)
    if origin is Literal:
        for choice in args:
            if type(value) is type(choice) and value == choice:
                return choice
            if text is not None and text == str(choice):
                return choice
        raise ConfigError(f"config: {path} must be one of {', '.join(map(str, args))}, got {value!r}")
    if origin in (list, tuple) or tp in (list, tuple):
        items = _cli_list(value, path) if text is not None else value
        if not isinstance(items, (list, tuple)):
            raise _wrong(path, tp, value)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(items) != len(args):
                raise ConfigError(f"config: {path} must have {len(args)} entries, got {len(items)}")
            kinds = args
        else:
            kinds = [args[0] if args else Any] * len(items)
        out = [_coerce(v, k, f"{path}[{i}]", cli) for i, (v, k) in enumerate(zip(items, kinds))]
        return tuple(out) if (origin or tp) is tuple else out
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise _wrong(path, tp, value)
        kind = args[1] if args else Any
        return {str(k): _coerce(v, kind, _join(path, str(k)), cli) for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        if text is not None and text.lower() in _BOOL_WORDS:
            return _BOOL_WORDS[text.lower()]
        raise _wrong(path, tp, value)
    if tp is int:
        number = value
        if text is not None:
            try:
                number = int(text)
            except ValueError:
                try:
                    number = float(text)
                except ValueError:
                    raise _wrong(path, tp, value) from None
        if isinstance(number, int) and not isinstance(number, bool):
            return number
        if isinstance(number, float) and number.is_integer():
            return int(number)
        raise _wrong(path, tp, value)
    if tp is float:
        if text is not None:
            try:
                return float(text)
            except ValueError:
                raise _wrong(path, tp, value) from None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise _wrong(path, tp, value)
    if tp is str:
        if isinstance(value, str):
            return value
        raise _wrong(path, tp, value)
    raise TypeError(f"config: unsupported annotation {tp!r} for {path}")


def _build(cls: type, data: Any, path: str, cli: bool) -> Any:
    if isinstance(data, cls):
        return data
    if not isinstance(data, Mapping):
        raise ConfigError(f"config: {path or 'the config'} must be a table, got {data!r}")
    if hasattr(cls, "migrate"):   # a schema may read its older layouts
        data = cls.migrate(dict(data))
    hints, fields = _hints(cls), _fields(cls)
    names = {f.name for f in fields}
    for key in data:
        if key not in names:
            raise _unknown(key, cls, path)
    kwargs = {}
    for f in fields:
        if f.name in data:
            kwargs[f.name] = _coerce(data[f.name], hints[f.name], _join(path, f.name), cli)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"config: {_join(path, f.name)} is required")
    obj = cls(**kwargs)
    for name, problem in getattr(obj, "validate", lambda: ())() or ():
        raise ConfigError(f"config: {_join(path, name)} {problem}")
    return obj


def from_dict(cls: type, data: Mapping[str, Any], *, path: str = "") -> Any:
    """Build the dataclass ``cls`` from nested dicts; ``path`` prefixes the keys named in errors."""
    return _build(cls, data, path, cli=False)


def _resolve(cls: type, key: str) -> tuple[list[str], Any]:
    """Dotted override key → (path parts, leaf annotation); ``lr`` alone finds ``train.lr``, and a section
    with a ``name`` field stands for that field (``--model cnn`` is ``--model.name cnn``)."""
    parts = key.strip().replace("-", "_").split(".")
    if len(parts) == 1 and parts[0] not in {f.name for f in _fields(cls)}:
        found = [p for p in _leaf_paths(cls) if p.rsplit(".", 1)[-1] == parts[0]]
        if len(found) > 1:
            raise ConfigError(f"config: '{parts[0]}' is ambiguous; use one of {', '.join(found)}")
        if found:
            parts = found[0].split(".")
    here, tp = cls, None
    for i, part in enumerate(parts):
        if here is None and (typing.get_origin(tp) is dict or tp is dict) and i == len(parts) - 1:
            # a key of a table field (--model.options.heads 4): the value takes the table's value type
            args = typing.get_args(tp)
            return parts, args[1] if args else Any
        if here is None:
            raise ConfigError(f"config: {'.'.join(parts[:i])} is a value, not a section; no key '{'.'.join(parts)}'")
        if part not in {f.name for f in _fields(here)}:
            raise _unknown(part, here, ".".join(parts[:i]))
        tp = _hints(here)[part]
        here = section_type(tp)
    if here is not None:
        if "name" in {f.name for f in _fields(here)}:   # --model cnn means --model.name cnn
            return parts + ["name"], _hints(here)["name"]
        raise ConfigError(f"config: {'.'.join(parts)} is a section; set its fields, e.g. --{'.'.join(parts)}.{_fields(here)[0].name}")
    return parts, tp


def parse_overrides(cls: type, overrides: Sequence[str]) -> list[tuple[list[str], Any]]:
    """``["--a.b", "1", "--c=2", "d=3", "--flag"]`` → ``[(parts, typed value), …]`` in order.

    A bool field given as a bare ``--flag`` (no value follows) is set to true.
    """
    out, toks, i = [], list(overrides), 0
    while i < len(toks):
        tok = toks[i]
        if tok.startswith("--") and "=" not in tok:
            key = tok[2:]
            parts, tp = _resolve(cls, key)
            nxt = toks[i + 1] if i + 1 < len(toks) else None
            if nxt is None or nxt.startswith("--"):
                if tp is not bool:
                    raise ConfigError(f"config: override --{key} needs a value")
                raw, i = "true", i + 1
            else:
                raw, i = nxt, i + 2
        elif "=" in tok:
            key, raw = tok.removeprefix("--").split("=", 1)
            parts, tp = _resolve(cls, key)
            i += 1
        else:
            raise ConfigError(f"config: cannot read override {tok!r}; write --key value, --key=value or key=value")
        out.append((parts, _coerce(raw, tp, ".".join(parts), cli=True)))
    return out


def load_config(cls: type, path_or_none: str | os.PathLike | Mapping | None, overrides: Sequence[str] = ()) -> Any:
    """Read ``cls`` from a TOML file (or a dict, or only defaults when None), then apply CLI overrides."""
    if path_or_none is None:
        data: dict = {}
    elif isinstance(path_or_none, Mapping):
        data = copy.deepcopy(dict(path_or_none))
    else:
        p = Path(path_or_none)
        if not p.is_file():
            raise ConfigError(f"config: file {p} not found")
        try:
            data = tomllib.loads(p.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config: {p} is not valid TOML ({exc})") from None
    if hasattr(cls, "migrate"):   # before the overrides, so that --lr beats a file's old train.lr
        data = cls.migrate(data)
    for parts, value in parse_overrides(cls, overrides):
        table = data
        for i, part in enumerate(parts[:-1]):
            table = table.setdefault(part, {})
            if not isinstance(table, dict):
                raise ConfigError(f"config: {'.'.join(parts[:i + 1])} must be a table, got {table!r}")
        table[parts[-1]] = value
    return from_dict(cls, data)


# ----------------------------------------------------------------------------- writing


def to_toml(obj: Any, header: str | None = None) -> str:
    """A dataclass config → TOML with every field written out."""
    return dumps_toml(to_dict(obj), header)


def _flatten(obj: Any, prefix: str = "", out: dict | None = None) -> dict[str, Any]:
    out = {} if out is None else out
    for k, v in to_dict(obj).items():
        if isinstance(v, Mapping):
            _flatten(v, f"{prefix}{k}.", out)
        else:
            out[f"{prefix}{k}"] = v
    return out


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def diff_configs(a: Any, b: Any, ignore: Sequence[str] = ()) -> list[str]:
    """Dotted keys whose values differ between two configs (dataclasses or dicts).

    A missing key equals ``None`` (that is how TOML stores it).  Keys equal to
    or under an entry of ``ignore`` (``"quiet"``, ``"track"``) are skipped.
    """
    fa, fb = _flatten(a), _flatten(b)
    keys = list(fa) + [k for k in fb if k not in fa]
    skip = tuple(ignore)
    return [k for k in keys
            if not any(k == s or k.startswith(s + ".") for s in skip) and not _same(fa.get(k), fb.get(k))]
