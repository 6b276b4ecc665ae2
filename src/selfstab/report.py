"""One page per run: the config, the key numbers and the paper's figures, from the records alone.

:func:`key_numbers` condenses a run into a flat dict (onset, why tracking stopped, how well
Theorem 1 predicts GD, distances, solver costs); :func:`write_report` writes it, with the
figures, as a self-contained HTML page (PNG images embedded as base64) or as Markdown with
the PNGs beside it.
"""

from __future__ import annotations

import base64
import html
import math
import os
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd

from .errors import ConfigError
from .figures.style import column, lr_of, onset, png_bytes, run_title, sharpness_two_step
from .records import Run, load_run

__all__ = ["KEY_LABELS", "key_numbers", "relative_error", "write_report"]


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


def key_numbers(run: Run) -> dict[str, Any]:
    """The headline numbers of a run, from its summary and records; None where not available.

    Theorem 1 errors compare, over the tracked steps where both are recorded,
    ``predicted.loss`` (= L(θ†_t) + x_t²/η) with ``gd.loss``, and the two-step averages
    ``(S_{t−1} + S_t)/2`` (docs/theory.md §6; :func:`~selfstab.figures.style.two_step_average`) of
    ``predicted.sharpness`` (= 2/η + y_t + (∇S·u)x_t) and of GD's sharpness (the recorded
    ``gd.sharpness_avg2``, or the average of ``gd.sharpness`` when that column is absent):
    ``|pred − gd| / |gd|``, median and max (keys ``median_rel_err_loss`` …; the same for the
    generalized prediction with the prefix ``generalized_``).  ``max_lambda2_times_lr`` is the largest
    ``η·λ₂(θ†)`` of ``diagnostics.lambda2`` (measured every ``track.diagnostics_every`` steps), to be
    read against ``stop_lambda2`` (``track.stop_lambda2`` of the config).  Costs are means per
    tracked step (seconds from ``cost.seconds``, else ``timing.seconds``).
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
    return out


# The order and wording of the key numbers in a report.
KEY_LABELS = [
    ("lr", "learning rate η"),
    ("parameters", "parameters"),
    ("onset_step", "edge reached (θ₀) at step"),
    ("onset_sharpness", "midpoint sharpness at θ₀"),
    ("stop_reason", "tracking stopped because"),
    ("tracked_steps", "tracked steps"),
    ("median_rel_err_loss", "Theorem 1 loss L(θ†)+x²/η vs GD: median relative error"),
    ("max_rel_err_loss", "… max relative error"),
    ("median_rel_err_sharpness", "Theorem 1 sharpness (two-step avg.) vs GD: median relative error"),
    ("max_rel_err_sharpness", "… max relative error"),
    ("median_dist_gd", "median ‖θ_t − (θ†_t + v_t)‖"),
    ("generalized_median_rel_err_loss", "generalized prediction (App. F), loss: median relative error"),
    ("generalized_max_rel_err_loss", "… max relative error"),
    ("generalized_median_rel_err_sharpness", "generalized prediction, sharpness: median relative error"),
    ("generalized_max_rel_err_sharpness", "… max relative error"),
    ("generalized_median_dist_gd", "generalized: median ‖θ_t − (θ†_t + v_t)‖"),
    ("median_dist_constrained", "median ‖θ_t − θ†_t‖"),
    ("median_delta", "median δ_t = √(2α/β)"),
    ("median_epsilon", "median ε = η√α"),
    ("max_lambda2_times_lr", "max η·λ₂(θ†)"),
    ("stop_lambda2", "tracking stops at η·λ₂(θ†) ="),
    ("gd_dist_constrained_end", "‖θ_t − θ†_t‖ at the end"),
    ("flow_dist_gd_end", "gradient flow: distance from GD at the end"),
    ("flow_dist_constrained_end", "gradient flow: distance from θ† at the end"),
    ("mean_hvps", "HVPs per tracked step (mean)"),
    ("mean_grads", "gradients per tracked step (mean)"),
    ("mean_d3", "∇³L(u,u) per tracked step (mean)"),
    ("mean_seconds", "seconds per tracked step (mean)"),
    ("seconds_train", "seconds to the edge"),
    ("seconds_track", "seconds tracking"),
]


# Shown even when unknown ("—"); any other key number that is None (not recorded) is left out.
ALWAYS_SHOWN = ("lr", "onset_step", "onset_sharpness", "stop_reason", "tracked_steps")


def _rows(numbers: dict) -> list[tuple[str, Any]]:
    return [(label, numbers.get(key)) for key, label in KEY_LABELS
            if key in ALWAYS_SHOWN or numbers.get(key) is not None]


def _fmt(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _figures(run: Run) -> Iterator[tuple[str, str, Any]]:
    """``(stem, caption, figure)`` of each figure whose records this run has (the registry decides),
    drawn one at a time."""
    from .figures.registry import render

    for stem, caption, _, fig in render(run):
        yield stem, caption, fig


def _config_text(run: Run) -> str:
    try:
        return (Path(run.path) / "config.toml").read_text(encoding="utf-8")
    except OSError:
        from .config import dumps_toml
        return dumps_toml(run.config)


def _html(run: Run, numbers: dict, images: list[tuple[str, str, bytes]]) -> str:
    e = html.escape
    rows = "\n".join(f"<tr><td>{e(label)}</td><td>{e(_fmt(v))}</td></tr>" for label, v in _rows(numbers))
    figs = "\n".join(
        f'<figure id="{e(stem)}"><img alt="{e(caption)}" src="data:image/png;base64,'
        f'{base64.b64encode(data).decode("ascii")}"><figcaption>{e(caption)}</figcaption></figure>'
        for stem, caption, data in images) or "<p>No records to plot.</p>"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>selfstab run {e(Path(run.path).name)}</title>
<style>
body {{ font-family: sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }}
table {{ border-collapse: collapse; }} td {{ padding: 2px 12px; border-bottom: 1px solid #ddd; }}
td:last-child {{ font-family: monospace; text-align: right; }}
img {{ max-width: 100%; }} figure {{ margin: 1.5em 0; }} figcaption {{ color: #555; font-size: 90%; }}
pre {{ background: #f6f6f6; padding: 1em; overflow-x: auto; }}
</style></head><body>
<h1>selfstab run <code>{e(str(run.path))}</code></h1>
<p>{e(run_title(run))}, η = {e(_fmt(numbers.get("lr")))}</p>
<h2>Key numbers</h2>
<p>Computed from the records; relative errors are |prediction − GD| / |GD| over the tracked steps where both
were recorded; — : not known.  Numbers that were not recorded are left out.</p>
<table>
{rows}
</table>
<h2>Figures</h2>
{figs}
<h2>Config</h2>
<pre>{e(_config_text(run))}</pre>
</body></html>
"""


def _markdown(run: Run, numbers: dict, images: list[tuple[str, str, str]]) -> str:
    lines = [f"# selfstab run `{run.path}`", "", f"{run_title(run)}, η = {_fmt(numbers.get('lr'))}", "",
             "## Key numbers", "",
             "Computed from the records; relative errors are |prediction − GD| / |GD| over the tracked steps where "
             "both were recorded; — : not known.  Numbers that were not recorded are left out.", "",
             "| | |", "|---|---:|"]
    lines += [f"| {label} | {_fmt(v)} |" for label, v in _rows(numbers)]
    lines += ["", "## Figures", ""]
    lines += [f"![{caption}]({name})\n\n*{caption}*\n" for _, caption, name in images] or ["No records to plot.", ""]
    lines += ["## Config", "", "```toml", _config_text(run).rstrip("\n"), "```", ""]
    return "\n".join(lines)


def write_report(run_dir: str | os.PathLike | Run, out: str | os.PathLike | None = None, fmt: str = "html") -> Path:
    """Write the report of a run and return its path.

    ``fmt="html"``: one self-contained page (default ``RUN/report.html``); ``fmt="md"``:
    Markdown (default ``RUN/report.md``) with the figures as ``<stem>_<figure>.png`` beside it.
    A path that is not a run directory raises :class:`~selfstab.errors.ConfigError`.
    """
    if fmt not in ("html", "md"):
        raise ConfigError(f"report: format must be html or md, got {fmt!r}")
    run = run_dir if isinstance(run_dir, Run) else load_run(run_dir)
    out = Path(out) if out is not None else Path(run.path) / f"report.{fmt}"
    out.parent.mkdir(parents=True, exist_ok=True)
    numbers = key_numbers(run)
    if fmt == "html":
        images = [(stem, caption, png_bytes(fig)) for stem, caption, fig in _figures(run)]
        text = _html(run, numbers, images)
    else:
        images = []
        for stem, caption, fig in _figures(run):
            name = f"{out.stem}_{stem}.png"
            (out.parent / name).write_bytes(png_bytes(fig, dpi=130))
            images.append((stem, caption, name))
        text = _markdown(run, numbers, images)
    out.write_text(text, encoding="utf-8")
    return out
