"""selfstab's benchmarks in one command: ``python benchmarks/run.py [--quick]``.

Prints the markdown tables (HVP vs gradient; warm-started sharpness refresh
along GD at the edge; cost of a tracked step against the paper's authors'
code; table 4, the data-parallel objective on 1 process and 2 gloo ranks,
``bench_distributed.py``; table 5, the command line's startup time against
the main before its lazy dispatch, ``bench_startup.py``) and writes them, with a summary, the date, the machine and the command,
to ``benchmarks/RESULTS.md`` (``--quick``: smaller sizes, about 1–2 minutes
once the edge is cached, written to ``benchmarks/.cache/RESULTS-quick.md`` so
that the full results are not overwritten; ``--out`` chooses another file).

The default job's edge θ₀ (GD from initialization, ~2,400 steps) is cached in
``benchmarks/.cache/``; the first run computes it (~40 s).

Every benchmark runs with ``torch.set_num_threads(1)``.  The machine may be
shared: trust the ratios measured within one run more than absolute times.
"""

from __future__ import annotations

import argparse
import pickle
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402  (sets the thread count before anything else runs)
import bench_eigen  # noqa: E402
import bench_hvp  # noqa: E402
import bench_track  # noqa: E402
import bench_distributed  # noqa: E402
import bench_startup  # noqa: E402
from common import HERE, machine_info, machine_lines, say  # noqa: E402

# the hand-maintained section of RESULTS.md (figures behind design choices), kept when the file is rewritten
KEEP_SECTION = "## Measurements behind the design choices"


def summary_paragraph(t1: dict, ratios: dict, t2: dict, t3: list[dict], quick: bool) -> str:
    def r(label, dtype, row):
        return ratios[(label, dtype)][row]
    parts = []
    hv = []
    for label in ("a", "b"):
        for dt in ("float32", "float64"):
            hv.append(f"({label}) {dt}: plain {r(label, dt, 'hvp (plain)'):.2f}×, at a point "
                      f"{r(label, dt, 'hvp (marginal)'):.2f}×, d3 {r(label, dt, 'd3(u,u) (marginal)'):.1f}×")
    plain_ok = all(r(lab, dt, "hvp (plain)") <= 2 for lab in "ab" for dt in ("float32", "float64"))
    n_plain = sum(r(lab, dt, "hvp (plain)") <= 2 for lab in "ab" for dt in ("float32", "float64"))
    marg_ok = all(r(lab, dt, "hvp (marginal)") <= 2 for lab in "ab" for dt in ("float32", "float64"))
    parts.append(
        "**HVP vs gradient (table 1)** — time of one HVP ÷ one gradient: " + "; ".join(hv) + ". "
        f"Goal HVP ≤ 2× gradient: the HVP at a point (what an eigen-solver pays per iteration) "
        f"{'meets it in every case' if marg_ok else '**misses it in some cases**'}; the plain HVP (graph "
        f"built for one product) {'meets it too' if plain_ok else f'**meets it in {n_plain} of 4 cases only**'} "
        f"— its extra cost is the graph build, paid once per point.")
    s2 = bench_eigen.summary(t2)
    ours = s2[bench_eigen.OURS]
    hv2 = "; ".join(f"{n}: {m['mean_hvps']:.2f} mean / {m['max_hvps']} max, max eigenvalue error "
                    f"{m['max_err']:.0e}" for n, m in s2.items() if m["tol"] == bench_eigen.TOL)
    parts.append(
        f"**Sharpness refresh along GD at the edge (table 2, {t2['steps']} steps)** — HVPs per refresh to a "
        f"1e-6 relative residual: {hv2}. Goal ≤ 4 HVPs on average: "
        f"{'met' if ours['mean_hvps'] <= 4 else '**not met**'} by selfstab's default (history 3); "
        f"eigenvalue within 1e-10 of the tight reference: {'met' if ours['max_err'] <= 1e-10 else '**not met**'} "
        f"({ours['max_err']:.0e}). selfstab h=3 needs {s2[bench_eigen.LOB]['mean_hvps'] / ours['mean_hvps']:.1f}× "
        f"fewer HVPs than warm scipy LOBPCG and {s2[bench_eigen.EIGSH]['mean_hvps'] / ours['mean_hvps']:.1f}× fewer "
        f"than cold ARPACK (at the tracking tolerance 1e-7: {s2[bench_eigen.OURS_T]['mean_hvps']:.2f} vs "
        f"{s2[bench_eigen.LOB_T]['mean_hvps']:.2f}).")
    tr = []
    for res in t3:
        eq = res["equiv"]
        m = eq["plain"] or eq["all"]
        a = eq["all"]
        goal = "met" if a["ratio"] >= 3 else ("met without the diagnostics only" if m["ratio"] >= 3 else "**not met**")
        txt = (f"{res['name']}: {a['equiv']:.1f} HVP-equivalents per step over all {a['n']} steps (diagnostics "
               f"every 25 steps amortized; {m['equiv']:.1f} without them) vs the authors' ≈ {eq['theirs']:.1f} "
               f"({eq['theirs_matched']:.1f} at our tolerance), i.e. {a['ratio']:.2f}× ({m['ratio']:.2f}× without "
               f"diagnostics; {a['ratio_matched']:.2f}× at our tolerance) — goal ≥ 3× fewer: {goal}")
        if res.get("windows"):
            worst = min(res["windows"], key=lambda r: eq["theirs"] / r["all"])
            same = min(r["theirs_nominal"] / r["all"] for r in res["windows"])
            txt += (f"; window by window the dearest is steps {worst['from']}–{worst['to'] - 1} at "
                    f"{worst['all']:.1f} ({eq['theirs'] / worst['all']:.2f}× against the nominal count), and "
                    f"against the authors' solves measured in the same windows the smallest ratio is {same:.2f}×")
        sv = res["solvers"]
        per = ", ".join(f"{k} {v['hvps']:.1f}" for k, v in sv.items() if v["calls"])
        txt += f" (eigen-solver HVPs per step: {per})"
        if "theirs_regime" in eq:
            txt += (f"; in this near-degenerate regime a warm LOBPCG solve itself costs "
                    f"{res['solve']['scipy lobpcg']['hvps']} HVPs, which puts the authors' step at ≈ "
                    f"{eq['theirs_regime']:.0f} ({m['ratio_regime']:.2f}× ours)")
        tr.append(txt)
    parts.append("**Tracking cost (table 3)** — " + "; ".join(tr) + ".")
    if quick:
        parts.append("*(--quick sizes: not the reference numbers.)*")
    return " ".join(parts)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller sizes (about 1–2 minutes once the edge is cached)")
    ap.add_argument("--out", help="markdown file to write (default: benchmarks/RESULTS.md, "
                                  "or benchmarks/.cache/RESULTS-quick.md with --quick)")
    ap.add_argument("--paper-n", type=int, help="inputs of the paper MLP in tables 1 and 3 (default 5000; 200 with --quick)")
    ap.add_argument("--paper-steps", type=int, help=f"tracked steps on the paper MLP in table 3 "
                                                    f"(default {bench_track.PAPER_STEPS})")
    ap.add_argument("--render", metavar="PICKLE", help="only re-write the markdown from the raw results a "
                                                        "previous run saved (benchmarks/.cache/last-*.pkl)")
    a = ap.parse_args(argv)
    if a.render:
        with open(a.render, "rb") as fh:
            raw = pickle.load(fh)
        out = Path(a.out) if a.out else raw["out"]
    else:
        command = "python " + " ".join(["benchmarks/run.py", *(sys.argv[1:] if argv is None else argv)])
        out = Path(a.out) if a.out else (HERE / ".cache" / "RESULTS-quick.md" if a.quick else HERE / "RESULTS.md")
        raw = measure(a, command, out)
        path = HERE / ".cache" / f"last-{'quick' if a.quick else 'full'}.pkl"
        with open(path, "wb") as fh:
            pickle.dump(raw, fh)
        say(f"raw results saved to {path}")
    text = render(raw)
    print(text)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists():   # a hand-maintained section at the end of the file survives the rewrite
        old = out.read_text()
        if KEEP_SECTION in old:
            text = text.rstrip("\n") + "\n\n" + old[old.index(KEEP_SECTION):]
    out.write_text(text)
    say(f"wrote {out}")
    return 0


def measure(a, command: str, out: Path) -> dict:
    info = machine_info()
    start = time.perf_counter()
    say(f"benchmarks ({'quick' if a.quick else 'full'}), torch.set_num_threads({info['threads']}) ...")
    t1 = bench_hvp.run(a.quick, n_paper=a.paper_n)
    edge = common.default_edge(say)
    t2 = bench_eigen.run(edge, a.quick)
    t3 = [bench_track.run_default(edge, a.quick), bench_track.run_paper(a.quick, a.paper_n, a.paper_steps)]
    t4 = bench_distributed.run(a.quick)   # table 4: 1 process against 2 gloo ranks (issue 11)
    t5 = bench_startup.run(a.quick, log=say)   # table 5: startup of the command line against commit 57a4485
    return {"info": info, "command": command, "out": out, "quick": a.quick, "t1": t1, "t2": t2, "t3": t3, "t4": t4,
            "t5": t5,
            "edge_cached": bool(edge.get("cached")), "total": time.perf_counter() - start}


def render(raw: dict) -> str:
    info, command, quick, t1, t2, t3, total = (raw[k] for k in ("info", "command", "quick", "t1", "t2", "t3", "total"))
    ratios = bench_hvp.ratios(t1)
    s2 = bench_eigen.summary(t2)
    lob = {"nominal": s2[bench_eigen.LOB]["mean_hvps"], "matched": s2[bench_eigen.LOB_T]["mean_hvps"]}
    md3 = bench_track.markdown(t3, ratios, lob)
    n2 = t2["steps"]
    s3 = (f"{t3[0]['steps']} (default job) and {t3[1]['steps']} (paper MLP, {t3[1]['n']:,} inputs; "
          f"the brief asked 5 there, reduced because one step costs minutes in that regime)")
    doc = [
        "# selfstab benchmarks",
        "",
        "## Summary",
        "",
        summary_paragraph(t1, ratios, t2, t3, quick)
        + (" " + bench_startup.summary(raw["t5"]) if raw.get("t5") else ""),
        "",
        *machine_lines(info, command),
        f"- total wall time: {total / 60:.1f} min"
        + ("" if not raw["edge_cached"] else " (the default job's edge θ₀ came from the cache)"),
        "- absolute times are single-thread and taken on a shared machine (other jobs were running): "
        "compare the ratios, which are measured within one run.",
        "",
        "## 1. HVP vs gradient (issue 2)",
        "",
        "Round-robin timing at the initialization: one warm-up call of each operation, then rounds of one call "
        "each (≥ 5 rounds, up to 40 when cheap), median per operation. (a) the paper's MLP "
        f"shape 3072→200→200→10, swish, {t1['n_paper']:,} standard-normal inputs, random one-hot targets, mse; "
        "(b) the default job's model, MLP width 64 depth 3 (swish) on digits, mse. *plain*: `obj.hvp(θ, v)` "
        "(builds the gradient graph, then one backward-of-backward); *marginal*: `p.hvp(v)` at a point "
        "`p = obj.at(θ)` whose graph exists (what an eigen-solver pays per iteration); *graph*: "
        "`obj.at(θ).grad` (the gradient with its graph kept); *4 hvps*: `p.hvp(V)`, V of shape (4, d), time "
        "per HVP; *d3*: `∇³L(u,u)` at the point / from scratch; *fwd-over-rev*: `torch.func.jvp(grad(f))` "
        "with f written on `functional_call` (reference); *linearized*: `torch.func.linearize(grad(f), θ)` "
        "once, then its jvp alone (the forward-over-reverse analogue of the marginal HVP).",
        "",
        bench_hvp.markdown(t1),
        "## 2. Warm-started sharpness refresh along GD at the edge (issue 2)",
        "",
        f"Default job (MLP width 64 on digits, mse, float64 from θ₀, η = 0.2), {n2} GD steps from θ₀. At each θ_t every "
        "method refreshes the top eigenpair to a relative residual ‖Hu−λu‖/|λ| of 1e-6, on the same point "
        "(marginal HVPs): (i)–(ii) selfstab's `EigenTracker(1, tol=1e-6, history=h)`; (iii) scipy `eigsh` "
        "(ARPACK, which='LA', k=1, seeded random start each step, tol calibrated so the measured residual "
        "is ≤ 1e-6); (iv) scipy `lobpcg` from the previous vector, maxiter=100, tol = 1e-6·λ_prev (scipy's "
        "tolerance is an absolute residual), its final Rayleigh–Ritz HVP counted. Residuals are re-measured "
        "with an uncharged HVP; eigenvalue errors are against ARPACK to a residual ≤ 1e-11 every 10th step. "
        "ms per refresh are single-thread wall times (HVP ≈ "
        f"{ratios[('b', 'float64')]['hvp (marginal)'] * ratios[('b', 'float64')]['_grad_ms']:.1f} ms here).",
        "",
        bench_eigen.markdown(t2),
        "",
        "## 3. Tracking cost per step (issue 6)",
        "",
        f"`track(obj, θ₀, η, steps, warm=...)` with the default `TrackConfig` (θ† solves to eig_tol 1e-7, "
        f"GD's and the flow's sharpness to sharpness_tol 1e-5, projections to 1e-9, gradient flow by RK23 at "
        f"rtol 1e-8, generalized dynamics, diagnostics every 25 steps), {s3} steps; the default job starts "
        "from its θ₀ as `selfstab run` finds it (GD in float32 to the edge) and runs the whole default window. "
        "*Projection steps*: linearized steps of the constrained step's projection onto M, the first "
        "predicted from θ†_t without a solve, each later one with an eigen-solve warm-started from the "
        "previous point (at most `proj_max_iter` = 10; the authors' code takes exactly 3). "
        "Counts per tracked step from the lockstep's own cost records (`grads` includes the gradient-graph "
        "builds of new points and the flow's evaluations; `d3` includes the diagnostics' ∇⁴L products). "
        "HVP-equivalents: HVPs + grads × (grad/HVP) + d3 × (d3/HVP) with table 1's float64 times at a point. "
        f"The authors' code: ≈ {bench_track.THEIR_SOLVES} eigen-solves × table 2 (iv)'s {lob['nominal']:.2f} HVPs + "
        f"{bench_track.THEIR_D3} third-derivative evaluations + {bench_track.THEIR_GRADS} gradients "
        "(\"a few\": GD, the constrained step, three projection steps) — the nominal count; the window-by-window "
        "table below also prices their solves where they are made. The last column converts the counts "
        "to seconds with table 1's times; the gap to the measured seconds is solver and bookkeeping overhead "
        "(and load). The paper MLP row is **edge by construction**: from the initialization with η = "
        f"{bench_track.PAPER_ETA_FACTOR:g}/S(θ_init) (2/η just below S, so θ_init is past the edge and "
        "tracking starts at once; the brief's formula η = 1.9/S would give 2/η = 1.05·S, above the "
        "sharpness, i.e. not past the edge, so 2.1/S is used as its words ask); λ₂ ≥ 1.9/η there from the start, so `stop_lambda2` is raised to let it run; "
        "the (iv) figure used for the authors' nominal cost is the default job's, and a warm LOBPCG refresh "
        "measured in that regime is given below the table. The two \"authors'\" columns use (iv) at 1e-6 (as the "
        "issue prescribes) and at 1e-7, the tolerance of selfstab's solves while tracking.",
        "",
        md3,
        "",
    ]
    if raw.get("t4"):   # table 4 (raw results saved before it existed have none)
        doc += [bench_distributed.markdown(raw["t4"]), ""]
    if raw.get("t5"):   # table 5, likewise
        doc += [bench_startup.section(raw["t5"])]
    return "\n".join(doc)

if __name__ == "__main__":
    sys.exit(main())
