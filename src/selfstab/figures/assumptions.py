"""Figures of what happens along the constrained trajectory θ†: the eight assumption plots of
Appendix E and the top eigenvalues of Figure 5.  Drawn from records only (``diagnostics``,
``constrained``, ``train``); see :mod:`.paper` for the conventions.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from ..records.series import column, lr_of, onset
from .style import edge_line, finish_empty, lr_label, note, plot_process, pyplot, run_title, save

_EST = r" ($\rho_3,\rho_4$: estimates)"

# (field, title, what it verifies, y-axis floor at 0).  Appendix E, in the paper's order.
APPENDIX_E = [
    ("alpha", r"$\alpha_t = -\nabla L\cdot\nabla S$", "Assumption 1: α > 0", False),
    ("epsilon", r"$\epsilon_t = \eta\sqrt{\alpha_t}$", "ε small", True),
    ("grad_alignment", r"$-\nabla L\cdot\nabla S\,/\,(\|\nabla L\|\,\|\nabla S_\perp\|)$", "Assumption 4", False),
    ("gradS_perp_over_rho3", r"$\|\nabla S_\perp\|/\rho_3$" + _EST, "Assumption 4", True),
    ("rho4_over_eta_rho3sq", r"$\rho_4/(\eta\rho_3^2)$" + _EST, "Assumption 3", True),
    ("ratio_d3_v", r"$\|\nabla^3L(v_\perp,v_\perp)\|/(\rho_3\|v_\perp\|^2)$", "Assumption 5", True),
    ("ratio_d3_g", r"$\|\nabla^3L(g_\perp,g_\perp)\|/(\rho_3\|g_\perp\|^2)$", "Assumption 5", True),
    ("ratio_d2_v", r"$|v_\perp^\top\nabla^2L\,v_\perp|/(\|\nabla^2L\|\,\|v_\perp\|^2)$", "Assumption 5", True),
]
REACHED = 0.999  # an eigenvalue "reaches" 2/η when it is within 0.1% of it (θ† holds S at 2/η to a tolerance)


def _diagnostic(run, field: str) -> tuple[pd.Series | None, str]:
    """The series of ``field`` along θ† and its plotting mode: ``constrained`` has α and ε at every
    step, ``diagnostics`` every k steps; the denser wins."""
    dense_s = column(run, "constrained", field) if field in ("alpha", "epsilon") else None
    if dense_s is not None:
        return dense_s, "dense"
    return column(run, "diagnostics", field), "rows"


def make_appendix_e(run):
    """Appendix E: the eight assumption plots along θ† (2 rows × 4), against tracked steps.

    ρ₃ = ‖∇³L‖_op and ρ₄ = ‖∇⁴L‖_op come from tensor power iteration: they are estimates, and the
    panels that use them say so."""
    plt = pyplot()
    fig, axes = plt.subplots(2, 4, figsize=(15, 6.5))
    for ax, (field, title, verifies, floor) in zip(axes.flat, APPENDIX_E):
        s, mode = _diagnostic(run, field)
        # sparse rows (every diagnostics_every steps) are markers: a line would invent the steps between
        drawn = plot_process(ax, s, "constrained", mode=mode, label=None)
        ax.set_title(title, fontsize=8.5)
        ax.text(0.99, 0.99, verifies, transform=ax.transAxes, fontsize=7, color="0.35", ha="right", va="top")
        if field == "alpha":
            ax.axhline(0.0, color="0.6", lw=0.8)
        if drawn and floor:
            top = np.nanmax(s.to_numpy())
            upper = 1.1 * top if np.isfinite(top) and top > 0 else 1.0
            ax.set_ylim(0.0, max(upper, 1.05) if field.startswith("ratio") else upper)
        if not drawn:
            note(ax, [f"not recorded: {field}"])
        elif s.isna().any():
            note(ax, [f"{int(s.isna().sum())} missing values" + (" (gaps)" if mode == "dense" else "")])
        finish_empty(ax)
    for ax in axes[-1]:
        ax.set_xlabel(r"step $t$ along $\theta^\dagger$")
    fig.suptitle(f"Appendix E: the assumptions along the constrained trajectory — {lr_label(run)}, "
                 f"{run_title(run)}\n" + r"$\rho_3 = \|\nabla^3L\|_{op}$ and $\rho_4 = \|\nabla^4L\|_{op}$ are "
                 "estimates (tensor power iteration from $u$)", fontsize=10)
    fig.tight_layout()
    return fig


def appendix_e(run, out_dir: str | Path, stem: str = "appendix_e") -> list[Path]:
    """Save :func:`make_appendix_e` as ``stem``.png/.pdf in ``out_dir``; returns the paths."""
    return save(make_appendix_e(run), out_dir, stem)


def _eigen_series(run) -> tuple[dict[int, tuple[pd.Series, str]], str]:
    """The top eigenvalues by index (0 = λ₁) and the trajectory they are measured along.

    Along θ†: ``diagnostics.eig_i`` (every k steps), with λ₁ = ``constrained.sharpness`` (every step)
    when that is denser.  A run that tracked several unstable eigenvalues has the critical block
    of ``θ†_k`` (``kconstrained.lambda_i``, else the central flow's) at every step: those replace
    the θ† series index by index where they are denser (θ† itself is only meaningful while one
    eigenvalue is unstable).  The block holds every eigenvalue above the critical threshold plus
    one guard, so ``λ_i`` is recorded from shortly before it becomes critical."""
    out: dict[int, tuple[pd.Series, str]] = {}
    frame = run.records.get("diagnostics")
    if frame is not None:
        for name in frame.columns:
            m = re.fullmatch(r"eig_(\d+)", name)
            if m and column(run, "diagnostics", name) is not None:
                out[int(m.group(1))] = (column(run, "diagnostics", name), "rows")
    s = column(run, "constrained", "sharpness")
    if s is not None and (0 not in out or s.notna().sum() > out[0][0].notna().sum()):
        out[0] = (s, "dense")
    along = "theta_dagger"
    for process in ("kconstrained", "central"):
        frame = run.records.get(process)
        if frame is None:
            continue
        block = {}
        for name in frame.columns:
            m = re.fullmatch(r"lambda_(\d+)", name)
            if m and column(run, process, name) is not None:
                block[int(m.group(1)) - 1] = column(run, process, name)
        if block:
            for i, b in block.items():
                if i not in out or b.notna().sum() >= out[i][0].notna().sum():
                    out[i] = (b, "dense")
            along = process
            break
    return dict(sorted(out.items())), along


_ALONG = {"theta_dagger": r"\theta^\dagger_t", "kconstrained": r"\theta^\dagger_{k,t}", "central": r"\theta_{cf}(t)"}


def _first_at_least(s: pd.Series, level: float) -> int | None:
    hit = s.index[s.to_numpy() >= level]
    return int(hit[0]) if len(hit) else None


def stop_factor(run) -> float | None:
    """``track.stop_lambda2`` of the run's config (the λ₂ rule acts once λ₂(θ†) ≥ it/η); None if absent or 0."""
    value = (run.config.get("track") or {}).get("stop_lambda2")
    return float(value) if value else None


def rule_kind(run) -> str:
    """What the run's λ₂ rule did: ``"stop"`` (tracking ended there), ``"flag"`` (the single-eigenvalue
    processes were marked ``outside_assumptions`` and tracking went on) or ``"central"`` (flagged, and the
    central flow joined).  Read from the summary, where the run wrote it when tracking started; a run
    written before that is read with the rule of its time (the default set stopped)."""
    kind = run.summary.get("lambda2_rule")
    if kind:
        return kind
    from ..processes.lockstep import lambda2_rule_kind
    track = run.config.get("track") or {}
    processes = track.get("processes")
    if processes is None and track.get("lambda2_rule", "auto") == "auto":
        return "stop"
    return lambda2_rule_kind(track.get("lambda2_rule", "auto"), processes)


def make_figure5(run):
    """Figure 5 (the paper's): the top eigenvalues of ∇²L over time — before θ₀ the measured
    sharpness of GD (``train``), after it the top-k eigenvalues along θ† (or, when the run tracked
    the k-constrained trajectory or the central flow, their critical block at every step, see
    :func:`_eigen_series`) — with 2/η, the λ₂ rule's line ``track.stop_lambda2/η`` (where tracking
    stopped, or where the single-eigenvalue theory was flagged outside its assumptions), and a
    vertical line in each eigenvalue's colour at the step where it becomes unstable (first reaches
    2/η; dotted where it only reaches the rule's line), each named in the legend.

    λ₁(θ†) is held at 2/η by construction: it is drawn thick and above the (thin, dashed) 2/η line,
    so that it stays visible.  Eigenvalues measured every k steps (``diagnostics``) are markers."""
    plt = pyplot()
    lr = lr_of(run)
    stop = stop_factor(run)
    step0, _ = onset(run)
    shift = step0 if step0 is not None else 0
    fig, ax = plt.subplots(figsize=(10, 4.5), layout="constrained")
    missing = []
    train_s = column(run, "train", "sharpness")
    plot_process(ax, train_s, "train", mode="points", color="C0", ms=2, lw=0.8,
                 label=r"$\lambda_1$ along GD to $\theta_0$")
    eigs, along = _eigen_series(run)
    where = _ALONG[along]
    if not eigs:
        missing.append("no eigenvalues along θ† (diagnostics.eig_i, constrained.sharpness)")
    for i, (s, mode) in eigs.items():
        color = f"C{i % 10}"
        name = rf"$\lambda_{{{i + 1}}}$"
        kw = dict(lw=1.8, zorder=3) if mode == "dense" else dict(zorder=3)
        plot_process(ax, s, "constrained", mode=mode, shift=shift, color=color, ls="-",
                     label=rf"$\lambda_{{{i + 1}}}({where})$", **kw)
        if not lr > 0:
            continue
        level = REACHED * 2.0 / lr
        # λ₁ reaches 2/η at the run's onset (the summary's midpoint rule), not where its records first come
        # within REACHED of it: Figure 1 and the summary name the same step
        at = step0 if i == 0 else None
        if at is None:
            at = _first_at_least(s, level)
            at = None if at is None else at + shift
        if at is not None:
            ax.axvline(at, color=color, lw=1.0, label=rf"{name} reaches $2/\eta$ (step {at})")
        elif i > 0 and stop is not None:
            near = _first_at_least(s, REACHED * stop / lr)
            if near is not None:
                ax.axvline(near + shift, color=color, lw=1.0, ls=":",
                           label=rf"{name} reaches the {rule_kind(run)} line (step {near + shift})")
    if step0 is None and eigs:
        missing.append("onset unknown: steps along θ† counted from θ₀")
    edge_line(ax, lr, zorder=2)   # under λ₁(θ†) (zorder 3), which sits on it
    if lr > 0 and stop is not None:
        what = "stop" if rule_kind(run) == "stop" else "single-eigenvalue theory flagged"
        ax.axhline(stop / lr, color="0.6", ls=":", lw=1.0, label=rf"{what}: $\lambda_2 = {stop:g}/\eta$")
    ax.set_xlabel("step $t$ (from initialization)" if step0 is not None else r"step $t$ since $\theta_0$")
    ax.set_ylabel("eigenvalues of the Hessian")
    ax.set_title(f"Figure 5: top eigenvalues enter the edge in turn — {lr_label(run)}, {run_title(run)}", fontsize=10)
    note(ax, missing)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, frameon=False)
    finish_empty(ax)
    return fig


def figure5(run, out_dir: str | Path, stem: str = "figure5") -> list[Path]:
    """Save :func:`make_figure5` as ``stem``.png/.pdf in ``out_dir``; returns the paths."""
    return save(make_figure5(run), out_dir, stem)
