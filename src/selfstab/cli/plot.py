"""``selfstab plot RUN [RUN ...]``: the paper's figures from run records (nothing is recomputed).

Per run, Figures 1, 5 and Appendix E go to ``RUN/figures`` (or ``--out``; with several runs
``--out/<run name>``).  Figures 4 and 6 combine all the runs given (one row / one curve per
η) and go to ``--out``, or with several runs to ``figures/`` beside the first.  Which figures
exist and what each needs is :mod:`selfstab.figures.registry`; matplotlib is imported only
when drawing.  A run that is still being written is drawn from what it has recorded so far,
with a line saying so.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from ..errors import ConfigError, NotWritableError, SelfstabError


def _plot(args) -> int:
    from ..figures.registry import draw_figures, parse_names
    from ..records import load_run
    from ..report import status_note

    names = parse_names(args.figures)
    zoom = tuple(args.zoom) if args.zoom else None
    if zoom is not None and zoom[0] >= zoom[1]:
        raise ConfigError(f"--zoom: START must be below END, got {zoom[0]} {zoom[1]}")
    runs = [load_run(p) for p in args.runs]
    for run in runs:   # a run being written is drawn as far as it is recorded, and says so
        note = status_note(run)
        if note is not None:
            print(f"{run.path}: {note}" if len(runs) > 1 else note)
    notes: list[str] = []
    try:
        written = draw_figures(runs, names, args.out, zoom=zoom, on_note=notes.append)
    except OSError as exc:   # a read-only run folder (or --out): say which, and the way out
        if exc.errno not in (errno.EROFS, errno.EACCES, errno.EPERM) or isinstance(exc, SelfstabError):
            raise
        raise NotWritableError(f"cannot write {exc.filename or args.out} ({os.strerror(exc.errno).lower()}); "
                               f"use --out DIR to write the figures somewhere else", path=exc.filename) from None
    if not written:   # nothing asked for by name, and nothing the records allow
        reasons = [n.removeprefix("skipped: ") for n in notes if n.startswith("skipped")] or ["no records"]
        more = f" (and {len(reasons) - 1} more)" if len(reasons) > 1 else ""
        raise ConfigError(f"nothing to plot: {reasons[0]}{more}")
    for n in notes:
        print(n)
    for p in written:
        print(f"wrote {p}")
    return 0


def register(subparsers) -> None:
    """Add ``selfstab plot``."""
    p = subparsers.add_parser(
        "plot", help="draw the paper's figures (1, 4, Appendix E, 5, 6, c) from run directories",
        description="Draw the paper's figures from the records of one or more run directories (PNG and PDF). "
                    "Figure 1: sharpening to the edge; 4: GD vs the predictions, θ† and gradient flow (plus a "
                    "zoom on one cycle); e: the Appendix E assumption plots; 5: top eigenvalues; 6: a sweep "
                    "(loss, test accuracy, sharpness per η); c: several unstable eigenvalues (GD against the central "
                    "flow and θ†_k). With several runs, Figures 4 and 6 combine them.")
    p.add_argument("runs", nargs="+", type=Path, metavar="RUN", help="run directories")
    p.add_argument("--figures", default=None, metavar="LIST",
                   help="comma-separated figures among 1,4,e,5,6,c (or all); default: those the records allow. "
                        "A figure asked for by name whose records are missing is an error")
    p.add_argument("--out", type=Path, default=None, metavar="DIR",
                   help="output folder (default: RUN/figures; with several runs, figures/ beside the first)")
    p.add_argument("--zoom", type=int, nargs=2, default=None, metavar=("START", "END"),
                   help="tracked steps of Figure 4's zoom (default: around the first cycle of each run)")
    p.set_defaults(func=_plot)
