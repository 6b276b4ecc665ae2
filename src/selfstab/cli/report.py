"""``selfstab report RUN [RUN ...]``: one page with the config, the key numbers and the figures of a run,
or one page comparing several runs side by side."""

from __future__ import annotations

from pathlib import Path


def _report(args) -> int:
    from ..records import load_run
    from ..report import comparison_path, status_note, write_report

    fmt = args.format or ("md" if args.out is not None and args.out.suffix.lower() == ".md" else "html")
    runs = [load_run(p) for p in args.runs]   # every one checked before anything is written
    for run in runs:
        note = status_note(run)
        if note is not None:
            print(f"{run.path}: {note}" if len(runs) > 1 else note)
    target = args.out if args.out is not None or len(runs) == 1 else comparison_path(runs, fmt)
    again = len(runs) > 1 and args.out is None and target.exists()
    written = write_report(runs if len(runs) > 1 else runs[0], args.out, fmt=fmt)
    print(f"wrote {written}" + (" (replacing the page written before for the same comparison)" if again else ""))
    return 0


def register(subparsers) -> None:
    """Add ``selfstab report``."""
    p = subparsers.add_parser(
        "report",
        description="Write a report of a run directory: its config, key numbers (onset, why tracking stopped, "
                    "errors of the Theorem 1 predictions, λ₂ against the stop threshold, distances, "
                    "solver costs) and the figures (1, 4, Appendix E, 5, 6, c) that its records allow. With several "
                    "runs, one page compares them: the config keys that differ, the key numbers side by side (one "
                    "column per run) and the combined Figures 4 and 6. A run still being written is reported as "
                    "far as it is recorded, and the page says so. HTML embeds the images; Markdown writes PNGs "
                    "beside the file.")
    p.add_argument("runs", type=Path, nargs="+", metavar="RUN", help="run directories (several: a comparison)")
    p.add_argument("--format", choices=["html", "md"], default=None,
                   help="html (self-contained, default) or md (default: from --out's suffix)")
    p.add_argument("--out", type=Path, default=None, metavar="FILE",
                   help="report file (default: RUN/report.html or RUN/report.md; with several runs "
                        "compare-RUN1-RUN2….html (or .md) beside the first, named by the runs compared)")
    p.set_defaults(func=_report)
