"""``selfstab report RUN``: one page with the config, the key numbers and the figures of a run."""

from __future__ import annotations

from pathlib import Path


def _report(args) -> int:
    from ..report import write_report

    fmt = args.format or ("md" if args.out is not None and args.out.suffix.lower() == ".md" else "html")
    print(f"wrote {write_report(args.run, args.out, fmt=fmt)}")
    return 0


def register(subparsers) -> None:
    """Add ``selfstab report``."""
    p = subparsers.add_parser(
        "report", help="write a one-page report of a run (HTML or Markdown)",
        description="Write a report of a run directory: its config, key numbers (onset, why tracking stopped, "
                    "errors of the Theorem 1 predictions, λ₂ against the stop threshold, distances, "
                    "solver costs) and the figures (1, 4, Appendix E, 5, 6) that its records allow. HTML embeds "
                    "the images; Markdown writes PNGs beside the file.")
    p.add_argument("run", type=Path, metavar="RUN", help="run directory")
    p.add_argument("--format", choices=["html", "md"], default=None,
                   help="html (self-contained, default) or md (default: from --out's suffix)")
    p.add_argument("--out", type=Path, default=None, metavar="FILE",
                   help="report file (default: RUN/report.html or RUN/report.md)")
    p.set_defaults(func=_report)
