"""Table 4b: the default job's tracked steps on 1 process and on 2 gloo ranks (issue 11, docs/theory.md §11).

One command: ``python benchmarks/bench_distributed_tracked.py [--steps N] [--rounds R] [--write]``
(``bench_distributed.py --tracked`` runs it too).

The run level beside table 4's objective (``bench_distributed.py``): the
default job's tracked steps (``selfstab.experiment.track_phase``: GD, θ†,
predicted, generalized, flow, diagnostics) for ``--steps`` steps (20) from its
cached θ₀ (``common.default_edge``), launched on 1 process and on 2 gloo ranks
(alternating, ``--rounds``; the launcher is ``bench_distributed.launch``), with
the wall time of every step and the all-reduce calls and bytes each step made
(``selfstab.distributed.traffic``, read at every step's records).

``--write`` puts section 4b into ``benchmarks/RESULTS.md`` right after
section 4 (replacing an earlier version of it).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402  (one thread)
from bench_distributed import SECTION, WORKER_ENV, launch  # noqa: E402
from common import HERE, machine_info, machine_lines, say, table  # noqa: E402

import torch  # noqa: E402

SECTION_TRACKED = "## 4b. Data-parallel tracking: the default job's tracked steps on 2 ranks (issue 11)"


# ----------------------------------------------------------------------------- inside one process / rank

def tracked_worker(edge: str, steps: int, out: str) -> None:
    """``steps`` tracked steps of the default job from the θ₀ in the file ``edge``; per step: seconds, all-reduces."""
    import warnings

    from selfstab import distributed
    from selfstab.config import RunConfig, load_config
    from selfstab.experiment import track_phase
    from selfstab.records import RunDir
    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    state = torch.load(edge)
    marks = []

    class Tally(RunDir):   # every step's records end with its "timing" row: a mark there
        def recorder(self, name):
            if name == "timing":
                marks.append((time.perf_counter(), distributed.traffic["calls"], distributed.traffic["bytes"]))
            return super().recorder(name)

    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(RunConfig, None, ["--quiet", "--track.steps", str(steps), "--device", "cpu",
                                            "--out", str(Path(tmp) / "run")])
        t0 = time.perf_counter()
        run = Tally.create(cfg.out, cfg)
        marks.append((t0, 0, 0))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ls = track_phase(cfg, run, {"theta0": state["theta0"], "warm": state["warm"], "reached": True,
                                        "onset_step": state["step"]})
        loss = float(run.recorder("gd").table()[1]["loss"][-1])
    world = distributed.world_size()
    if distributed.is_main():
        Path(out).write_text(json.dumps({"world": world, "steps": ls.t, "marks": marks, "loss": loss}))
    distributed.shutdown()


# ----------------------------------------------------------------------------- the launches and the table

def run_tracked(steps: int = 20, rounds: int = 2) -> dict:
    """The default job's tracked steps from θ₀ on 1 process and 2 ranks, ``rounds`` alternating launches each."""
    edge = common.default_edge(say)
    launches = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "edge.pt"
        torch.save({k: edge[k] for k in ("theta0", "warm", "step")}, path)
        for r in range(rounds):
            for world in (1, 2):
                say(f"distributed, tracked: round {r + 1}/{rounds}, {world} rank{'s' if world > 1 else ''}, "
                    f"{steps} steps ...")
                res = launch(world, {"edge": str(path), "steps": steps}, __file__)
                say(f"  {res['seconds']:.0f} s, load average {res['load'][0]:.2f} → {res['load'][1]:.2f}, "
                    f"other jobs used {res['others']:.2f} cores")
                launches.append(res)
    return {"steps": steps, "rounds": rounds, "edge_step": edge["step"], "launches": launches}


def markdown_tracked(tt: dict, info: dict | None = None, command: str | None = None) -> str:
    def per_step(res):
        m = res["marks"]   # m[0]: before the start; m[i + 1]: after step i's records
        secs = [b[0] - a[0] for a, b in zip(m[:-1], m[1:])]
        calls = [b[1] - a[1] for a, b in zip(m[:-1], m[1:])]
        nbytes = [b[2] - a[2] for a, b in zip(m[:-1], m[1:])]
        return secs, calls, nbytes

    by = {w: [r for r in tt["launches"] if r["world"] == w] for w in (1, 2)}
    rows, med = [], {}
    for w in (1, 2):
        secs = [x for r in by[w] for x in per_step(r)[0][1:]]
        first = [per_step(r)[0][0] for r in by[w]]
        calls = [x for r in by[w] for x in per_step(r)[1][1:]]
        nbytes = [x for r in by[w] for x in per_step(r)[2][1:]]
        calls0 = per_step(by[w][0])[1][0]
        med[w] = statistics.median(secs)
        rows.append([f"{w} rank{'s' if w > 1 else ''}" if w > 1 else "1 process", f"{statistics.median(secs):.3f}",
                     f"{statistics.mean(secs):.3f}", f"{statistics.median(first):.2f}",
                     "—" if w == 1 else f"{statistics.median(calls):.0f} ({min(calls)}–{max(calls)})",
                     "—" if w == 1 else f"{statistics.median(nbytes) / 2**10:.0f} KiB",
                     "—" if w == 1 else f"{calls0}"])
    rounds = [statistics.median(per_step(a)[0][1:]) / statistics.median(per_step(b)[0][1:])
              for a, b in zip(by[1], by[2])]
    gap = max(abs(b["loss"] - by[1][0]["loss"]) / abs(by[1][0]["loss"]) for b in by[2])
    sp = med[1] / med[2]
    verdict = "no faster, within the noise of the shared machine," if 0.9 <= sp <= 1.1 else \
        ("slower" if sp < 1 else "faster")
    loads = ", ".join(f"{r['load'][0]:.2f}→{r['load'][1]:.2f} ({r['world']})" for r in tt["launches"])
    others = ", ".join(f"{r.get('others', float('nan')):.2f} ({r['world']})" for r in tt["launches"])
    lines = [SECTION_TRACKED, ""]
    if info is not None:
        lines += [*machine_lines(info, command or "python benchmarks/bench_distributed_tracked.py"), ""]
    lines += [
        f"The default job (`selfstab run` with no options: MLP width 64 on digits, η = 0.2) tracked for "
        f"{tt['steps']} steps in float64 from its θ₀ (GD reached the edge at step {tt['edge_step']}; "
        "`benchmarks/.cache`), with every default process (GD, θ†, predicted, generalized, flow, diagnostics), "
        "through `selfstab.experiment.track_phase` — what `selfstab run` does after the edge. 1 process: no "
        "process group; 2 ranks: `torchrun --standalone --nproc-per-node 2`, gloo, one thread each. "
        f"{tt['rounds']} alternating launch round(s). Seconds per tracked step: wall time between two steps' "
        "records on rank 0, over steps 1 onwards (step 0 includes the start: the first eigen-solves at θ₀). "
        "All-reduces per tracked step (median, range): calls of `selfstab.distributed.all_reduce_sum` and their "
        "payload per rank; *at the start*: the calls of step 0.",
        "",
        table(["launch", "s/step (median)", "s/step (mean)", "step 0 (s)", "all-reduces per step",
               "bytes per step", "all-reduces at the start"], rows),
        "",
        f"- speedup of the median tracked step, 2 ranks over 1 process: **{med[1] / med[2]:.2f}×** (per round: "
        + " / ".join(f"{x:.2f}×" for x in rounds) + "); the last GD loss " + ("is the same" if gap == 0 else f"differs by {gap:.0e} relative") + ".",
        f"- load average (1 min) before→after each launch (world size): {loads}; other jobs' CPU use during "
        f"each launch (in cores of {os.cpu_count()}): {others}.",
        f"- reading: {verdict} on 2 ranks. The default job's objective is small "
        f"(digits, a width-64 MLP), so a tracked step is many small products: "
        f"{statistics.median([x for r in by[2] for x in per_step(r)[1][1:]]):.0f} all-reduces per step, and "
        "the same per-call overhead on every rank against a halved share of the data. Data parallelism is "
        "meant for objectives where the data dominates (section 4).",
    ]
    return "\n".join(lines) + "\n"


def write_tracked_section(text: str, path: Path) -> None:
    """Replace section 4b in ``path``, or put it right after section 4 (else at the end); nothing else changes."""
    old = path.read_text() if path.exists() else "# selfstab benchmarks\n"
    if SECTION_TRACKED in old:
        i = old.index(SECTION_TRACKED)
        j = old.find("\n## ", i + len(SECTION_TRACKED))
        new = old[:i] + text.rstrip("\n") + "\n" + (old[j:] if j >= 0 else "")
    elif SECTION in old:
        j = old.find("\n## ", old.index(SECTION) + len(SECTION))
        new = (old[:j + 1] + text.rstrip("\n") + "\n\n" + old[j + 1:]) if j >= 0 else \
            old.rstrip("\n") + "\n\n" + text
    else:
        new = old.rstrip("\n") + "\n\n" + text
    path.write_text(new)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20, help="tracked steps per launch (default 20)")
    ap.add_argument("--rounds", type=int, default=2, help="alternating 1-process/2-rank launch rounds (default 2)")
    ap.add_argument("--write", action="store_true", help="put section 4b into benchmarks/RESULTS.md")
    ap.add_argument("--render", metavar="JSON", help="only re-write the markdown from the raw results a previous "
                                                      "run saved (benchmarks/.cache/last-distributed-tracked.json)")
    if WORKER_ENV in os.environ:
        tracked_worker(**json.loads(os.environ[WORKER_ENV]))
        return 0
    a = ap.parse_args(argv)
    if a.render:
        raw = json.loads(Path(a.render).read_text())
        info, command, tt = raw["info"], raw["command"], raw["tt"]
    else:
        info = machine_info()
        args = sys.argv[1:] if argv is None else argv
        command = "python " + " ".join(["benchmarks/bench_distributed_tracked.py", *args])
        tt = run_tracked(a.steps, a.rounds)
        common.CACHE.mkdir(exist_ok=True)
        with open(common.CACHE / "last-distributed-tracked.json", "w") as fh:
            json.dump({"info": info, "command": command, "tt": tt}, fh)
    text = markdown_tracked(tt, info, command)
    print(text)
    if a.write:
        write_tracked_section(text, HERE / "RESULTS.md")
        say(f"wrote section 4b into {HERE / 'RESULTS.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
