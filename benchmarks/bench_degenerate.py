"""A tracked step at a near-degenerate edge, with the critical block (issue 13), against the authors' step.

The paper's MLP 3072-200-200-10 on random inputs at its initialization with
η = 2.1/S(θ_init) (table 3's "edge by construction"): the top Hessian
eigenvalues form a tight cluster (λ₂/λ₁ ≈ 0.99 at 5,000 inputs), several of
them above 2/η from the first step.  That is outside the single-eigenvalue
theory (its projection onto ``S ≤ 2/η`` chases whichever eigenvalue is on
top; table 3's paper-MLP row), so the tracked step here is the
several-eigenvalue lockstep:

- **gd, central** — GD (loss, sharpness ``S(θ_t)``) and the central flow,
  whose critical block is one spectrum-following LOBPCG solve
  (:func:`~selfstab.processes.block.refresh_block`): the several-eigenvalue
  counterpart of the authors' θ† + predicted dynamics;
- **gd, central, kconstrained** (``--kconstrained``) — the same plus the
  k-constrained trajectory θ†_k (the paper's §8.2 conjecture), whose own cost
  is given apart.  GD and the central flow never read θ†_k, so this one
  lockstep also gives `gd, central` (their own cost records), and θ†_k's
  point to measure the authors' solve at (below).

Per step the lockstep's cost records give HVPs, gradients and d3 (a pair
vector ``∇³L(u_i, u_j)`` counts as one d3); they are priced in
HVP-equivalents with this problem's own times at θ_init (marginal HVP,
gradient, ``∇³L(u, u)``; median of rounds, as table 1).  The central flow
takes its pair vectors of a k-block in one batched call
(:meth:`~selfstab.problem.point.Point.d3_pairs`), so a step's pair vectors
are priced at that call's measured time per pair vector for the step's k
(measured after the run for every k it met); with ``--d3-priced`` each is
priced as a lone ``∇³L(u, u)`` instead (an upper bound).

The authors' step is priced as in table 3 — 7 eigen-solves + 8 d3 + 5
gradients — with their solve **measured along the run**: scipy LOBPCG
(k = 1) from the previous point's eigenvector to 1e-6 (and 1e-7), at most 100
iterations.  One of the seven is GD's sharpness, at GD's point; the other six
(the constrained step, its projection iterates, the predicted dynamics) are at
θ† and the points around it, *on the edge*, where the top eigenvalues are
pinned at 2/η.  GD's point leaves the edge within a few steps here
(S(θ_GD)·η/2 ≈ 0.97 from step 4) while the edge does not.  Two points of this
lockstep stand in for θ†: the central flow's θ_cf (the eigenvalues in X's range
pinned at 2/η; all of them a little below it at steps where X = 0) and, with
``--kconstrained``, θ†_k — the projection onto {λ_i ≤ 2/η for the critical i},
as θ† is the projection onto {S ≤ 2/η}, i.e. onto the same set, its active
eigenvalues at exactly 2/η: the closer counterpart.  The six are measured at
θ_cf (and at θ†_k when it runs, from its previous point's top vector), GD's
one at GD's point; the table gives the authors' step with the six at either
point, and with all seven at GD's point.  Those probes run between tracked
steps and are not in our counts.  Every price is measured after the run, at
θ_init, together.

    python benchmarks/bench_degenerate.py                    # 5,000 inputs, 6 steps (≈ 15 min, one thread)
    python benchmarks/bench_degenerate.py --n 5000 --steps 8 --kconstrained --json out.json  # with θ†_k (≈ 1 h)
    python benchmarks/bench_degenerate.py --from-json out.json   # the tables again, from the measurements
    python benchmarks/bench_degenerate.py --n 500 --steps 3  # a smaller, faster version of the same shape
"""

from __future__ import annotations

import argparse
import json
import time
import warnings

import numpy as np

from bench_hvp import round_robin
from bench_pairs import per_pair
from bench_track import THEIR_D3, THEIR_GRADS, THEIR_SOLVES, authors, measure_track
from common import paper_mlp, say, table

ETA_FACTOR = 2.1      # η = 2.1 / S(θ_init), as table 3's paper-MLP row
STEPS = 6
GOAL = 1 / 3          # issue 13: a tracked step ≤ ⅓ of the authors' step in this regime
AT_GD = 1             # of the authors' 7 solves, those at GD's point (its sharpness); the rest are on the edge


def unit_prices(obj, u) -> dict:
    """Milliseconds of one gradient, one marginal HVP and one ``∇³L(u, u)`` at θ_init (a point whose graph
    exists), and each in HVPs."""
    p = obj.at(obj.theta0)
    p.grad
    ops = {"grad": lambda: obj.grad(obj.theta0), "hvp": lambda: p.hvp(u), "d3": lambda: p.d3(u, u)}
    ms = {k: v["ms"] for k, v in round_robin(ops, reps=3, budget_s=10.0, max_reps=8).items()}
    return {**ms, "grad_in_hvps": ms["grad"] / ms["hvp"], "d3_in_hvps": ms["d3"] / ms["hvp"]}


def pair_prices(obj, ks) -> dict:
    """HVPs per pair vector of one :meth:`~selfstab.problem.point.Point.d3_pairs` call on a k-block as the package
    batches it, for each k in ``ks``, timed at θ_init (:func:`bench_pairs.per_pair`)."""
    from selfstab.problem.point import PAIR_ROWS_CPU
    out = {}
    for k in sorted(ks):
        rows = k if obj.theta0.device.type == "cuda" else min(k, PAIR_ROWS_CPU)
        out[k] = per_pair(obj, k, (rows,), reps=2, compare=False)["per_pair"][rows]
    return out


def run(n: int = 5000, steps: int = STEPS, kconstrained: bool = False) -> dict:
    from selfstab.spectrum.eigen import top_eigenpairs
    obj = paper_mlp("float64", n=n).objective
    say(f"paper MLP, {n} inputs: the top pair at θ_init …")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        e = top_eigenpairs(obj.at(obj.theta0).hvp, obj.dim, 2, dtype=obj.dtype, tol=1e-7, on_fail="warn")
    s0, lr = e.sharpness, ETA_FACTOR / e.sharpness
    say(f"  S = {s0:.6g}, λ₂ = {float(e.values[1]):.6g}, η = {lr:.6g}")
    # GD and the central flow never read θ†_k, so with it in the lockstep their trajectories and counts are those of
    # `gd, central` alone, read off by each process's cost records: one lockstep gives both
    names = ("gd", "central", "kconstrained") if kconstrained else ("gd", "central")
    say(f"  tracking {', '.join(names)} for {steps} steps …")
    res = measure_track(obj, obj.theta0, lr, steps, e.vectors[:1], probe_steps=set(range(steps)), processes=list(names))
    # every price after the run, together, so that they are measured in the same conditions
    prices = unit_prices(obj, e.vectors[0])
    say(f"  prices at θ_init: 1 grad = {prices['grad_in_hvps']:.2f} HVP, 1 d3 = {prices['d3_in_hvps']:.2f} HVP")
    ks = {int(r["records"]["central"]["k_crit"]) for r in res["per_step"] if r["records"]["central"].get("pair_refreshes")}
    if ks:
        say(f"  pair-vector prices for k in {sorted(ks)} …")
        prices["pairs_k"] = pair_prices(obj, ks)
    return {"n": n, "lr": lr, "s0": s0, "lambda2": float(e.values[1]), "prices": prices,
            "runs": [{"processes": names, **res}]}


def _pairs_discount(rec: dict, prices: dict) -> float:
    """HVP-eq. to take off a step's d3-priced cost when the central flow's pair vectors are priced at their
    batched call's measured time (``prices["pairs_k"]``; 0 when not measured or none were taken)."""
    c = rec.get("central", {})
    k = int(c.get("k_crit", 0))
    per = prices.get("pairs_k", {}).get(k)
    if per is None or not c.get("pair_refreshes"):
        return 0.0
    return c["pair_refreshes"] * k * (k + 1) // 2 * (prices["d3_in_hvps"] - per)


def _rows(res: dict, prices: dict, d3_priced: bool = False) -> list[dict]:
    g, d = prices["grad_in_hvps"], prices["d3_in_hvps"]
    rows = []
    for r in res["per_step"]:
        probe = res["probes"].get(r["step"], {})
        solve = probe.get("nominal", float("nan"))
        edge = probe.get("edge_nominal", solve)
        rec = r["records"]
        discount = 0.0 if d3_priced else _pairs_discount(rec, prices)
        ours = r["hvps"] + r["grads"] * g + r["d3"] * d - discount
        parts = {}
        for name in res["processes"]:
            c = rec.get(name, {})
            if "cost_hvps" in c:
                parts[name] = c["cost_hvps"] + c["cost_grads"] * g + c["cost_d3s"] * d
        if "central" in parts:
            parts["central"] -= discount
        parts["gd"] = ours - sum(v for k, v in parts.items() if k != "gd")   # GD records no cost of its own
        cen = rec.get("central", {})
        rows.append({"step": r["step"], "ours": ours, "hvps": r["hvps"], "grads": r["grads"], "d3": r["d3"],
                     "parts": parts, "solve": solve, "solve_matched": probe.get("matched", float("nan")),
                     "edge": edge, "theirs_at_gd": authors(solve, g, d),
                     "kc": probe.get("kc_nominal", float("nan")), "kc_failed": bool(probe.get("kc_nominal_failed")),
                     "failed": bool(probe.get("nominal_failed")), "edge_failed": bool(probe.get("edge_nominal_failed")),
                     "theirs": authors(solve, g, d) + (THEIR_SOLVES - AT_GD) * (edge - solve),
                     "theirs_kc": authors(solve, g, d) + (THEIR_SOLVES - AT_GD) * (probe.get("kc_nominal", np.nan) - solve),
                     "ours_gc": parts.get("gd", np.nan) + parts.get("central", np.nan),
                     "S_ratio": r["S_ratio"], "k_crit": cen.get("k_crit"),
                     "x_rank": cen.get("x_rank"), "seconds": r["seconds"],
                     "kc_converged": rec.get("kconstrained", {}).get("proj_converged")})
    return rows


def markdown(out: dict, d3_priced: bool = False) -> str:
    pr = out["prices"]
    pk = pr.get("pairs_k", {})
    pairs = ("each priced as a lone d3 (`--d3-priced`: an upper bound)" if d3_priced or not pk else
             "priced at their batched call's time, per pair vector: " +
             ", ".join(f"k = {k}: {v:.2f} HVP" for k, v in sorted(pk.items())))
    kc = ", and at θ†_k's" if any("kconstrained" in r["processes"] for r in out["runs"]) else ""
    lines = [f"Paper MLP 3072-200-200-10, {out['n']:,} random inputs, float64; S(θ_init) = {out['s0']:.6g}, "
             f"λ₂ = {out['lambda2']:.6g} (λ₂/λ₁ = {out['lambda2'] / out['s0']:.4f}), η = {ETA_FACTOR}/S = "
             f"{out['lr']:.6g}. Prices at θ_init: 1 gradient = {pr['grad_in_hvps']:.2f} HVP, 1 d3 = "
             f"{pr['d3_in_hvps']:.2f} HVP (HVP {pr['hvp']:.0f} ms); the central flow's pair vectors {pairs}. "
             f"Authors' step = {AT_GD} × (their solve at GD's point) + {THEIR_SOLVES - AT_GD} × (their solve on the "
             f"edge, at the central flow's point{kc}) + {THEIR_D3} d3 + {THEIR_GRADS} gradients; beside it, all "
             f"{THEIR_SOLVES} at GD's point.", ""]
    for res in out["runs"]:
        rows = _rows(res, pr, d3_priced)
        lines += (_with_kconstrained if "kconstrained" in res["processes"] else _gd_central)(res, rows)
        capped = sum(r["edge_failed"] + r["failed"] + r["kc_failed"] for r in rows)
        if capped:
            lines += [f"≥: scipy's LOBPCG stopped at its 100 iterations unconverged ({capped} probes); the count "
                      "there is what it spent, a lower bound of what converging would cost.", ""]
    return "\n".join(lines)


def _mean(rows: list[dict], key: str) -> float:
    return float(np.nanmean([r[key] for r in rows]))


def _solves(r: dict) -> list[str]:
    return [f"{'≥ ' * r['failed']}{r['solve']:.0f} / {r['solve_matched']:.0f}", f"{'≥ ' * r['edge_failed']}{r['edge']:.0f}"]


def _head(res: dict, names) -> str:
    i = res["init"]
    return (f"**{', '.join(names)}** ({res['steps']} steps; building the lockstep: {i['hvps']} HVPs, "
            f"{i['grads']} grads, {i['d3']} d3, {i['seconds']:.0f} s).")


def _verdict(ours: float, theirs: float) -> str:
    return f"{'met' if ours / theirs <= GOAL else '**not met**'} ({ours:.1f} vs {theirs:.0f}: {ours / theirs:.2f}×)"


def _gd_central(res: dict, rows: list[dict]) -> list[str]:
    """The `gd, central` lockstep: ours against the authors' step with six solves at the central flow's point."""
    names = res["processes"]
    head = ["step", "S(θ_GD)·η/2", "k_crit / rank X", "HVPs", "grads", "d3", "ours (HVP-eq.)",
            *[f"of which {n}" for n in names], "authors' solve at GD (1e-6 / 1e-7)", "on the edge (1e-6)",
            "authors' step (HVP-eq.)", "ours ÷ authors'", "all 7 at GD: authors' step", "ours ÷ that", "s"]
    body = [[r["step"], f"{r['S_ratio']:.4f}", _kc(r), r["hvps"], r["grads"], r["d3"], f"{r['ours']:.1f}",
             *[f"{r['parts'].get(n, float('nan')):.1f}" for n in names], *_solves(r), f"{r['theirs']:.0f}",
             f"{r['ours'] / r['theirs']:.2f}", f"{r['theirs_at_gd']:.0f}", f"{r['ours'] / r['theirs_at_gd']:.2f}",
             f"{r['seconds']:.0f}"] for r in rows]
    ours, theirs, at_gd = _mean(rows, "ours"), _mean(rows, "theirs"), _mean(rows, "theirs_at_gd")
    body.append(["mean", "", "", f"{_mean(rows, 'hvps'):.1f}", f"{_mean(rows, 'grads'):.1f}", f"{_mean(rows, 'd3'):.1f}",
                 f"{ours:.1f}", *[f"{np.nanmean([r['parts'].get(n, np.nan) for r in rows]):.1f}" for n in names],
                 f"{_mean(rows, 'solve'):.1f} / {_mean(rows, 'solve_matched'):.1f}", f"{_mean(rows, 'edge'):.1f}",
                 f"{theirs:.0f}", f"**{ours / theirs:.2f}**", f"{at_gd:.0f}", f"{ours / at_gd:.2f}", ""])
    res["summary"] = {"ours": ours, "theirs": theirs, "ratio": ours / theirs, "met": ours / theirs <= GOAL,
                      "theirs_at_gd": at_gd}
    return [f"{_head(res, names)} Goal ≤ ⅓ of the authors' step: {_verdict(ours, theirs)}; with all seven of their "
            f"solves at GD's point: {ours / at_gd:.2f}× ({at_gd:.0f}).", "", table(head, body), ""]


def _with_kconstrained(res: dict, rows: list[dict]) -> list[str]:
    """The lockstep with θ†_k: `gd, central` read off it (their own costs) against the authors' step with six
    solves at the central flow's point and at θ†_k's, and the whole lockstep."""
    head = ["step", "S(θ_GD)·η/2", "k_crit / rank X", "HVPs", "grads", "d3", "of which gd", "of which central",
            "of which kconstrained", "gd + central (HVP-eq.)", "authors' solve at GD (1e-6 / 1e-7)",
            "at θ_cf (1e-6)", "at θ†_k (1e-6)", "authors' step: six at θ_cf", "six at θ†_k",
            "gd + central ÷ authors' (θ_cf / θ†_k)", "whole ÷ authors' (θ†_k)", "s"]
    body = [[r["step"], f"{r['S_ratio']:.4f}", _kc(r), r["hvps"], r["grads"], r["d3"],
             *[f"{r['parts'].get(n, float('nan')):.1f}" for n in ("gd", "central", "kconstrained")],
             f"{r['ours_gc']:.1f}", *_solves(r), f"{'≥ ' * r['kc_failed']}{r['kc']:.0f}", f"{r['theirs']:.0f}",
             f"{r['theirs_kc']:.0f}", f"{r['ours_gc'] / r['theirs']:.2f} / {r['ours_gc'] / r['theirs_kc']:.2f}",
             f"{r['ours'] / r['theirs_kc']:.2f}", f"{r['seconds']:.0f}"] for r in rows]
    m = {k: _mean(rows, k) for k in ("ours", "ours_gc", "theirs", "theirs_kc", "solve", "solve_matched", "edge", "kc")}
    body.append(["mean", "", "", f"{_mean(rows, 'hvps'):.1f}", f"{_mean(rows, 'grads'):.1f}", f"{_mean(rows, 'd3'):.1f}",
                 *[f"{np.nanmean([r['parts'].get(n, np.nan) for r in rows]):.1f}" for n in ("gd", "central", "kconstrained")],
                 f"{m['ours_gc']:.1f}", f"{m['solve']:.1f} / {m['solve_matched']:.1f}", f"{m['edge']:.1f}",
                 f"{m['kc']:.1f}", f"{m['theirs']:.0f}", f"{m['theirs_kc']:.0f}",
                 f"**{m['ours_gc'] / m['theirs']:.2f} / {m['ours_gc'] / m['theirs_kc']:.2f}**",
                 f"{m['ours'] / m['theirs_kc']:.2f}", ""])
    res["summary"] = {"ours": m["ours_gc"], "theirs": m["theirs"], "theirs_kc": m["theirs_kc"],
                      "ratio": m["ours_gc"] / m["theirs"], "ratio_kc": m["ours_gc"] / m["theirs_kc"]}
    conv = [r["kc_converged"] for r in rows if r["kc_converged"] is not None]
    return [f"{_head(res, res['processes'])} `gd, central` (GD and the central flow never read θ†_k, so these are "
            f"their counts without it too), goal ≤ ⅓ of the authors' step — with their six edge solves at the "
            f"central flow's point: {_verdict(m['ours_gc'], m['theirs'])}; at θ†_k's point: "
            f"{_verdict(m['ours_gc'], m['theirs_kc'])}; with all seven at GD's point: "
            f"{_verdict(m['ours_gc'], _mean(rows, 'theirs_at_gd'))}. The whole lockstep with θ†_k: {m['ours']:.1f} "
            f"({m['ours'] / m['theirs_kc']:.2f}× the authors' step with the six at θ†_k).", "", table(head, body), "",
            f"θ†_k's projections converged at {int(sum(conv))} of {len(conv)} steps.", ""]


def _kc(r: dict) -> str:
    return "–" if r["k_crit"] is None else f"{r['k_crit']:.0f} / {r['x_rank']:.0f}"


def _int_keys(d: dict) -> dict:
    """JSON writes the probes' steps and the pair prices' k as strings: read them back as ints."""
    return {int(k) if isinstance(k, str) and k.isdigit() else k: v for k, v in d.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=5000, help="random inputs (default 5000)")
    ap.add_argument("--steps", type=int, default=STEPS, help=f"tracked GD steps (default {STEPS})")
    ap.add_argument("--kconstrained", action="store_true", help="also track θ†_k (expensive here)")
    ap.add_argument("--d3-priced", action="store_true", help="price each pair vector as a lone d3 (an upper bound)")
    ap.add_argument("--json", help="also write the raw measurements here (to re-render the tables: --from-json)")
    ap.add_argument("--from-json", help="render the tables from a file written by --json instead of measuring")
    a = ap.parse_args(argv)
    t = time.perf_counter()
    if a.from_json:
        with open(a.from_json) as f:
            out = json.load(f, object_hook=_int_keys)
    else:
        out = run(a.n, a.steps, a.kconstrained)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, default=float)
    print(markdown(out, a.d3_priced))
    say(f"total {time.perf_counter() - t:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
