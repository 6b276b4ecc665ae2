"""``selfstab`` entry point: one sub-command per module in this package.

Each sub-command module exposes ``register(subparsers)``, which adds its
parser and sets ``func(args) -> int`` as the default.  Errors that selfstab
raises on purpose (:class:`~selfstab.errors.SelfstabError`) are printed as one
line, never as a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from ..errors import SelfstabError

# Sub-command modules, in the order --help lists them.
COMMANDS = ["train", "track", "run", "sweep", "resume", "plot", "report", "models", "datasets", "theory"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="selfstab",
        description="Gradient descent at the edge of stability, and the theory of self-stabilization beside it.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"{__package__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__package__}.{name}":
                raise
            continue
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except SelfstabError as exc:
        print(f"selfstab {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"selfstab {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
