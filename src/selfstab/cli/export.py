"""``selfstab export RUN --format csv|parquet``: the records as plain tables, for readers without HDF5.

One file per process table (``gd.csv``, ``train.csv`` …, the ``step`` column first, empty
where a field was not recorded), plus ``summary.json`` and ``config.toml`` beside them, in
``--out`` (default ``RUN/export``).  ``pandas.read_csv(DIR / "gd.csv", index_col="step")``
gives back ``load_run(RUN)["gd"]``.  Parquet needs pyarrow or fastparquet, neither of which
selfstab requires.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

from ..errors import ConfigError

FORMATS = ("csv", "parquet")


def parquet_engine() -> str:
    """The installed parquet writer (pyarrow first); a one-line error saying what to install if none is."""
    for name in ("pyarrow", "fastparquet"):
        if importlib.util.find_spec(name) is not None:
            return name
    raise ConfigError("export: --format parquet needs pyarrow or fastparquet (pip install pyarrow); "
                      "--format csv needs nothing")


def export_run(run_dir: str | os.PathLike, out: str | os.PathLike | None = None, fmt: str = "csv") -> list[Path]:
    """Write each process table of the run in ``run_dir`` as ``<process>.<fmt>`` in ``out`` (default
    ``RUN/export``), with the run's ``summary.json`` and ``config.toml``; return the paths written.
    Everything is checked (a run, a known format, a parquet writer) before anything is written."""
    from ..records import load_run, writable_folder

    fmt = str(fmt).lower()
    if fmt not in FORMATS:
        raise ConfigError(f"export: --format must be {' or '.join(FORMATS)}, got {fmt!r}")
    run = load_run(run_dir)
    engine = parquet_engine() if fmt == "parquet" else None
    if not run.records:
        raise ConfigError(f"export: {run.path} has no records yet; nothing to export")
    folder = writable_folder(Path(out) if out is not None else Path(run.path) / "export")
    written = []
    for name, frame in run.records.items():
        path = folder / f"{name}.{fmt}"
        if fmt == "csv":
            frame.to_csv(path)    # the index is the step column; NaN becomes an empty field
        else:
            frame.to_parquet(path, engine=engine)
        written.append(path)
    for extra in ("summary.json", "config.toml"):
        if (Path(run.path) / extra).is_file():
            shutil.copyfile(Path(run.path) / extra, folder / extra)
            written.append(folder / extra)
    return written


def _export(args) -> int:
    written = export_run(args.run, args.out, args.format)
    tables = [p.name for p in written if p.suffix == f".{args.format.lower()}"]
    print(f"wrote {', '.join(tables)} (+ {', '.join(p.name for p in written if p.name not in tables)}) "
          f"in {written[0].parent}")
    return 0


def register(subparsers) -> None:
    """Add ``selfstab export``."""
    p = subparsers.add_parser("export")
    p.add_argument("run", type=Path, metavar="RUN", help="run directory")
    p.add_argument("--format", default="csv", metavar="FORMAT",
                   help="csv (default; needs nothing) or parquet (needs pyarrow or fastparquet)")
    p.add_argument("--out", type=Path, default=None, metavar="DIR", help="output folder (default: RUN/export)")
    p.set_defaults(func=_export)
