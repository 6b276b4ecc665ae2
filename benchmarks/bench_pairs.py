"""The central flow's pair vectors ``∇³L(u_i, u_j)``: rows per batched backward in ``Point.d3_pairs`` (CPU).

``Point.d3_pairs`` builds ``Hu_i`` on the gradient's graph once per ``i`` and
then backpropagates ``u_j`` for ``j ≥ i`` through it, several ``j`` in one
``is_grads_batched`` (vmapped) backward.  This times, for a block of ``k``
orthonormal vectors, the cost per pair vector with 1, 2, 4 rows per batch and
a whole row per batch, in marginal HVPs of the same point, timed in rounds
(median); on the paper's MLP shape and on the default job's MLP.  The package
uses ``PAIR_ROWS_CPU`` rows on the CPU (``selfstab/problem/point.py``).

    python benchmarks/bench_pairs.py                 # paper MLP at 5,000 inputs, k = 4 and 8 (≈ 10 min, one thread)
    python benchmarks/bench_pairs.py --n 500         # a smaller paper MLP
"""

from __future__ import annotations

import argparse

import torch

from bench_hvp import round_robin
from common import default_job, paper_mlp, say, table


def per_pair(obj, k: int, rows: tuple[int, ...], reps: int, compare: bool = True) -> dict:
    """HVPs per pair vector of ``d3_pairs`` on a ``k``-block, for each batch size in ``rows`` (``k``: a whole
    row), and (``compare``) the largest difference of the results from the whole-row batches (relative)."""
    from selfstab.problem import point as P
    p = obj.at(obj.theta0)
    p.grad
    U = torch.linalg.qr(torch.randn(obj.dim, k, dtype=obj.dtype, generator=torch.Generator().manual_seed(1))
                        .to(obj.theta0))[0].T.contiguous()
    saved = P.PAIR_ROWS_CPU

    def pairs(r):
        P.PAIR_ROWS_CPU = r
        try:
            return p.d3_pairs(U)
        finally:
            P.PAIR_ROWS_CPU = saved

    diff = float("nan")
    if compare:
        ref = pairs(k)
        diff = max(float((pairs(r) - ref).abs().max() / ref.abs().max()) for r in rows)
    ops = {"hvp": lambda: p.hvp(U[0]), **{r: (lambda r=r: pairs(r)) for r in rows}}
    ms = round_robin(ops, reps=reps, budget_s=5.0, max_reps=10)
    n_pairs = k * (k + 1) // 2
    return {"per_pair": {r: ms[r]["ms"] / n_pairs / ms["hvp"]["ms"] for r in rows}, "hvp_ms": ms["hvp"]["ms"],
            "diff": diff}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=5000, help="random inputs of the paper MLP (default 5000)")
    ap.add_argument("--reps", type=int, default=2, help="timed rounds at least (default 2)")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    from selfstab.problem.point import PAIR_ROWS_CPU
    body = []
    for pb in (paper_mlp("float64", n=a.n), default_job("float64")):
        for k in (4, 8):
            rows = tuple(r for r in (1, 2, 4) if r < k) + (k,)
            say(f"{pb.name}: k = {k} …")
            r = per_pair(pb.objective, k, rows, a.reps)
            whole = r["per_pair"][k]
            body.append([pb.name, k, f"{r['hvp_ms']:.1f}",
                         *[f"{r['per_pair'][x]:.2f}" if x in r["per_pair"] else "–" for x in (1, 2, 4)],
                         f"{whole:.2f}", f"{whole / r['per_pair'][PAIR_ROWS_CPU]:.2f}", f"{r['diff']:.1e}"])
    print(table(["problem", "k", "HVP (ms)", "1 row", "2 rows", "4 rows", "whole row",
                 f"whole ÷ {PAIR_ROWS_CPU} rows", "max rel. difference"], body))
    print(f"\nHVPs per pair vector by rows per batched backward (float64, one thread); the package uses "
          f"{PAIR_ROWS_CPU} on the CPU.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
