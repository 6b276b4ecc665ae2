"""Figures of the theory: Figure 2 (four stages on the toy model), Figure 3 (orbits of eq. (4)),
and the Appendix H scale-invariance figure.

Each ``*_figure`` function draws already-computed series into a new matplotlib
figure and returns it; each ``plot_*`` function saves it as PNG and PDF and
returns the paths.  Nothing here integrates or trains (the CLI does that).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from ..theory.stages import STAGE_NAMES, stage_labels, stage_spans
from .style import pyplot, save

STAGE_COLORS = {1: "#4c72b0", 2: "#dd8452", 3: "#c44e52", 4: "#55a868"}


def _shade(ax, spans, labelled: set) -> None:
    for stage, a, b in spans:
        label = None if stage in labelled else f"{stage}: {STAGE_NAMES[stage]}"
        labelled.add(stage)
        ax.axvspan(a - 0.5, b - 0.5, color=STAGE_COLORS[stage], alpha=0.15, lw=0, label=label)


def four_stages_figure(x: np.ndarray, y: np.ndarray, loss: np.ndarray, *, lr: float, alpha: float, beta: float):
    """Figure 2: ``x_t``, the sharpness ``2/η + y_t`` and the loss against steps, stages shaded.

    ``x``, ``y`` are eq. (3)'s coordinates (on the toy model ``y = √β·θ_y``), ``loss`` is ``L(θ_t)``."""
    plt = pyplot()
    steps = np.arange(len(x))
    spans = stage_spans(stage_labels(x, y, alpha, beta))
    fig, axes = plt.subplots(3, 1, figsize=(7, 7), sharex=True)
    labelled: set = set()
    for ax in axes:
        _shade(ax, spans, labelled if ax is axes[0] else set(range(1, 5)))
    axes[0].plot(steps, x, lw=0.8, color="k")
    axes[0].set_ylabel(r"$x_t = u\cdot(\theta_t - \theta^\dagger_t)$")
    axes[1].plot(steps, 2.0 / lr + y, lw=0.8, color="k", label=r"$S(\theta_t) = 2/\eta + y_t$")
    axes[1].axhline(2.0 / lr, ls="--", color="gray", lw=1, label=r"$2/\eta$")
    axes[1].set_ylabel("sharpness")
    axes[1].legend(loc="upper right", fontsize=8)
    axes[2].plot(steps, loss, lw=0.8, color="k")
    axes[2].set_ylabel(r"$L(\theta_t)$")
    axes[2].set_xlabel("step $t$")
    axes[0].set_title(rf"Four stages on the toy model ($\alpha$={alpha:g}, $\beta$={beta:g}, $\eta$={lr:g})",
                      fontsize=10)
    handles, names = axes[0].get_legend_handles_labels()
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.legend(handles, names, loc="lower center", ncol=4, fontsize=8, frameon=False)
    return fig


def plot_four_stages(out_dir: str | Path, x, y, loss, *, lr: float, alpha: float, beta: float,
                     name: str = "fig2_four_stages") -> list[Path]:
    """Save :func:`four_stages_figure` as ``name``.png/.pdf in ``out_dir``; returns the paths."""
    return save(four_stages_figure(x, y, loss, lr=lr, alpha=alpha, beta=beta), out_dir, name)


def ode_orbits_figure(orbits: Sequence[tuple[float, np.ndarray, np.ndarray]], stage_orbit: tuple[np.ndarray, np.ndarray],
                      *, alpha: float, beta: float):
    """Figure 3. Left: orbits ``(X, Y)`` of eq. (4), one per ``(X(0), X, Y)`` in ``orbits``, and the
    fixed point ``(δ, 0)``.  Right: one orbit ``(X, Y)`` coloured by stage."""
    plt = pyplot()
    d = np.sqrt(2 * alpha / beta)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.2))
    cmap = plt.get_cmap("viridis")
    for i, (x0, X, Y) in enumerate(orbits):
        left.plot(X, Y, color=cmap(i / max(len(orbits) - 1, 1)), lw=1, label=f"$X(0)$ = {x0:g}")
    for ax in (left, right):
        ax.plot([d], [0], "k*", ms=10, label=r"fixed point $(\delta, 0)$")
        ax.axhline(0, color="gray", lw=0.5)
        ax.axvline(d, color="gray", lw=0.5, ls=":")
        ax.set_xlabel("$X$ (= $|x_t|$)")
        ax.set_ylabel("$Y$ (= $y_t$)")
    left.set_title(rf"Orbits of eq. (4), $\alpha$={alpha:g}, $\beta$={beta:g}", fontsize=10)
    left.legend(fontsize=7)
    X, Y = stage_orbit
    labels = stage_labels(X, Y, alpha, beta)
    for stage, a, b in stage_spans(labels):
        seg = slice(a, min(b + 1, len(X)))
        right.plot(X[seg], Y[seg], color=STAGE_COLORS[stage], lw=2.5)
        m = (a + b) // 2
        if m + 1 < len(X):  # the direction of motion, once per stage
            right.annotate("", xy=(X[m + 1], Y[m + 1]), xytext=(X[m], Y[m]),
                           arrowprops=dict(arrowstyle="-|>", color=STAGE_COLORS[stage], mutation_scale=18))
    for s in range(1, 5):
        right.plot([], [], color=STAGE_COLORS[s], lw=2.5, label=f"{s}: {STAGE_NAMES[s]}")
    right.set_title("The four stages along one orbit", fontsize=10)
    right.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=2, frameon=False)
    fig.tight_layout()
    return fig


def plot_ode_orbits(out_dir: str | Path, orbits, stage_orbit, *, alpha: float, beta: float,
                    name: str = "fig3_ode_orbits") -> list[Path]:
    """Save :func:`ode_orbits_figure` as ``name``.png/.pdf in ``out_dir``; returns the paths."""
    return save(ode_orbits_figure(orbits, stage_orbit, alpha=alpha, beta=beta), out_dir, name)


def scale_invariance_figure(df):
    """Appendix H: ``S η/2``, the normalized sharpness ``S_f(θ/‖θ‖)`` and ``‖θ‖²`` against steps,
    from the frame of :func:`selfstab.theory.scale_invariance_experiment`."""
    plt = pyplot()
    fig, axes = plt.subplots(3, 1, figsize=(7, 7), sharex=True)
    edge = df.attrs.get("edge_step")
    axes[0].plot(df["step"], df["sharpness_ratio"], lw=0.8, color="k", label=r"$S(\theta_t)\,\eta/2$")
    axes[0].axhline(1.0, ls="--", color="gray", lw=1, label=r"$S = 2/\eta$")
    axes[0].set_ylabel(r"$S\,\eta/2$")
    axes[1].plot(df["step"], df["normalized_sharpness"], lw=0.8, color="C3")
    axes[1].set_ylabel(r"$S_f(\theta/\|\theta\|) = (S-\lambda)\|\theta\|^2$")
    axes[2].plot(df["step"], df["norm_sq"], lw=0.8, color="C0")
    axes[2].set_ylabel(r"$\|\theta_t\|^2$")
    axes[2].set_xlabel("step $t$")
    for ax in axes:
        if edge is not None:
            ax.axvline(edge, color="C2", lw=1, ls=":", label="edge reached" if ax is axes[0] else None)
    axes[0].legend(fontsize=8, loc="lower right")
    lr, wd = df.attrs.get("lr"), df.attrs.get("weight_decay")
    axes[0].set_title(rf"Scale-invariant loss + weight decay ($\eta$={lr:g}, $\lambda$={wd:g})", fontsize=10)
    fig.tight_layout()
    return fig


def plot_scale_invariance(out_dir: str | Path, df, name: str = "scale_invariance") -> list[Path]:
    """Save :func:`scale_invariance_figure` as ``name``.png/.pdf in ``out_dir``; returns the paths."""
    return save(scale_invariance_figure(df), out_dir, name)
