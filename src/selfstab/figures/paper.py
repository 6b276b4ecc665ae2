"""The paper's figures, drawn from run records (``selfstab.records.load_run``); nothing is recomputed.

* Figure 1 — progressive sharpening up to the edge of stability (one run);
* Figure 4 — GD against the predicted dynamics (eq. (6)), the generalized prediction
  (App. F), the constrained trajectory θ† and gradient flow, one row per η, plus a zoom on one cycle;
* Figure 6 — a learning-rate sweep, with the ``η_t = 1/S(θ_t)`` schedule;
* Appendix E and Figure 5 live in :mod:`.assumptions` and are re-exported here.

Which figures exist, their captions and the records each needs are in :mod:`.registry`
(:func:`~.registry.draw_figures` draws them for ``selfstab plot``, ``report``, ``run`` and
``sweep``).  Each ``make_*`` function returns a matplotlib Figure (tests read its artists);
the function of the same name without ``make_`` saves it as PNG and PDF and returns the
paths.  A half-finished run still plots: a missing process or field is skipped and named in a
small note on the axes, a NaN is a gap in the line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from ..records import Run
from .assumptions import appendix_e, figure5, make_appendix_e, make_figure5
from ..records.series import (column, dense, is_inverse_sharpness, lr_of, onset, recorded_steps,
                               sharpness_two_step)
from .style import (edge_line, finish_empty, lr_colors, lr_label, note, outside_note, plot_process, pyplot, run_title,
                    save, style_of)

__all__ = ["TRACKED", "appendix_e", "figure1", "figure4", "figure5", "figure6", "make_appendix_e",
           "make_figure1", "make_figure4", "make_figure5", "make_figure6", "zoom_window"]

TRACKED = ("gd", "predicted", "generalized", "constrained", "flow")

# Figure 4, third column: the distance from θ†_t of each process (the constrained one shows δ_t,
# the distance GD settles at when (|x_t|, y_t) reaches the fixed point (δ_t, 0)).
DISTANCE = {
    "gd": ("dist_constrained", r"GD: $\|\theta_t - \theta^\dagger_t\|$"),
    "predicted": ("v_norm", r"predicted: $\|v_t\|$"),
    "generalized": ("v_norm", r"generalized: $\|v_t\|$"),
    "constrained": ("delta", r"$\delta_t = \sqrt{2\alpha_t/\beta_t}$"),
    "flow": ("dist_constrained", r"flow: $\|\theta_{\mathrm{flow}}(\eta t) - \theta^\dagger_t\|$"),
}
SHADE = dict(color="0.85", alpha=0.5, lw=0, zorder=0)  # Figure 4: the zoom window on the full rows


# ----------------------------------------------------------------------------- Figure 1


def make_figure1(run):
    """Figure 1: the midpoint sharpness measured on the way to the edge (and the tracked GD after it,
    as two-step averages) with the 2/η line, and the training loss, against steps; θ₀ marked."""
    plt = pyplot()
    lr = lr_of(run)
    step0, sharp0 = onset(run)
    fig, (ax_s, ax_l) = plt.subplots(2, 1, figsize=(7, 5.5), sharex=True)
    missing_s, missing_l = [], []
    if not plot_process(ax_s, column(run, "train", "sharpness"), "train", mode="points",
                        label="sharpness at the midpoint (measured)"):
        missing_s.append("no train.sharpness")
    if not plot_process(ax_l, column(run, "train", "loss"), "train", label="train loss"):
        missing_l.append("no train.loss")
    if step0 is not None:  # GD tracked from θ₀ (its step t is train step onset + t)
        plot_process(ax_s, sharpness_two_step(run, "gd"), "gd", shift=step0, color="0.45", lw=0.8,
                     label="GD after θ₀ (two-step average)")
        plot_process(ax_l, column(run, "gd", "loss"), "gd", shift=step0, color="0.45", lw=0.8, label="GD after θ₀")
    lr_t = column(run, "train", "lr")
    if is_inverse_sharpness(run) and lr_t is not None:
        ax_s.plot(lr_t.index, 2.0 / lr_t.to_numpy(), ls="--", lw=1.0, color="0.4", label=r"$2/\eta_t$")
    else:
        edge_line(ax_s, lr)
    if step0 is not None:
        for ax in (ax_s, ax_l):
            ax.axvline(step0, color="C3", ls=":", lw=1.0)
        text = f"edge reached: step {step0}" + (f", S = {sharp0:.4g}" if sharp0 is not None else "")
        if sharp0 is not None:
            ax_s.plot([step0], [sharp0], marker="*", ms=10, color="C3", ls="none", label=text)
        else:
            ax_s.plot([], [], color="C3", ls=":", label=text)
    else:
        missing_s.append("edge (S ≥ 2/η) not found: no onset_step in the summary, no train.sharpness ≥ 2/η")
    ax_s.set_ylabel(r"sharpness $S(\theta)$")
    ax_l.set_ylabel(r"training loss $L(\theta_t)$")
    ax_l.set_xlabel("step $t$")
    ax_s.set_title(f"Progressive sharpening and the edge of stability — {lr_label(run)}, {run_title(run)}",
                   fontsize=10)
    for ax, miss in ((ax_s, missing_s), (ax_l, missing_l)):
        note(ax, miss)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8, loc="best")
        finish_empty(ax)
    fig.tight_layout()
    return fig


def figure1(run, out_dir: str | Path, stem: str = "figure1") -> list[Path]:
    """Save :func:`make_figure1` as ``stem``.png/.pdf in ``out_dir``; returns the paths."""
    return save(make_figure1(run), out_dir, stem)


# ----------------------------------------------------------------------------- Figure 4


def zoom_window(run) -> tuple[int, int] | None:
    """A window ``(first, last)`` of tracked steps around the first cycle of the oscillation.

    The cycle is read off ``|x_t|`` (``predicted.x``, else ``generalized.x``, else GD's
    ``‖θ_t − θ†_t‖``): after a warm-up of 5% of the steps, the first stretch where it exceeds
    half its maximum holds the peak; the window runs from where it last was below 10% of the peak
    before it to where it next falls below that after it, widened by a quarter on each side
    (at least 20 steps).  None when no such series exists.
    """
    s = None
    for process, field in (("predicted", "x"), ("generalized", "x"), ("gd", "dist_constrained")):
        s = column(run, process, field)
        if s is not None:
            break
    if s is None:
        return None
    s = dense(s).abs()
    v = np.nan_to_num(s.to_numpy(), nan=0.0, posinf=0.0)
    n = len(v)
    if np.count_nonzero(v) < 4:
        return None
    warm = max(1, n // 20)
    top = v[warm:].max()
    if not top > 0:
        return None
    i = warm + int(np.flatnonzero(v[warm:] >= 0.5 * top)[0])
    j = i
    while j + 1 < n and v[j + 1] >= 0.5 * top:
        j += 1
    peak = i + int(np.argmax(v[i:j + 1]))
    low = 0.1 * v[peak]
    left, right = peak, peak
    while left > 0 and v[left - 1] >= low:
        left -= 1
    while right + 1 < n and v[right + 1] >= low:
        right += 1
    pad = max(2, (right - left) // 4)
    a, b = max(0, left - pad), min(n - 1, right + pad)
    while b - a < 20 and (a > 0 or b < n - 1):
        a, b = max(0, a - 1), min(n - 1, b + 1)
    return int(s.index[a]), int(s.index[b])


def _figure4_row(axes, run, window, shade, legend: bool) -> None:
    """One row of Figure 4: loss, two-step sharpness and distance from θ†_t of each tracked process.

    ``window``: draw only those steps (the zoom); ``shade``: the zoom window, shaded on the full row;
    ``legend``: this row's distance panel carries the legend of the distance curves, outside the axes."""
    ax_loss, ax_s, ax_d = axes
    absent = {ax: [] for ax in axes}      # never recorded
    empty = {ax: [] for ax in axes}       # recorded, but nothing in the window
    for process in TRACKED:
        series = {ax_loss: column(run, process, "loss"), ax_s: sharpness_two_step(run, process),
                  ax_d: column(run, process, DISTANCE[process][0])}
        for ax, s in series.items():
            kw = dict(window=window)
            if ax is ax_d:
                kw["label"] = DISTANCE[process][1]
                if process == "constrained":
                    kw.update(ls="-.", lw=1.2)
            if s is None:
                absent[ax].append(process)
            elif not plot_process(ax, s, process, **kw):
                empty[ax].append(process)
    edge_line(ax_s, lr_of(run))
    ax_loss.set_ylabel("loss")
    ax_s.set_ylabel(r"sharpness, $(S_{t-1}+S_t)/2$")
    ax_d.set_ylabel(r"distance from $\theta^\dagger_t$")
    ax_loss.set_title(f"{lr_label(run)} — {run_title(run)}", fontsize=9, loc="left")
    if legend and ax_d.lines:
        ax_d.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, frameon=False)
    for ax in axes:
        if shade is not None and ax.lines:
            ax.axvspan(shade[0], shade[1], **SHADE)
        lines = [f"not recorded: {', '.join(absent[ax])}"] if absent[ax] else []
        if empty[ax]:   # no window: a run just started (one step, no two-step average yet)
            where = f"in steps {window[0]}–{window[1]}" if window is not None else "yet"
            lines.append(f"nothing recorded {where}: {', '.join(empty[ax])}")
        note(ax, lines)
        finish_empty(ax)


def make_figure4(runs: Sequence, zoom: tuple[int, int] | None = None, *, zoomed: bool = False):
    """Figure 4: one row per run (sorted by η), columns loss / sharpness / distance from θ†_t, for GD,
    the predicted dynamics, the generalized prediction, θ†_t and gradient flow, against tracked steps.

    Sharpnesses are the two-step averages ``(S_{t−1} + S_t)/2`` of :func:`~selfstab.records.series.two_step_average`.
    ``zoomed``: show only one cycle — ``zoom = (first, last)`` for every row, or by default each run's
    :func:`zoom_window`; otherwise that window is shaded on the full rows (and named in the legend).
    A window outside a run's records is said so on its row ("steps 500–600 are outside the
    recorded steps 0–125")."""
    plt = pyplot()
    from matplotlib.patches import Patch

    runs = sorted(runs, key=lr_of)
    rows = max(len(runs), 1)
    fig, axes = plt.subplots(rows, 3, figsize=(15, 3.0 * rows + 0.9), squeeze=False, layout="constrained")
    shaded = False
    for i, (row, run) in enumerate(zip(axes, runs)):
        window = zoom if zoom is not None else zoom_window(run)
        steps = recorded_steps(run, TRACKED)
        outside = outside_note(window, steps) if window is not None else None
        if outside is not None:   # nothing of this run in the window: neither zoom on it nor shade it
            if zoomed:
                for ax in row:
                    note(ax, [outside])
                    finish_empty(ax)
                row[0].set_title(f"{lr_label(run)} — {run_title(run)}", fontsize=9, loc="left")
                continue
            window = None
        _figure4_row(row, run, window if zoomed else None, None if zoomed else window, legend=i == 0)
        shaded |= not zoomed and window is not None
        if zoomed and window is None:
            note(row[1], ["no cycle found: full range shown"])
        elif zoomed and steps is not None and (window[0] < steps[0] or window[1] > steps[1]):
            note(row[1], [f"recorded steps: {steps[0]}–{steps[1]} only"])
        elif not zoomed and outside is not None:
            note(row[1], [f"zoom window: {outside}"])
    if not runs:
        for ax in axes[0]:
            note(ax, ["no runs"])
            finish_empty(ax)
    for ax in axes[-1]:
        ax.set_xlabel(r"step $t$ since $\theta_0$")
    handles = [plt.Line2D([], [], color=style_of(p).color, ls=style_of(p).ls, label=style_of(p).label)
               for p in TRACKED if any(p in r.records for r in runs)]
    handles.append(plt.Line2D([], [], ls="--", color="0.4", label=r"$2/\eta$"))
    if shaded:
        handles.append(Patch(facecolor=SHADE["color"], alpha=SHADE["alpha"],
                             label="shaded: the cycle shown in the zoom (figure4_zoom)"))
    title = "Figure 4 (one cycle)" if zoomed else "Figure 4"
    fig.suptitle(f"{title}: gradient descent against the predictions of self-stabilization", fontsize=11)
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 4), fontsize=8, frameon=False)
    return fig


def figure4(runs, out_dir: str | Path, zoom: tuple[int, int] | None = None) -> list[Path]:
    """Save Figure 4 as ``figure4`` and its one-cycle zoom as ``figure4_zoom`` (PNG + PDF each).

    ``runs``: one run or a list (one row per run); ``zoom``: the window of tracked steps to zoom
    on, by default chosen per run by :func:`zoom_window`."""
    runs = [runs] if isinstance(runs, Run) else list(runs)
    return (save(make_figure4(runs, zoom), out_dir, "figure4")
            + save(make_figure4(runs, zoom, zoomed=True), out_dir, "figure4_zoom"))


# ----------------------------------------------------------------------------- Figure 6


def make_figure6(runs: Sequence):
    """Figure 6: training loss, test accuracy and sharpness against steps, one curve per run of a
    sweep (sorted by η; the ``η_t = 1/S(θ_t)`` runs labelled so, in black), with each constant
    η's ``2/η`` dashed in the run's colour.  The title says "several step sizes" only when the runs
    have several."""
    plt = pyplot()
    runs = sorted(runs, key=lambda r: (is_inverse_sharpness(r), lr_of(r)))
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.0), layout="constrained")
    ax_l, ax_a, ax_s = axes
    missing = {ax: [] for ax in axes}
    for run, color in zip(runs, lr_colors(runs)):
        name = lr_label(run)
        for ax, field, mode in ((ax_l, "loss", "dense"), (ax_a, "test_accuracy", "points"),
                                (ax_s, "sharpness", "points")):
            kw = dict(ms=2) if mode == "points" else {}
            if not plot_process(ax, column(run, "train", field), "train", mode=mode, color=color, label=name, **kw):
                missing[ax].append(f"{name} ({Path(run.path).name})")
        if not is_inverse_sharpness(run):
            edge_line(ax_s, lr_of(run), color=color, label=None)
    if ax_l.lines and all(np.nanmin(line.get_ydata()) > 0 for line in ax_l.lines):
        ax_l.set_yscale("log")
    ax_l.set_ylabel("training loss")
    ax_a.set_ylabel("test accuracy")
    ax_s.set_ylabel(r"sharpness (dashed: $2/\eta$)")
    for ax, title in zip(axes, ("train loss", "test accuracy", "sharpness")):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step $t$")
        note(ax, [f"not recorded: {', '.join(missing[ax])}"] if missing[ax] else [])
        finish_empty(ax)
    if ax_l.lines:
        ax_l.legend(fontsize=8, loc="best")
    sizes = list(dict.fromkeys(lr_label(r) for r in runs))
    if len(sizes) > 1:
        what = "at several step sizes"
    elif sizes:
        what = f"at {sizes[0]}" + (f" ({len(runs)} runs)" if len(runs) > 1 else "")
    else:
        what = "(no runs)"
    fig.suptitle(f"Figure 6: full-batch GD {what}" + (f" — {run_title(runs[0])}" if runs else ""), fontsize=11)
    return fig


def figure6(runs, out_dir: str | Path, stem: str = "figure6") -> list[Path]:
    """Save :func:`make_figure6` as ``stem``.png/.pdf in ``out_dir``; returns the paths."""
    runs = [runs] if isinstance(runs, Run) else list(runs)
    return save(make_figure6(runs), out_dir, stem)
