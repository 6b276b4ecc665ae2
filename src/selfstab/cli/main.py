"""``selfstab`` entry point: one sub-command per module in this package.

Each module listed in :data:`MODULES` exposes ``register(subparsers)``, which
adds its sub-command parsers and sets ``func(args) -> int`` as their default.  Errors that selfstab
raises on purpose (:class:`~selfstab.errors.SelfstabError`) are printed as one
line, never as a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from ..errors import SelfstabError

# Sub-command modules, in the order --help lists their commands.
MODULES = ["run", "sweep", "plot", "report", "catalog", "theory"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="selfstab",
        description="Gradient descent at the edge of stability, and the theory of self-stabilization beside it.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in MODULES:
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
    # Config overrides (--lr 0.02, --model.width=200) are whatever argparse does not know.
    args, extra = parser.parse_known_args(argv)
    if extra:
        if not hasattr(args, "overrides"):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = list(args.overrides or []) + extra
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
