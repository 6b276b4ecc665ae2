"""A near-degenerate edge: the critical block against one eigenvector at a time, on the paper's MLP shape.

The paper's MLP 3072-200-200-10 (swish, float64) on 5,000 random inputs with
random one-hot targets, at its initialization with η = 2.1/S(θ_init) (table
3's "edge by construction": 2/η just below the sharpness).  Its top Hessian
eigenvalues form a tight cluster (λ₂/λ₁ ≈ 0.99), where a block-1 eigen-solver
cannot separate the top pair.

1. One warm refresh at the next GD iterate θ₁ = θ_init − η∇L, to the same
   relative residual (1e-6, at most 100 iterations), by
   - **scipy LOBPCG, k = 1** from u(θ_init) (the authors' way);
   - **selfstab, k = 1** from u(θ_init) (the single-eigenvalue tracker);
   - **selfstab, the critical block** (:func:`~selfstab.processes.block.refresh_block`,
     the central flow's and θ†_k's tracker): every eigenvalue ≥ 0.975·2/η,
     the block following the spectrum inside one LOBPCG solve, two guard
     vectors that need not converge; warm-started from the block at θ_init;
   - **converge-all block** (the previous refresh, kept here as the baseline):
     the same eigenvalues plus the next one, every vector converged, a block
     whose last value is still above the threshold grown by half and solved again.
2. The same two block refreshes along GD θ_{t+1} = θ_t − η∇L(θ_t) for a few
   steps from θ_init, each with its own tracker (the tracking cost per step).

Printed: HVPs, HVPs per wanted vector (the eigenvalues ≥ 0.975·2/η, which the
SDCPs use), convergence and the top eigenvalue.

    python benchmarks/bench_block.py              # 5,000 inputs (≈ 20 min, one thread)
    python benchmarks/bench_block.py --n 500      # a smaller, faster version of the same shape
"""

from __future__ import annotations

import argparse
import time
import warnings

import torch

from common import paper_mlp, say, table

from bench_eigen import TOL, rel_residual, scipy_lobpcg
from selfstab.processes.block import critical_count, refresh_block
from selfstab.spectrum import EigenTracker
from selfstab.spectrum.eigen import top_eigenpairs

ETA_FACTOR = 2.1            # η = 2.1 / S(θ_init), as table 3's paper-MLP row
THRESHOLD = 0.975
STEPS = 5                   # GD steps of the tracking comparison


def converge_all(tracker: EigenTracker, point, lr: float, threshold: float = THRESHOLD):
    """The previous critical-block refresh (the baseline): every eigenvalue ``≥ threshold·2/η`` plus the next
    one, all converged; while the last is still above, the block grows by half and is solved again."""
    edge = threshold * 2.0 / lr
    eig = tracker.refresh(point)
    while float(eig.values[-1]) >= edge:
        tracker.k += max(1, tracker.k // 2)
        eig = tracker.refresh(point, start=torch.cat([eig.vectors, eig.extra["guard"]]))
    tracker.k = int((eig.values >= edge).sum()) + 1
    return eig


def _counted(obj, fn):
    t, before = time.perf_counter(), obj.counts["hvp"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = fn()
    return out, obj.counts["hvp"] - before, time.perf_counter() - t


def run(n: int = 5000, steps: int = STEPS) -> dict:
    obj = paper_mlp("float64", n=n).objective
    theta0 = obj.theta0
    say(f"paper MLP, {n} inputs: the top block at θ_init (cold) …")
    p0 = obj.at(theta0)
    p0.grad
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        first = top_eigenpairs(p0.hvp, obj.dim, 2, dtype=obj.dtype, tol=1e-7, on_fail="warn")
    s0 = first.sharpness
    lr = ETA_FACTOR / s0

    def tracker(k=1):
        tr = EigenTracker(k, tol=TOL, history=1, max_iter=100, on_fail="warn")
        tr.seed(first.vectors)
        return tr

    new, old = tracker(), tracker(2)
    block0, h, sec = _counted(obj, lambda: refresh_block(new, p0, lr, THRESHOLD))
    wanted0 = block0.extra["wanted"]
    cold = {"hvps": h, "seconds": sec, "k": wanted0, "k_crit": critical_count(block0.values[:wanted0], lr, THRESHOLD)}
    base0, hb, _ = _counted(obj, lambda: converge_all(old, p0, lr))
    say(f"  S = {s0:.6g}, η = {lr:.6g}; {cold['k_crit']} eigenvalues ≥ {THRESHOLD}·2/η, block in {h} HVPs "
        f"(converge-all: {hb})")
    p1 = obj.at(theta0 - lr * p0.grad)
    p1.grad
    u0 = block0.vectors[0]
    out = {"n": n, "lr": lr, "s0": s0, "values0": block0.values[:wanted0].tolist(), "cold": cold, "solves": {},
           "steps": []}

    say("  scipy LOBPCG, k = 1 …")
    t = time.perf_counter()
    lam, v, hv, failed = scipy_lobpcg(p1, u0.double().cpu(), s0, tol=TOL, maxiter=100)
    out["solves"]["scipy LOBPCG, k = 1 (authors')"] = {
        "hvps": hv, "wanted": 1, "converged": not failed, "lambda": lam,
        "residual": rel_residual(p1, v.to(theta0), lam), "seconds": time.perf_counter() - t}

    say("  selfstab, k = 1 …")
    tr = EigenTracker(1, tol=TOL, history=1, max_iter=100, on_fail="warn")
    tr.seed(u0.reshape(1, -1))
    e, h, sec = _counted(obj, lambda: tr.refresh(p1))
    out["solves"]["selfstab, k = 1"] = {"hvps": h, "wanted": 1, "converged": e.converged, "lambda": e.sharpness,
                                        "residual": float(e.residuals.max()), "seconds": sec}

    # the two block refreshes along GD from θ_init: θ₁ first (the table's single refresh), then further steps
    theta, point = theta0, p0
    for step in range(1, steps + 1):
        theta = theta - lr * point.grad
        point = obj.at(theta)
        point.grad
        say(f"  step {step}: the critical block, and converge-all …")
        b, h, sec = _counted(obj, lambda: refresh_block(new, point, lr, THRESHOLD))
        w = b.extra["wanted"]
        a, ha, seca = _counted(obj, lambda: converge_all(old, point, lr))
        row = {"step": step, "hvps": h, "wanted": w, "converged": b.converged, "seconds": sec,
               "base_hvps": ha, "base_vectors": int(a.values.numel()), "base_converged": a.converged,
               "base_seconds": seca, "lambda": float(b.values[0]), "base_lambda": a.sharpness,
               "ratio": float(b.values[w] / b.values[w - 1]) if b.values.numel() > w else float("nan")}
        out["steps"].append(row)
        say(f"    {row}")
        if step == 1:
            out["solves"]["selfstab, critical block"] = {
                "hvps": h, "wanted": w, "converged": b.converged, "lambda": float(b.values[0]),
                "residual": float(b.residuals[:w].max()), "seconds": sec}
            out["solves"]["converge-all block (previous)"] = {
                "hvps": ha, "wanted": w, "converged": a.converged, "lambda": a.sharpness,
                "residual": float(a.residuals[:w].max()), "seconds": seca}
    return out


def markdown(out: dict) -> str:
    head = ["solver (warm, at θ₁)", "wanted vectors", "HVPs", "HVPs per wanted vector", "converged", "λ₁",
            "residual", "seconds"]
    rows = [[name, r["wanted"], r["hvps"], f"{r['hvps'] / r['wanted']:.1f}", "yes" if r["converged"] else "**no**",
             f"{r['lambda']:.8g}", f"{r['residual']:.1e}", f"{r['seconds']:.0f}"] for name, r in out["solves"].items()]
    v = out["values0"]
    head2 = ["GD step", "wanted (≥ 0.975·2/η)", "critical block: HVPs", "per wanted vector", "converge-all: HVPs",
             "per wanted vector", "converge-all ÷ block", "λ₁ (both)"]
    st = out["steps"]
    rows2 = [[r["step"], r["wanted"], r["hvps"], f"{r['hvps'] / r['wanted']:.1f}", r["base_hvps"],
              f"{r['base_hvps'] / r['wanted']:.1f}", f"{r['base_hvps'] / r['hvps']:.2f}",
              f"{r['lambda']:.8g} / {r['base_lambda']:.8g}"] for r in st]
    h, hb, w = sum(r["hvps"] for r in st), sum(r["base_hvps"] for r in st), sum(r["wanted"] for r in st)
    rows2.append(["all", w, h, f"{h / w:.1f}", hb, f"{hb / w:.1f}", f"{hb / h:.2f}", ""])
    return (f"Paper MLP 3072-200-200-10, {out['n']} random inputs, float64, η = 2.1/S(θ_init) = {out['lr']:.6g}; top "
            f"eigenvalues at θ_init: {', '.join(f'{x:.5g}' for x in v[:6])}{' …' if len(v) > 6 else ''} "
            f"({out['cold']['k_crit']} ≥ {THRESHOLD}·2/η; the cold block took {out['cold']['hvps']} HVPs). One warm "
            f"refresh at θ₁ = θ_init − η∇L to a relative residual of {TOL:g}:\n\n" + table(head, rows)
            + "\n\nAlong GD from θ_init (each block with its own tracker, at the same points):\n\n"
            + table(head2, rows2))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=5000, help="random inputs (default 5000)")
    ap.add_argument("--steps", type=int, default=STEPS, help=f"GD steps of the tracking comparison (default {STEPS})")
    args = ap.parse_args(argv)
    print(markdown(run(args.n, args.steps)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
