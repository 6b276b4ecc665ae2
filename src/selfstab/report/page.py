"""One page per run: the config, the key numbers and the paper's figures, from the records alone.

:func:`~.measures.key_numbers` condenses a run into a flat dict (onset, why tracking stopped,
how well Theorem 1 predicts GD, distances, solver costs); :func:`write_report` writes it, with the
figures, as a self-contained HTML page (PNG images embedded as base64) or as Markdown with
the PNGs beside it.  Several runs make one comparison page (:func:`write_report` with a list):
the config keys that differ, the key numbers side by side (one column per run) and the figures
that combine the runs (4 and 6).  A run still being written is reported as far as it is
recorded, and says so (:func:`~.measures.status_note`).
"""

from __future__ import annotations

import base64
import html
import os
from pathlib import Path
from typing import Any, Iterator

from ..errors import ConfigError
from ..figures.style import png_bytes, run_title
from ..records import Run, load_run
from ..records.series import MOVING_WINDOW
from .measures import MIN_TRACKED_STEPS, key_numbers, status_note

__all__ = ["KEY_LABELS", "comparison_path", "write_report"]


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
    ("stop_lambda2", "the λ₂ rule acts at η·λ₂ ="),
    ("gd_dist_constrained_end", "‖θ_t − θ†_t‖ at the end"),
    ("flow_dist_gd_end", "gradient flow: distance from GD at the end"),
    ("flow_dist_constrained_end", "gradient flow: distance from θ† at the end"),
    ("lambda2_rule", "λ₂ rule: stop the run, or flag the single-eigenvalue processes"),
    ("outside_assumptions_from", "single-eigenvalue theory flagged outside its assumptions from step"),
    ("central_median_rel_err_loss", f"central flow L+tr(X)/η vs GD's {MOVING_WINDOW}-step average: median relative error"),
    ("central_max_rel_err_loss", "… max relative error"),
    ("central_dist_gd_end", "central flow: ‖θ_GD − θ_cf‖ at the end"),
    ("central_max_x_rank", "central flow: largest rank(X) (directions that oscillate)"),
    ("kconstrained_dist_gd_end", "θ†_k: ‖θ_GD − θ†_k‖ at the end"),
    ("kconstrained_median_dist_gd", "θ†_k: median ‖θ_GD − θ†_k‖"),
    ("kconstrained_max_residual_sharpness", "θ†_k: largest projection residual η·max(0, λ−2/η)"),
    ("max_sdcp_residual", "largest SDCP KKT residual (central flow, θ†_k)"),
    ("mean_hvps", "HVPs per tracked step (mean)"),
    ("mean_grads", "gradients per tracked step (mean)"),
    ("mean_d3", "∇³L(u,u) per tracked step (mean)"),
    ("mean_seconds", "seconds per tracked step (mean)"),
    ("seconds_train", "seconds to the edge"),
    ("seconds_track", "seconds tracking"),
]


# Shown even when unknown ("—"); any other key number that is None (not recorded) is left out.
ALWAYS_SHOWN = ("lr", "onset_step", "onset_sharpness", "stop_reason", "tracked_steps")


_REGIME_LABELS = {"steps": "steps",
                  "central_median_rel_err": f"central flow vs GD's {MOVING_WINDOW}-step average: median relative error",
                  "central_max_rel_err": "… max relative error",
                  "theorem1_median_rel_err": "Theorem 1 loss vs GD: median relative error",
                  "theorem1_max_rel_err": "… max relative error"}


def _regime_labels(numbers: list[dict]) -> list[tuple[str, str]]:
    """``(key, label)`` of the ``regime_k{k}_…`` numbers present in any of ``numbers``, by k."""
    ks = sorted({int(key[len("regime_k"):].split("_", 1)[0]) for n in numbers for key in n if key.startswith("regime_k")})
    return [(f"regime_k{k}_{field}", f"k_crit = {k}: {label}") for k in ks for field, label in _REGIME_LABELS.items()]


def _rows(numbers: dict) -> list[tuple[str, Any]]:
    return [(label, numbers.get(key)) for key, label in KEY_LABELS + _regime_labels([numbers])
            if key in ALWAYS_SHOWN or numbers.get(key) is not None]


def _fmt(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _figures(run: Run, notes: list[str]) -> Iterator[tuple[str, str, Any]]:
    """``(stem, caption, figure)`` of each figure whose records this run has (the registry decides),
    drawn one at a time; ``notes`` gets one line for each figure left out, saying why."""
    from ..figures.registry import render

    for stem, caption, _, fig in render(run, on_note=notes.append):
        yield stem, caption, fig


def _not_drawn_html(notes: list[str]) -> str:
    """The figures (or runs of a figure) left out and why, after those drawn: the page leads with what applies."""
    if not notes:
        return ""
    items = "".join(f"<li>{html.escape(n)}</li>" for n in notes)
    return f"\n<h3>Left out</h3>\n<ul class=\"skipped\">{items}</ul>"


def _not_drawn_md(notes: list[str]) -> list[str]:
    return ["### Left out", "", *(f"- {n}" for n in notes), ""] if notes else []


def _config_text(run: Run) -> str:
    try:
        return (Path(run.path) / "config.toml").read_text(encoding="utf-8")
    except OSError:
        from ..config import dumps_toml
        return dumps_toml(run.config)


_CSS = """body { font-family: sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }
table { border-collapse: collapse; } td, th { padding: 2px 12px; border-bottom: 1px solid #ddd; }
td:not(:first-child) { font-family: monospace; text-align: right; }
img { max-width: 100%; } figure { margin: 1.5em 0; } figcaption { color: #555; font-size: 90%; }
pre { background: #f6f6f6; padding: 1em; overflow-x: auto; }
p.status { background: #fff4d6; border-left: 4px solid #e0a800; padding: 0.5em 1em; }"""


def _html_note(run: Run) -> str:
    note = status_note(run)
    return "" if note is None else f'<p class="status">{html.escape(note[0].upper() + note[1:])}.</p>\n'


def _md_note(run: Run) -> list[str]:
    note = status_note(run)
    return [] if note is None else [f"> **{note[0].upper() + note[1:]}.**", ""]


def _theory(run: Run) -> list[str]:
    """Which theory held over which tracked steps (the summary's ``theory``, written by the run), as lines."""
    return [f"steps {part['from']}–{part['to']}: {part['what']}" for part in run.summary.get("theory", ())]


def _html(run: Run, numbers: dict, images: list[tuple[str, str, bytes]], notes: list[str]) -> str:
    e = html.escape
    rows = "\n".join(f"<tr><td>{e(label)}</td><td>{e(_fmt(v))}</td></tr>" for label, v in _rows(numbers))
    figs = "\n".join(
        f'<figure id="{e(stem)}"><img alt="{e(caption)}" src="data:image/png;base64,'
        f'{base64.b64encode(data).decode("ascii")}"><figcaption>{e(caption)}</figcaption></figure>'
        for stem, caption, data in images) or "<p>No records to plot.</p>"
    figs += _not_drawn_html(notes)
    held = _theory(run)
    theory = ("<h2>Which theory held when</h2>\n<ul>\n" + "\n".join(f"<li>{e(line)}</li>" for line in held)
              + "\n</ul>\n") if held else ""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>selfstab run {e(Path(run.path).name)}</title>
<style>
{_CSS}
</style></head><body>
<h1>selfstab run <code>{e(str(run.path))}</code></h1>
<p>{e(run_title(run))}, η = {e(_fmt(numbers.get("lr")))}</p>
{_html_note(run)}<h2>Key numbers</h2>
<p>Computed from the records; relative errors are |prediction − GD| / |GD| over the tracked steps where both
were recorded; — : not known.  Numbers that were not recorded are left out; agreement with GD from fewer
than {MIN_TRACKED_STEPS} tracked steps is shown as "too few steps".</p>
<table>
{rows}
</table>
{theory}<h2>Figures</h2>
{figs}
<h2>Config</h2>
<pre>{e(_config_text(run))}</pre>
</body></html>
"""


def _markdown(run: Run, numbers: dict, images: list[tuple[str, str, str]], notes: list[str]) -> str:
    lines = [f"# selfstab run `{run.path}`", "", f"{run_title(run)}, η = {_fmt(numbers.get('lr'))}", "",
             *_md_note(run), "## Key numbers", "",
             "Computed from the records; relative errors are |prediction − GD| / |GD| over the tracked steps where "
             "both were recorded; — : not known.  Numbers that were not recorded are left out; agreement with GD "
             f"from fewer than {MIN_TRACKED_STEPS} tracked steps is shown as \"too few steps\".", "",
             "| | |", "|---|---:|"]
    lines += [f"| {label} | {_fmt(v)} |" for label, v in _rows(numbers)]
    held = _theory(run)
    if held:
        lines += ["", "## Which theory held when", "", *(f"- {line}" for line in held)]
    lines += ["", "## Figures", ""]
    lines += [f"![{caption}]({name})\n\n*{caption}*\n" for _, caption, name in images] or ["No records to plot.", ""]
    lines += _not_drawn_md(notes)
    lines += ["## Config", "", "```toml", _config_text(run).rstrip("\n"), "```", ""]
    return "\n".join(lines)


_COMBINED_NOTE = ("Computed from each run's records, as in the report of one run; relative errors are "
                  "|prediction − GD| / |GD| over the tracked steps where both were recorded; — : not known.")


def _names(runs: list[Run]) -> list[str]:
    """Column headers: the runs' folder names, or their paths where two names coincide."""
    names = [Path(r.path).name for r in runs]
    return names if len(set(names)) == len(names) else [str(r.path) for r in runs]


def _config_differences(runs: list[Run]) -> list[tuple[str, list[Any]]]:
    """``(key, [value per run])`` for each config key on which the runs differ (``out``, ``quiet`` aside)."""
    from ..tomlio import to_dict

    def flat(d: Any, prefix: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in (d or {}).items():
            if isinstance(v, dict):
                out.update(flat(v, f"{prefix}{k}."))
            else:
                out[f"{prefix}{k}"] = v
        return out

    flats = [flat(to_dict(r.config)) for r in runs]
    keys = list(dict.fromkeys(k for f in flats for k in f))
    return [(k, [f.get(k) for f in flats]) for k in keys
            if k not in ("out", "quiet") and any(f.get(k) != flats[0].get(k) for f in flats)]


def _compare_rows(numbers: list[dict]) -> list[tuple[str, list[Any]]]:
    return [(label, [n.get(key) for n in numbers]) for key, label in KEY_LABELS + _regime_labels(numbers)
            if key in ALWAYS_SHOWN or any(n.get(key) is not None for n in numbers)]


def _compare_figures(runs: list[Run], notes: list[str]) -> Iterator[tuple[str, str, Any]]:
    """The figures that combine the runs (the registry's ``combined`` ones), those the records allow."""
    from ..figures.registry import FIGURES, render

    names = [n for n, spec in FIGURES.items() if spec.combined]
    for stem, caption, _, fig in render(runs, names, strict=False, on_note=notes.append):
        yield stem, caption, fig


def _compare_html(runs: list[Run], numbers: list[dict], diffs, images, notes: list[str]) -> str:
    e = html.escape
    names = _names(runs)
    head = "<tr><th></th>" + "".join(f"<th>{e(n)}</th>" for n in names) + "</tr>"
    rows = "\n".join(f"<tr><td>{e(label)}</td>" + "".join(f"<td>{e(_fmt(v))}</td>" for v in vals) + "</tr>"
                     for label, vals in _compare_rows(numbers))
    diff_rows = "\n".join(f"<tr><td>{e(k)}</td>" + "".join(f"<td>{e(_fmt(v))}</td>" for v in vals) + "</tr>"
                          for k, vals in diffs)
    status = "".join(f'<p class="status">{e(n)}: {e(note)}.</p>\n' for n, r in zip(names, runs)
                     if (note := status_note(r)) is not None)
    figs = "\n".join(
        f'<figure id="{e(stem)}"><img alt="{e(caption)}" src="data:image/png;base64,'
        f'{base64.b64encode(data).decode("ascii")}"><figcaption>{e(caption)}</figcaption></figure>'
        for stem, caption, data in images) or "<p>None of the combined figures can be drawn from these records.</p>"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>selfstab: {e(", ".join(names))}</title>
<style>
{_CSS}
</style></head><body>
<h1>selfstab: {len(runs)} runs compared</h1>
<ul>{"".join(f"<li><code>{e(str(r.path))}</code>: {e(run_title(r))}</li>" for r in runs)}</ul>
{status}<h2>Config differences</h2>
{f"<table>{head}{diff_rows}</table>" if diffs else "<p>The runs have the same config (apart from out).</p>"}
<h2>Key numbers</h2>
<p>{e(_COMBINED_NOTE)}</p>
<table>
{head}
{rows}
</table>
<h2>Figures</h2>
{figs}{_not_drawn_html(notes)}
</body></html>
"""


def _compare_markdown(runs: list[Run], numbers: list[dict], diffs, images, notes: list[str]) -> str:
    names = _names(runs)
    head = ["| | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    lines = [f"# selfstab: {len(runs)} runs compared", ""]
    lines += [f"- `{r.path}`: {run_title(r)}" for r in runs] + [""]
    for n, r in zip(names, runs):
        note = status_note(r)
        if note is not None:
            lines += [f"> **{n}: {note}.**", ""]
    lines += ["## Config differences", ""]
    lines += ([*head, *(f"| {k} | " + " | ".join(_fmt(v) for v in vals) + " |" for k, vals in diffs), ""]
              if diffs else ["The runs have the same config (apart from out).", ""])
    lines += ["## Key numbers", "", _COMBINED_NOTE, "", *head]
    lines += [f"| {label} | " + " | ".join(_fmt(v) for v in vals) + " |" for label, vals in _compare_rows(numbers)]
    lines += ["", "## Figures", ""]
    lines += [f"![{caption}]({name})\n\n*{caption}*\n" for _, caption, name in images] or \
        ["None of the combined figures can be drawn from these records.", ""]
    lines += _not_drawn_md(notes)
    return "\n".join(lines)


def _out_folder(out: Path) -> None:
    from ..records import writable_folder

    writable_folder(out.parent, "use --out FILE to write the report somewhere else")


def write_report(run_dir: str | os.PathLike | Run | list, out: str | os.PathLike | None = None,
                 fmt: str = "html") -> Path:
    """Write the report of a run, or the comparison of several, and return its path.

    ``fmt="html"``: one self-contained page (default ``RUN/report.html``); ``fmt="md"``:
    Markdown (default ``RUN/report.md``) with the figures as ``<stem>_<figure>.png`` beside it.
    ``run_dir`` a list of several runs: one page comparing them (default beside the first run, named
    by the runs compared, :func:`comparison_path`: comparing other runs writes another page).  A path that
    is not a run directory raises :class:`~selfstab.errors.ConfigError`, before anything is written.
    """
    if fmt not in ("html", "md"):
        raise ConfigError(f"report: format must be html or md, got {fmt!r}")
    many = list(run_dir) if isinstance(run_dir, (list, tuple)) else [run_dir]
    if not many:
        raise ConfigError("report: no run given")
    runs = [r if isinstance(r, Run) else load_run(r) for r in many]
    if len(runs) > 1:
        return _write_comparison(runs, out, fmt)
    run = runs[0]
    out = Path(out) if out is not None else Path(run.path) / f"report.{fmt}"
    _out_folder(out)
    numbers = key_numbers(run)
    notes: list[str] = []
    images = _images(_figures(run, notes), out, fmt)
    text = _html(run, numbers, images, notes) if fmt == "html" else _markdown(run, numbers, images, notes)
    out.write_text(text, encoding="utf-8")
    return out


def _images(figures, out: Path, fmt: str) -> list[tuple[str, str, Any]]:
    """``(stem, caption, image)``: the PNG bytes inline for HTML; for Markdown a file beside ``out`` and its name."""
    images = []
    for stem, caption, fig in figures:
        if fmt == "html":
            images.append((stem, caption, png_bytes(fig)))
        else:
            name = f"{out.stem}_{stem}.png"
            (out.parent / name).write_bytes(png_bytes(fig, dpi=130))
            images.append((stem, caption, name))
    return images


def comparison_path(runs: list[Run], fmt: str = "html") -> Path:
    """Where the comparison of ``runs`` goes by default: beside the first run, named by the runs compared
    (``compare-lr0.1-lr0.2.html``), so comparing other runs never replaces this page; a name that would be
    long becomes ``compare-<first>-and-<n-1>-more-<hash>``.  Only the same comparison, redone, writes it again."""
    import hashlib
    import re

    names = [re.sub(r"[^\w.+=-]", "_", Path(r.path).name) for r in runs]
    stem = "compare-" + "-".join(names)
    if len(stem) > 80 or len(set(names)) < len(names):   # long, or runs of the same name in other folders
        digest = hashlib.sha1("\n".join(str(Path(r.path).resolve()) for r in runs).encode()).hexdigest()[:8]
        stem = f"compare-{names[0][:40]}-and-{len(runs) - 1}-more-{digest}"
    return Path(runs[0].path).parent / f"{stem}.{fmt}"


def _write_comparison(runs: list[Run], out: str | os.PathLike | None, fmt: str) -> Path:
    out = Path(out) if out is not None else comparison_path(runs, fmt)
    _out_folder(out)
    numbers = [key_numbers(r) for r in runs]
    diffs = _config_differences(runs)
    notes: list[str] = []
    images = _images(_compare_figures(runs, notes), out, fmt)
    text = (_compare_html(runs, numbers, diffs, images, notes) if fmt == "html"
            else _compare_markdown(runs, numbers, diffs, images, notes))
    out.write_text(text, encoding="utf-8")
    return out
