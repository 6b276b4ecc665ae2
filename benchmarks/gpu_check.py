"""The CUDA path against the CPU in float64, in one command: ``python benchmarks/gpu_check.py``.

Four parts, each reported in one table; a part that needs hardware this machine
lacks is printed as skipped, with the reason (no CUDA, fewer than two GPUs):

1. **Derivatives** — for every registered model (``selfstab.problem.models.MODELS``)
   a small problem is built in float64 on the CPU and on CUDA from the same
   ``θ`` and data; ``L``, ``∇L``, ``∇²L v`` and ``∇³L(u, v)`` must agree to
   :data:`RTOL` in relative norm ``‖a − b‖ / ‖a‖``.  Without CUDA the same
   comparison runs against the CPU objective rebuilt in chunks
   (``chunk_size = n/2``): the sums are then taken in another order, as on a
   GPU, which shows the comparison at work and the size of rounding alone.
2. **Tracking** — the default job's edge ``θ₀`` is found once on the CPU
   (``benchmarks/common.py``, cached), then :data:`TRACK_STEPS` steps are
   tracked with the default processes from that ``θ₀`` on the CPU and on CUDA
   (without CUDA: the chunked CPU objective of part 1), and the ``gd``,
   ``constrained`` and ``predicted`` records are compared field by field.
   Both sides compute the same quantities with reductions in different orders,
   so they agree to rounding at first; GD at the edge oscillates chaotically,
   so the difference then grows along the run.  The first :data:`TIGHT_STEPS`
   steps must agree to :data:`TRACK_RTOL` (relative to the field's largest
   magnitude over the run); the largest deviation over all steps is reported,
   not judged.
3. **Timing** — one tracked step (default processes) and one central-flow step
   (:func:`selfstab.processes.central_flow_step` with the process's defaults)
   on the paper's MLP shape, 3072-200-200-10 on 5,000 CIFAR-shaped inputs,
   at ``η = 2.1/S(θ_init)`` (the edge by construction, as ``bench_track.py``).
   On CUDA only (minutes per step on the CPU), except with ``--quick``, which
   times a tiny shape wherever it runs.
4. **Two NCCL ranks against one** — with two GPUs or more, the paper MLP's
   data-parallel objective under ``torch.distributed.run`` with 1 and 2 ranks:
   ``L`` and ``∇L`` must agree to :data:`RTOL`; the times of a gradient, an HVP
   and a ``d3`` are reported.

Sizes are chosen so that the whole check takes well under 5 minutes on one GPU
(the CPU references dominate).  The exit status is 1 when a comparison fails,
else 0 (skipped parts do not fail).

    python benchmarks/gpu_check.py                 # on a GPU machine
    python benchmarks/gpu_check.py --quick         # tiny sizes (the test suite runs this on the CPU)
    python benchmarks/gpu_check.py --json out.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402  (one thread on the CPU side)
from common import DEFAULT_LR, say, table  # noqa: E402
from track_cost import PAPER_ETA_FACTOR  # noqa: E402  (η = 2.1/S(θ_init), as table 3)

import torch  # noqa: E402

RTOL = 1e-10          # derivatives and NCCL: float64 rounding in another order is ~1e-15 relative
TRACK_STEPS = 50
TIGHT_STEPS = 3       # the first tracked steps, compared tightly
# There, relative to the field's largest magnitude over the run: values (L, S, ‖∇L‖, α, β, …) to TRACK_RTOL;
# the small differences of nearly equal vectors (x = u·v and y = ∇S⊥·v of the displacement v from θ†,
# ‖θ_GD − θ_pred‖, u·∇L, …) to DIFF_RTOL, since θ† is a projection solved to proj_tol 1e-9 and u an
# eigenvector to eig_tol 1e-7 on either side.  On the CPU against itself summed in another order (this
# script without CUDA) values agree to ~1e-15 and differences to ~1e-8 over the first steps; no GPU has run
# this yet, so these bounds are not calibrated on one.
TRACK_RTOL = 1e-9
DIFF_RTOL = 1e-6
DIFFERENCES = {"x", "y", "v_norm", "dist_gd", "dist_constrained", "u_dot_grad"}
TABLES = ("gd", "constrained", "predicted")
# Fields that are solver tolerances or counts, not quantities: they differ at the size of the tolerance.
NOT_COMPARED = {"eig_residual", "proj_residual_sharpness", "proj_residual_grad", "proj_steps", "proj_converged",
                "alpha_nonpositive"}
WORKER_TIMEOUT_S = 240
WORKER_ENV = "SELFSTAB_GPU_CHECK_WORKER"


def cuda() -> torch.device | None:
    """The CUDA device when this torch has one, else None (chosen at run time, never assumed)."""
    return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else None


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rel_err(ref: torch.Tensor, other: torch.Tensor) -> float:
    """``‖ref − other‖ / ‖ref‖`` in float64 on the CPU (the plain difference when ``ref`` is zero)."""
    a = torch.as_tensor(ref).detach().double().cpu().reshape(-1)
    b = torch.as_tensor(other).detach().double().cpu().reshape(-1)
    scale = float(a.norm())
    diff = float((a - b).norm())
    return diff / scale if scale > 0 else diff


# ----------------------------------------------------------------------------- 1. derivatives

def compare_objectives(ref, other, theta: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> dict[str, float]:
    """Relative errors of ``other``'s ``loss``, ``grad``, ``hvp(v)`` and ``d3(u, v)`` against ``ref``'s at ``θ``.

    ``ref`` and ``other`` are :class:`~selfstab.problem.objective.Objective` s of the same loss, possibly on
    different devices; ``θ``, ``u``, ``v`` are moved to each one's device and dtype.
    """
    pa, pb = ref.at(ref.vector(theta)), other.at(other.vector(theta))
    return {"loss": rel_err(pa.loss, pb.loss), "grad": rel_err(pa.grad, pb.grad),
            "hvp": rel_err(pa.hvp(ref.as_vectors(v)), pb.hvp(other.as_vectors(v))),
            "d3": rel_err(pa.d3(ref.as_vectors(u), ref.as_vectors(v)),
                          pb.d3(other.as_vectors(u), other.as_vectors(v)))}


def model_problem(name: str, quick: bool, seed: int = 0) -> dict:
    """A small problem for model ``name``: the model, inputs, targets, loss (random data, fixed seed).

    The shape is the registry's first example (the smallest with ``quick``), the width the model's
    default (4 with ``quick``); a model that takes tokens (a ``vocab_size`` option) gets random
    token sequences with a padding mask.
    """
    from selfstab.problem.models import MODELS, build_model
    spec = MODELS[name]
    examples = sorted(spec.examples, key=lambda e: math.prod(e[1])) if quick else list(spec.examples)
    _, shape, n_out, options = examples[0]
    options = dict(options)
    g = torch.Generator().manual_seed(seed)
    n = 8 if quick else 32
    if quick:
        options[spec.width_option] = 4
        if "vocab_size" in options:
            options["vocab_size"] = 11
            shape = (min(shape[0], 6),)
        if name == "resnet18":
            options["blocks"] = (1, 1)
    if "vocab_size" in options:
        length = shape[0]
        tokens = torch.randint(1, options["vocab_size"], (n, length), generator=g)
        lengths = torch.randint(1, length + 1, (n,), generator=g)
        mask = torch.arange(length)[None, :] < lengths[:, None]
        inputs = (tokens.masked_fill(~mask, 0), mask)
    else:
        inputs = torch.randn((n, *shape), generator=g)
    labels = torch.randint(0, n_out, (n,), generator=g)
    targets = torch.nn.functional.one_hot(labels, n_out).float() if n_out > 1 else torch.randn(n, 1, generator=g)
    model = build_model(name, shape, n_out, seed=seed, **options)
    return {"model": model, "inputs": inputs, "targets": targets, "loss": "mse", "n": n, "shape": shape,
            "options": options}


def derivatives(quick: bool, device: torch.device | None) -> dict:
    """Part 1: every registered model, the CPU against ``device`` (None: against the chunked CPU objective)."""
    from selfstab.problem.models import MODELS
    from selfstab.problem.objective import Objective
    against = str(device) if device is not None else "cpu, chunked (no CUDA: reduction-order proxy)"
    rows = []
    for name in MODELS:
        pb = model_problem(name, quick)
        t = time.perf_counter()
        ref = Objective.from_module(pb["model"], pb["inputs"], pb["targets"], pb["loss"], dtype="float64",
                                    device="cpu")
        if device is not None:
            other = Objective.from_module(pb["model"], pb["inputs"], pb["targets"], pb["loss"], dtype="float64",
                                          device=device)
        else:
            other = Objective.from_module(pb["model"], pb["inputs"], pb["targets"], pb["loss"], dtype="float64",
                                          device="cpu", chunk_size=max(1, pb["n"] // 2), cache_graphs=True)
        g = torch.Generator().manual_seed(1)
        u, v = (torch.randn(ref.dim, generator=g, dtype=torch.float64) for _ in range(2))
        errs = compare_objectives(ref, other, ref.theta0, u / u.norm(), v / v.norm())
        value = float(ref.loss(ref.theta0))
        rows.append({"model": name, "dim": ref.dim, "n": pb["n"], "L": value, **errs,
                     "ok": all(e <= RTOL for e in errs.values()) and math.isfinite(value),
                     "seconds": time.perf_counter() - t})
        say(f"  {name}: d = {ref.dim}, max relative error {max(errs.values()):.1e}")
    return {"against": against, "rtol": RTOL, "rows": rows, "ok": all(r["ok"] for r in rows)}


# ----------------------------------------------------------------------------- 2. tracking

def default_job_objective(device: torch.device | None):
    """The default job's float64 objective on ``device``; None: on the CPU in two chunks (another summation
    order, the stand-in for a GPU's)."""
    from selfstab.problem.objective import Objective
    pb = common.default_job("float64")
    loss = pb.objective.info["loss"]
    if device is not None:
        return Objective.from_module(pb.model, pb.inputs, pb.targets, loss, dtype="float64", device=device)
    n = pb.objective.info["n"]
    return Objective.from_module(pb.model, pb.inputs, pb.targets, loss, dtype="float64", device="cpu",
                                 chunk_size=-(-n // 2), cache_graphs=True)


def track_records(obj, theta0: torch.Tensor, warm: torch.Tensor, steps: int) -> dict[str, list[dict]]:
    """``steps`` tracked steps of the default processes from ``θ₀`` at the default job's η (public ``track``)."""
    from selfstab import track
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # eigen/projection shortfalls are in the records, on both sides
        res = track(obj, obj.vector(theta0), DEFAULT_LR, steps, warm=warm.to(obj.theta0))
    return res.records


def compare_records(ref: dict[str, list[dict]], other: dict[str, list[dict]], tables=TABLES,
                    tight_steps: int = TIGHT_STEPS) -> dict:
    """Per table and field: the largest deviation ``|a − b| / max_t |a_t|`` in the first ``tight_steps`` steps
    (judged against :data:`TRACK_RTOL`, or :data:`DIFF_RTOL` for the fields in :data:`DIFFERENCES`) and over
    all steps both records have (not judged).  NaN on one side only counts as infinite."""
    out = {}
    for name in tables:
        a, b = ref.get(name, []), other.get(name, [])
        steps = min(len(a), len(b))
        fields = {}
        for key in a[0] if a else {}:
            if key == "step" or key in NOT_COMPARED or not isinstance(a[0][key], (int, float)):
                continue
            xs = [float(r.get(key, math.nan)) for r in a[:steps]]
            ys = [float(r.get(key, math.nan)) for r in b[:steps]]
            scale = max((abs(x) for x in xs if math.isfinite(x)), default=0.0) or 1.0
            devs = [0.0 if (math.isnan(x) and math.isnan(y)) else abs(x - y) / scale if math.isfinite(x - y)
                    else math.inf for x, y in zip(xs, ys)]
            tight = max(devs[:tight_steps], default=0.0)
            rtol = DIFF_RTOL if key in DIFFERENCES else TRACK_RTOL
            fields[key] = {"tight": tight, "all": max(devs, default=0.0), "rtol": rtol, "ok": tight <= rtol}
        out[name] = {"steps": steps, "fields": fields,
                     "ok": steps >= min(len(a), tight_steps) and all(f["ok"] for f in fields.values())}
    return out


def tracking(quick: bool, device: torch.device | None, steps: int | None = None) -> dict:
    """Part 2: the default job tracked from one θ₀ on the CPU and on ``device`` (None: chunked CPU)."""
    steps = steps if steps is not None else (6 if quick else TRACK_STEPS)
    edge = common.default_edge(say)
    ref_obj = edge["problem"].objective
    other_obj = default_job_objective(device)
    out = {"against": str(device) if device is not None else "cpu, chunked (no CUDA: reduction-order proxy)",
           "steps": steps, "tight_steps": TIGHT_STEPS, "rtol": TRACK_RTOL, "edge_step": edge["step"]}
    for side, obj in (("cpu", ref_obj), ("other", other_obj)):
        t = time.perf_counter()
        out[side] = track_records(obj, edge["theta0"], edge["warm"], steps)
        sync(obj.device)
        out[f"seconds_{side}"] = time.perf_counter() - t
        say(f"  {steps} tracked steps on {obj.device}{' (chunked)' if obj.n_chunks > 1 else ''}: "
            f"{out[f'seconds_{side}']:.1f} s")
    cmp = compare_records(out["cpu"], out["other"])
    out["compare"] = cmp
    out["ok"] = all(c["ok"] for c in cmp.values())
    out["loss_cpu"] = [r["loss"] for r in out["cpu"]["gd"]]
    del out["cpu"], out["other"]
    return out


# ----------------------------------------------------------------------------- 3. timing

def paper_shape(quick: bool, device: torch.device):
    """The paper's MLP shape on ``device`` (``--quick``: 3x8x8-16-16-10 on 200 inputs), float64."""
    from selfstab.problem.models import build_model
    from selfstab.problem.objective import Objective
    if not quick:
        pb = common.paper_mlp("float64")
        return pb.objective.to(device=device), pb.name
    g = torch.Generator().manual_seed(0)
    X = torch.randn(200, 3, 8, 8, generator=g)
    Y = torch.nn.functional.one_hot(torch.randint(0, 10, (200,), generator=g), 10).float()
    model = build_model("mlp", (3, 8, 8), 10, seed=0, width=16, depth=3, activation="swish")
    obj = Objective.from_module(model, X, Y, "mse", dtype="float64", device=device)
    return obj, "MLP 192-16-16-10, 200 random inputs (--quick)"


def timing(quick: bool, device: torch.device) -> dict:
    """Part 3: seconds of the lockstep's start, two tracked steps and two central-flow steps at the edge."""
    from selfstab import track
    from selfstab.processes import central_flow_step
    from selfstab.spectrum import EigenTracker, top_eigenpairs
    obj, name = paper_shape(quick, device)
    theta = obj.theta0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t = time.perf_counter()
        e = top_eigenpairs(obj.at(theta).hvp, obj.dim, 2, dtype=obj.dtype, device=obj.device, tol=1e-7,
                           on_fail="warn")
        sync(device)
        s_seconds = time.perf_counter() - t
        lr = PAPER_ETA_FACTOR / e.sharpness
        say(f"  {name} on {device}: S(θ_init) = {e.sharpness:.6g} ({e.hvps} HVPs, {s_seconds:.1f} s), η = {lr:.4g}")
        steps = []

        def on_records(step, rec):
            steps.append(rec["cost"]["seconds"])

        t = time.perf_counter()
        track(obj, theta, lr, 2, warm=e.vectors[:1], stop_lambda2=1e9, on_records=on_records)
        sync(device)
        total = time.perf_counter() - t
        tracker = EigenTracker(1, tol=1e-5, on_fail="warn", history=4, min_history=1)   # CentralFlow's
        tracker.seed(e.vectors[:1])
        central, th = [], theta
        for _ in range(2):
            t = time.perf_counter()
            th = central_flow_step(obj, th, lr, tracker, pairs_every=2, on_fail="warn").theta_next
            sync(device)
            central.append(time.perf_counter() - t)
    out = {"shape": name, "device": str(device), "dim": obj.dim, "sharpness": e.sharpness, "lr": lr,
           "sharpness_seconds": s_seconds, "track_start_seconds": total - sum(steps), "track_steps": steps,
           "central_steps": central}
    out["ok"] = all(math.isfinite(x) for x in [e.sharpness, *steps, *central]) and len(steps) == 2
    return out


# ----------------------------------------------------------------------------- 4. NCCL ranks

def nccl_worker(out: str, n: int, reps: int, backend: str = "nccl") -> None:
    """Inside ``torch.distributed.run``: the paper MLP's data-parallel objective; rank 0 writes the results.

    ``backend="gloo"`` runs the same on the CPU (to try this part without GPUs: ``--backend gloo``)."""
    from selfstab import distributed
    from selfstab.problem.models import build_model
    from selfstab.problem.objective import Objective
    rank, world, device = distributed.init(backend=backend, timeout=WORKER_TIMEOUT_S)
    g = torch.Generator().manual_seed(0)
    X = torch.randn(n, 3, 32, 32, generator=g)
    Y = torch.nn.functional.one_hot(torch.randint(0, 10, (n,), generator=g), 10).float()
    model = build_model("mlp", (3, 32, 32), 10, seed=0, width=200, depth=3, activation="swish")
    obj = Objective.from_module(model, X, Y, "mse", dtype="float64", device=device, distributed=True)
    v = torch.randn(obj.dim, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    v = obj.vector(v / v.norm())
    theta = obj.theta0
    p = obj.at(theta)
    ops = {"gradient": lambda: obj.grad(theta), "hvp": lambda: p.hvp(v), "d3": lambda: p.d3(v, v)}
    seconds = {}
    for name, fn in ops.items():
        fn()   # warm-up
        times = []
        for _ in range(reps):
            torch.distributed.barrier()
            t = time.perf_counter()
            fn()
            sync(device)
            times.append(time.perf_counter() - t)
        seconds[name] = min(times)
    loss, grad = obj.loss(theta), obj.grad(theta)
    hvp, d3 = p.hvp(v), p.d3(v, v)
    if rank == 0:
        torch.save({"world": world, "seconds": seconds, "loss": loss.cpu(), "grad": grad.cpu(), "hvp": hvp.cpu(),
                    "d3": d3.cpu()}, out)
    distributed.shutdown()


def nccl(quick: bool, backend: str = "nccl") -> dict:
    """Part 4: 1 and 2 NCCL ranks under ``torch.distributed.run`` (needs two GPUs; gloo: on the CPU)."""
    n, reps = (256, 2) if quick else (5000, 5)
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for world in (1, 2):
            out = str(Path(tmp) / f"world{world}.pt")
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={world}",
                   str(Path(__file__).resolve())]
            # the worker's settings travel in the environment: torchrun would take options after the script
            # for abbreviations of its own (--n → --nnodes …)
            spec = {"out": out, "n": n, "reps": reps, "backend": backend}
            env = {**os.environ, "OMP_NUM_THREADS": "1", WORKER_ENV: json.dumps(spec)}
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=WORKER_TIMEOUT_S, env=env)
            if proc.returncode or not Path(out).exists():
                return {"ok": False, "error": f"{world} rank(s) failed (exit {proc.returncode}): "
                                              f"{proc.stderr.strip().splitlines()[-5:]}"}
            runs[world] = torch.load(out)
    one, two = runs[1], runs[2]
    errs = {k: rel_err(one[k], two[k]) for k in ("loss", "grad", "hvp", "d3")}
    return {"n": n, "backend": backend, "errors": errs, "seconds": {w: r["seconds"] for w, r in runs.items()},
            "ok": all(e <= RTOL for e in errs.values())}


# ----------------------------------------------------------------------------- report

def report(res: dict) -> str:
    lines = [f"# GPU check ({'--quick' if res['quick'] else 'full'}) — torch {torch.__version__}, "
             f"CUDA devices: {res['cuda_devices']}", ""]
    d = res["derivatives"]
    lines += [f"## 1. Derivatives, float64: CPU against {d['against']} (pass: relative error ≤ {RTOL:g})", "",
              table(["model", "d", "n", "L", "loss", "grad", "hvp", "d3", "pass"],
                    [[r["model"], r["dim"], r["n"], f"{r['L']:.6g}", f"{r['loss']:.1e}", f"{r['grad']:.1e}",
                      f"{r['hvp']:.1e}", f"{r['d3']:.1e}", "yes" if r["ok"] else "**NO**"]
                     for r in d["rows"]]), ""]
    tr = res["tracking"]
    lines += [f"## 2. Default job, {tr['steps']} tracked steps from the edge θ₀ (GD step {tr['edge_step']}): CPU "
              f"against {tr['against']}", "",
              f"Deviation |a − b| / max_t |a_t| per field; pass: ≤ {TRACK_RTOL:g} over the first {TIGHT_STEPS} "
              f"steps, ≤ {DIFF_RTOL:g} for the small differences {', '.join(sorted(DIFFERENCES))} (the "
              f"largest over all steps is reported, not judged: GD at the edge is chaotic). "
              f"{tr['seconds_cpu']:.1f} s on the CPU, {tr['seconds_other']:.1f} s against.", ""]
    rows = []
    for t, c in tr["compare"].items():
        for kind in ("values", "differences"):
            fs = {k: f for k, f in c["fields"].items() if (k in DIFFERENCES) == (kind == "differences")}
            if not fs:
                continue
            worst_t = max(fs.items(), key=lambda kv: kv[1]["tight"])
            worst_a = max(fs.items(), key=lambda kv: kv[1]["all"])
            ok = c["ok"] or all(f["ok"] for f in fs.values()) and c["steps"] >= min(tr["steps"], TIGHT_STEPS)
            rows.append([t, kind, c["steps"], f"{worst_t[1]['tight']:.1e} ({worst_t[0]})",
                         f"{worst_a[1]['all']:.1e} ({worst_a[0]})", "yes" if ok else "**NO**"])
    lines += [table(["table", "fields", "steps", f"max, first {TIGHT_STEPS} steps", "max, all steps", "pass"],
                    rows), ""]
    tm = res["timing"]
    lines += ["## 3. Timing, float64", ""]
    if "skipped" in tm:
        lines += [f"Skipped: {tm['skipped']}.", ""]
    else:
        lines += [f"{tm['shape']} on {tm['device']} (d = {tm['dim']}), η = 2.1/S(θ_init) = {tm['lr']:.4g}:", "",
                  table(["what", "seconds"],
                        [["S(θ_init), cold solve", tm["sharpness_seconds"]],
                         ["tracking: lockstep start (projection of θ₀)", tm["track_start_seconds"]],
                         *[[f"tracked step {i} (default processes)", s] for i, s in enumerate(tm["track_steps"])],
                         *[[f"central-flow step {i}", s] for i, s in enumerate(tm["central_steps"])]]), ""]
    nc = res["nccl"]
    lines += [f"## 4. Two {nc.get('backend', 'NCCL').upper()} ranks against one", ""]
    if "skipped" in nc:
        lines += [f"Skipped: {nc['skipped']}.", ""]
    elif "error" in nc:
        lines += [f"**Failed**: {nc['error']}", ""]
    else:
        s = nc["seconds"]
        lines += [f"Paper MLP, {nc['n']} inputs; relative errors 2 ranks vs 1: "
                  + ", ".join(f"{k} {v:.1e}" for k, v in nc["errors"].items()) + f" (pass: ≤ {RTOL:g}).", "",
                  table(["op", "1 rank s", "2 ranks s", "speed-up"],
                        [[op, s[1][op], s[2][op], s[1][op] / s[2][op]] for op in s[1]]), ""]
    skipped = [f"{part}: {res[part]['skipped']}" for part in ("derivatives", "tracking", "timing", "nccl")
               if "skipped" in res[part]]
    lines += ["Skipped: " + ("; ".join(skipped) if skipped else "nothing") + ".", "",
              f"Result: {'PASS' if res['ok'] else '**FAIL**'} ({res['seconds']:.0f} s)."]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes (seconds on the CPU; the test suite's run)")
    ap.add_argument("--json", metavar="OUT", help="also write the results as JSON to OUT")
    ap.add_argument("--steps", type=int, default=None, help=f"tracked steps to compare (default {TRACK_STEPS}, "
                                                             "6 with --quick)")
    ap.add_argument("--backend", choices=("nccl", "gloo"), default="nccl",
                    help="part 4's backend (gloo: 2 CPU ranks against 1, to try that part without GPUs)")
    if WORKER_ENV in os.environ:
        nccl_worker(**json.loads(os.environ[WORKER_ENV]))
        return 0
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    device = cuda()
    n_gpus = torch.cuda.device_count() if device is not None else 0
    no_cuda = "no CUDA (torch.cuda.is_available() is False)"
    res = {"quick": args.quick, "cuda_devices": n_gpus, "torch": torch.__version__,
           "device": str(device) if device is not None else "cpu"}
    say("1. derivatives, every registered model ...")
    res["derivatives"] = derivatives(args.quick, device)
    if device is None:
        res["derivatives"]["skipped"] = f"CUDA against the CPU: {no_cuda}; compared with the chunked CPU instead"
    say("2. tracking the default job ...")
    res["tracking"] = tracking(args.quick, device, args.steps)
    if device is None:
        res["tracking"]["skipped"] = f"tracking on CUDA: {no_cuda}; compared with the chunked CPU instead"
    say("3. timing ...")
    if device is not None or args.quick:
        res["timing"] = timing(args.quick, device if device is not None else torch.device("cpu"))
        if device is None:
            res["timing"]["skipped_cuda"] = no_cuda
    else:
        res["timing"] = {"skipped": f"{no_cuda}; the paper's shape takes minutes per step on the CPU "
                                    "(bench_track.py), --quick times a tiny shape", "ok": True}
    say("4. NCCL ranks ...")
    if n_gpus >= 2 or args.backend == "gloo":
        res["nccl"] = nccl(args.quick, args.backend)
    else:
        res["nccl"] = {"skipped": f"needs two CUDA devices, found {n_gpus}" + (" (no CUDA)" if not n_gpus else ""),
                       "ok": True}
    res["ok"] = all(res[p]["ok"] for p in ("derivatives", "tracking", "timing", "nccl"))
    res["seconds"] = time.perf_counter() - t0
    print(report(res))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1, default=str))
    return 0 if res["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
