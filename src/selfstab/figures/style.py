"""Shared look of the paper's figures: one colour and line style per process, the 2/η line,
small "what is missing" notes, and saving as PNG + PDF.

Nothing here reads a run beyond picking columns out of ``run.records``; nothing
recomputes a trajectory.  matplotlib's Agg backend is chosen inside
:func:`pyplot`, never at import, so importing selfstab leaves a user's backend alone.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

# One colour per process, the same in every figure.
COLORS = {
    "gd": "#1f77b4",
    "predicted": "#ff7f0e",
    "generalized": "#9467bd",
    "constrained": "#2ca02c",
    "flow": "#d62728",
    "train": "#1f77b4",
}
LABELS = {
    "gd": "gradient descent",
    "predicted": r"predicted, eq. (6): $\theta^\dagger_t + v_t$",
    "generalized": "generalized prediction (App. F)",
    "constrained": r"constrained $\theta^\dagger_t$",
    "flow": "gradient flow",
    "train": "gradient descent",
}
LINESTYLES = {"gd": "-", "predicted": "--", "generalized": ":", "constrained": "-", "flow": "-", "train": "-"}
EDGE_STYLE = dict(ls="--", lw=1.0, color="0.4")
NOTE_STYLE = dict(fontsize=7, color="0.35", ha="left", va="bottom")


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend (set here, not at import)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def save(fig, out_dir: str | Path, stem: str) -> list[Path]:
    """Write ``fig`` as ``stem``.png and ``stem``.pdf in ``out_dir`` (created), close it, return the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{stem}.png", out / f"{stem}.pdf"]
    for p in paths:
        fig.savefig(p, dpi=130, bbox_inches="tight")
    pyplot().close(fig)
    return paths


def png_bytes(fig, dpi: int = 110) -> bytes:
    """``fig`` as PNG bytes (for embedding in a report); the figure is closed."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    pyplot().close(fig)
    return buf.getvalue()


def column(run, process: str, field: str) -> pd.Series | None:
    """``run.records[process][field]`` as a float Series indexed by step, or None when the
    process or field is absent or never finite (a half-finished run)."""
    frame = run.records.get(process)
    if frame is None or field not in frame.columns:
        return None
    s = frame[field].astype(float)
    return s if np.isfinite(s.to_numpy()).any() else None


def dense(s: pd.Series) -> pd.Series:
    """``s`` on every step from its first to its last (NaN where a step has no row), so a line
    plotted from it shows a gap where the records have one."""
    if len(s) == 0:
        return s
    return s.reindex(pd.RangeIndex(int(s.index.min()), int(s.index.max()) + 1, name=s.index.name))


def two_step_average(s: pd.Series) -> pd.Series:
    """``(s_t + s_{t+1})/2`` at step ``t`` (NaN where either is missing): the paper's sharpness plots
    use it to remove the period-2 oscillation ``(∇S·u)x_t``."""
    d = dense(s)
    return (d + d.shift(-1)) / 2.0


def sharpness_two_step(run, process: str) -> pd.Series | None:
    """``(S_t + S_{t+1})/2`` at step ``t`` of ``process``, from its ``sharpness`` column.

    Every process is averaged here, the same way, so predictions and GD line up step for step;
    a recorded ``sharpness_avg2`` is used only when the raw ``sharpness`` is missing."""
    s = column(run, process, "sharpness")
    if s is not None:
        return two_step_average(s)
    return column(run, process, "sharpness_avg2")


def lr_of(run) -> float:
    """The run's η: the summary's ``lr``, else ``config["train"]["lr"]``; NaN when neither exists."""
    lr = run.summary.get("lr")
    if lr is None:
        lr = run.config.get("train", {}).get("lr")
    return float(lr) if lr is not None else float("nan")


def onset(run) -> tuple[int | None, float | None]:
    """``(step, sharpness)`` of θ₀, the first GD iterate with midpoint sharpness ≥ 2/η: from the
    summary, else the first measured ``train.sharpness`` ≥ 2/η; ``(None, None)`` when not reached."""
    step, sharp = run.summary.get("onset_step"), run.summary.get("onset_sharpness")
    if step is not None:
        return int(step), (float(sharp) if sharp is not None else None)
    s, lr = column(run, "train", "sharpness"), lr_of(run)
    if s is None or not lr > 0:
        return None, None
    hit = s[s >= 2.0 / lr]
    return (int(hit.index[0]), float(hit.iloc[0])) if len(hit) else (None, None)


def is_inverse_sharpness(run) -> bool:
    """Whether the run used the schedule ``η_t = 1/S(θ_t)`` (Figure 6)."""
    return run.config.get("train", {}).get("schedule") == "inverse_sharpness"


def run_title(run) -> str:
    """``model / data / loss`` of a run, as far as its config says."""
    cfg = run.config
    parts = [cfg.get("model", {}).get("name"), cfg.get("data", {}).get("name"), cfg.get("loss")]
    return " / ".join(str(p) for p in parts if p) or Path(run.path).name


def lr_label(run) -> str:
    return r"$\eta_t = 1/S(\theta_t)$" if is_inverse_sharpness(run) else rf"$\eta$ = {lr_of(run):g}"


def lr_colors(runs: Iterable) -> list:
    """One colour per run: a sequential map over the constant step sizes, black for ``η_t = 1/S``."""
    runs = list(runs)
    cmap = pyplot().get_cmap("viridis")
    const = sorted({lr_of(r) for r in runs if not is_inverse_sharpness(r)})
    pos = {lr: (i / max(len(const) - 1, 1)) * 0.85 for i, lr in enumerate(const)}
    return ["k" if is_inverse_sharpness(r) else cmap(pos[lr_of(r)]) for r in runs]


def edge_line(ax, lr: float, color=None, label: str | None = r"$2/\eta$") -> None:
    """The stability threshold ``2/η`` as a dashed horizontal line."""
    if np.isfinite(lr) and lr > 0:
        style = dict(EDGE_STYLE, **({"color": color} if color is not None else {}))
        ax.axhline(2.0 / lr, label=label, **style)


def plot_process(ax, s: pd.Series | None, process: str, *, label: str | None = "", mode: str = "dense",
                 shift: int = 0, window: tuple[int, int] | None = None, **kw) -> bool:
    """Draw one process's series in its colour; False (and nothing drawn) when ``s`` is None.

    ``mode``: ``"dense"`` — a value per step is expected, a missing step or a NaN is a gap;
    ``"points"`` — measured only at some steps (NaN elsewhere, like ``train.sharpness``): join the
    measured points; ``"rows"`` — one row per measurement (like ``diagnostics``): join the rows, a
    NaN in a row is a gap.  ``shift`` is added to the steps; ``window = (a, b)`` keeps steps a..b
    (before the shift) so the y-axis autoscales to what is shown.
    """
    if s is None:
        return False
    if window is not None:
        s = s.loc[window[0]:window[1]]
    if mode == "points":
        s = s.dropna()
        kw.setdefault("marker", ".")
        kw.setdefault("ms", 3)
    elif mode == "dense":
        s = dense(s)
    elif mode != "rows":
        raise ValueError(f"mode must be dense, points or rows, got {mode!r}")
    if len(s) == 0:
        return False
    style = dict(color=COLORS.get(process), ls=LINESTYLES.get(process, "-"), lw=1.0)
    style.update(kw)
    ax.plot(s.index.to_numpy() + shift, s.to_numpy(), label=LABELS.get(process, process) if label == "" else label,
            **style)
    return True


def note(ax, lines: Iterable[str]) -> None:
    """A small grey note in the axes' lower-left corner (what could not be drawn, and why)."""
    lines = [str(x) for x in lines if x]
    if lines:
        ax.text(0.01, 0.01, "\n".join(lines), transform=ax.transAxes, **NOTE_STYLE)


def finish_empty(ax) -> None:
    """An axes with no data at all: hide the meaningless ticks so the note stands alone."""
    if not ax.lines and not ax.collections:
        ax.set_xticks([])
        ax.set_yticks([])
