"""What a run measured, in a few numbers: :func:`key_numbers`, the regimes by ``k_crit``, a run's status.

Computed from the records and summary alone (through :mod:`selfstab.records.series`), so a report, a
comparison page and the slow tests read the same numbers (:mod:`.page` lays them out).
"""

from __future__ import annotations

import math
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..records import Run
from ..records.series import MOVING_WINDOW, column, lr_of, moving_average, onset, sharpness_two_step

__all__ = ["AGREEMENT", "MIN_TRACKED_STEPS", "key_numbers", "regimes", "relative_error", "status_note", "too_few_steps"]

# Fewest tracked steps whose agreement numbers mean anything: two windows of the 10-step moving average
# (the central flow's comparison) and, for Theorem 1, several oscillation cycles.  From fewer, a median
# relative error of 6e-06 or a distance of 0 says only that the processes have not had time to part.
MIN_TRACKED_STEPS = 2 * MOVING_WINDOW

# The key numbers that measure how well a prediction (or trajectory) follows GD over the tracked steps;
# the regimes' ``regime_k{k}_…_rel_err`` keys count too.
AGREEMENT = ("median_rel_err_loss", "max_rel_err_loss", "median_rel_err_sharpness", "max_rel_err_sharpness",
             "median_dist_gd", "generalized_median_rel_err_loss", "generalized_max_rel_err_loss",
             "generalized_median_rel_err_sharpness", "generalized_max_rel_err_sharpness",
             "generalized_median_dist_gd", "median_dist_constrained", "gd_dist_constrained_end", "flow_dist_gd_end",
             "flow_dist_constrained_end", "central_median_rel_err_loss", "central_max_rel_err_loss",
             "central_dist_gd_end", "kconstrained_dist_gd_end", "kconstrained_median_dist_gd")


def too_few_steps(tracked: int | None, min_steps: int = MIN_TRACKED_STEPS) -> str | None:
    """What a report shows instead of an agreement number from fewer than ``min_steps`` tracked steps."""
    if tracked is None or tracked >= min_steps:
        return None
    return f"too few steps ({tracked} tracked; at least {min_steps} needed)"


def relative_error(pred: pd.Series | None, ref: pd.Series | None) -> pd.Series | None:
    """``|pred − ref| / |ref|`` on the steps where both are recorded and the ratio is finite
    (a NaN on either side, or ``ref = 0``, drops the step); None when nothing is left."""
    if pred is None or ref is None:
        return None
    p, r = pred.align(ref, join="inner")
    err = (p - r).abs() / r.abs()
    err = err[np.isfinite(err.to_numpy())]
    return err if len(err) else None


def _num(x: Any) -> float | int | None:
    if x is None:
        return None
    if isinstance(x, (int, np.integer)) and not isinstance(x, bool):
        return int(x)
    x = float(x)
    return x if math.isfinite(x) else None


def _stat(s: pd.Series | None, how: str) -> float | None:
    if s is None:
        return None
    v = s.to_numpy(dtype=float)
    v = v[np.isfinite(v)]
    if not len(v):
        return None
    return _num({"median": np.median, "max": np.max, "mean": np.mean, "last": lambda a: a[-1]}[how](v))


def _last_step(run: Run) -> tuple[str, int | None]:
    """``("tracking" | "training", last recorded step)`` of a run (None: nothing recorded yet)."""
    for table, phase in (("gd", "tracking"), ("train", "training")):
        frame = run.records.get(table)
        if frame is not None and len(frame):
            return phase, int(frame.index.max())
    return "starting", None


def _last_written(run: Run) -> str:
    """Local time of the last write of the run's records (else of its summary), as HH:MM:SS."""
    for name in ("records.h5", "summary.json", "config.toml"):
        try:
            return datetime.fromtimestamp((Path(run.path) / name).stat().st_mtime).strftime("%H:%M:%S")
        except OSError:
            continue
    return "never"


def status_note(run: Run) -> str | None:
    """One sentence for a run that is not finished: still being written (``Run.running``), or left
    "running" by a writer that is gone; None for any other run."""
    if run.summary.get("status") != "running":
        return None
    running = getattr(run, "running", True)   # whether its writer is alive (True where a Run cannot tell)
    phase, step = _last_step(run)
    where = f"{phase} step {step}" if step is not None else "nothing recorded yet"
    if running:
        return (f"run is still running ({where}, last written {_last_written(run)}); "
                f"figures show what is recorded so far")
    return (f"run stopped without finishing ({where}, last written {_last_written(run)}; its process is gone); "
            f"`selfstab resume {run.path}` continues it")


def key_numbers(run: Run, min_steps: int = MIN_TRACKED_STEPS) -> dict[str, Any]:
    """The headline numbers of a run, from its summary and records; None where not available.

    Theorem 1 errors compare, over the tracked steps where both are recorded,
    ``predicted.loss`` (= L(θ†_t) + x_t²/η) with ``gd.loss``, and the two-step averages
    ``(S_{t−1} + S_t)/2`` (docs/theory.md §6; :func:`~selfstab.records.series.two_step_average`) of
    ``predicted.sharpness`` (= 2/η + y_t + (∇S·u)x_t) and of GD's sharpness (the recorded
    ``gd.sharpness_avg2``, or the average of ``gd.sharpness`` when that column is absent):
    ``|pred − gd| / |gd|``, median and max (keys ``median_rel_err_loss`` …; the same for the
    generalized prediction with the prefix ``generalized_``).  ``max_lambda2_times_lr`` is the largest
    ``η·λ₂(θ†)`` of ``diagnostics.lambda2`` (measured every ``track.diagnostics_every`` steps), to be
    read against ``stop_lambda2`` (``track.stop_lambda2`` of the config).  Costs are means per
    tracked step (seconds from ``cost.seconds``, else ``timing.seconds``).

    A run tracked for fewer than ``min_steps`` steps (default :data:`MIN_TRACKED_STEPS`) has, instead of
    each recorded agreement number (:data:`AGREEMENT`, the regimes' errors), the text "too few steps
    (N tracked; at least M needed)": one step of GD and θ† barely apart is not agreement.
    """
    s = run.summary
    step0, sharp0 = onset(run)
    gd = run.records.get("gd")
    tracked = s.get("tracked_steps")
    if tracked is None and gd is not None and len(gd):
        tracked = int(gd.index.max())
    out: dict[str, Any] = {
        "lr": _num(lr_of(run)),
        "onset_step": step0,
        "onset_sharpness": _num(sharp0),
        "stop_reason": s.get("stop_reason"),
        "tracked_steps": _num(tracked),
        "parameters": _num(s.get("parameters")),
    }
    gd_sharp = sharpness_two_step(run, "gd")
    for process in ("predicted", "generalized"):
        prefix = "" if process == "predicted" else "generalized_"
        loss_err = relative_error(column(run, process, "loss"), column(run, "gd", "loss"))
        sharp_err = relative_error(sharpness_two_step(run, process), gd_sharp)
        out[f"{prefix}median_rel_err_loss"] = _stat(loss_err, "median")
        out[f"{prefix}max_rel_err_loss"] = _stat(loss_err, "max")
        out[f"{prefix}median_rel_err_sharpness"] = _stat(sharp_err, "median")
        out[f"{prefix}max_rel_err_sharpness"] = _stat(sharp_err, "max")
        out[f"{prefix}median_dist_gd"] = _stat(column(run, process, "dist_gd"), "median")
    lr = lr_of(run)
    lam2 = column(run, "diagnostics", "lambda2")
    lam2_max = _stat(lam2 if lam2 is not None else column(run, "diagnostics", "eig_1"), "max")
    stop = (run.config.get("track") or {}).get("stop_lambda2")
    seconds = column(run, "cost", "seconds")
    if seconds is None:  # the wall clock may be kept apart, so that resumed records stay bit-for-bit
        seconds = column(run, "timing", "seconds")
    out.update({
        "median_dist_constrained": _stat(column(run, "gd", "dist_constrained"), "median"),
        "median_delta": _stat(column(run, "constrained", "delta"), "median"),
        "median_epsilon": _stat(column(run, "constrained", "epsilon"), "median"),
        "max_lambda2_times_lr": None if lam2_max is None else _num(lam2_max * lr),
        "stop_lambda2": None if lam2_max is None else _num(stop),
        "gd_dist_constrained_end": _stat(column(run, "gd", "dist_constrained"), "last"),
        "flow_dist_gd_end": _stat(column(run, "flow", "dist_gd"), "last"),
        "flow_dist_constrained_end": _stat(column(run, "flow", "dist_constrained"), "last"),
        "mean_hvps": _stat(column(run, "cost", "hvps"), "mean"),
        "mean_grads": _stat(column(run, "cost", "grads"), "mean"),
        "mean_d3": _stat(column(run, "cost", "d3"), "mean"),
        "mean_seconds": _stat(seconds, "mean"),
        "seconds_train": _num(s.get("seconds_train")),
        "seconds_track": _num(s.get("seconds_track")),
    })
    out.update(_several(run, min_steps))
    few = too_few_steps(out["tracked_steps"], min_steps)
    if few is not None:
        for key, value in out.items():
            if value is not None and (key in AGREEMENT or (key.startswith("regime_k") and key.endswith("rel_err"))):
                out[key] = few
    return out


def regimes(run: Run) -> pd.DataFrame | None:
    """Each theory's error by regime: one row per ``k_crit`` (the central flow's critical eigenvalues,
    ``central.k_crit``) with the number of tracked steps in it and, over those steps, the median and
    max relative errors of the central flow's predicted loss ``L(θ_cf) + tr(X)/η`` against GD's centred
    10-step moving average (:func:`~selfstab.records.series.moving_average`; the window's first and
    last steps have none) and of Theorem 1's loss ``L(θ†) + x²/η`` (``predicted.loss``) against GD's
    loss.  None when the run has no central-flow records."""
    k = column(run, "central", "k_crit")
    if k is None:
        return None
    k = k.dropna().astype(int)
    central_err = relative_error(column(run, "central", "predicted_loss"), moving_average(column(run, "gd", "loss")))
    theorem_err = relative_error(column(run, "predicted", "loss"), column(run, "gd", "loss"))
    rows = []
    for kc in sorted(set(k.to_numpy().tolist())):
        steps = k.index[k.to_numpy() == kc]
        row: dict[str, Any] = {"k_crit": kc, "steps": len(steps)}
        for name, err in (("central", central_err), ("theorem1", theorem_err)):
            sub = None if err is None else err[err.index.isin(steps)]
            sub = sub if sub is not None and len(sub) else None
            row[f"{name}_median_rel_err"] = _stat(sub, "median")
            row[f"{name}_max_rel_err"] = _stat(sub, "max")
        rows.append(row)
    return pd.DataFrame(rows).set_index("k_crit")


def _several(run: Run, min_steps: int = MIN_TRACKED_STEPS) -> dict[str, Any]:
    """Key numbers of the central flow and θ†_k (none when the run tracked neither), and the regimes
    flattened as ``regime_k{k}_…`` (:func:`regimes`)."""
    if "central" not in run.records and "kconstrained" not in run.records:
        return {}
    central_err = relative_error(column(run, "central", "predicted_loss"), moving_average(column(run, "gd", "loss")))
    residuals = [c for c in (column(run, "central", "sdcp_residual"), column(run, "kconstrained", "sdcp_residual"))
                 if c is not None]
    from ..figures.assumptions import rule_kind

    out: dict[str, Any] = {
        "lambda2_rule": rule_kind(run),
        "central_median_rel_err_loss": _stat(central_err, "median"),
        "central_max_rel_err_loss": _stat(central_err, "max"),
        "central_dist_gd_end": _stat(column(run, "central", "dist_gd"), "last"),
        "central_max_x_rank": _stat(column(run, "central", "x_rank"), "max"),
        "kconstrained_dist_gd_end": _stat(column(run, "kconstrained", "dist_gd"), "last"),
        "kconstrained_median_dist_gd": _stat(column(run, "kconstrained", "dist_gd"), "median"),
        "kconstrained_max_residual_sharpness": _stat(column(run, "kconstrained", "residual_sharpness"), "max"),
        "max_sdcp_residual": _stat(pd.concat(residuals), "max") if residuals else None,
    }
    flag = column(run, "constrained", "outside_assumptions")
    if flag is not None:
        hit = flag.index[flag.to_numpy() > 0]
        out["outside_assumptions_from"] = int(hit[0]) if len(hit) else None
    table = regimes(run)
    if table is not None:
        for kc, row in table.iterrows():
            few = too_few_steps(int(row["steps"]), min_steps)   # a regime of a few steps shows no agreement either
            for key, value in row.items():
                out[f"regime_k{kc}_{key}"] = int(value) if key == "steps" else few or _num(value)
    return out
