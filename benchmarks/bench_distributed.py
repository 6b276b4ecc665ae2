"""Table 4: the data-parallel objective on 1 process and on 2 gloo ranks (issue 11, docs/theory.md §11).

One command: ``python benchmarks/bench_distributed.py [--quick] [--write]``.

The paper's MLP shape (3072→200→200→10, swish, mse on random one-hot
targets) on ``n`` standard-normal inputs in float64 (5,000; 1,000 with
``--quick``).  Each launch is a fresh process: the 1-process baseline is a
plain ``Objective.from_module`` (no process group), the 2-rank case is
``python -m torch.distributed.run --standalone --nproc-per-node 2`` with
``distributed=True`` (each rank keeps 2,500 examples, gloo).  Every process
runs ``torch.set_num_threads(1)`` with ``OMP_NUM_THREADS=1``.

Operations, timed round-robin after one warm-up call each, the ranks
starting every call together after a barrier (so a rank's time includes
waiting for the slower one and the all-reduce): ``gradient`` (``obj.grad``,
no graph kept), ``new point`` (``obj.at(θ).grad``: gradient with its graph,
what every new θ costs), ``hvp`` (``p.hvp(v)`` at a point), ``4 hvps``
(``p.hvp(V)``, V of shape (4, d), per HVP), ``d3`` (``p.d3(u, u)``).  The
launches alternate (1, 2, 1, 2, …: ``--rounds``) so a change of load hits both
alike; the speedup is the ratio of the medians over all rounds, and each
round's own ratio is shown too.  All-reduce calls and bytes per operation are
counted by ``selfstab.distributed.traffic``; the CPU share is each rank's
process CPU time over wall time during the timed calls (below 1: the rank
waited — for the other rank, for the all-reduce, or for a core another job held).

``--write`` puts the section into ``benchmarks/RESULTS.md`` (replacing an
earlier version of it); ``benchmarks/run.py`` includes it as table 4.

Section 4b, the run level (the default job's tracked steps on 1 process and 2
ranks), is ``bench_distributed_tracked.py``; ``--tracked`` here runs it.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402  (one thread)
from common import HERE, machine_info, machine_lines, say, table  # noqa: E402

import torch  # noqa: E402

OPS = ["gradient", "new point", "hvp", "4 hvps", "d3"]
GOAL = 1.6
SECTION = "## 4. Data-parallel objective on 2 ranks (issue 11)"
LAUNCH_TIMEOUT_S = 1800
WORKER_ENV = "SELFSTAB_BENCH_DISTRIBUTED_WORKER"


# ----------------------------------------------------------------------------- inside one process / rank

def _problem(n: int, distributed: bool):
    from selfstab.problem.models import build_model
    from selfstab.problem.objective import Objective
    g = torch.Generator().manual_seed(0)              # the same data as common.paper_mlp
    X = torch.randn(n, 3, 32, 32, generator=g)
    labels = torch.randint(0, 10, (n,), generator=g)
    Y = torch.nn.functional.one_hot(labels, 10).float()
    model = build_model("mlp", (3, 32, 32), 10, seed=0, width=200, depth=3, activation="swish")
    return Objective.from_module(model, X, Y, "mse", dtype="float64", distributed=distributed)


def worker(n: int, reps: int, out: str) -> None:
    from selfstab import distributed
    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    grouped = "RANK" in os.environ
    if grouped:
        distributed.init(backend="gloo", timeout=600)
    rank, world = distributed.rank(), distributed.world_size()
    sync = torch.distributed.barrier if grouped else (lambda: None)
    t0 = time.perf_counter()
    obj = _problem(n, grouped)
    build_s = time.perf_counter() - t0
    g = torch.Generator().manual_seed(1)
    theta = obj.theta0.clone()
    V = torch.randn(4, obj.dim, generator=g, dtype=torch.float64)
    V = V / V.norm(dim=1, keepdim=True)
    p = obj.at(theta)
    p.grad
    ops = {"gradient": lambda: obj.grad(theta), "new point": lambda: obj.at(theta).grad,
           "hvp": lambda: p.hvp(V[0]), "4 hvps": lambda: p.hvp(V), "d3": lambda: p.d3(V[1], V[1])}
    per_call = {"4 hvps": 4}
    sent = {}
    for name, fn in ops.items():          # warm-up, and the all-reduces one call makes
        before = dict(distributed.traffic)
        fn()
        sent[name] = (distributed.traffic["calls"] - before.get("calls", 0),
                      distributed.traffic["bytes"] - before.get("bytes", 0))
    wall = {k: [] for k in ops}
    cpu = {k: 0.0 for k in ops}
    cpu_time = {k: [] for k in ops}
    for _ in range(reps):
        for name, fn in ops.items():
            sync()
            c, t = time.process_time(), time.perf_counter()
            fn()
            dt = time.perf_counter() - t
            wall[name].append(dt / per_call.get(name, 1))
            c = time.process_time() - c
            cpu[name] += c / (dt * reps)
            cpu_time[name].append(c / per_call.get(name, 1))
    check = {"loss": float(obj.loss(theta)), "grad_norm": float(obj.grad(theta).norm())}
    reduce_s = []
    if grouped:   # one all-reduce of a gradient's size alone: the communication part of every product
        buf = torch.zeros(obj.dim + 1, dtype=torch.float64)
        for _ in range(2 * reps + 1):
            sync()
            t = time.perf_counter()
            distributed.all_reduce_sum(buf)
            reduce_s.append(time.perf_counter() - t)
        reduce_s = reduce_s[1:]
    mine = {"rank": rank, "wall": wall, "cpu": cpu, "cpu_time": cpu_time, "build_s": build_s, "reduce_s": reduce_s}
    every = [None] * world
    if grouped:
        torch.distributed.all_gather_object(every, mine)
    else:
        every = [mine]
    if rank == 0:
        Path(out).write_text(json.dumps({"world": world, "n": n, "dim": obj.dim, "reps": reps, "sent": sent,
                                         "check": check, "ranks": every, "shard": obj.info.get("shard")}))
    if grouped:
        distributed.shutdown()


# ----------------------------------------------------------------------------- the launcher

def launch(world: int, spec: dict, script: str | Path | None = None) -> dict:
    """Run ``script`` (default: this file) on 1 process or ``world`` torchrun ranks; its main runs the worker
    named by ``spec`` (passed in the environment, with ``out``, the JSON file rank 0 writes and this returns)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        script = str(Path(script or __file__).resolve())
        if world == 1:
            cmd = [sys.executable, script]
        else:
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={world}", script]
        # the worker's settings travel in the environment (torchrun would read options after the script as its own)
        env = {**os.environ, "OMP_NUM_THREADS": "1", WORKER_ENV: json.dumps({**spec, "out": str(out)})}
        load0 = os.getloadavg()[0]
        cpu0, own0 = _cpu_seconds(), _children_cpu()
        t = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
        try:
            log, _ = proc.communicate(timeout=LAUNCH_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGTERM)     # torchrun's agent ends its workers on SIGTERM
            try:
                log, _ = proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                log, _ = proc.communicate()
            raise RuntimeError(f"{world}-rank launch timed out after {LAUNCH_TIMEOUT_S} s:\n{log[-2000:]}")
        if proc.returncode != 0:
            raise RuntimeError(f"{world}-rank launch failed (exit {proc.returncode}):\n{log[-4000:]}")
        res = json.loads(out.read_text())
    seconds = time.perf_counter() - t
    busy = _cpu_seconds() - cpu0
    own = _children_cpu() - own0
    # other jobs' CPU during the launch, in cores: machine-wide busy CPU time minus this launch's own
    res.update(seconds=seconds, load=(load0, os.getloadavg()[0]), others=max(busy - own, 0.0) / seconds)
    return res


def _cpu_seconds() -> float:
    """Machine-wide busy CPU seconds since boot (``/proc/stat``; NaN where it does not exist)."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return float("nan")
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _children_cpu() -> float:
    import resource
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run(quick: bool = False, n: int | None = None, reps: int | None = None, rounds: int | None = None) -> dict:
    n = n or (1000 if quick else 5000)
    reps = reps or (3 if quick else 5)
    rounds = rounds or (1 if quick else 2)
    launches = []
    for r in range(rounds):
        for world in (1, 2):
            say(f"distributed: round {r + 1}/{rounds}, {world} rank{'s' if world > 1 else ''}, n = {n} ...")
            res = launch(world, {"n": n, "reps": reps})
            say(f"  {res['seconds']:.0f} s, load average {res['load'][0]:.2f} → {res['load'][1]:.2f}, "
                f"other jobs used {res['others']:.2f} cores")
            launches.append(res)
    return {"n": n, "reps": reps, "rounds": rounds, "launches": launches}


def _times(res: dict, op: str, key: str = "wall") -> list[float]:
    """Per call times of ``op``: the slowest rank's time of each call (the ranks start together)."""
    per_rank = [r[key][op] for r in res["ranks"]]
    return [max(ts) for ts in zip(*per_rank)]


def summary(t4: dict) -> dict:
    """op → {ms1, ms2, speedup, per-round speedups, cpu share of the 2 ranks, all-reduces}."""
    one = [r for r in t4["launches"] if r["world"] == 1]
    two = [r for r in t4["launches"] if r["world"] == 2]
    out = {}
    for op in OPS:
        m1 = statistics.median([x for r in one for x in _times(r, op)])
        m2 = statistics.median([x for r in two for x in _times(r, op)])
        rounds = [statistics.median(_times(a, op)) / statistics.median(_times(b, op)) for a, b in zip(one, two)]
        cpu2 = min(rk["cpu"][op] for r in two for rk in r["ranks"])
        cpu1 = min(rk["cpu"][op] for r in one for rk in r["ranks"])
        calls, nbytes = two[0]["sent"][op]
        # CPU time per call (slowest rank): the work each process did, whatever share of a core it was given
        c1 = statistics.median([x for r in one for x in _times(r, op, "cpu_time")])
        c2 = statistics.median([x for r in two for x in _times(r, op, "cpu_time")])
        out[op] = {"ms1": 1e3 * m1, "ms2": 1e3 * m2, "speedup": m1 / m2, "rounds": rounds, "cpu1": cpu1,
                   "cpu2": cpu2, "calls": calls, "bytes": nbytes, "cpu_ms1": 1e3 * c1, "cpu_ms2": 1e3 * c2,
                   "cpu_speedup": c1 / c2}
    return out


def markdown(t4: dict, info: dict | None = None, command: str | None = None) -> str:
    s = summary(t4)
    one = [r for r in t4["launches"] if r["world"] == 1]
    two = [r for r in t4["launches"] if r["world"] == 2]
    d = two[0]["dim"]
    rows = []
    for op in OPS:
        r = s[op]
        calls = f"{r['calls']}" + (" (per 4 HVPs)" if op == "4 hvps" else "")
        rows.append([op, f"{r['ms1']:.0f}", f"{r['ms2']:.0f}", f"**{r['speedup']:.2f}×**", " / ".join(f"{x:.2f}×" for x in r["rounds"]),
                     f"{r['cpu1']:.2f} / {r['cpu2']:.2f}", f"{r['cpu_ms1']:.0f} / {r['cpu_ms2']:.0f}",
                     f"{r['cpu_speedup']:.2f}×", calls, f"{r['bytes'] / 2**20:.2f} MiB"])
    loss_gap = max(abs(b["check"]["loss"] - one[0]["check"]["loss"]) / abs(one[0]["check"]["loss"]) for b in two)
    g_gap = max(abs(b["check"]["grad_norm"] - one[0]["check"]["grad_norm"]) / one[0]["check"]["grad_norm"] for b in two)
    core = ["hvp", "gradient", "d3"]
    met = [op for op in core if s[op]["speedup"] >= GOAL]
    red = statistics.median([max(ts) for r in two for ts in zip(*[rk["reduce_s"] for rk in r["ranks"]])])
    loads = ", ".join(f"{r['load'][0]:.2f}→{r['load'][1]:.2f} ({r['world']})" for r in t4["launches"])
    others = ", ".join(f"{r.get('others', float('nan')):.2f} ({r['world']})" for r in t4["launches"])
    cpu_ratios = [s[op]["cpu_speedup"] for op in OPS]
    free = {op: s[op]["cpu_ms1"] / (s[op]["cpu_ms2"] + 1e3 * red) for op in OPS}   # 4 hvps: 4× the bytes for 4
    pairs = "; ".join(f"{x:.2f}× ({a.get('others', float('nan')):.2f} / {b.get('others', float('nan')):.2f})"
                      for x, a, b in zip(s["hvp"]["rounds"], one, two))
    lines = [SECTION, ""]
    if info is not None:
        lines += [*machine_lines(info, command or "python benchmarks/bench_distributed.py"), ""]
    lines += [
        f"The paper's MLP shape 3072→200→200→10 (swish, mse, d = {d:,}) on {t4['n']:,} random inputs in float64. "
        f"1 process: a plain objective, no process group. 2 ranks: `torchrun --standalone --nproc-per-node 2`, "
        f"gloo, `distributed=True`, shards of {(t4['n'] + 1) // 2:,} and {t4['n'] // 2:,} examples "
        "(`selfstab.distributed.shard_bounds`). One thread per process. Times per call (per HVP for *4 hvps*), "
        f"median of {t4['reps']} round-robin calls per launch over {t4['rounds']} alternating launch round(s), "
        "the ranks starting each call together after a barrier; a 2-rank call counts as long as its slower rank. "
        "*new point*: the gradient with its graph kept (`obj.at(θ).grad`), which every later HVP and d3 at that θ "
        "reuse. *CPU share*: process CPU time ÷ wall time during the calls, smallest over processes "
        "(1 process / 2 ranks); below 1, the process waited for a core, the other rank or the all-reduce. "
        "*CPU ms*: CPU time per call (slowest rank for 2 ranks); their ratio is the speedup two free cores "
        "would give if waiting cost nothing — it does not depend on the load. All-reduces: calls and payload per rank of one call (`[L, ∇L]` for a gradient, "
        "the (k, d) block for k HVPs).",
        "",
        table(["operation", "1 process (ms)", "2 ranks (ms)", "speedup", "per round", "CPU share",
               "CPU ms", "CPU-time ratio", "all-reduces", "bytes"], rows),
        "",
        f"- goal ≥ {GOAL}× on 2 cores for HVP, gradient and d3: "
        + ("met for all three" if len(met) == 3 else f"**met for {', '.join(met) or 'none'}** of hvp, gradient, d3")
        + f"; one all-reduce of a gradient's {8 * (d + 1) / 2**20:.2f} MiB alone takes {1e3 * red:.1f} ms "
        f"({100 * red / (s['hvp']['ms2'] / 1e3):.1f}% of a 2-rank HVP); same numbers: the 2-rank loss and ‖∇L‖ differ from the 1-process ones by {loss_gap:.0e} and "
        f"{g_gap:.0e} relative.",
        f"- load average (1 min) before→after each launch (world size): {loads}; "
        f"other jobs' CPU use during each launch (machine-wide busy CPU time minus the launch's own, in cores of "
        f"{os.cpu_count()}): {others}.",
        "- wall time of the launches (data generation, model, warm-up, timed calls): "
        + ", ".join(f"{r['seconds']:.0f} s ({r['world']})" for r in t4["launches"]) + ".",
        f"- reading: the CPU time per call {'halves' if min(cpu_ratios) >= 1.8 else 'drops'} (ratio {min(cpu_ratios):.2f}–{max(cpu_ratios):.2f}× over the "
        f"{len(OPS)} operations) and the all-reduce alone is {100 * red / (s['hvp']['ms2'] / 1e3):.1f}% of a 2-rank "
        f"HVP{', so the work divides between the ranks as it should' if min(cpu_ratios) >= 1.8 else ''}; the wall-time speedup follows the share of the "
        f"cores the processes got (HVP speedup per round, with the other jobs' cores during the 1-process / 2-rank "
        f"launches: {pairs}). Estimate for two free cores, not a measurement — CPU time of 1 process ÷ (CPU time "
        f"of the slowest rank + the all-reduce alone): " + ", ".join(f"{op} {free[op]:.2f}×" for op in core) + ".",
    ]
    return "\n".join(lines) + "\n"


def write_section(text: str, path: Path) -> None:
    """Replace this section in ``path``, or insert it before the next numbered table (or the hand-maintained section).

    Only this section's text changes; the rest of the file stays as it is.
    """
    import re
    old = path.read_text() if path.exists() else "# selfstab benchmarks\n"
    if SECTION in old:
        i = old.index(SECTION)
        j = old.find("\n## ", i + len(SECTION))
        new = old[:i] + text.rstrip("\n") + "\n" + (old[j:] if j >= 0 else "")
    else:
        later = [m.start() + 1 for m in re.finditer(r"\n## (\d+)\.", old) if int(m.group(1)) > 4]
        keep = old.find("\n## Measurements behind the design choices")
        at = min(later + ([keep + 1] if keep >= 0 else []), default=-1)
        if at >= 0:
            new = old[:at] + text.rstrip("\n") + "\n\n" + old[at:]
        else:
            new = old.rstrip("\n") + "\n\n" + text
    path.write_text(new)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1,000 inputs, 3 calls, one round (about a minute)")
    ap.add_argument("--n", type=int, help="inputs (default 5000; 1000 with --quick)")
    ap.add_argument("--reps", type=int, help="timed calls per operation and launch (default 5; 3 with --quick)")
    ap.add_argument("--rounds", type=int, help="alternating 1-process/2-rank launch rounds (default 2; 1 with --quick)")
    ap.add_argument("--write", action="store_true", help="put the section into benchmarks/RESULTS.md")
    ap.add_argument("--render", metavar="JSON", help="only re-write the markdown from the raw results a previous "
                                                      "run saved (benchmarks/.cache/last-distributed-*.json)")
    ap.add_argument("--tracked", action="store_true", help="section 4b instead (bench_distributed_tracked.py, "
                                                           "which takes the options after --tracked)")
    if WORKER_ENV in os.environ:
        worker(**json.loads(os.environ[WORKER_ENV]))
        return 0
    args = sys.argv[1:] if argv is None else list(argv)
    if "--tracked" in args:
        import bench_distributed_tracked
        return bench_distributed_tracked.main([x for x in args if x != "--tracked"])
    a = ap.parse_args(args)
    if a.render:
        raw = json.loads(Path(a.render).read_text())
        info, command, t4 = raw["info"], raw["command"], raw["t4"]
    else:
        info = machine_info()
        command = "python " + " ".join(["benchmarks/bench_distributed.py", *(sys.argv[1:] if argv is None else argv)])
        t4 = run(a.quick, a.n, a.reps, a.rounds)
        common.CACHE.mkdir(exist_ok=True)
        with open(common.CACHE / f"last-distributed-{'quick' if a.quick else 'full'}.json", "w") as fh:
            json.dump({"info": info, "command": command, "t4": t4}, fh)
    text = markdown(t4, info, command)
    print(text)
    if a.write:
        write_section(text, HERE / "RESULTS.md")
        say(f"wrote the section into {HERE / 'RESULTS.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
