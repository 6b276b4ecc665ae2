"""Startup time of the command line, this tree against the main before the lazy dispatch (commit 57a4485).

``python benchmarks/bench_startup.py [--quick]`` prints the table; ``benchmarks/run.py`` includes it.

Each command (``selfstab --help``, ``selfstab run --help``, ``selfstab models``) runs in a fresh Python
process as ``python -c "from selfstab.cli.main import main; main([...])"`` with ``PYTHONPATH`` set to the
``src/`` of the tree measured: this working tree, and a temporary ``git worktree`` of the baseline commit
(removed afterwards).  One untimed warm-up run per command and tree (it also writes the baseline's
bytecode caches and records which heavy packages the command imports), then rounds in which every
command runs once on each tree, alternating, so that both see the same machine load; the table gives
the median wall time over the rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BASELINE = "57a4485"   # main before the lazy command line (every sub-command module imported eagerly)
COMMANDS = (["--help"], ["run", "--help"], ["models"])
HEAVY = ("torch", "scipy", "matplotlib")

# the timed program: exactly the entry point's work, nothing more
TIMED = "from selfstab.cli.main import main; main({args!r})"
# the warm-up program: the same, then which heavy packages it imported and where selfstab came from
PROBE = """
import json, sys
try:
    from selfstab.cli.main import main
    main({args!r})
except SystemExit:
    pass
finally:
    import selfstab
    print(json.dumps({{"heavy": [m for m in {heavy!r} if m in sys.modules], "file": selfstab.__file__}}),
          file=sys.stderr)
"""


@contextmanager
def worktree(commit: str):
    """A temporary checkout of ``commit`` (``git worktree add --detach``), removed on exit."""
    tmp = Path(tempfile.mkdtemp(prefix="selfstab-startup-"))
    path = tmp / "tree"
    subprocess.run(["git", "worktree", "add", "--detach", "--quiet", str(path), commit], cwd=ROOT, check=True,
                   capture_output=True, text=True)
    try:
        yield path
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(path)], cwd=ROOT, capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)
        subprocess.run(["git", "worktree", "prune"], cwd=ROOT, capture_output=True)


def _env(src: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(src), OMP_NUM_THREADS="1")
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def _probe(src: Path, args: list[str]) -> dict:
    proc = subprocess.run([sys.executable, "-c", PROBE.format(args=args, heavy=HEAVY)], env=_env(src),
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    info = json.loads(proc.stderr.strip().splitlines()[-1])
    if not Path(info["file"]).resolve().is_relative_to(src.resolve()):
        raise RuntimeError(f"selfstab was imported from {info['file']}, not from {src}")
    return info


def _time(src: Path, args: list[str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", TIMED.format(args=args)], env=_env(src),
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"selfstab {' '.join(args)} failed in {src}: {proc.stderr.strip()[-500:]}")
    return elapsed


def run(quick: bool = False, rounds: int | None = None, log=lambda msg: print(msg, file=sys.stderr)) -> dict:
    rounds = rounds or (5 if quick else 9)
    start = time.perf_counter()
    here = ROOT / "src"
    with worktree(BASELINE) as base:
        trees = {"baseline": base / "src", "this": here}
        heavy = {}
        for args in COMMANDS:
            for name, src in trees.items():
                heavy[(name, tuple(args))] = _probe(src, args)["heavy"]
        log(f"startup: {rounds} rounds of {len(COMMANDS)} commands × 2 trees ...")
        times = {(name, tuple(args)): [] for name in trees for args in COMMANDS}
        for r in range(rounds):
            for args in COMMANDS:
                order = list(trees.items()) if r % 2 == 0 else list(trees.items())[::-1]
                for name, src in order:
                    times[(name, tuple(args))].append(_time(src, args))
    return {"rounds": rounds, "baseline": BASELINE, "times": times, "heavy": heavy,
            "seconds": time.perf_counter() - start}


def markdown(res: dict) -> str:
    rows = ["| command | main at " + res["baseline"] + ": median s (min–max) | imports | this tree: median s "
            "(min–max) | imports | speed-up (before ÷ after) |", "|---|---|---|---|---|---|"]
    for args in COMMANDS:
        key = tuple(args)
        cells = [f"`selfstab {' '.join(args)}`"]
        medians = []
        for name in ("baseline", "this"):
            t = res["times"][(name, key)]
            medians.append(statistics.median(t))
            cells.append(f"{medians[-1]:.2f} ({min(t):.2f}–{max(t):.2f})")
            cells.append(", ".join(res["heavy"][(name, key)]) or "none of " + "/".join(HEAVY))
        cells.append(f"{medians[0] / medians[1]:.1f}×")
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def summary(res: dict) -> str:
    parts = []
    for args in COMMANDS:
        key = tuple(args)
        before, after = (statistics.median(res["times"][(n, key)]) for n in ("baseline", "this"))
        parts.append(f"`selfstab {' '.join(args)}` {before:.2f} s → {after:.2f} s ({before / after:.1f}×)")
    return "**Startup of the command line (table 5)** — " + "; ".join(parts) + "."


def section(res: dict, machine: list[str] | None = None) -> str:
    """The RESULTS.md section; ``machine``: lines naming date, machine and command (when run on its own)."""
    return "\n".join([
        "## 5. Startup time of the command line (issue 10)",
        "",
        *([*machine, ""] if machine else []),
        f"Wall time of `python -c \"from selfstab.cli.main import main; main([...])\"` in a fresh process, "
        f"`PYTHONPATH` set to the `src/` of the tree measured: the main before the lazy command line "
        f"(commit {res['baseline']}, a temporary `git worktree`) and this tree, measured in the same run. "
        f"One untimed warm-up per command and tree (bytecode caches written, heavy imports recorded), then "
        f"{res['rounds']} rounds in which each command runs once on each tree, alternating which goes first; "
        f"median and range over the rounds, `OMP_NUM_THREADS=1`. *imports*: which of torch, scipy and "
        f"matplotlib the command loaded. `selfstab models` builds every model to count its parameters, so "
        f"it needs torch. Wall time of the table: {res['seconds']:.0f} s.",
        "",
        markdown(res),
        "",
    ])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="5 rounds instead of 9")
    ap.add_argument("--rounds", type=int, help="timed rounds (at least 5)")
    a = ap.parse_args(argv)
    if a.rounds is not None and a.rounds < 5:
        ap.error("--rounds: at least 5 (the table gives medians)")
    sys.path.insert(0, str(HERE))
    from common import machine_info, machine_lines   # the date, commit and machine, as the other tables give

    info = machine_info()
    res = run(a.quick, a.rounds)
    command = "python " + " ".join(["benchmarks/bench_startup.py", *(sys.argv[1:] if argv is None else argv)])
    lines = [line for line in machine_lines(info, command) if not line.startswith("- threads")]   # none here
    print(section(res, lines))
    print(summary(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
