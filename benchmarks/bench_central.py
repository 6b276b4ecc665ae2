"""The central flow's cost per GD step, side by side with the authors' scheme, on the default job at η = 0.4.

The run of docs/results.md's "Several unstable eigenvalues" section: the default
job (MLP width 64 on all 1,797 digits, ``mse``) from its edge θ₀ at η = 0.4,
where two and then three eigenvalues are at the edge.  The central flow is
integrated from θ₀ with selfstab's defaults up to each window's start
(``--windows``, GD steps after the edge); from that one state every variant
then integrates the same ``--steps`` GD steps:

- **authors' scheme**: at each of 4 substeps an eigen-solve of the tracked
  block (to 1e-7), the ``k(k+1)/2`` pair vectors ``∇³L(u_i, u_j)`` and an
  SDCP (``chord=False, substeps=4``) — the reference the others are compared
  to; with 8 substeps it shows the size of the scheme's own discretization
  error;
- **chord**: one eigen-solve (to ``central_eig_tol``) per GD step, each
  substep a gradient on the block's first-order model; the pair vectors fresh
  at every step, at every 2nd (selfstab's default) or every 4th (reused
  ones rotated into the new basis, while the block model they carry matches
  the next solve).

Per variant: HVPs, gradients and pair vectors per GD step from the
objective's own counters; HVP-equivalents priced with table 1 measured here
at the window's start (one gradient = ``grad/HVP`` HVPs, one pair vector =
the time of :meth:`~selfstab.problem.objective.Point.d3_pairs` for the
window's critical block over its ``k(k+1)/2`` vectors, in HVPs); the
reference implementation's ≈ 52 HVPs + 25 d3 + 4 gradients per step priced
the same way (its d3 at the ``d3`` price); and how far each variant ends
from the authors' scheme: the largest relative difference of the predicted
loss ``L + tr(X)/η`` over the window, ``‖θ_end − θ_end^ref‖ / ‖θ_end^ref −
θ_start‖``, and the largest ``|λ₁ − 2/η|·η/2`` of the solves (how well the
flow stays pinned).

    python benchmarks/bench_central.py            # windows 150 and 350, 30 steps each (≈ 10 min, one thread)
    python benchmarks/bench_central.py --quick    # one window at 150, 8 steps
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import numpy as np
import torch

from common import say, table  # noqa: F401  (sets one thread)

from selfstab.config import RunConfig
from selfstab.problem.build import build_problem
from selfstab.processes.block import PairCache, critical_count
from selfstab.processes.central import CentralFlow, central_flow_step
from selfstab.train.gd import gd_to_edge

LR = 0.4
REFERENCE = {"hvps": 52, "d3": 25, "grads": 4}          # the independent implementation's count per GD step
AUTHORS = dict(chord=False, substeps=4, pairs_every=1)
VARIANTS = {   # name: (eigen-solve tolerance, central_flow_step options over the process's defaults)
    "authors' scheme (4 substeps)": (1e-7, AUTHORS),
    "authors' scheme, 8 substeps": (1e-7, {**AUTHORS, "substeps": 8}),
    "chord, fresh pairs every step": (None, dict(pairs_every=1)),
    "chord, pairs every 2 steps (default)": (None, {}),
    "chord, pairs every 4 steps": (None, dict(pairs_every=4)),
}


def _median_seconds(f, reps: int = 7) -> float:
    f()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def prices(obj, theta, U) -> dict:
    """Table 1 at ``theta`` in HVPs at a point: a gradient, a ``d3`` and one pair vector of
    :meth:`~selfstab.problem.objective.Point.d3_pairs` for the critical block ``U`` (k, d)."""
    p = obj.at(theta)
    p.grad
    hvp = _median_seconds(lambda: p.hvp(U[0]))
    k = U.shape[0]
    return {"grad": _median_seconds(lambda: obj.grad(theta)) / hvp, "d3": _median_seconds(lambda: p.d3(U[0], U[0])) / hvp,
            "pair": _median_seconds(lambda: p.d3_pairs(U)) / hvp / (k * (k + 1) // 2), "k": k, "hvp_seconds": hvp}


def equivalents(c: dict, price: dict, d3: str = "pair") -> float:
    """HVP-equivalents of counts ``c``; our ``d3`` counts are pair vectors (priced per pair), the reference's
    third-derivative products (``d3="d3"``)."""
    return c["hvps"] + c["grads"] * price["grad"] + c["d3"] * price[d3]


def integrate(obj, theta, tracker, steps: int, **options) -> dict:
    """``steps`` GD steps of the central flow from ``theta``; per-step counts and predictions."""
    cache = PairCache()
    rows, t0 = [], time.perf_counter()
    for _ in range(steps):
        before = dict(obj.counts)
        step = central_flow_step(obj, theta, LR, tracker, cache=cache, **options)
        spent = {k: obj.counts[k] - before.get(k, 0) for k in ("hvp", "grad", "d3")}
        rows.append({"hvps": spent["hvp"], "grads": spent["grad"], "d3": spent["d3"],
                     "pred": step.predicted_loss(LR), "k": step.k_crit, "rank": step.x_rank,
                     "pin": float((step.values[0] - 2 / LR).abs()) * LR / 2 if step.k_crit else 0.0,
                     "substeps": step.substeps, "residual": step.sdcp_residual})
        theta = step.theta_next
    return {"rows": rows, "theta": theta, "seconds": (time.perf_counter() - t0) / steps}


def run(windows=(150, 350), steps: int = 30) -> dict:
    cfg = RunConfig(lr=LR)
    obj = build_problem(cfg).objective
    edge = gd_to_edge(obj, LR)
    obj = obj.to(torch.float64)
    theta = edge.theta0.double()
    proc = CentralFlow()                   # the process's tracker and options: selfstab's defaults
    proc.tracker.seed(edge.eig.vectors.double().reshape(-1, obj.dim))
    defaults = dict(proc.options)
    out, t = {"edge_step": edge.step, "windows": []}, 0
    for start in windows:
        say(f"central flow (defaults) from the edge to step {start} …")
        while t < start:
            theta = central_flow_step(obj, theta, LR, proc.tracker, cache=proc.cache, **defaults).theta_next
            t += 1
        U = proc.tracker.last.vectors[:max(1, critical_count(proc.tracker.last.values, LR))]
        price = prices(obj, theta, U)
        res = {}
        for name, (tol, options) in VARIANTS.items():
            say(f"  step {start}: {name}")
            tracker = copy.deepcopy(proc.tracker)
            if tol is not None:
                tracker.tol = tol
            res[name] = integrate(obj, theta.clone(), tracker, steps, **{**defaults, **options})
        out["windows"].append({"start": start, "steps": steps, "price": price, "theta": theta, "res": res})
    return out


def summarize(window: dict) -> list[list]:
    price, res = window["price"], window["res"]
    ref = res["authors' scheme (4 substeps)"]
    ref_pred = np.array([r["pred"] for r in ref["rows"]])
    span = float((ref["theta"] - window["theta"]).norm())
    theirs = equivalents(REFERENCE, price, "d3")
    lines = []
    for name, r in res.items():
        rows = r["rows"]
        mean = {k: float(np.mean([x[k] for x in rows])) for k in ("hvps", "grads", "d3", "substeps")}
        eq = equivalents(mean, price)
        pred = np.array([x["pred"] for x in rows])
        lines.append([name, f"{mean['hvps']:.1f}", f"{mean['d3']:.1f}", f"{mean['grads']:.1f}", f"{eq:.1f}",
                      f"{theirs / eq:.1f}×", f"{np.max(np.abs(pred - ref_pred) / ref_pred):.1e}",
                      f"{float((r['theta'] - ref['theta']).norm()) / span:.1e}",
                      f"{max(x['pin'] for x in rows):.0e}", f"{max(x['residual'] for x in rows):.0e}",
                      f"{min(x['k'] for x in rows)}–{max(x['k'] for x in rows)}",
                      f"{max(x['rank'] for x in rows)}", f"{mean['substeps']:.1f}", f"{r['seconds']:.2f}"])
    return lines


HEAD = ["variant", "HVPs", "pair vectors", "grads", "HVP-eq. / step", "reference ÷ this", "max Δpred / pred",
        "‖Δθ_end‖ / ‖θ_end − θ_start‖", "max |λ₁−2/η|·η/2", "max KKT res.", "k_crit", "rank X", "substeps",
        "s / step"]


def markdown(out: dict) -> str:
    parts = []
    for w in out["windows"]:
        p = w["price"]
        theirs = equivalents(REFERENCE, p, "d3")
        parts.append(f"**Steps {w['start']}–{w['start'] + w['steps'] - 1} after the edge** (table 1 measured here, "
                     f"in HVPs at a point: gradient {p['grad']:.2f}, d3 {p['d3']:.2f}, one pair vector of a "
                     f"{p['k']}-block {p['pair']:.2f}; the reference's step: 52 + 25 × {p['d3']:.2f} + "
                     f"4 × {p['grad']:.2f} = {theirs:.0f} HVP-eq.)\n\n" + table(HEAD, summarize(w)))
    return "\n\n".join(parts)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--windows", type=int, nargs="+", default=[150, 350])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--quick", action="store_true", help="one window at step 150, 8 steps")
    args = ap.parse_args(argv)
    windows, steps = ((150,), 8) if args.quick else (tuple(args.windows), args.steps)
    print(markdown(run(windows, steps)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
