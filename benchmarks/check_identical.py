"""Are the records of a run bit-identical to those of an earlier version of selfstab?

    python benchmarks/check_identical.py                       # the default job, 800 steps, against 57a4485
    python benchmarks/check_identical.py --before REV --steps 100 -- --lr 0.25

Runs ``selfstab run`` (the default job, plus any config overrides after ``--``)
with the code of ``--before`` (a git revision, checked out in a temporary
worktree) and with this tree, both with one thread (``OMP_NUM_THREADS=1``:
the order of float additions must be the same), then compares every table
and column of the two ``records.h5`` bit for bit (NaN equal to NaN).  The
``timing`` table (wall-clock seconds) is the only one skipped.  Either run
can be given as an existing run directory instead (``--before-run``,
``--after-run``).  Prints one row per table and exits 1 on any difference.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import h5py
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SKIP = ("timing",)


def run_default_job(src: Path, out: Path, steps: int, extra: list[str]) -> None:
    code = ("import sys; from selfstab.cli.main import main; "
            f"sys.exit(main(['run', '--quiet', '--out', {str(out)!r}, '--track.steps', '{steps}', *{extra!r}]))")
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=src.parent)


def tables(path: Path) -> dict[str, dict[str, np.ndarray]]:
    with h5py.File(path / "records.h5", "r") as f:
        return {name: {col: f[name][col][()] for col in f[name]} for name in f if name not in SKIP}


def compare(before: Path, after: Path) -> bool:
    a, b = tables(before), tables(after)
    same_everywhere = True
    print(f"{'table':<14} {'columns':>7} {'rows':>6}  {'identical':<9}  differences")
    for name in sorted(set(a) | set(b)):
        if name not in a or name not in b:
            print(f"{name:<14} {'':>7} {'':>6}  {'no':<9}  only in {'after' if name in b else 'before'}")
            same_everywhere = False
            continue
        cols = sorted(set(a[name]) | set(b[name]))
        diffs = []
        for col in cols:
            x, y = a[name].get(col), b[name].get(col)
            if x is None or y is None:
                diffs.append(f"{col} only in {'after' if x is None else 'before'}")
            elif x.shape != y.shape:
                diffs.append(f"{col} shape {x.shape} vs {y.shape}")
            elif not np.array_equal(x, y, equal_nan=np.issubdtype(x.dtype, np.floating)):
                err = np.nanmax(np.abs(x.astype(float) - y.astype(float)))
                diffs.append(f"{col} (max |Δ| {err:.3g})")
        rows = max((len(v) for v in a[name].values()), default=0)
        print(f"{name:<14} {len(cols):>7} {rows:>6}  {'yes' if not diffs else 'no':<9}  {'; '.join(diffs)}")
        same_everywhere &= not diffs
    return same_everywhere


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--before", default="57a4485", help="git revision to compare against (default: 57a4485)")
    p.add_argument("--before-run", type=Path, help="an existing run directory made by the earlier version")
    p.add_argument("--after-run", type=Path, help="an existing run directory made by this tree")
    p.add_argument("--steps", type=int, default=800, help="tracked steps (default 800, the default job's)")
    p.add_argument("extra", nargs="*", help="config overrides for both runs, after --")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        before, after = args.before_run, args.after_run
        if before is None:
            tree = tmp / "before"
            subprocess.run(["git", "worktree", "add", "--detach", str(tree), args.before], check=True, cwd=ROOT,
                           capture_output=True)
            try:
                before = tmp / "run-before"
                run_default_job(tree / "src", before, args.steps, args.extra)
            finally:
                subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, capture_output=True)
        if after is None:
            after = tmp / "run-after"
            run_default_job(ROOT / "src", after, args.steps, args.extra)
        print(f"records of {before} (before: {args.before}) against {after} (this tree):")
        same = compare(before, after)
    print("bit-identical" if same else "DIFFERENT")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
