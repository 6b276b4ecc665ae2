"""Nested dicts and dataclasses to TOML text: the writer behind every ``config.toml``.

Its own module so that the run directory (``records/``) can write a config
without importing the config schema.  TOML has no null: a ``None`` is written
as a comment (``# n is unset (None)``) and so reads back as a missing key.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from collections.abc import Mapping
from typing import Any

from .errors import ConfigError


def to_dict(obj: Any) -> Any:
    """A dataclass tree → nested dicts and lists (tuples become lists), ``None`` kept."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    return obj


def _toml_string(s: str) -> str:
    # JSON escapes (\" \\ \n \t \uXXXX …) are all valid TOML; TOML also forbids a raw DEL.
    return json.dumps(s, ensure_ascii=False).replace("\x7f", "\\u007f")


def _toml_key(k: Any) -> str:
    k = str(k)
    return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else _toml_string(k)


def _toml_value(v: Any, where: str) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int) or (hasattr(v, "__index__") and not isinstance(v, float)):
        return str(int(v))
    if isinstance(v, float):
        v = float(v)
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, (str, os.PathLike)):
        return _toml_string(os.fspath(v))
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x, f"{where}[{i}]") for i, x in enumerate(v)) + "]"
    raise ConfigError(f"config: {where} = {v!r} cannot be written to TOML")


def _emit(lines: list[str], table: Mapping, prefix: list[str]) -> None:
    leaves = [(k, v) for k, v in table.items() if not isinstance(v, Mapping)]
    subs = [(k, v) for k, v in table.items() if isinstance(v, Mapping)]
    if prefix and (leaves or not subs):
        lines += ["", "[" + ".".join(_toml_key(p) for p in prefix) + "]"]
    for k, v in leaves:
        if v is None:
            lines.append(f"# {_toml_key(k)} is unset (None)")
        else:
            lines.append(f"{_toml_key(k)} = {_toml_value(v, '.'.join([*prefix, str(k)]))}")
    for k, v in subs:
        _emit(lines, v, [*prefix, str(k)])


def dumps_toml(data: Mapping[str, Any], header: str | None = None) -> str:
    """Nested dicts → TOML text; ``None`` values become comments (see the module docstring)."""
    lines = [f"# {line}" if line else "#" for line in header.splitlines()] if header else []
    _emit(lines, to_dict(data), [])
    return "\n".join(lines).lstrip("\n") + "\n"
