"""A near-degenerate edge: the critical block against one eigenvector at a time, on the paper's MLP shape.

The paper's MLP 3072-200-200-10 (swish, float64) on 5,000 random inputs with
random one-hot targets, at its initialization with η = 2.1/S(θ_init) (table
3's "edge by construction": 2/η just below the sharpness).  Its top Hessian
eigenvalues form a tight cluster (λ₂/λ₁ ≈ 0.99), where a block-1 eigen-solver
cannot separate the top pair.  From the eigenpairs at θ_init, one warm
refresh at the next GD iterate θ₁ = θ_init − η∇L, to the same relative
residual (1e-6, at most 100 iterations), by

- **scipy LOBPCG, k = 1** from u(θ_init) (the authors' way);
- **selfstab, k = 1** from u(θ_init) (the single-eigenvalue tracker);
- **selfstab, the critical block** (:func:`~selfstab.processes.block.refresh_block`,
  the central flow's and θ†_k's tracker): every eigenvalue ≥ 0.975·2/η plus a
  guard, warm-started from the block at θ_init.

Printed: HVPs, HVPs per wanted vector, convergence and the top eigenvalue.

    python benchmarks/bench_block.py              # 5,000 inputs (≈ 5 min, one thread)
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


def run(n: int = 5000) -> dict:
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
    block0_tracker = EigenTracker(2, tol=TOL, history=1, max_iter=100, on_fail="warn")
    block0_tracker.seed(first.vectors)
    t, before = time.perf_counter(), obj.counts["hvp"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        block0 = refresh_block(block0_tracker, p0, lr, THRESHOLD)
    cold = {"hvps": obj.counts["hvp"] - before, "seconds": time.perf_counter() - t, "k": int(block0.values.shape[0]),
            "k_crit": critical_count(block0.values, lr, THRESHOLD)}
    say(f"  S = {s0:.6g}, η = {lr:.6g}; block of {cold['k']} ({cold['k_crit']} critical) in {cold['hvps']} HVPs")
    p1 = obj.at(theta0 - lr * p0.grad)
    p1.grad
    u0 = block0.vectors[0]
    out = {"n": n, "lr": lr, "s0": s0, "values0": block0.values.tolist(), "cold": cold, "solves": {}}

    say("  scipy LOBPCG, k = 1 …")
    t = time.perf_counter()
    lam, v, hv, failed = scipy_lobpcg(p1, u0.double().cpu(), s0, tol=TOL, maxiter=100)
    out["solves"]["scipy LOBPCG, k = 1 (authors')"] = {
        "hvps": hv, "wanted": 1, "converged": not failed, "lambda": lam,
        "residual": rel_residual(p1, v.to(theta0), lam), "seconds": time.perf_counter() - t}

    say("  selfstab, k = 1 …")
    tr = EigenTracker(1, tol=TOL, history=1, max_iter=100, on_fail="warn")
    tr.seed(u0.reshape(1, -1))
    t, before = time.perf_counter(), obj.counts["hvp"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        e = tr.refresh(p1)
    out["solves"]["selfstab, k = 1"] = {"hvps": obj.counts["hvp"] - before, "wanted": 1, "converged": e.converged,
                                        "lambda": e.sharpness, "residual": float(e.residuals.max()),
                                        "seconds": time.perf_counter() - t}

    say("  selfstab, the critical block …")
    t, before = time.perf_counter(), obj.counts["hvp"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        b = refresh_block(block0_tracker, p1, lr, THRESHOLD)
    out["solves"]["selfstab, critical block"] = {    # every solve of the refresh (a growing block re-solves)
        "hvps": obj.counts["hvp"] - before, "wanted": int(b.values.shape[0]), "converged": b.converged, "lambda": float(b.values[0]),
        "residual": float(b.residuals.max()), "seconds": time.perf_counter() - t,
        "k_crit": critical_count(b.values, lr, THRESHOLD), "gap": float(b.values[1] / b.values[0])}
    return out


def markdown(out: dict) -> str:
    head = ["solver (warm, at θ₁)", "vectors", "HVPs", "HVPs per vector", "converged", "λ₁", "residual", "seconds"]
    rows = [[name, r["wanted"], r["hvps"], f"{r['hvps'] / r['wanted']:.1f}", "yes" if r["converged"] else "**no**",
             f"{r['lambda']:.8g}", f"{r['residual']:.1e}", f"{r['seconds']:.0f}"] for name, r in out["solves"].items()]
    v = out["values0"]
    return (f"Paper MLP 3072-200-200-10, {out['n']} random inputs, float64, η = 2.1/S(θ_init) = {out['lr']:.6g}; top "
            f"eigenvalues at θ_init: {', '.join(f'{x:.5g}' for x in v[:6])}{' …' if len(v) > 6 else ''} "
            f"({out['cold']['k_crit']} of the block ≥ {THRESHOLD}·2/η; the cold block took {out['cold']['hvps']} "
            f"HVPs). One warm refresh at θ₁ = θ_init − η∇L to a relative residual of {TOL:g}:\n\n" + table(head, rows))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=5000, help="random inputs (default 5000)")
    args = ap.parse_args(argv)
    print(markdown(run(args.n)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
