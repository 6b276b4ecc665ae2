"""Table 3: the cost of one tracked step (issue 6), against the paper's authors' code.

``track(obj, θ₀, η, steps, warm=...)`` with the default :class:`~selfstab.config.TrackConfig`
(GD, constrained trajectory, predicted + generalized dynamics, gradient flow,
Appendix E diagnostics every 25 steps).  Per step the lockstep records the
HVPs, gradients (plain ones and the graph builds of new points) and
third-derivative products (``d3``; the diagnostics' ``∇⁴L`` products are
counted there too) it spent, and its seconds.  The cost of building the
lockstep (the projection of θ₀ onto M) is reported apart.

HVP-equivalents use table 1's float64 times at a point: one gradient =
``grad/hvp`` HVPs, one ``d3`` = ``d3/hvp`` HVPs (marginal HVP and marginal
``d3``).  The authors' code, per step: about 7 eigen-solves (LOBPCG from the
previous vector to the same tolerance; each costs table 2 (iv)'s mean HVPs),
8 third-derivative evaluations and a few gradients — counted here as 5 (GD,
the constrained step, three projection steps).

Two problems: the default job from its edge θ₀, and the paper's MLP shape
"at the edge by construction": from the initialization with η chosen so that
``2/η`` is just below the initial sharpness, i.e. θ_init is already past the
edge.  There, the top Hessian eigenvalues form a tight cluster (10 one-hot
outputs), so λ₂ ≥ 1.9/η from the start and the default stop rule
(``stop_lambda2 = 1.9``) would end tracking after one step; it is raised
(``stop_lambda2 = 1e9``) so that the steps are taken.  Everything else is
default.  (The brief wrote η = 1.9/S(θ_init); that gives 2/η = 1.05·S, above
the sharpness, so θ_init would not be past the edge.  η = 2.1/S(θ_init), i.e.
2/η = S/1.05, is what its words — "2/η just below the initial sharpness" —
ask for.)
"""

from __future__ import annotations

import time
import warnings

import numpy as np

from common import DEFAULT_LR, paper_mlp, say, table

THEIR_SOLVES, THEIR_D3, THEIR_GRADS = 7, 8, 5
PAPER_ETA_FACTOR = 2.1      # η = 2.1 / S(θ_init): 2/η = S/1.05, just below the initial sharpness
PAPER_STEPS = 2             # tracked steps on the paper MLP (the brief asks 5; ~3–5 min each there: see below)


def process_trackers(ls) -> dict:
    """The eigen-trackers of a lockstep's processes by name (``constrained`` has two: its first solve and its
    correctors), for the HVPs each one spends."""
    out = {}
    for p in ls.processes:
        if hasattr(p, "trackers"):
            out[p.name] = p.trackers[0]
            for i, tr in enumerate(p.trackers[1:]):
                out[f"{p.name}_corrector" if i == 0 else f"{p.name}_{i + 1}"] = tr
        elif hasattr(p, "tracker"):
            out[p.name] = p.tracker
    return out


def _has(ls, name: str) -> bool:
    return any(p.name == name for p in ls.processes)


def _edge_vector(ls) -> tuple | None:
    """θ†_k's current top eigenpair ``(u, λ)``, when θ†_k is in the lockstep (the next probe's start)."""
    if not _has(ls, "kconstrained"):
        return None
    g = ls.get("kconstrained").geometry
    return g.eig.vectors[0], float(g.eig.values[0])


def _authors_solve(ls, previous: tuple | None = None) -> dict:
    """The authors' way at the lockstep's current GD point θ_{t+1}: scipy LOBPCG from u(θ_t) (the GD tracker's
    last vector), at 1e-6 and at 1e-7.  With a central flow in the lockstep, the same at its point θ_cf,t+1 from
    its previous top vector, at 1e-6 (``edge_nominal``): a point on the edge, where the authors' θ† and its
    projection iterates are; with θ†_k, also at its point (``kc_nominal``; ``previous``: :func:`_edge_vector`
    at the step before), θ† itself where several eigenvalues are above 2/η.  Outside the lockstep's step, so its
    HVPs are not in the cost records."""
    from bench_eigen import scipy_lobpcg
    gd = ls.get("gd")
    where = [("", gd.theta, (gd.tracker.last.u, gd.tracker.last.sharpness), (("nominal", 1e-6), ("matched", 1e-7)))]
    if _has(ls, "central"):
        cf = ls.get("central")
        where.append(("edge_", cf.theta, (cf.tracker.last.u, cf.tracker.last.sharpness), (("nominal", 1e-6),)))
    if previous is not None and _has(ls, "kconstrained"):    # θ†_k's point from its previous point's top vector
        where.append(("kc_", ls.get("kconstrained").geometry.theta, previous, (("nominal", 1e-6),)))
    out = {}
    for prefix, theta, (u, s), tols in where:
        p = ls.objective.at(theta)
        p.grad
        for label, tol in tols:
            _, _, n, failed = scipy_lobpcg(p, u.double().cpu(), s, tol=tol, maxiter=100)
            out[prefix + label] = n
            out[f"{prefix}{label}_failed"] = failed
    return out


def _track(obj, theta0, lr, steps, warm, probe_steps=(), processes=None, **options) -> dict:
    """``track()`` with the default processes and options (plus ``options``) on a lockstep built here, so that the
    cost of building it (the projection of θ₀) and the HVPs of each eigen-solver (per tracked process) can be
    told apart."""
    from selfstab.processes.lockstep import Lockstep, default_processes, default_stop_rules, track
    rule_options = {k: options.pop(k) for k in ("stop_lambda2", "lambda2_rule") if k in options}
    per_step = []
    probes = {}

    def on_records(step, rec):
        if step in probe_steps:
            probes[step] = _authors_solve(ls, edge[0])
        edge[0] = _edge_vector(ls)
        per_step.append({"step": step, **rec["cost"], "diagnostics": "diagnostics" in rec,
                         "proj_steps": rec.get("constrained", rec.get("kconstrained", {})).get("proj_steps", float("nan")),
                         "flow_nfev": rec.get("flow", {}).get("nfev", float("nan")),
                         "S": rec["gd"]["sharpness"], "lambda2": rec.get("diagnostics", {}).get("lambda2"),
                         "k_crit": rec.get("kconstrained", rec.get("central", {})).get("k_crit", float("nan")),
                         "S_ratio": rec["gd"]["sharpness"] * lr / 2,
                         "records": {k: dict(rec[k]) for k in ("central", "kconstrained") if k in rec}})
        say(f"    step {step}: {rec['cost']}")

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        counts0 = dict(obj.counts)
        t = time.perf_counter()
        procs = default_processes(processes, **options)
        names = [p.name for p in procs]
        ls = Lockstep(obj, lr, procs, stop_rules=default_stop_rules(**rule_options, processes=names))
        ls.start(theta0, warm)
        edge = [_edge_vector(ls)]
        init_seconds = time.perf_counter() - t
        init = {"hvps": obj.counts["hvp"] - counts0.get("hvp", 0), "grads": obj.counts["grad"] - counts0.get("grad", 0),
                "d3": obj.counts["d3"] + obj.counts["d4"] - counts0.get("d3", 0) - counts0.get("d4", 0),
                "seconds": init_seconds}
        trackers = process_trackers(ls)
        solver0 = {k: (tr.hvps, tr.calls) for k, tr in trackers.items()}
        t = time.perf_counter()
        res = track(obj, None, lr, steps - 1, lockstep=ls, on_records=on_records)
        profile = None
        if ls.stop_reason is None:   # the last step under cProfile, for the breakdown of its wall time
            import cProfile
            prof = cProfile.Profile()
            prof.enable()
            res = track(obj, None, lr, steps, lockstep=ls, on_records=on_records)
            prof.disable()
            profile = breakdown(prof, per_step[-1]["seconds"])
        seconds = time.perf_counter() - t
    n = max(1, ls.t)
    solvers = {k: {"hvps": (tr.hvps - solver0[k][0]) / n, "calls": (tr.calls - solver0[k][1]) / n}
               for k, tr in trackers.items()}
    last = ls.get("constrained") if "constrained" in names else ls.get("kconstrained") if "kconstrained" in names else None
    return {"per_step": per_step, "init": init, "stop_reason": res.stop_reason,
            "steps": ls.t, "seconds": seconds, "solvers": solvers, "profile": profile,
            "proj_last": last.proj["proj_steps"] if last is not None else float("nan"), "probes": probes,
            "processes": names}


def projection_steps(res: dict) -> list[float]:
    """Linearized projection steps taken *during* each tracked step.

    A step's record holds the count of the projection that produced its θ†_t (done in the step before, or when
    the lockstep was built), so the count of step t's own projection is in record t+1 (the last: in the state).
    """
    rows = res["per_step"]
    return [r["proj_steps"] for r in rows[1:]] + [res.get("proj_last", float("nan"))]


def breakdown(prof, step_seconds: float) -> dict:
    """Where one tracked step's wall time went, from cumulative cProfile times of selfstab's functions."""
    import pstats
    st = pstats.Stats(prof).stats

    def cum(path_end: str, func: str) -> float:
        return sum(v[3] for (f, _, fn), v in st.items() if f.replace("\\", "/").endswith(path_end) and fn == func)

    total = cum("processes/lockstep.py", "step")
    eig = cum("spectrum/eigen.py", "top_eigenpairs")
    hvp = cum("problem/objective.py", "hvp")
    d3 = cum("problem/objective.py", "d3") + cum("problem/objective.py", "d4")
    flow = cum("processes/flow.py", "advance")
    return {"total": total, "eigen-solves": eig, "HVPs (incl. graph builds on first use)": hvp, "eigen-solver's own work": max(0.0, eig - hvp),
            "d3/d4": d3, "gradient flow (incl. its gradients)": flow,
            "rest (gradients and graph builds, projections, records)": max(0.0, total - eig - d3 - flow
                                                                           - max(0.0, hvp - eig)),
            "profiled_step_seconds": step_seconds}


WINDOW = 200          # steps per window of the default job's breakdown
PROBES = 10           # authors' solves measured (consecutive GD steps) at the start of each window's second half


def run_default(edge: dict, quick: bool = False) -> dict:
    from selfstab.config import TrackConfig
    steps = 40 if quick else TrackConfig().steps
    window = 20 if quick else WINDOW
    probe_steps = {w + window // 2 + i for w in range(0, steps, window) for i in range(PROBES if not quick else 3)}
    obj = edge["problem"].objective
    say(f"table 3: tracking the default job for {steps} steps (the whole default window) ...")
    out = _track(obj, edge["theta0"].to(obj.theta0), DEFAULT_LR, steps, edge["warm"], probe_steps=probe_steps)
    out["window"] = window
    out.update(name="default job (MLP width 64, digits), from the edge θ₀", short="default job",
               lr=DEFAULT_LR, key=("b", "float64"))
    return out


def regime_solve(obj, theta, u, lr: float, s: float) -> dict:
    """One warm refresh at the next GD iterate ``θ − η∇L(θ)`` from ``u``, to a 1e-6 relative residual, with
    maxiter 100: scipy LOBPCG (the authors' way, table 2 (iv)) and selfstab's solver (history 1 = the same start)."""
    from bench_eigen import TOL, rel_residual, scipy_lobpcg
    from selfstab.spectrum import EigenTracker
    p = obj.at(theta - lr * obj.grad(theta))
    p.grad
    out = {}
    t = time.perf_counter()
    lam, v, n, failed = scipy_lobpcg(p, u.double(), s, tol=TOL, maxiter=100)
    out["scipy lobpcg"] = {"hvps": n, "converged": not failed, "residual": rel_residual(p, v.to(obj.theta0), lam),
                           "lambda": lam, "seconds": time.perf_counter() - t}
    tr = EigenTracker(1, tol=TOL, history=1, max_iter=100, on_fail="warn")
    tr.seed(u.reshape(1, -1).to(obj.theta0))
    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        e = tr.refresh(p)
    out["selfstab"] = {"hvps": e.hvps, "converged": e.converged, "residual": float(e.residuals.max()),
                       "lambda": e.sharpness, "seconds": time.perf_counter() - t}
    return out


def run_paper(quick: bool = False, n: int | None = None, steps: int | None = None) -> dict:
    from selfstab.spectrum.eigen import top_eigenpairs
    steps = steps or PAPER_STEPS
    n = n or (200 if quick else 5000)
    pb = paper_mlp("float64", n=n)
    obj = pb.objective
    say(f"table 3: paper MLP ({n} inputs): sharpness at initialization ...")
    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        e = top_eigenpairs(obj.at(obj.theta0).hvp, obj.dim, 2, dtype=obj.dtype, tol=1e-7, on_fail="warn")
    s_init, s_seconds = e.sharpness, time.perf_counter() - t
    lr = PAPER_ETA_FACTOR / s_init
    say(f"  S(θ_init) = {s_init:.6g}, λ₂ = {float(e.values[1]):.6g} ({e.hvps} HVPs, {s_seconds:.0f} s); η = {lr:.6g}")
    say("  one warm refresh at θ_1 by scipy LOBPCG and by selfstab (maxiter 100) ...")
    solve = regime_solve(obj, obj.theta0, e.vectors[0], lr, s_init)
    say(f"  {solve}; tracking {steps} steps ...")
    out = _track(obj, obj.theta0, lr, steps, e.vectors[:1], stop_lambda2=1e9)
    out.update(name=f"paper MLP 3072-200-200-10, {n} random inputs, edge by construction", short="paper MLP",
               lr=lr, s_init=s_init, lambda2_init=float(e.values[1]), key=("a", "float64"), n=n, solve=solve)
    return out


def _nanmean(xs) -> float:
    xs = [x for x in xs if x == x]
    return float(np.mean(xs)) if xs else float("nan")


def authors(solve_hvps: float, g: float, d: float) -> float:
    return THEIR_SOLVES * solve_hvps + THEIR_D3 * d + THEIR_GRADS * g


def hvp_equivalents(res: dict, unit: dict, lob: dict) -> dict:
    """Mean per-step counts (all steps, steps without / with the diagnostics) in HVP-equivalents, and the authors'.

    ``lob``: table 2's mean HVPs of a warm scipy LOBPCG refresh, ``{"nominal": at 1e-6, "matched": at 1e-7}``.
    """
    g = unit["grad"] / unit["hvp (marginal)"]
    d = unit["d3(u,u) (marginal)"] / unit["hvp (marginal)"]
    rows = [{**r, "proj_steps": p} for r, p in zip(res["per_step"], projection_steps(res))]
    out = {"grad_in_hvps": g, "d3_in_hvps": d, "hvp_ms": unit["hvp (marginal)"] * unit["_grad_ms"],
           "grad_ms": unit["_grad_ms"], "d3_ms": unit["d3(u,u) (marginal)"] * unit["_grad_ms"],
           "theirs": authors(lob["nominal"], g, d), "theirs_matched": authors(lob["matched"], g, d)}
    if "solve" in res:
        out["theirs_regime"] = authors(res["solve"]["scipy lobpcg"]["hvps"], g, d)
    for label, sel in (("all", rows), ("plain", [r for r in rows if not r["diagnostics"]]),
                       ("diag", [r for r in rows if r["diagnostics"]])):
        if not sel:
            out[label] = None
            continue
        h = float(np.mean([r["hvps"] for r in sel]))
        gr = float(np.mean([r["grads"] for r in sel]))
        d3 = float(np.mean([r["d3"] for r in sel]))
        sec = float(np.mean([r["seconds"] for r in sel]))
        eq = h + gr * g + d3 * d
        est = (h * out["hvp_ms"] + gr * out["grad_ms"] + d3 * out["d3_ms"]) / 1e3
        out[label] = {"n": len(sel), "hvps": h, "grads": gr, "d3": d3, "seconds": sec, "equiv": eq,
                      "ratio": out["theirs"] / eq, "ratio_matched": out["theirs_matched"] / eq, "est_seconds": est,
                      "proj_steps": _nanmean([r["proj_steps"] for r in sel]),
                      "flow_nfev": _nanmean([r["flow_nfev"] for r in sel])}
        if "theirs_regime" in out:
            out[label]["ratio_regime"] = out["theirs_regime"] / eq
    return out


def windows(res: dict, unit: dict) -> list[dict]:
    """The default job's tracked window in slices: our HVP-equivalents per step (all steps, and without the
    diagnostics) beside the authors' cost with their eigen-solves measured *in the same slice* (probes)."""
    if "window" not in res:
        return []
    g = unit["grad"] / unit["hvp (marginal)"]
    d = unit["d3(u,u) (marginal)"] / unit["hvp (marginal)"]
    w = res["window"]
    out = []
    for a in range(0, res["steps"], w):
        rows = [r for r in res["per_step"] if a <= r["step"] < a + w]
        if not rows:
            continue
        plain = [r for r in rows if not r["diagnostics"]] or rows

        def eq(sel):
            return float(np.mean([r["hvps"] + r["grads"] * g + r["d3"] * d for r in sel]))
        probes = [v for k, v in res["probes"].items() if a <= k < a + w]
        row = {"from": a, "to": a + len(rows), "all": eq(rows), "plain": eq(plain),
               "hvps": float(np.mean([r["hvps"] for r in plain])), "grads": float(np.mean([r["grads"] for r in plain])),
               "d3": float(np.mean([r["d3"] for r in plain])), "probes": len(probes)}
        for label in ("nominal", "matched"):
            solve = float(np.mean([pr[label] for pr in probes])) if probes else float("nan")
            row[f"solve_{label}"] = solve
            row[f"theirs_{label}"] = authors(solve, g, d)
        out.append(row)
    return out


def windows_markdown(res: dict, unit: dict, lob: dict) -> str:
    rows = windows(res, unit)
    if not rows:
        return ""
    res["windows"] = rows
    g = unit["grad"] / unit["hvp (marginal)"]
    d = unit["d3(u,u) (marginal)"] / unit["hvp (marginal)"]
    nominal = authors(lob["nominal"], g, d)
    body = []
    for r in rows:
        body.append([f"{r['from']}–{r['to'] - 1}", f"{r['hvps']:.1f}", f"{r['grads']:.1f}", f"{r['d3']:.1f}",
                     f"{r['plain']:.1f}", f"{r['all']:.1f}", f"{nominal / r['plain']:.2f}", f"{nominal / r['all']:.2f}",
                     f"{r['solve_nominal']:.1f} / {r['solve_matched']:.1f}",
                     f"{r['theirs_nominal']:.0f} / {r['theirs_matched']:.0f}",
                     f"{r['theirs_nominal'] / r['all']:.2f} / {r['theirs_matched'] / r['all']:.2f}"])
    head = ["steps", "HVPs / step (no diag.)", "grads", "d3", "ours, no diag. (HVP-eq.)",
            "ours, all steps (diagnostics amortized)", f"authors' nominal {nominal:.1f} ÷ ours, no diag.",
            "… ÷ ours, all steps", "authors' solve measured here (HVPs, 1e-6 / 1e-7)",
            "authors' step with it (HVP-eq.)", "authors' ÷ ours (all steps), 1e-6 / 1e-7"]
    return "\n".join([
        f"**{res['short']}, window by window** ({res['window']} steps each). The authors' solve is measured in "
        f"each window: scipy LOBPCG at {PROBES} consecutive GD points θ_(t+1) from the previous point's "
        "eigenvector (their warm start), at 1e-6 and 1e-7; their step is then 7 such solves + 8 d3 + 5 grads. "
        "Those probes run between tracked steps and are not in our counts.",
        "", table(head, body), ""])


def markdown(results: list[dict], units: dict, lob: dict) -> str:
    lines = []
    rows = []
    for res in results:
        eq = hvp_equivalents(res, units[res["key"]], lob)
        res["equiv"] = eq
        for label, text in (("all", "all"), ("plain", "without diagnostics"), ("diag", "diagnostics (every 25th)")):
            m = eq[label]
            if m is None:
                continue
            goal = "yes" if m["ratio"] >= 3 else "**no**"
            rows.append([res["short"], f"{text} (n={m['n']})", f"{m['hvps']:.1f}", f"{m['grads']:.1f}",
                         f"{m['d3']:.1f}", f"{m['proj_steps']:.1f}", f"{m['flow_nfev']:.1f}",
                         f"{m['equiv']:.1f}", f"{eq['theirs']:.1f}", f"{m['ratio']:.2f}", goal,
                         f"{eq['theirs_matched']:.1f}", f"{m['ratio_matched']:.2f}",
                         f"{m['seconds']:.3g}", f"{m['est_seconds']:.3g}"])
    head = ["problem", "steps", "HVPs / step", "grads / step", "d3 / step", "projection steps", "flow nfev",
            "ours (HVP-eq.)", "authors' (HVP-eq., (iv) at 1e-6)", "authors' ÷ ours", "≥ 3× fewer?",
            "authors' at 1e-7", "authors' ÷ ours at 1e-7", "s / step (measured)", "s / step in HVP+grad+d3 (est.)"]
    lines.append(table(head, rows))
    lines.append("")
    for res in results:
        text = windows_markdown(res, units[res["key"]], lob)
        if text:
            lines.append(text)
    for res in results:
        eq = res["equiv"]
        i = res["init"]
        extra = ""
        if "s_init" in res:
            extra = (f" S(θ_init) = {res['s_init']:.6g}, λ₂(θ_init) = {res['lambda2_init']:.6g} "
                     f"(λ₂/λ₁ = {res['lambda2_init'] / res['s_init']:.4f}), η = {PAPER_ETA_FACTOR:g}/S = "
                     f"{res['lr']:.6g}, 2/η = {2 / res['lr']:.6g};")
        lam2 = [r["lambda2"] for r in res["per_step"] if r["lambda2"] is not None]
        lam2_text = ", ".join(f"{x * res['lr'] / 2:.3f}" for x in lam2)
        lam2s = f" λ₂(θ†)·η/2 at the diagnostics steps: {lam2_text};" if lam2 else ""
        solvers = "; ".join(f"{k} {v['calls']:.2f} solves, {v['hvps']:.1f} HVPs"
                            f" ({v['hvps'] / v['calls']:.1f} per solve)" if v["calls"] else f"{k} none"
                            for k, v in res["solvers"].items())
        lines.append(
            f"- **{res['name']}**:{extra}{lam2s} {res['steps']} steps tracked ({res['stop_reason']}). "
            f"1 gradient = {eq['grad_in_hvps']:.2f} HVP, 1 d3 = {eq['d3_in_hvps']:.2f} HVP (table 1, float64, at a "
            f"point). Authors' = {THEIR_SOLVES} × {lob['nominal']:.2f} + {THEIR_D3} × {eq['d3_in_hvps']:.2f} + "
            f"{THEIR_GRADS} × {eq['grad_in_hvps']:.2f} = {eq['theirs']:.1f} HVP-eq. (with (iv) at the tracking "
            f"tolerance 1e-7, {lob['matched']:.2f} HVPs per solve: {eq['theirs_matched']:.1f}). "
            f"Eigen-solver HVPs per tracked step, by process: {solvers}. Building the lockstep (projecting θ₀): "
            f"{i['hvps']} HVPs, {i['grads']} grads, {i['d3']} d3, {i['seconds']:.1f} s; tracking "
            f"{res['seconds']:.0f} s.")
        if res.get("profile"):
            pr = res["profile"]
            parts = ", ".join(f"{k} {v:.2f} s ({100 * v / pr['total']:.0f}%)" for k, v in pr.items()
                              if k not in ("total", "profiled_step_seconds"))
            lines.append(f"  - Wall time of the last tracked step under cProfile ({pr['total']:.2f} s): {parts}. "
                         f"(HVPs are mostly inside the eigen-solves; the solver's own work is its dense "
                         f"linear algebra on (m, d) blocks.)")
        if "solve" in res:
            sv = res["solve"]
            a, b = sv["scipy lobpcg"], sv["selfstab"]
            m = eq["plain"] or eq["all"]
            lines.append(
                f"  - In this regime one warm refresh at θ₁ = θ_init − η∇L (from u(θ_init), to 1e-6, at most 100 "
                f"iterations) costs scipy LOBPCG {a['hvps']} HVPs ({'converged' if a['converged'] else 'did not converge'}, "
                f"residual {a['residual']:.1e}, {a['seconds']:.0f} s) and selfstab's solver {b['hvps']} HVPs "
                f"({'converged' if b['converged'] else 'did not converge'}, residual {b['residual']:.1e}, "
                f"{b['seconds']:.0f} s). With that solve the authors' step costs ≈ {THEIR_SOLVES} × {a['hvps']} + … = "
                f"{eq['theirs_regime']:.0f} HVP-eq., i.e. {m['ratio_regime']:.2f}× ours (steps without diagnostics).")
    return "\n".join(lines)
