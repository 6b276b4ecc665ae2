"""The figure of a run with several unstable eigenvalues: GD against the central flow and ``θ†_k``.

Three panels against the step since ``θ₀`` (docs/theory.md §10), from the records alone:

1. loss — GD's, its centred 10-step moving average (:func:`~selfstab.records.series.moving_average`),
   the central flow's predicted time-averaged loss ``L(θ_cf) + tr(X)/η`` and the flow's own ``L(θ_cf)``;
2. ``k_crit`` (critical eigenvalues, ``≥ critical_threshold·2/η``) and ``rank(X)`` (the directions
   that oscillate) along the central flow, as step lines;
3. distances to GD — ``‖θ_GD − θ_cf‖``, ``‖θ_GD − θ†_k‖`` and gradient flow's ``‖θ_GD − θ_flow‖``
   (log scale).

A panel whose records are absent says so in a note instead of being left blank.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..records.series import MOVING_WINDOW, column, moving_average
from .style import finish_empty, lr_label, note, plot_process, pyplot, run_title, save


def _subjects(run) -> str:
    """The title's processes: GD and those of the central flow and θ†_k that the run tracked."""
    names = ["GD"] + [name for process, name in (("central", "the central flow"), ("kconstrained", "θ†_k"))
                      if process in run.records and len(run.records[process])]
    return ", ".join(names[:-1]) + " and " + names[-1] if len(names) > 1 else names[0]


def make_central(run):
    """The central-flow figure of ``run`` (module docstring); returns the matplotlib Figure."""
    plt = pyplot()
    fig, (ax_loss, ax_k, ax_d) = plt.subplots(3, 1, figsize=(12, 9), sharex=True, layout="constrained")

    gd_loss = column(run, "gd", "loss")
    missing = []
    plot_process(ax_loss, gd_loss, "gd", lw=0.6, alpha=0.45, label="GD loss")
    avg = moving_average(gd_loss)
    if not plot_process(ax_loss, avg, "gd", lw=1.6, label=f"GD loss, {MOVING_WINDOW}-step moving average"):
        missing.append("no GD loss (gd.loss)")
    if not plot_process(ax_loss, column(run, "central", "predicted_loss"), "central", lw=1.6, ls="--",
                        label=r"central flow's prediction $L(\theta_{cf}) + \mathrm{tr}(X)/\eta$"):
        missing.append("no central flow (track.processes: add central)")
    plot_process(ax_loss, column(run, "central", "loss"), "central", lw=1.0, ls=":",
                 label=r"central flow's own loss $L(\theta_{cf})$")
    ax_loss.set_ylabel("training loss")
    note(ax_loss, missing)
    finish_empty(ax_loss)

    k_notes = []
    for field, label, color in (("k_crit", r"$k_{crit}$: eigenvalues $\geq$ threshold$\cdot 2/\eta$", "0.2"),
                                ("x_rank", r"rank$(X)$: directions that oscillate", "#8c564b")):
        s = column(run, "central", field)
        if s is None:
            k_notes.append(f"not recorded: central.{field}")
            continue
        ax_k.step(s.index.to_numpy(), s.to_numpy(), where="post", color=color, label=label,
                  lw=1.4 if field == "k_crit" else 1.0, ls="-" if field == "k_crit" else "--")
    if ax_k.lines:
        top = max(np.nanmax(line.get_ydata()) for line in ax_k.lines)
        ax_k.set_ylim(-0.3, max(1.0, top) + 0.5)
        ax_k.yaxis.get_major_locator().set_params(integer=True)
    ax_k.set_ylabel("count")
    note(ax_k, k_notes)
    finish_empty(ax_k)

    d_notes = []
    # θ†_k wide and pale underneath, the central flow on top: the two can nearly coincide
    for process, label, look in (
            ("kconstrained", r"$\|\theta_{GD} - \theta^\dagger_k\|$ ($k$-constrained)", dict(lw=3.0, alpha=0.45)),
            ("central", r"$\|\theta_{GD} - \theta_{cf}\|$ (central flow)", dict(lw=1.3, zorder=3)),
            ("flow", r"$\|\theta_{GD} - \theta_{flow}\|$ (gradient flow)", dict(lw=1.3))):
        s = column(run, process, "dist_gd")
        if s is not None:
            s = s.where(s > 0)                 # log scale: the 0 at θ₀ is not drawn
        if not plot_process(ax_d, s, process, label=label, **look):
            d_notes.append(f"not recorded: {process}.dist_gd")
    if ax_d.lines:
        ax_d.set_yscale("log")
    ax_d.set_ylabel("distance to GD")
    ax_d.set_xlabel(r"step $t$ since $\theta_0$")
    note(ax_d, d_notes)
    finish_empty(ax_d)

    for ax in (ax_loss, ax_k, ax_d):   # beside the panel: inside, a long run's curves run under it
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, frameon=False)
    fig.suptitle(f"Several unstable eigenvalues: {_subjects(run)} — {lr_label(run)}, {run_title(run)}", fontsize=10)
    return fig


def central(run, out_dir: str | Path, stem: str = "central") -> list[Path]:
    """Save :func:`make_central` as ``stem``.png/.pdf in ``out_dir``; returns the paths."""
    return save(make_central(run), out_dir, stem)
