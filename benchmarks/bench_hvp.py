"""Table 1: the cost of an HVP (and of ∇³L(u,u)) against one gradient (issue 2).

Variants, all on the same θ (the initialization) and the same unit vectors:

- ``grad``: ``obj.grad(θ)`` — one forward and one backward pass, no graph kept;
- ``graph``: ``p = obj.at(θ); p.grad`` — the gradient with its graph kept
  (``create_graph=True``), which every later HVP at ``p`` reuses;
- ``hvp (plain)``: ``obj.hvp(θ, v)`` — builds the graph, then one
  backward-of-backward;
- ``hvp (marginal)``: ``p.hvp(v)`` at a fixed point whose graph exists — what an
  eigen-solver pays per iteration;
- ``4 hvps (marginal)``: ``p.hvp(V)`` for ``V`` of shape (4, d), per HVP;
- ``d3 (marginal)`` / ``d3 (plain)``: ``∇³L(u,u)`` at ``p`` / ``obj.d3(θ,u,u)``;
- ``fwd-over-rev``: ``torch.func.jvp(torch.func.grad(f), (θ,), (v,))`` with ``f``
  written here with ``torch.func.functional_call`` (reference; includes the
  forward pass each time, so compare it with the plain HVP);
- ``fwd-over-rev (linearized)``: ``torch.func.linearize(grad(f), θ)`` once, then
  time the returned jvp function alone (the forward-over-reverse analogue of
  the marginal HVP; reference).

Timing is round-robin: one warm-up call of each operation, then rounds in
which every operation runs once, at least 5 rounds (more, up to 40, when a
round is cheap); the table gives the median.  A change of load during the
measurement then hits all operations alike, which keeps the ratios honest.
"""

from __future__ import annotations

import warnings

import torch

from common import Problem, default_job, paper_mlp, say

GOAL = 2.0   # the goal: an HVP costs at most 2× a gradient


def functional_loss(pb: Problem):
    """``f(θ) = mean_i ‖model_θ(x_i) − y_i‖²`` on the flat θ, for ``torch.func`` (written here, not selfstab's)."""
    obj = pb.objective
    model = obj.model
    names, sizes = obj.info["param_names"], obj.info["param_sizes"]
    params = dict(model.named_parameters())
    shapes = [params[k].shape for k in names]
    X = pb.inputs.to(obj.dtype)
    Y = pb.targets.to(obj.dtype)

    def f(theta):
        chunks = torch.split(theta, sizes)
        p = {k: c.view(s) for k, c, s in zip(names, chunks, shapes)}
        out = torch.func.functional_call(model, p, (X,))
        return (out - Y).pow(2).sum(1).mean()

    return f


def measure(pb: Problem, reps: int = 5) -> dict:
    obj = pb.objective
    theta = obj.theta0.clone()
    d = obj.dim
    g = torch.Generator().manual_seed(1)
    V = torch.randn(4, d, generator=g, dtype=torch.float64).to(obj.dtype)
    V = V / V.norm(dim=1, keepdim=True)
    v, u = V[0], V[1]
    f = functional_loss(pb)
    # correctness of the hand-written f and of forward-over-reverse against selfstab's HVP
    ref_hvp = obj.hvp(theta, v)
    _, fwd = torch.func.jvp(torch.func.grad(f), (theta,), (v,))
    loss_err = abs(float(f(theta)) - float(obj.loss(theta))) / abs(float(obj.loss(theta)))
    hvp_err = float((fwd - ref_hvp).norm() / ref_hvp.norm())

    p = obj.at(theta)
    p.grad

    def graph():
        q = obj.at(theta)
        q.grad

    gf = torch.func.grad(f)
    ops = {
        "grad": lambda: obj.grad(theta),
        "graph": graph,
        "hvp (plain)": lambda: obj.hvp(theta, v),
        "hvp (marginal)": lambda: p.hvp(v),
        "4 hvps (marginal), per hvp": lambda: p.hvp(V),
        "d3(u,u) (marginal)": lambda: p.d3(u, u),
        "d3(u,u) (plain)": lambda: obj.d3(theta, u, u),
        "fwd-over-rev jvp(grad f)": lambda: torch.func.jvp(gf, (theta,), (v,)),
    }
    lin_err = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")   # torch.fx const-folding chatter
            _, jvp_fn = torch.func.linearize(gf, theta)
        lin_err = float((jvp_fn(v) - ref_hvp).norm() / ref_hvp.norm())
        ops["fwd-over-rev linearized (marginal)"] = lambda: jvp_fn(v)
    except Exception as exc:  # reference only: say why it is missing
        say(f"  linearize failed: {type(exc).__name__}: {exc}")
    rows = round_robin(ops, reps)
    r4 = rows["4 hvps (marginal), per hvp"]
    rows["4 hvps (marginal), per hvp"] = {**r4, "ms": r4["ms"] / 4, "min": r4["min"] / 4, "max": r4["max"] / 4,
                                         "batch_ms": r4["ms"]}
    rows.setdefault("fwd-over-rev linearized (marginal)", None)
    del p
    return {"rows": rows, "loss_err": loss_err, "fwd_hvp_err": hvp_err, "lin_err": lin_err, "dim": d,
            "reps": rows["grad"]["reps"]}


def round_robin(ops: dict, reps: int, budget_s: float = 15.0, max_reps: int = 40) -> dict:
    """Median ms of each op, timed in rounds (every op once per round) so that load drift hits all alike.

    One warm-up call each; then ``reps`` rounds, or more (up to ``max_reps``) when a round is cheap enough
    to fit ``budget_s``.
    """
    import statistics
    import time
    first = {}
    for name, fn in ops.items():
        t = time.perf_counter()
        fn()
        first[name] = time.perf_counter() - t
    rounds = max(reps, min(max_reps, int(budget_s / max(sum(first.values()), 1e-9))))
    times = {name: [] for name in ops}
    for _ in range(rounds):
        for name, fn in ops.items():
            t = time.perf_counter()
            fn()
            times[name].append(1e3 * (time.perf_counter() - t))
    return {name: {"ms": statistics.median(ts), "min": min(ts), "max": max(ts), "reps": rounds}
            for name, ts in times.items()}


def run(quick: bool = False, reps: int = 5, n_paper: int | None = None) -> dict:
    n_paper = n_paper or (200 if quick else 5000)
    out = {"n_paper": n_paper, "reps": reps, "results": []}
    for dtype in ("float32", "float64"):
        for make, label in ((lambda: paper_mlp(dtype, n=n_paper), "a"), (lambda: default_job(dtype), "b")):
            pb = make()
            say(f"table 1: {pb.name}, {dtype} ...")
            res = measure(pb, reps)
            out["results"].append({"label": label, "name": pb.name, "dtype": dtype, **res})
    return out


def ratios(res: dict) -> dict:
    """``{(label, dtype): {row: ms / grad_ms}}`` for other tables."""
    out = {}
    for r in res["results"]:
        g = r["rows"]["grad"]["ms"]
        out[(r["label"], r["dtype"])] = {k: (v["ms"] / g if v else float("nan")) for k, v in r["rows"].items()}
        out[(r["label"], r["dtype"])]["_grad_ms"] = g
    return out


def markdown(res: dict) -> str:
    from common import table
    lines = []
    for r in res["results"]:
        rows = r["rows"]
        g = rows["grad"]["ms"]
        body = []
        for name, m in rows.items():
            if m is None:
                body.append([name, "n/a", "n/a", "n/a", ""])
                continue
            ratio = m["ms"] / g
            is_hvp = "hvp" in name or "fwd-over-rev" in name
            meets = ("yes" if ratio <= GOAL else "**no**") if is_hvp else ""
            extra = f" (batch {m['batch_ms']:.4g} ms)" if "batch_ms" in m else ""
            body.append([name, f"{m['ms']:.4g}{extra}", f"{m['min']:.4g}–{m['max']:.4g}", f"{ratio:.2f}", meets])
        lines.append(f"**({r['label']}) {r['name']}, {r['dtype']}, d = {r['dim']:,}**, median of {r['reps']} rounds "
                     f"(hand-written f vs selfstab loss: rel. diff {r['loss_err']:.1e}; forward-over-reverse vs "
                     f"selfstab HVP: rel. diff {r['fwd_hvp_err']:.1e}"
                     + (f", linearized: {r['lin_err']:.1e}" if r["lin_err"] is not None else "") + ")\n")
        lines.append(table(["operation", "median ms", "min–max ms", "× one gradient", f"HVP ≤ {GOAL:g}× grad?"],
                           body))
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    import argparse
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    print(markdown(run(a.quick)))
