"""A run, end to end: config → problem → GD to the edge → tracking → records (docs/theory.md §3–7).

The run's lifecycle and its public API; the two stages themselves are
:mod:`selfstab.phases`.  The one place that turns a
:class:`~selfstab.config.RunConfig` into calls:
:func:`~selfstab.problem.build.build_problem` makes the objective;
:func:`train_phase` (:func:`~selfstab.train.gd_to_edge`) and :func:`track_phase`
(:func:`~selfstab.processes.track` over :func:`~selfstab.processes.default_processes`)
run the two stages into a :class:`~selfstab.records.RunDir`, checkpointing as
they go; :func:`execute` runs whatever a run directory still needs, so a fresh
run and ``selfstab resume`` are the same code; :func:`run` is the main job from
Python, as ``selfstab run`` does it.

Resume semantics: training checkpoints the edge search every
``train.checkpoint_every`` steps (at the next sharpness check: θ_t, the
eigen-tracker, the last and next check, the counters); once the edge is
found, ``θ₀`` and its eigenvectors are checkpointed, and tracking
checkpoints every ``track.checkpoint_every`` steps.  A resume restores every
state (iterates, warm starts, the flow's step size, counters) from the
latest checkpoint, so the records continue bit-for-bit; so does a finished
run whose ``track.steps`` was raised (``selfstab resume RUN --track.steps N``).
Wall-clock times live in the ``timing`` table, the only one that differs
between a resumed and an uninterrupted run.

Data parallelism (docs/theory.md §11): under ``torchrun`` the objective is
data-parallel (:func:`~selfstab.problem.build.build_problem`) and everything
above it runs replicated on every rank; rank 0 alone writes the run folder
and shows progress.  At every checkpoint the ranks check that they hold
bitwise the same state (:func:`~selfstab.distributed.check_same`).  A
checkpoint records its world size: resuming with the same world size
continues bit for bit; with another, the run continues with a warning and a
``world_size_changes`` entry in the summary (the order of the reduction's
additions changed), while ``selfstab track`` refuses to track with another
world size than the training's (:func:`check_track_world_size`).

Starting: :func:`prepare` checks everything cheap (config, model and data
set, data files, device, tensorboard) and builds the problem *before*
:func:`start` makes the run folder; a run that still fails on bad input before
its first checkpoint (e.g. a learning rate past the edge at step 0) has that
folder removed again, so the corrected command can use it.  While running,
the records are flushed every ``flush_seconds`` and ``summary.json`` says
``"status": "running"`` (then finished, stopped or failed); Ctrl-C flushes and
raises :class:`~selfstab.errors.RunInterrupted`, which says where the run
stopped and where ``selfstab resume`` continues.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

import torch

from . import distributed
from .config import RESUME_KEYS, TRACK_KEYS, RunConfig, changed_keys, diff_configs, from_dict, load_config
from .errors import ConfigError, DataError, RunInterrupted, SelfstabError
from .problem.build import Problem, build_problem, data_parallel
from .processes import default_processes
from .records import RunDir, load_run
from .records.reading import read_latest_checkpoint
from .wording import plural

# the stages live in phases.py; these names stay importable from here (tests and benchmarks patch track_phase)
from .phases import _checkpoint, as_config, track_options, track_phase, train_phase  # noqa: F401


def prepare(cfg: RunConfig) -> Problem:
    """Check what a new run needs before its folder is made, and build its problem (training dtype).

    The tracked processes (names, and the processes each one reads), model and data set names and
    options, data files, the device (:func:`build_problem` raises the one-line errors), and the
    tensorboard package when ``tensorboard = true``.
    """
    if cfg.tensorboard:
        try:
            importlib.import_module("torch.utils.tensorboard")
        except ImportError:
            raise ConfigError("tensorboard: the tensorboard package is not installed; pip install tensorboard "
                              "or set tensorboard = false") from None
    default_processes(cfg.track.processes, **track_options(cfg.track))   # process names, options and what each needs
    torch.manual_seed(cfg.seed)
    return build_problem(cfg)


def start(cfg: RunConfig, *, overwrite: bool = False, train_only: bool = False) -> RunDir:
    """A new run in ``cfg.out``: :func:`prepare`, make the folder, :func:`execute`.

    Bad input found only once running (a :class:`ConfigError` or :class:`DataError` before the first
    checkpoint, e.g. GD past the edge at step 0) removes what this start made, and is raised.
    """
    problem = prepare(cfg)
    rundir = RunDir.create(cfg.out, cfg, overwrite=overwrite)
    try:
        execute(rundir, train_only=train_only, problem=problem)
    except (ConfigError, DataError):
        if rundir.latest_checkpoint() is None:
            rundir.discard()
        raise
    return rundir


def _quietly(action, *args) -> None:
    """Write a status while already failing: a second error must not hide the first."""
    try:
        action(*args)
    except (OSError, SelfstabError):
        pass


def _resume_point(run: RunDir) -> tuple[str, int | None]:
    """Where ``selfstab resume`` continues (words, and the step; None: from the start), from the latest checkpoint."""
    latest = run.latest_checkpoint()
    if latest is None:
        return "from the start", None
    step, state = latest
    if state["phase"] == "train":
        return f"from training step {int(state['gd']['t'])}", int(state["gd"]["t"])
    if state["phase"] == "edge":
        return "from the edge θ₀ (tracking step 0)", 0
    return f"from tracking step {step}", int(step)


def execute(run: RunDir, *, train_only: bool | None = None, problem: Problem | None = None) -> RunDir:
    """Run (or resume) whatever ``run`` still needs: training to the edge, then tracking.

    ``train_only``: stop at the edge (``selfstab train``); None: as the run was started (the summary's
    ``train_only``), so that resuming a ``selfstab train`` run does not track it.
    ``problem``: the training problem :func:`prepare` built (a fresh run); else it is built here.
    The summary's ``status`` says "running" meanwhile, then "finished", "stopped: …" or "failed: …".
    """
    check_cli_can_continue(run.path, run.summary, "resume" if train_only is None else "track")
    cfg = as_config(run.config)
    if train_only is None:
        train_only = bool(run.summary.get("train_only"))
    elif train_only != bool(run.summary.get("train_only")):
        run.write_summary({"train_only": train_only})
    if problem is None:
        torch.manual_seed(cfg.seed)
    data_parallel(cfg)   # under torchrun: the process group, before the ranks read the checkpoint together
    run.flush_seconds = cfg.flush_seconds
    latest = run.rewind_to_checkpoint()
    state = latest[1] if latest else None
    _note_world_size(run, latest)
    where: dict = {"phase": "training", "step": 0}
    run.position = where   # the heartbeat in summary.json reports it
    run.set_status("running")
    try:
        _execute(cfg, run, state, train_only, problem, where)
    except KeyboardInterrupt:
        _quietly(run.flush)
        step = where.get("step")
        point, resume_step = _resume_point(run)
        message = f"interrupted at {where['phase']} step {step}; selfstab resume {run.path} continues {point}"
        _quietly(run.set_status, f"stopped: {message}")
        raise RunInterrupted(message, path=str(run.path), phase=where["phase"], step=step,
                             resume_step=resume_step) from None
    except BaseException as exc:
        _quietly(run.flush)
        why = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        _quietly(run.set_status, f"failed: {why}" if isinstance(exc, SelfstabError)
                 else f"failed: {type(exc).__name__}{': ' + why if why else ''}")
        if isinstance(exc, SelfstabError):   # e.g. the eigen-solver's ConvergenceError: why the run stopped
            _quietly(run.write_summary, {"stop_reason": f"error: {why}"})
        raise
    run.set_status("finished")
    return run


def _note_world_size(run: RunDir, latest: tuple[int, dict] | None) -> None:
    """The world size into the summary; a resume with another world size than its checkpoint's warns (rank 0,
    one line on stderr) and is listed in the summary's ``world_size_changes``."""
    now, before = distributed.world_size(), run.checkpoint_world_size
    values: dict[str, Any] = {"world_size": now}
    if latest is not None and before is not None and before != now:
        point, _ = _resume_point(run)
        note = (f"checkpointed with world size {before}, resumed with {now} {point}: the reduction order "
                f"changed, so the records from here on differ from a run kept at {before} in the last bits")
        if distributed.is_main():
            print(f"selfstab: warning: {run.path}: {note}", file=sys.stderr, flush=True)
        values["world_size_changes"] = [*run.summary.get("world_size_changes", []),
                                        {"from": before, "to": now, "step": latest[0], "note": note}]
    if any(run.summary.get(k) != v for k, v in values.items()):
        run.write_summary(values)


def check_cli_can_continue(source: str | os.PathLike, summary: dict, command: str) -> None:
    """A one-line refusal when the command line cannot continue the run in ``source`` (its ``summary``).

    A run saved from Python (``result.save``) holds a user's model that only its ``config.toml`` could
    describe: ``resume`` never continues one (no command-line run to continue: it would train the default
    model from scratch over the saved records); ``track`` does only for a run saved with its config and the
    edge checkpoint (``EdgeResult.save(path, config=cfg)``).  Nothing is changed by the refusal.
    """
    if summary.get("source") != "python":
        return
    latest = read_latest_checkpoint(source)
    edge = latest is not None and latest["state"].get("phase") == "edge"
    if command == "track" and summary.get("rebuildable") and edge:
        return
    why = ("it holds no config that rebuilds its model (only lr and out)" if not summary.get("rebuildable")
           else "it holds no edge checkpoint to track from" if command == "track" and not edge
           else "it was not run by the command line, so there is nothing to resume")
    raise ConfigError(f"{command}: {source} was saved from Python and {why}; nothing was changed. Continue in "
                      f"Python: rebuild your objective, then selfstab.track(objective, theta0, lr) (or "
                      f"gd_to_edge) and result.save(a new path)")


def check_track_world_size(source: str | os.PathLike, command: str = "track") -> None:
    """A one-line error when the run in ``source`` was trained (last checkpointed) with another world size
    than this launch's: train and track must reduce in the same order (``selfstab resume`` allows it)."""
    latest = read_latest_checkpoint(source)
    if latest is None:
        return
    before, now = int(latest.get("world_size", 1)), distributed.launched_world_size()
    if before != now:
        raise ConfigError(f"{command}: {source} was trained with world size {before} but this launch has {now}; "
                          f"track with the same number of ranks (--nproc {before}, or torchrun --nproc-per-node "
                          f"{before})")


def _execute(cfg: RunConfig, run: RunDir, state: dict | None, train_only: bool, problem: Problem | None,
             where: dict) -> None:
    if state is None or state["phase"] == "train":
        edge = train_phase(cfg, run, problem, resume_state=state, where=where)
    elif state["phase"] == "edge":
        edge = state
    else:
        edge = state["edge"]
    if train_only or not edge["reached"]:
        if not edge["reached"] and not edge.get("fixed"):
            run.write_summary({"stop_reason": f"the sharpness did not reach 2/η within train.max_steps = "
                                              f"{cfg.train.max_steps}; raise it or the learning rate"})
        return
    if cfg.track.steps > 0:
        track_phase(cfg, run, edge, resume_state=state if state and state["phase"] == "track" else None,
                    where=where)


TRAINING_SUMMARY = ("lr", "parameters", "reached_edge", "onset_step", "onset_sharpness", "onset_loss",
                    "seconds_train", "train_grads", "train_hvps")


def track_into(source: str | os.PathLike, cfg: RunConfig, *, overwrite: bool = False) -> RunDir:
    """Track the trained run in ``source`` into a new run folder ``cfg.out`` (other ``track`` settings).

    The new folder gets ``cfg`` as its config, ``source``'s ``train`` records up to the edge, its
    training summary and the edge checkpoint; then it is tracked.  ``source`` is only read.
    """
    check_cli_can_continue(source, load_run(source).summary, "track")
    latest = read_latest_checkpoint(source)
    state = None if latest is None else latest["state"]
    check_track_world_size(source)
    if state is None or state["phase"] == "train":
        raise ConfigError(f"track: {source} has not reached the edge yet; run selfstab resume {source} first")
    edge = state if state["phase"] == "edge" else state["edge"]
    if not edge["reached"]:
        raise ConfigError(f"track: {source} did not reach the edge (nothing to track); start a new run with a "
                          f"larger train.max_steps or learning rate")
    summary = load_run(source).summary
    rundir = RunDir.create(cfg.out, cfg, overwrite=overwrite)
    rundir.copy_records(source, {"train": latest["records"].get("train", 0)})
    rundir.write_summary({**{k: summary[k] for k in TRAINING_SUMMARY if k in summary},
                          "tracked_from": os.fspath(source)})
    _checkpoint(rundir, int(edge["onset_step"]), {**edge, "phase": "edge"})
    try:
        return execute(rundir, train_only=False)
    except (ConfigError, DataError):
        if rundir.latest_checkpoint()[1]["phase"] == "edge":   # failed before its first tracking checkpoint
            rundir.discard()
        raise


def run(config: RunConfig | dict | str | os.PathLike | None = None, *, overwrite: bool = False,
        figures: bool = True) -> RunDir:
    """The main job from Python, as ``selfstab run`` does it: train to the edge, track, write the figures.

    ``config``: a :class:`~selfstab.config.RunConfig`, a dict of its keys
    (``{"lr": 0.25, "model": {"width": 32}}``), a TOML file, or ``None`` for
    the defaults.  The run directory is ``config.out``; ``overwrite`` replaces
    a run already there.  Returns the :class:`~selfstab.records.RunDir`
    (``selfstab.load_run(path)`` reads it).
    """
    if config is None or isinstance(config, (str, os.PathLike, dict)):
        cfg = load_config(RunConfig, config)
    elif isinstance(config, RunConfig):
        cfg = config
    else:
        raise ConfigError(f"config: expected a RunConfig, a dict, a TOML file or None, got {type(config).__name__}")
    rundir = start(cfg, overwrite=overwrite)
    if figures:
        run_figures(rundir)
    return rundir


def run_figures(run: RunDir) -> tuple[list, list[str]]:
    """Draw a run's figures into ``RUN/figures`` (``selfstab run``, ``track``, ``resume`` and :func:`run`), and
    say which were left out and why: ``(paths, notes)``.  A trained-only run lacks every tracked figure by
    design (no notes); a default-set run whose λ₂ stayed below the rule's line did not need figure c."""
    from .figures.registry import draw_figures
    notes: list[str] = []
    paths = draw_figures(run.path, out=run.path / "figures", on_note=notes.append)
    s = run.summary
    if "tracked_steps" not in s:
        return paths, []
    said = []
    for line in notes:
        if line.startswith("skipped: figure c") and s.get("lambda2_rule") == "central" and "joined" not in s:
            line = ("skipped: figure c (several unstable eigenvalues): λ₂ stayed below the λ₂ rule's line, so "
                    "the central flow was not needed")
        said.append(line)
    return paths, said


def _overrides(changes: Sequence[str] | Mapping[str, Any] | None) -> list[str]:
    """Config changes as command-line overrides: ``["--track.steps", "1600"]`` as they are, or a dict of dotted
    keys (``{"track.steps": 1600}``; a list value as ``a,b``)."""
    if not changes:
        return []
    if isinstance(changes, Mapping):
        return [tok for key, value in changes.items() for tok in
                (f"--{key}", ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value))]
    return list(changes)


def resume(path: str | os.PathLike, changes: Sequence[str] | Mapping[str, Any] | None = None) -> RunDir:
    """Continue the run in ``path`` from its last checkpoint, as ``selfstab resume`` does (without figures).

    ``changes``: config changes, only of :data:`~selfstab.config.RESUME_KEYS`; a larger ``track.steps``
    extends a finished run (:func:`extend`): its records continue as if it had been that long from the start.
    """
    run = RunDir.open(path)
    check_cli_can_continue(run.path, run.summary, "resume")
    overrides = _overrides(changes)
    if overrides:
        old = from_dict(RunConfig, run.config)
        new = load_config(RunConfig, run.config, overrides)
        changed = changed_keys(old, new, RESUME_KEYS)
        if changed:
            raise ConfigError(f"resume: the config changed ({changed[0]}); a resumed run must keep its config "
                              f"(resume accepts {', '.join(RESUME_KEYS)}) — start a new run instead")
        if new.track.steps != old.track.steps:
            extend(run, old, new)
        elif diff_configs(old, new):
            run.update_config(new, notes=_extension_notes(run.summary.get("extensions", [])))
    return execute(run)


def track_trained(path: str | os.PathLike, changes: Sequence[str] | Mapping[str, Any] | None = None, *,
                  out: str | os.PathLike | None = None, overwrite: bool = False) -> RunDir:
    """Track the trained run in ``path``, as ``selfstab track`` does (without figures): in place, or into a
    new folder ``out`` (``path`` only read) with other ``track`` settings (``changes``, only of
    :data:`~selfstab.config.TRACK_KEYS`)."""
    overrides = _overrides(changes)

    def tracking_config(source, extra: list[str], allowed: tuple[str, ...]) -> tuple[RunConfig, RunConfig]:
        check_cli_can_continue(path, source.summary, "track")
        old = from_dict(RunConfig, source.config)
        cfg = load_config(RunConfig, source.config, [*overrides, *extra])
        changed = changed_keys(old, cfg, allowed)
        if changed:
            raise ConfigError(f"track: only track.* settings can change after training; {changed[0]} differs "
                              f"(start a new run with selfstab run)")
        return old, cfg

    if out is not None:
        _, cfg = tracking_config(load_run(path), ["--out", os.fspath(out)], TRACK_KEYS + ("out",))
        return track_into(path, cfg, overwrite=overwrite)
    run = RunDir.open(path, fix="track it into a new folder with --out NEW")
    old, cfg = tracking_config(run, [], TRACK_KEYS)
    if run.summary.get("tracked_steps") is not None and diff_configs(old, cfg):
        raise ConfigError(f"track: {run.path} was already tracked; change settings in a new run")
    if "onset_step" not in run.summary:
        raise ConfigError(f"track: {run.path} has not reached the edge yet; run selfstab resume {run.path} first")
    check_track_world_size(run.path)
    run.update_config(cfg)
    return execute(run, train_only=False)


def _extension_notes(history: list[dict]) -> list[str]:
    return ["extended: " + ", ".join(f"track.steps {h['from']} → {h['to']} ({h['time']})" for h in history)] \
        if history else []


def extend(run: RunDir, old: RunConfig, new: RunConfig) -> None:
    """Extend ``run`` from ``old.track.steps`` to ``new.track.steps`` under :func:`check_extension`'s rule,
    noting it in ``config.toml`` and the summary's ``extensions`` (``resume`` and ``sweep --resume``)."""
    check_extension(run, old.track.steps, new.track.steps)
    history = [*run.summary.get("extensions", []),
               {"key": "track.steps", "from": old.track.steps, "to": new.track.steps,
                "time": datetime.now(timezone.utc).isoformat(timespec="seconds")}]
    run.update_config(new, notes=_extension_notes(history))
    run.write_summary({"extensions": history})


def check_extension(run: Any, old: int, new: int) -> None:
    """``track.steps`` may only grow, and only on a run that tracking did not stop for another reason
    (``run``: anything with a ``path``)."""
    if new < old:
        raise ConfigError(f"resume: track.steps can only grow (this run tracks {plural(old, 'step')}, asked for "
                          f"{new}); to track fewer steps, read the first {new} rows of its records")
    latest = read_latest_checkpoint(run.path)
    state = None if latest is None else latest["state"]
    if state is not None and state["phase"] == "track" and state["lockstep"]["stop_reason"]:
        raise ConfigError(f"resume: {run.path} stopped tracking before its step limit "
                          f"({state['lockstep']['stop_reason']}); more steps would not continue it — start a "
                          f"new run (e.g. with another track.stop_lambda2)")
