"""The one registry of the paper's figures: name → drawing functions, captions, and the records needed.

``selfstab plot``, ``selfstab report``, ``run`` and ``sweep`` all go through :data:`FIGURES` and
:func:`draw_figures` (or :func:`render`), so a new figure is one entry here plus its ``make_*``
function.  Importing this module imports neither matplotlib nor the drawing modules: they are
imported when a figure is drawn.

A figure needs some records (:class:`Need`): any one of its ``sources`` — a process table
(``"gd"``) or one column of it (``"train.test_accuracy"``) with a finite value.  The sources are the
processes the figure is *about*: Figure 4 (GD against the predictions) needs one of the predictions,
θ† or gradient flow, not GD alone, so a run tracked with ``gd,central`` does not get a Figure 4 of
empty panels.  A figure asked for by name whose run has none of them is an error that says what is
missing and how to get it; by default (no names) such figures are skipped, with the same sentence
as a note, and the figures drawn come first (a report lists the skipped ones after them).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

from ..errors import ConfigError

__all__ = ["FIGURES", "FigureSpec", "Need", "Output", "available", "draw_figures", "missing", "parse_names",
           "render"]

TRACKED = ("gd", "predicted", "generalized", "constrained", "flow")


@dataclass(frozen=True)
class Need:
    """The records a figure needs: any one of ``sources`` (``"table"`` or ``"table.column"``).

    ``what`` names them for a person, ``fix`` says how to get them (``RUN`` stands for the run);
    ``tracked_fix``, if given, replaces ``fix`` for a run that was tracked without them."""

    sources: tuple[str, ...]
    what: str
    fix: str
    tracked_fix: str | None = None


@dataclass(frozen=True)
class Output:
    """One file of a figure: ``make(runs, **opts)`` returns a matplotlib Figure saved as ``stem``."""

    stem: str
    caption: str
    make: Callable


@dataclass(frozen=True)
class FigureSpec:
    """A figure: its ``name`` on the command line, its files, what it needs, and whether it combines
    all the runs given into one figure (``combined``) or draws one per run."""

    name: str
    title: str
    need: Need
    outputs: tuple[Output, ...]
    combined: bool = False


# The drawing functions, imported only when a figure is drawn (they import matplotlib).
def _figure1(runs, **_):
    from .paper import make_figure1
    return make_figure1(runs[0])


def _figure4(runs, zoom=None, **_):
    from .paper import make_figure4
    return make_figure4(runs, zoom)


def _figure4_zoom(runs, zoom=None, **_):
    from .paper import make_figure4
    return make_figure4(runs, zoom, zoomed=True)


def _appendix_e(runs, **_):
    from .assumptions import make_appendix_e
    return make_appendix_e(runs[0])


def _figure5(runs, **_):
    from .assumptions import make_figure5
    return make_figure5(runs[0])


def _central(runs, **_):
    from .central import make_central
    return make_central(runs[0])


def _figure6(runs, **_):
    from .paper import make_figure6
    return make_figure6(runs)


_TRACK = "run `selfstab track RUN`"
_RETRACK = "track them into a new folder: `selfstab track RUN --out NEW --track.processes {}`"
SINGLE = ("predicted", "generalized", "constrained", "flow")   # Figure 4's subject: GD against these
FIGURES: dict[str, FigureSpec] = {spec.name: spec for spec in (
    FigureSpec("1", "progressive sharpening to the edge",
               Need(("train",), "training records (train)", "run `selfstab resume RUN` to train it"),
               (Output("figure1", "Figure 1: progressive sharpening up to the edge of stability", _figure1),)),
    FigureSpec("4", "GD against the predictions",
               Need(SINGLE, "tracked records of the predictions, θ† or gradient flow (predicted, generalized, "
                            "constrained, flow)", _TRACK, _RETRACK.format("gd,constrained,predicted,flow")),
               (Output("figure4", "Figure 4: GD, the predicted dynamics, θ† and gradient flow "
                                  "(shaded: the cycle of the zoom)", _figure4),
                Output("figure4_zoom", "Figure 4, zoomed on one cycle", _figure4_zoom)),
               combined=True),
    FigureSpec("e", "the assumptions along θ†",
               Need(("diagnostics", "constrained.alpha", "constrained.epsilon"),
                    "records along θ† (diagnostics, constrained)", _TRACK,
                    _RETRACK.format("gd,constrained,diagnostics")),
               (Output("appendix_e", "Appendix E: the assumptions along θ† (ρ₃, ρ₄ are tensor-power-iteration "
                                     "estimates; markers: measured every track.diagnostics_every steps)",
                       _appendix_e),)),
    FigureSpec("5", "top eigenvalues of the Hessian",
               Need(("diagnostics", "constrained.sharpness", "kconstrained.lambda_1", "central.lambda_1"),
                    "eigenvalues along θ†, θ†_k or the central flow (diagnostics, constrained, kconstrained, "
                    "central)",
                    _TRACK, _RETRACK.format("gd,constrained,diagnostics")),
               (Output("figure5", "Figure 5: top eigenvalues of the Hessian", _figure5),)),
    FigureSpec("6", "loss, test accuracy and sharpness per step size",
               Need(("train.test_accuracy",), "test accuracy during training (train.test_accuracy)",
                    "train with held-out examples (data.n_test > 0)"),
               (Output("figure6", "Figure 6: training loss, test accuracy and sharpness", _figure6),),
               combined=True),
    FigureSpec("c", "several unstable eigenvalues: GD against the central flow and θ†_k",
               Need(("central",), "central-flow records (central)",
                    "track the central flow: `selfstab run --track.processes gd,constrained,predicted,flow,central,"
                    "kconstrained,diagnostics`", _RETRACK.format("gd,central")),
               (Output("central", "GD's loss and its 10-step moving average against the central flow's prediction "
                                  "L + tr(X)/η; k_crit and rank(X); distances to GD of the central flow, θ†_k and "
                                  "gradient flow", _central),)),
)}


def parse_names(text: str | Iterable[str] | None) -> list[str] | None:
    """Figure names from ``"1,4,e"`` (or ``"all"``, or a list) in registry order; None stays None.
    An unknown name is a :class:`~selfstab.errors.ConfigError` listing the valid ones."""
    if text is None:
        return None
    items = text.split(",") if isinstance(text, str) else list(text)
    names = {str(t).strip().lower() for t in items if str(t).strip()}
    if "all" in names:
        return list(FIGURES)
    bad = sorted(names - set(FIGURES))
    if bad or not names:
        raise ConfigError(f"--figures: unknown figure {', '.join(bad) or repr(text)}; choose from "
                          f"{','.join(FIGURES)} (or all), e.g. --figures 1,4,e")
    return [n for n in FIGURES if n in names]


def _has(run, source: str) -> bool:
    import numpy as np

    table, _, field = source.partition(".")
    frame = run.records.get(table)
    if frame is None or not len(frame):
        return False
    if not field:
        return True
    return field in frame.columns and bool(np.isfinite(frame[field].to_numpy(dtype=float)).any())


def missing(name: str, run) -> str | None:
    """Why figure ``name`` cannot be drawn for ``run`` (one sentence), or None when it can."""
    spec = FIGURES[name]
    if any(_has(run, src) for src in spec.need.sources):
        return None
    tables = [t for t, frame in run.records.items() if len(frame)]
    has = f"only {', '.join(tables)}" if tables else "no records yet"
    fix = spec.need.tracked_fix if spec.need.tracked_fix and _has(run, "gd") else spec.need.fix
    return f"figure {name} needs {spec.need.what}; this run has {has}: {fix.replace('RUN', str(run.path))}"


def available(run) -> list[str]:
    """The names of the figures ``run`` has records for, in registry order."""
    return [n for n in FIGURES if missing(n, run) is None]


def _as_runs(runs) -> list:
    from ..records import Run, load_run

    if isinstance(runs, (Run, str, os.PathLike)):
        runs = [runs]
    return [r if isinstance(r, Run) else load_run(r) for r in runs]


@dataclass(frozen=True)
class _Job:
    spec: FigureSpec
    runs: tuple
    per_run: bool   # drawn for runs[0] alone, into that run's folder


def _plan(runs: list, names: Sequence[str] | None, strict: bool, on_note) -> list[_Job]:
    """The figures to draw, checked before anything is drawn: with ``strict``, a figure without
    any of its records is a ConfigError; otherwise it is skipped with a note."""
    jobs, errors = [], []
    wanted = list(FIGURES) if names is None else names
    for name in wanted:
        spec = FIGURES[name]
        why = {id(r): missing(name, r) for r in runs}
        ok = [r for r in runs if why[id(r)] is None]
        bad = [why[id(r)] for r in runs if why[id(r)] is not None]
        if spec.combined:
            if ok:
                jobs.append(_Job(spec, tuple(ok), per_run=False))
                for reason in bad:
                    on_note(f"left out of figure {name}: {reason}")
            elif runs:
                none = bad[0] if len(runs) == 1 else (f"figure {name} needs {spec.need.what}; none of the "
                                                      f"{len(runs)} runs has them")
                if strict:
                    errors.append(none)
                else:
                    on_note(f"skipped: {none}")
        else:
            jobs += [_Job(spec, (r,), per_run=True) for r in ok]
            if strict:
                errors += bad
            else:
                for w in bad:
                    on_note(f"skipped: {w}")
    if errors:
        raise ConfigError(errors[0] + (f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""))
    return jobs


def _zoom_notes(runs, zoom, on_note) -> None:
    from ..records.series import recorded_steps
    from .style import outside_note

    for r in runs:
        text = outside_note(zoom, recorded_steps(r, TRACKED))
        if text is not None:
            on_note(f"figure 4 zoom of {r.path}: {text}")


def render(runs, names: Sequence[str] | str | None = None, *, strict: bool | None = None,
           on_note: Callable[[str], None] | None = None, **opts) -> Iterator[tuple[str, str, object, object]]:
    """Draw figures one at a time: yields ``(stem, caption, run_or_None, figure)``; ``run`` is the run
    of a per-run figure, None for one that combines all the runs.  The caller saves or embeds and
    closes each figure.  Arguments as for :func:`draw_figures`."""
    runs = _as_runs(runs)
    names = parse_names(names)
    strict = names is not None if strict is None else strict
    on_note = on_note or (lambda _msg: None)
    jobs = _plan(runs, names, strict, on_note)
    if opts.get("zoom") is not None and any(j.spec.name == "4" for j in jobs):
        _zoom_notes(next(j.runs for j in jobs if j.spec.name == "4"), tuple(opts["zoom"]), on_note)
    for job in jobs:
        for out in job.spec.outputs:
            yield out.stem, out.caption, (job.runs[0] if job.per_run else None), out.make(list(job.runs), **opts)


def draw_figures(runs, names: Sequence[str] | str | None = None, out: str | os.PathLike | None = None, *,
                 strict: bool | None = None, on_note: Callable[[str], None] | None = None,
                 **opts) -> list[Path]:
    """Draw the figures ``names`` (default: every figure the records allow) of ``runs`` as PNG + PDF.

    ``runs``: a run (:class:`~selfstab.records.Run` or its folder) or several.  Per-run figures
    (1, e, 5, c) go to ``out``, or with several runs to ``out/<run name>``; figures that combine the
    runs (4, 6) go to ``out``.  Without ``out``: ``RUN/figures`` for each run, and the combined
    ones of several runs to ``figures/`` beside the first.  ``opts``: ``zoom=(first, last)`` for
    Figure 4's zoom.  ``strict`` (default: whether ``names`` were given): a figure whose runs have
    none of its records raises :class:`~selfstab.errors.ConfigError` before anything is drawn;
    otherwise it is skipped and ``on_note`` gets the reason (so do zoom windows outside the
    records).  Returns the paths written.
    """
    from .style import save

    runs = _as_runs(runs)
    single = len(runs) == 1
    out = None if out is None else Path(out)
    paths: list[Path] = []
    for stem, _caption, run, fig in render(runs, names, strict=strict, on_note=on_note, **opts):
        if run is not None:
            folder = (Path(run.path) / "figures" if out is None else (out if single else out / Path(run.path).name))
        else:
            folder = out if out is not None else (Path(runs[0].path) / "figures" if single
                                                  else Path(runs[0].path).parent / "figures")
        paths += save(fig, folder, stem)
    return paths
