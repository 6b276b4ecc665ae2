"""The config keys as ``--help`` lists them: dotted name, default and a one-line description.

The description of a field is its ``# comment`` in :mod:`selfstab.config`:
the comment after the field on its line, continued by the comment lines right
below it whose text starts in the same column, or, for a field without one,
the block of comment lines right above it.  The source file is read with :mod:`ast` (where each field starts
and ends) and :mod:`tokenize` (where the comments are), once per file.  Only the
standard library and the torch-free :mod:`selfstab.config` are imported, so
``selfstab run --help`` stays fast.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import io
import json
import math
import shutil
import textwrap
import tokenize
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal, Union

from ..config import TRACK_READERS, section_type

__all__ = ["Key", "accepts", "config_keys", "epilog", "field_comments", "format_keys", "track_groups"]


@dataclass(frozen=True)
class Key:
    """One leaf of the config tree: ``name`` is dotted (``model.width``)."""

    name: str
    default: Any
    kind: str   # short type: "int", "float or none", "mse | half_mse | ce | logistic", …
    help: str   # the field's comment in config.py ("" when it has none)


# ----------------------------------------------------------------------------- the comments


@lru_cache(maxsize=None)
def _module_comments(filename: str) -> dict[str, dict[str, str]]:
    """Class qualname → field name → comment, for every class in one source file (parsed once)."""
    with tokenize.open(filename) as fh:
        source = fh.read()
    trailing: dict[int, tuple[str, int]] = {}   # row → (comment after code on that row, column of its text)
    alone: dict[int, tuple[str, int]] = {}      # row → (comment that is the whole row, column of its text)
    code_rows: set[int] = set()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            body = tok.string[1:]
            column = tok.start[1] + 1 + len(body) - len(body.lstrip())
            (trailing if tok.start[0] in code_rows else alone)[tok.start[0]] = (body.strip(), column)
        elif tok.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
                              tokenize.ENDMARKER):
            code_rows.update(range(tok.start[0], tok.end[0] + 1))

    def comments(body: list[ast.stmt]) -> dict[str, str]:
        out: dict[str, str] = {}
        used: set[int] = set()   # comment rows already read as the continuation of a trailing comment
        for node in body:
            if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
                continue
            first, last = node.lineno, node.end_lineno
            own = [r for r in range(first, last + 1) if r in trailing]
            if own:
                # whole-row comments right below whose text lines up with the trailing comment's continue it
                text, column = [trailing[r][0] for r in own], trailing[own[-1]][1]
                row = last + 1
                while row in alone and alone[row][1] == column:
                    text.append(alone[row][0])
                    used.add(row)
                    row += 1
            else:
                # otherwise the run of whole-row comments right above the field describes it
                text, row = [], first - 1
                while row in alone and row not in used:
                    text.insert(0, alone[row][0])
                    row -= 1
            if text:
                out[node.target.id] = " ".join(" ".join(text).split())
        return out

    found: dict[str, dict[str, str]] = {}

    def visit(body: list[ast.stmt], prefix: str) -> None:
        for node in body:
            if isinstance(node, ast.ClassDef):
                found[prefix + node.name] = comments(node.body)
                visit(node.body, prefix + node.name + ".")

    visit(ast.parse(source).body, "")
    return found


def field_comments(cls: type) -> dict[str, str]:
    """Field name → its ``# comment`` in the source of the dataclass ``cls`` (absent when it has none)."""
    try:
        filename = inspect.getsourcefile(cls)
    except TypeError:
        filename = None
    if not filename or "<locals>" in cls.__qualname__:
        return {}   # no source to read (a frozen install, a class made in a function): keys still listed
    return dict(_module_comments(filename).get(cls.__qualname__, {}))


# ----------------------------------------------------------------------------- the keys


def _kind(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return " | ".join(map(str, args))
    if origin in (Union, types.UnionType):
        parts = [_kind(a) for a in args if a is not type(None)]
        return " or ".join(parts) + (" or none" if type(None) in args else "")
    if origin in (list, tuple) or tp in (list, tuple):
        return f"list of {_kind(args[0])}" if args else "list"
    if origin is dict or tp is dict:
        return "table"
    if tp is Any:
        return "any"
    return getattr(tp, "__name__", str(tp))


def _walk(cls: type, obj: Any, prefix: str) -> Iterable[Key]:
    hints = typing.get_type_hints(cls)
    notes = field_comments(cls)
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        name, value = prefix + f.name, getattr(obj, f.name)
        sub = section_type(hints[f.name])
        if sub is not None and value is not None:
            yield from _walk(sub, value, name + ".")
        else:
            yield Key(name, value, _kind(hints[f.name]), notes.get(f.name, ""))


@lru_cache(maxsize=None)
def config_keys(cls: type | None = None) -> tuple[Key, ...]:
    """Every leaf key of the config ``cls`` (default :class:`~selfstab.config.RunConfig`), in field order."""
    if cls is None:
        from ..config import RunConfig
        cls = RunConfig
    return tuple(_walk(cls, cls(), ""))


def accepts(key: str, allowed: Iterable[str]) -> bool:
    """Whether ``key`` is one of ``allowed`` or lies under one (``"track"`` allows ``track.steps``)."""
    return any(key == a or key.startswith(a + ".") for a in allowed)


# ----------------------------------------------------------------------------- the listing


def _value(v: Any) -> str:
    """A default as it would be typed: TOML-like, ``none`` for None."""
    if v is None:
        return "none"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
        return str(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, Mapping):
        return "{" + ", ".join(f"{k} = {_value(x)}" for k, x in v.items()) + "}"
    return str(v)


def track_groups(keys: Iterable[Key]) -> tuple[list[Key], dict[str, str]]:
    """``keys`` with the ``track.*`` ones regrouped by the processes that read them, and the heading to print
    before the first key of each group.

    The run's own track keys (:data:`~selfstab.config.TRACK_RUN_KEYS`) come first, then, in the stepping
    order of the processes, the keys each process's constructor takes
    (:data:`~selfstab.config.TRACK_READERS`): its own, then those it shares with later processes (one
    key sets the option of every process that takes it).  Other keys keep their place."""
    keys = list(keys)
    order = list(TRACK_READERS)

    def readers(k: Key) -> tuple[str, ...]:
        name = k.name.removeprefix("track.")
        return tuple(p for p in order if name in TRACK_READERS[p])

    track = [k for k in keys if k.name.startswith("track.")]
    if not track:
        return keys, {}
    rank = {k.name: (order.index(r[0]) + 1 if r else 0, len(r)) for k in track for r in [readers(k)]}
    grouped = sorted(track, key=lambda k: rank[k.name])   # stable: field order within a group
    headings, last = {}, None
    for k in grouped:
        r = readers(k)
        if r != last:
            names = ", ".join(r[:-1]) + f" and {r[-1]}" if len(r) > 1 else "".join(r)
            headings[k.name] = f"track keys read by {names}:" if r else "track keys of the run itself:"
            last = r
    first = keys.index(track[0])
    rest = [k for k in keys[first:] if not k.name.startswith("track.")]
    return keys[:first] + grouped + rest, headings


def format_keys(keys: Iterable[Key], width: int | None = None, headings: Mapping[str, str] | None = None) -> str:
    """One entry per key: ``--name = default`` then the description, wrapped to ``width`` columns;
    ``headings`` (key name → line) puts a heading line before a key."""
    headings = headings or {}
    width = width or max(60, min(120, shutil.get_terminal_size().columns - 2))
    keys = list(keys)
    heads = []
    for k in keys:
        head = f"{k.name} = {_value(k.default)}"
        if k.kind == "table":
            head += f" (table: --{k.name}.NAME value)"   # how one entry is set on the command line
        elif k.default is None:
            head += f" ({k.kind})"     # "none" alone does not say what may be set
        heads.append(head)
    col = min(max((len(h) for h in heads), default=0) + 4, 34)
    lines = []
    for k, head in zip(keys, heads):
        if k.name in headings:
            lines.append(" " + headings[k.name])
        text = k.help or "(no description)"
        if "|" in k.kind and not all(c in text for c in k.kind.split(" | ")):
            text += f" [{k.kind}]"   # a Literal whose comment does not name every choice
        first_indent = "  " + head.ljust(col - 2) if len(head) + 2 <= col - 2 else None
        if first_indent is None:   # a long default: description on the next line
            lines.append("  " + head)
            first_indent = " " * col
        lines += textwrap.wrap(text, width=width, initial_indent=first_indent, subsequent_indent=" " * col,
                               break_on_hyphens=False) or [first_indent.rstrip()]
    return "\n".join(lines)


def epilog(allowed: Iterable[str] | None = None, title: str | None = None) -> str:
    """The ``--help`` epilog listing the config keys (only those under ``allowed`` when given)."""
    keys = config_keys()
    if allowed is not None:
        allowed = tuple(allowed)
        keys = tuple(k for k in keys if accepts(k.name, allowed))
    title = title or ("config keys: set any as --key value or --key=value on the command line, or in a --config "
                      "TOML file; a single name (--lr) is enough where it is unique, and none unsets an optional "
                      "key")
    if not keys:
        return title + "\n  (none)"
    wrapped = textwrap.fill(title, width=max(60, min(120, shutil.get_terminal_size().columns - 2)))
    ordered, headings = track_groups(keys)
    return wrapped + ":\n" + format_keys(ordered, headings=headings)
