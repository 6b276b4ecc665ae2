"""Series read off a loaded run: a column by step, on every step, averaged; the run's η and onset.

The one reader layer between the records and what is made of them: figures draw these series and the
report condenses them (:mod:`selfstab.report`), and neither reads a run's files or derives its facts
again.  Everything here takes a :class:`~selfstab.records.Run` (``run.records``, ``run.summary``,
``run.config``) and recomputes no trajectory.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
import pandas as pd

__all__ = ["MOVING_WINDOW", "column", "dense", "is_inverse_sharpness", "lr_of", "moving_average", "onset",
           "recorded_steps", "sharpness_two_step", "two_step_average"]


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


MOVING_WINDOW = 10  # GD steps in the moving average that the central flow's predicted loss is held against


def moving_average(s: pd.Series | None, window: int = MOVING_WINDOW) -> pd.Series | None:
    """The centred ``window``-step moving average of ``s`` on its step grid (NaN where the window is not
    full, at the ends or over a gap): GD's time-averaged loss, which the central flow predicts
    (docs/theory.md §10).  None stays None."""
    if s is None:
        return None
    return dense(s).rolling(window, center=True, min_periods=window).mean()


def two_step_average(s):
    """The two-step sharpness average ``(S_{t−1} + S_t)/2`` at step ``t`` (docs/theory.md §6).

    This is the pairing the tracker records as ``gd.sharpness_avg2``: it needs only the steps already
    taken, so it is known at step ``t`` as soon as ``S_t`` is.  The paper's Figure 4 averages two
    consecutive iterates to remove the period-2 oscillation ``(∇S·u)x_t``; which of the two pairings
    is used only moves the curve by one step.  NaN at the first step and wherever either step is
    missing (a gap in the records stays a gap, it is never averaged across).

    ``s``: a Series indexed by step (returned as a Series on every step from the first to the last),
    or a 1-D array of consecutive steps (returned as an array of the same length).
    """
    if isinstance(s, pd.Series):
        d = dense(s.astype(float))
        return (d + d.shift(1)) / 2.0
    a = np.asarray(s, dtype=float)
    out = np.full_like(a, np.nan)
    out[1:] = (a[:-1] + a[1:]) / 2.0
    return out


def sharpness_two_step(run, process: str) -> pd.Series | None:
    """The two-step average :func:`two_step_average` of ``process``'s sharpness, by step.

    The recorded ``sharpness_avg2`` column when there is one (GD's), else the average of the
    recorded ``sharpness``: every process is averaged with the same pairing, so predictions and GD
    line up step for step.  None when neither is recorded."""
    avg = column(run, process, "sharpness_avg2")
    if avg is not None:
        return dense(avg)
    s = column(run, process, "sharpness")
    return None if s is None else two_step_average(s)


def lr_of(run) -> float:
    """The run's η as the run resolved it: the summary's ``lr``, else the config's ``lr``; NaN when neither
    exists.

    A run's ``config.toml`` is the resolved config, written after :meth:`selfstab.config.RunConfig.migrate`
    (the one place that reads an old ``train.lr``), so no older layout is read again here."""
    lr = run.summary.get("lr")
    if lr is None:
        lr = run.config.get("lr")
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


def recorded_steps(run, processes: Iterable[str]) -> tuple[int, int] | None:
    """``(first, last)`` step recorded by any of ``processes`` in ``run``; None when none has a row."""
    idx = [run.records[p].index for p in processes if p in run.records and len(run.records[p])]
    if not idx:
        return None
    return int(min(i.min() for i in idx)), int(max(i.max() for i in idx))
