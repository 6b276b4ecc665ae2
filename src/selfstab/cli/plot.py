"""``selfstab plot RUN [RUN ...]``: the paper's figures from run records (nothing is recomputed).

Per run, Figures 1, 5 and Appendix E go to ``RUN/figures`` (or ``--out``; with several runs
``--out/<run name>``).  Figures 4 and 6 combine all the runs given (one row / one curve per
η) and go to ``--out``, or with several runs to ``figures/`` beside the first run.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError


def _parse_figures(text: str | None) -> set[str] | None:
    from ..figures.paper import FIGURES

    if text is None:
        return None
    names = {t.strip().lower() for t in text.split(",") if t.strip()}
    if "all" in names:
        return set(FIGURES)
    bad = sorted(names - set(FIGURES))
    if bad or not names:
        raise ConfigError(f"--figures: unknown figure {', '.join(bad) or repr(text)}; choose from "
                          f"{','.join(FIGURES)} (or all), e.g. --figures 1,4,e")
    return names


def _plot(args) -> int:
    from ..figures import paper
    from ..records import load_run

    wanted = _parse_figures(args.figures)
    runs = [load_run(p) for p in args.runs]
    single = len(runs) == 1
    zoom = tuple(args.zoom) if args.zoom else None
    if zoom is not None and zoom[0] >= zoom[1]:
        raise ConfigError(f"--zoom: START must be below END, got {zoom[0]} {zoom[1]}")
    written, skipped = [], []

    def want(name: str, run_list) -> bool:
        if wanted is not None:
            return name in wanted
        if name == "6" and not single:  # a sweep: any run that trained
            return any("train" in r.records for r in run_list)
        return any(name in paper.available_figures(r) for r in run_list)

    for run in runs:
        out = run.path / "figures" if args.out is None else (args.out if single else args.out / run.path.name)
        for name, draw in (("1", paper.figure1), ("e", paper.appendix_e), ("5", paper.figure5)):
            if want(name, [run]):
                written += draw(run, out)
            elif wanted is None:
                skipped.append(f"figure {name} of {run.path} (no records for it)")
    combined = args.out if args.out is not None else (runs[0].path / "figures" if single
                                                      else runs[0].path.parent / "figures")
    if want("4", runs):
        written += paper.figure4(runs, combined, zoom=zoom)
    elif wanted is None:
        skipped.append("figure 4 (no tracked processes recorded)")
    if want("6", runs):
        written += paper.figure6(runs, combined)
    for s in skipped:
        print(f"skipped {s}")
    for p in written:
        print(f"wrote {p}")
    return 0


def register(subparsers) -> None:
    """Add ``selfstab plot``."""
    p = subparsers.add_parser(
        "plot", help="draw the paper's figures (1, 4, Appendix E, 5, 6) from run directories",
        description="Draw the paper's figures from the records of one or more run directories (PNG and PDF). "
                    "Figure 1: sharpening to the edge; 4: GD vs the predictions, θ† and gradient flow (plus a "
                    "zoom on one cycle); e: the Appendix E assumption plots; 5: top eigenvalues; 6: a sweep "
                    "(loss, test accuracy, sharpness per η). With several runs, Figures 4 and 6 combine them.")
    p.add_argument("runs", nargs="+", type=Path, metavar="RUN", help="run directories")
    p.add_argument("--figures", default=None, metavar="LIST",
                   help="comma-separated figures among 1,4,e,5,6 (or all); default: those the records allow")
    p.add_argument("--out", type=Path, default=None, metavar="DIR",
                   help="output folder (default: RUN/figures; with several runs, figures/ beside the first)")
    p.add_argument("--zoom", type=int, nargs=2, default=None, metavar=("START", "END"),
                   help="tracked steps of Figure 4's zoom (default: around the first cycle of each run)")
    p.set_defaults(func=_plot)
