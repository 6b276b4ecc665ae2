"""``selfstab`` entry point: the sub-commands, each defined in one module of this package.

:data:`COMMANDS` names every sub-command, its module and its one-line help, so
``selfstab --help`` is printed without importing any sub-command module; a
command imports only its own module, whose ``register(subparsers)`` adds its
parsers (help lines from here) and sets ``func(args) -> int`` as their
default.  Nothing heavy (torch, scipy, matplotlib) is imported before a
command runs.  A new sub-command is a module with ``register`` plus its line
in :data:`COMMANDS`; a module that registers a command not given to it there
(or misses one) is an error at once.

Errors that selfstab raises on purpose (:class:`~selfstab.errors.SelfstabError`)
are printed as one line, never as a traceback; so is a package a command needs
but cannot import (``selfstab plot: error: needs the matplotlib package (pip
install matplotlib)``).
"""

from __future__ import annotations

import argparse
import importlib
import os
import shutil
import sys
import textwrap
import traceback

from .. import __version__
from ..errors import SelfstabError

# name → (module in this package, one-line help); --help lists them in this order
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("run", "the main job: train to the edge, then track (defaults: MLP on digits, a few minutes on a CPU)"),
    "train": ("run", "GD from initialization to the edge of stability (a run directory with the history)"),
    "track": ("run", "track GD, θ†, the predicted dynamics and gradient flow from a trained run's θ₀"),
    "resume": ("run", "continue a killed run from its last checkpoint"),
    "sweep": ("sweep", "one run per learning rate / seed, sequentially or in parallel"),
    "plot": ("plot", "draw the paper's figures (1, 4, Appendix E, 5, 6) from run directories"),
    "report": ("report", "write a one-page report of a run, or compare several side by side (HTML or Markdown)"),
    "export": ("export", "write a run's records as CSV or Parquet tables, one file per process"),
    "models": ("catalog", "list the models with their options and parameter counts"),
    "datasets": ("catalog", "list the datasets with sizes and where their files go"),
    "theory": ("theory", "figures of the theory: four stages, ODE orbits, scale invariance"),
    "doctor": ("doctor", "print the versions in use (Python, torch, numpy, scipy, cvxpy, h5py, the BLAS…) for a bug report"),
}

# import name → pip name, where they differ
_PIP_NAMES = {"sklearn": "scikit-learn", "PIL": "pillow", "yaml": "pyyaml", "skimage": "scikit-image"}

DESCRIPTION = "Gradient descent at the edge of stability, and the theory of self-stabilization beside it."


class _Subcommands:
    """The ``subparsers`` handed to a module's ``register``: help lines come from :data:`COMMANDS`."""

    def __init__(self, action, module: str):
        self._action, self._module = action, module
        self.added: list[str] = []

    def add_parser(self, name: str, **kwargs) -> argparse.ArgumentParser:
        if COMMANDS.get(name, ("",))[0] != self._module:
            raise RuntimeError(f"cli.{self._module} registers {name!r}, which COMMANDS does not give to it")
        kwargs.setdefault("help", COMMANDS[name][1])
        # wrapped here, since a parser with a raw formatter (for its key listing) shows it as given
        width = max(60, min(120, shutil.get_terminal_size().columns - 2))
        kwargs.setdefault("description", textwrap.fill(COMMANDS[name][1], width))
        self.added.append(name)
        return self._action.add_parser(name, **kwargs)


class MissingPackage(Exception):
    """A sub-command needs a package that cannot be imported; ``str()`` is the one-line message."""


def _missing(exc: ImportError) -> MissingPackage | None:
    """The one-line message for an import that failed outside selfstab (None: selfstab's own bug)."""
    root = (exc.name or "").split(".")[0]
    if root == "selfstab":
        return None
    if isinstance(exc, ModuleNotFoundError) and root:
        pip = _PIP_NAMES.get(root, root)
        return MissingPackage(f"needs the {root} package (pip install {pip})")
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return MissingPackage(f"cannot import {root or 'a package it needs'}: {first}")


def _command(argv: list[str]) -> str | None:
    """The sub-command named in ``argv``: its first word that is not an option (the top level takes no values)."""
    for tok in argv:
        if tok == "--":
            return None
        if not tok.startswith("-"):
            return tok
    return None


def _register(sub, module_name: str) -> None:
    """Import ``cli.<module_name>`` and let it add its commands (all that :data:`COMMANDS` gives it)."""
    try:
        module = importlib.import_module(f"{__package__}.{module_name}")
    except ImportError as exc:
        problem = _missing(exc)
        if problem is None:
            raise
        raise problem from None
    registry = _Subcommands(sub, module_name)
    module.register(registry)
    lacking = [n for n, (m, _) in COMMANDS.items() if m == module_name and n not in registry.added]
    if lacking:
        raise RuntimeError(f"cli.{module_name} does not register {', '.join(lacking)}, which COMMANDS gives to it")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The ``selfstab`` parser; only ``command``'s module is imported (None: none is).

    Raises :class:`MissingPackage` when that module cannot import a package it needs.
    """
    parser = argparse.ArgumentParser(prog="selfstab", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"selfstab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    wanted = COMMANDS[command][0] if command in COMMANDS else None
    for name, (module_name, help_) in COMMANDS.items():
        if module_name != wanted:
            # a stand-in, so that the top-level help lists every command; never parsed
            sub.add_parser(name, help=help_, add_help=False)
        elif name == command:
            _register(sub, module_name)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(list(sys.argv[1:] if argv is None else argv))
    except BrokenPipeError:   # output piped into a reader that stopped early (selfstab models | head)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())   # so that the interpreter's final flush fails silently too
        return 141


def _main(argv: list[str]) -> int:
    command = _command(argv)
    try:
        parser = build_parser(command)
    except MissingPackage as exc:
        print(f"selfstab {command}: error: {exc}", file=sys.stderr)
        return 2
    # Config overrides (--lr 0.02, --model.width=200) are whatever argparse does not know.
    args, extra = parser.parse_known_args(argv)
    if extra:
        if not hasattr(args, "overrides"):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = list(args.overrides or []) + extra
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    args.argv = argv   # the command line as given (selfstab run --nproc N relaunches it under torchrun)
    rank = _rank_prefix()
    try:
        return int(args.func(args) or 0)
    except SelfstabError as exc:
        _error_line(f"selfstab {args.command}: error: {rank}{exc}", rank)
        return 2
    except ImportError as exc:   # a package the command imports only when it runs
        problem = _missing(exc)
        if problem is None:
            raise
        print(f"selfstab {args.command}: error: {problem}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:   # a run's RunInterrupted says where it stopped and how to continue
        _error_line(f"selfstab {args.command}: {rank}{str(exc) or 'interrupted'}", rank)
        return 130
    except Exception as exc:   # under torchrun: one line naming this rank (after the traceback of a bug)
        if not rank:
            raise
        why = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        peer = _peer_failure(exc)
        if not peer:
            traceback.print_exc()
        what = "a collective failed: another rank stopped or hung (torchrun's summary names it); " if peer else ""
        _error_line(f"selfstab {args.command}: error: {rank}{what}{type(exc).__name__}{': ' + why if why else ''}",
                    rank)
        return 1


def _error_line(text: str, rank: str) -> None:
    """``text`` on stderr; under torchrun in one ``write`` call, so that ranks sharing a pipe never mix lines."""
    try:
        fd = sys.stderr.fileno() if rank else None
    except (AttributeError, OSError, ValueError):
        fd = None
    if fd is None:
        print(text, file=sys.stderr)
        return
    sys.stderr.flush()
    os.write(fd, (text + "\n").encode(errors="replace"))


def _rank_prefix() -> str:
    """``"rank R: "`` in a process that torchrun started with more than one rank, else ``""``."""
    try:
        many = int(os.environ.get("WORLD_SIZE", "1")) > 1
    except ValueError:
        many = False
    return f"rank {os.environ.get('RANK', '?')}: " if many else ""


def _peer_failure(exc: BaseException) -> bool:
    """A collective that failed because another rank died or timed out (no traceback for those)."""
    dist = sys.modules.get("torch.distributed")
    if dist is not None and isinstance(exc, getattr(dist, "DistError", ())):
        return True
    text = str(exc)
    return any(w in text for w in ("gloo", "Gloo", "NCCL", "Connection closed by peer", "Connection reset"))


if __name__ == "__main__":
    sys.exit(main())
