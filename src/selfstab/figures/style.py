"""Shared look of the paper's figures: the one table of process labels, colours and line styles
(:data:`PROCESSES`), the 2/η line, small "what is missing" notes, and saving as PNG + PDF.

Drawing only: the series drawn (a column by step, the two-step sharpness average, the run's η and
onset) are read by :mod:`selfstab.records.series`; nothing here opens a file or recomputes a
trajectory.  matplotlib is imported inside :func:`pyplot` only (Agg backend),
never at import, so importing selfstab neither costs its start-up nor changes a user's backend.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from ..records.series import dense, is_inverse_sharpness, lr_of

__all__ = ["EDGE_STYLE", "NOTE_STYLE", "PROCESSES", "ProcessStyle", "edge_line", "finish_empty", "lr_colors", "lr_label",
           "note", "outside_note", "plot_process", "png_bytes", "pyplot", "run_title", "save", "style_of"]


@dataclass(frozen=True)
class ProcessStyle:
    """How one process looks in every figure: its legend label, colour and line style."""

    label: str
    color: str
    ls: str = "-"


# The one table of process labels and colours (``train`` is GD on its way to the edge).
PROCESSES: dict[str, ProcessStyle] = {
    "gd": ProcessStyle("gradient descent", "#1f77b4", "-"),
    "predicted": ProcessStyle(r"predicted dynamics, eq. (6): $\theta^\dagger_t + v_t$", "#ff7f0e", "--"),
    "generalized": ProcessStyle("generalized prediction (App. F)", "#9467bd", ":"),
    "constrained": ProcessStyle(r"constrained trajectory $\theta^\dagger_t$", "#2ca02c", "-"),
    "flow": ProcessStyle("gradient flow", "#d62728", "-"),
    "central": ProcessStyle("central flow", "#8c564b", "-."),
    "constrained_k": ProcessStyle(r"$k$-constrained trajectory", "#17becf", "-"),
    "kconstrained": ProcessStyle(r"$k$-constrained trajectory $\theta^\dagger_k$", "#17becf", "-"),
    "train": ProcessStyle("gradient descent", "#1f77b4", "-"),
}


def style_of(process: str) -> ProcessStyle:
    """The :data:`PROCESSES` entry of ``process`` (grey and its own name for one not in the table)."""
    return PROCESSES.get(process) or ProcessStyle(process, "0.3", "-")


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


def edge_line(ax, lr: float, color=None, label: str | None = r"$2/\eta$", **kw):
    """The stability threshold ``2/η`` as a dashed horizontal line (returned; None when η is unknown)."""
    if np.isfinite(lr) and lr > 0:
        style = dict(EDGE_STYLE, **({"color": color} if color is not None else {}), **kw)
        return ax.axhline(2.0 / lr, label=label, **style)
    return None


def plot_process(ax, s: pd.Series | None, process: str, *, label: str | None = "", mode: str = "dense",
                 shift: int = 0, window: tuple[int, int] | None = None, **kw) -> bool:
    """Draw one process's series in its colour; False (and nothing drawn) when ``s`` is None or has
    no value in the window.

    ``mode``: ``"dense"`` — a value per step is expected, a missing step or a NaN is a gap in the
    line; ``"points"`` — measured only at some steps (NaN elsewhere, like ``train.sharpness``): the
    measured points joined, with small markers; ``"rows"`` — sparse measurements (one row every k
    steps, like ``diagnostics``): markers only, never a straight line across the steps between them.
    ``label=""`` takes the process's label from :data:`PROCESSES`.  ``shift`` is added to the steps;
    ``window = (a, b)`` keeps steps a..b (before the shift) so the y-axis autoscales to what is shown.
    """
    if s is None:
        return False
    if window is not None:
        s = s.loc[window[0]:window[1]]
    if mode == "points":
        s = s.dropna()
        kw.setdefault("marker", ".")
        kw.setdefault("ms", 3)
    elif mode == "rows":
        s = s.dropna()
        kw.setdefault("marker", "o")
        kw.setdefault("ms", 3)
        kw["ls"] = "none"
    elif mode == "dense":
        s = dense(s)
    else:
        raise ValueError(f"mode must be dense, points or rows, got {mode!r}")
    if len(s) == 0 or not np.isfinite(s.to_numpy()).any():
        return False
    look = style_of(process)
    style = dict(color=look.color, ls=look.ls, lw=1.0)
    style.update(kw)
    ax.plot(s.index.to_numpy() + shift, s.to_numpy(), label=look.label if label == "" else label, **style)
    return True


def outside_note(window: tuple[int, int], steps: tuple[int, int] | None) -> str | None:
    """The note for a zoom ``window`` with nothing recorded in it, e.g. "steps 500–600 are outside the
    recorded steps 0–125"; None when the window overlaps the recorded ``steps``."""
    a, b = window
    if steps is None:
        return f"steps {a}–{b}: nothing recorded"
    if b < steps[0] or a > steps[1]:
        return f"steps {a}–{b} are outside the recorded steps {steps[0]}–{steps[1]}"
    return None


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
