"""``selfstab theory fig2 | fig3 | scale-invariance``: the figures of the theory (section 4, App. B, H).

Each command computes its series with :mod:`selfstab.theory`, writes them as CSV
next to the figure, draws the figure with :mod:`selfstab.figures.theory`
(PNG and PDF) and prints the paths written.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import ConfigError
from ..wording import plural


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, default=Path("figures"), help="output directory (default: figures/)")


def _report(paths) -> int:
    for p in paths:
        print(f"wrote {p}")
    return 0


def _fig2(args) -> int:
    import numpy as np
    import pandas as pd

    from ..figures.theory import plot_four_stages
    from ..theory import stage_labels, toy_gd, toy_loss

    if args.steps < 1:
        raise ConfigError(f"--steps: must be ≥ 1, got {args.steps}")
    theta = toy_gd(args.alpha, args.beta, args.lr, args.x0, args.steps)
    x, y = theta[:, 0], np.sqrt(args.beta) * theta[:, 1]
    loss = toy_loss(theta.T, args.alpha, args.beta, args.lr)
    args.out.mkdir(parents=True, exist_ok=True)
    csv = args.out / "fig2_four_stages.csv"
    pd.DataFrame({"step": np.arange(len(x)), "x": x, "y": y, "sharpness": 2.0 / args.lr + y, "loss": loss,
                  "stage": stage_labels(x, y, args.alpha, args.beta)}).to_csv(csv, index=False)
    return _report([csv, *plot_four_stages(args.out, x, y, loss, lr=args.lr, alpha=args.alpha, beta=args.beta)])


def _fig3(args) -> int:
    from ..figures.theory import plot_ode_orbits
    from ..theory import integrate_ode

    orbits = []
    for x0 in args.x0:
        orb = integrate_ode(args.alpha, args.beta, x0, 0.0, n_periods=1.0)
        orbits.append((x0, orb.X, orb.Y))
    one = integrate_ode(args.alpha, args.beta, args.stage_x0, 0.0, n_periods=1.0)
    paths = plot_ode_orbits(args.out, orbits, (one.X, one.Y), alpha=args.alpha, beta=args.beta)
    return _report(paths)


def _scale_invariance(args) -> int:
    from ..figures.theory import plot_scale_invariance
    from ..theory import scale_invariance_experiment

    df = scale_invariance_experiment(lr=args.lr, weight_decay=args.weight_decay, steps=args.steps,
                                     method=args.method, radius=args.radius, seed=args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    csv = args.out / "scale_invariance.csv"
    df.to_csv(csv, index=False)
    edge = df.attrs["edge_step"]
    if edge is None:
        print(f"note: S stayed below 2/η = {2 / args.lr:g} for all {plural(args.steps, 'step')} (no edge reached)")
    else:
        post = df.iloc[edge:]
        print(f"edge at step {edge}: mean S·η/2 after it {post['sharpness_ratio'].mean():.4f}; normalized "
              f"sharpness {post['normalized_sharpness'].iloc[0]:.4g} → {post['normalized_sharpness'].iloc[-1]:.4g}")
    return _report([csv, *plot_scale_invariance(args.out, df)])


def register(subparsers) -> None:
    """Add ``selfstab theory`` and its three figure commands."""
    p = subparsers.add_parser(
        "theory",
        description="Figures of the theory of self-stabilization: fig2 (the four stages on the Appendix B toy "
                    "model), fig3 (orbits of the ODE eq. (4)), scale-invariance (Appendix H).")
    sub = p.add_subparsers(dest="figure", metavar="FIGURE")

    f2 = sub.add_parser("fig2", help="Figure 2: the four stages of edge of stability on the toy model",
                        description="GD on the toy model of Appendix B (= eq. (3) exactly): x_t, the sharpness "
                                    "2/η + y_t and the loss against steps, the four stages shaded.")
    _common(f2)
    f2.add_argument("--alpha", type=float, default=1.0, help="progressive-sharpening coefficient α (default 1)")
    f2.add_argument("--beta", type=float, default=1.0, help="self-stabilization coefficient β = ‖∇S⊥‖² (default 1)")
    f2.add_argument("--lr", type=float, default=0.01, help="learning rate η (default 0.01, so 2/η = 200)")
    f2.add_argument("--x0", type=float, default=0.1, help="initial displacement x_0 along u (default 0.1)")
    f2.add_argument("--steps", type=int, default=1500, help="GD steps (default 1500: two cycles)")
    f2.set_defaults(func=_fig2)

    f3 = sub.add_parser("fig3", help="Figure 3: orbits of the ODE eq. (4) and the four stages on one orbit",
                        description="Left: one period of eq. (4) from (X(0), 0) for several X(0); right: one "
                                    "orbit coloured by stage.")
    _common(f3)
    f3.add_argument("--alpha", type=float, default=1.0, help="α (default 1)")
    f3.add_argument("--beta", type=float, default=1.0, help="β (default 1)")
    f3.add_argument("--x0", type=float, nargs="+", default=[0.05, 0.1, 0.2, 0.4, 0.8],
                    help="X(0) of each orbit on the left (default 0.05 0.1 0.2 0.4 0.8)")
    f3.add_argument("--stage-x0", type=float, default=0.1, help="X(0) of the orbit on the right (default 0.1)")
    f3.set_defaults(func=_fig3)

    si = sub.add_parser("scale-invariance", help="Appendix H: weight decay on a scale-invariant loss at the edge",
                        description="GD on a scale-invariant two-layer network plus weight decay λ/2‖θ‖²: "
                                    "S·η/2, the normalized sharpness and ‖θ‖² against steps.")
    _common(si)
    si.add_argument("--lr", type=float, default=0.2, help="learning rate η (default 0.2)")
    si.add_argument("--weight-decay", type=float, default=0.0025, help="weight decay λ (default 0.0025)")
    si.add_argument("--steps", type=int, default=3000, help="GD steps (default 3000, about 7 s)")
    si.add_argument("--radius", type=float, default=8.0, help="‖θ₀‖ (default 8)")
    si.add_argument("--seed", type=int, default=0, help="seed of the data and of θ₀ (default 0)")
    si.add_argument("--method", choices=["dense", "lanczos"], default="dense",
                    help="sharpness solver: exact dense Hessian or warm-started Lanczos on HVPs (default dense)")
    si.set_defaults(func=_scale_invariance)

    def _usage(_args) -> int:
        p.print_help()
        return 2

    p.set_defaults(func=_usage)
