"""A run, end to end: config → problem → GD to the edge → tracking → records (docs/theory.md §3–7).

The one place that turns a :class:`~selfstab.config.RunConfig` into calls:
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

import contextlib
import importlib
import math
import os
import sys
import time
import warnings
from typing import Any

import torch

from . import distributed
from .config import RunConfig, TrackConfig, from_dict, load_config
from .errors import ConfigError, DataError, RunInterrupted, SelfstabError
from .problem.build import Problem, build_problem, data_parallel, evaluator
from .processes import Lambda2Flag, Lockstep, default_processes, default_stop_rules, track
from .processes.base import SEVERAL_EIGENVALUES, SINGLE_EIGENVALUE, EpsilonFlag
from .processes.lockstep import RULE_OPTIONS, default_set, lambda2_rule_kind, process_options
from .records import RunDir, load_run
from .records.reading import read_latest_checkpoint
from .spectrum import EigenTracker, default_tol
from .train import gd_run, gd_to_edge
from .wording import plural


def as_config(config: RunConfig | dict) -> RunConfig:
    return config if isinstance(config, RunConfig) else from_dict(RunConfig, config)


@contextlib.contextmanager
def _progress(total: int, desc: str, quiet: bool):
    """A tqdm bar (or nothing when quiet, and on ranks ≠ 0) with a ``show(step, **postfix)`` callback."""
    if quiet or not distributed.is_main():
        yield lambda step, **kw: None
        return
    from tqdm.auto import tqdm
    bar = tqdm(total=total, desc=desc, unit="step", dynamic_ncols=True, mininterval=0.5)
    last = [0]

    def show(step: int, **postfix):
        bar.update(step + 1 - last[0])
        last[0] = step + 1
        bar.set_postfix({k: f"{v:.4g}" for k, v in postfix.items()}, refresh=False)

    try:
        yield show
    finally:
        bar.close()


def _state_tensors(state: Any, out: list) -> list:
    """Every tensor of a checkpoint state, flattened to float64 on the CPU, in the state's (insertion) order."""
    if isinstance(state, torch.Tensor):
        if state.is_floating_point() or state.dtype in (torch.int64, torch.int32, torch.bool):
            out.append(state.detach().reshape(-1).to(device="cpu", dtype=torch.float64))
    elif isinstance(state, dict):
        for value in state.values():
            _state_tensors(value, out)
    elif isinstance(state, (list, tuple)):
        for value in state:
            _state_tensors(value, out)
    return out


def _checkpoint(run: RunDir, step: int, state: dict) -> None:
    """Check that every rank holds bitwise the same state (θ, warm starts; one small all-gather, nothing in
    one process), then save the checkpoint (rank 0 writes it)."""
    if distributed.world_size() > 1:
        parts = _state_tensors(state, [])
        distributed.check_same(torch.cat(parts) if parts else torch.zeros(0, dtype=torch.float64),
                               f"state at checkpoint step {step}")
    run.save_checkpoint(step, state)


def train_phase(cfg: RunConfig, run: RunDir, problem: Problem | None = None, resume_state: dict | None = None,
                where: dict | None = None) -> dict:
    """GD from initialization to the edge; records ``train``, checkpoints ``θ₀``, returns the edge state.

    The edge search checkpoints every ``train.checkpoint_every`` steps (phase "train"); ``resume_state``
    (such a checkpoint) continues it.  ``where["step"]`` follows the current step (for Ctrl-C's message).
    With ``train.stop_at_edge = false`` or the ``inverse_sharpness`` schedule, GD runs ``max_steps``
    steps instead (Figure 6; checkpointed the same way), and nothing is tracked.
    """
    where = {} if where is None else where
    where.update(phase="training", step=0 if resume_state is None else int(resume_state["gd"]["t"]))
    problem = problem or build_problem(cfg)
    obj, lr = problem.objective, cfg.lr
    rec = run.recorder("train")
    board = _TensorBoard(cfg, run)
    start = time.perf_counter()
    # float32 HVPs cannot resolve a residual below ~1e-5: never ask for less than the dtype allows
    tracker = EigenTracker(1, tol=max(cfg.train.eig_tol, default_tol(obj.dtype)), on_fail="warn")
    fixed = not cfg.train.stop_at_edge or cfg.train.schedule != "constant"

    def on_record(r):
        rec.append(r["step"], **{k: v for k, v in r.items() if k != "step"})
        board.log(r["step"], {"train": {k: v for k, v in r.items() if k != "step" and v is not None}})
        run.tick()

    def on_checkpoint(t: int, state: dict) -> None:
        _checkpoint(run, t, {"phase": "train", "gd": state})

    with _progress(cfg.train.max_steps + 1, "train" if fixed else "train → edge", cfg.quiet) as show, \
            warnings.catch_warnings():
        warnings.simplefilter("ignore")   # eigen-solver shortfalls are in the records (eig_residual)

        if resume_state is not None:
            show(int(resume_state["gd"]["t"]) - 1)

        def progress(t, r):
            where["step"] = t + 1   # the step now being computed
            s = r.get("sharpness")
            show(t, loss=r["loss"], **({"S": s} if s is not None else {}), **{"2/η": cfg.edge})

        try:
            if fixed:
                gd_run(obj, lr, cfg.train.max_steps, schedule=cfg.train.schedule, measure_every=cfg.train.every[1],
                       tracker=tracker, evaluate=evaluator(problem), on_record=on_record, progress=progress,
                       on_checkpoint=on_checkpoint, checkpoint_every=cfg.train.checkpoint_every,
                       state=None if resume_state is None else resume_state["gd"])
            else:
                edge = gd_to_edge(obj, lr, max_steps=cfg.train.max_steps, every=cfg.train.every, tracker=tracker,
                                  on_record=on_record, progress=progress, evaluate=evaluator(problem),
                                  on_checkpoint=on_checkpoint, checkpoint_every=cfg.train.checkpoint_every,
                                  state=None if resume_state is None else resume_state["gd"])
        finally:
            run.flush()
            board.close()
    seconds = time.perf_counter() - start
    if fixed:
        run.write_summary({"lr": lr, "parameters": obj.dim, "seconds_train": seconds, "reached_edge": False,
                           "stop_reason": f"trained {plural(cfg.train.max_steps, 'step')} "
                                          f"({cfg.train.schedule} step size)"})
        state = {"phase": "edge", "theta0": None, "onset_step": None, "reached": False, "warm": None, "fixed": True}
        _checkpoint(run, cfg.train.max_steps, state)
        return state
    summary = {"lr": lr, "parameters": obj.dim, "reached_edge": edge.reached, "onset_step": edge.step,
               "onset_sharpness": edge.sharpness, "onset_loss": edge.records[-1]["loss"] if edge.records else None,
               "seconds_train": seconds, "train_grads": edge.counts.get("grad", 0),
               "train_hvps": edge.counts.get("hvp", 0)}
    run.write_summary(summary)
    state = {"phase": "edge", "theta0": edge.theta0.detach().cpu(), "onset_step": edge.step,
             "reached": edge.reached, "warm": None if edge.eig is None else edge.eig.vectors.detach().cpu()}
    _checkpoint(run, edge.step, state)
    return state


class _TensorBoard:
    """Optional mirror of the records to TensorBoard (``tensorboard = true``); a no-op when off."""

    def __init__(self, cfg: RunConfig, run: RunDir):
        self.writer = None
        if cfg.tensorboard and run.writes:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise ConfigError("tensorboard: the tensorboard package is not installed; pip install tensorboard "
                                  "or set tensorboard = false") from None
            self.writer = SummaryWriter(str(run.path / "tensorboard"))

    def log(self, step: int, records: dict[str, dict]) -> None:
        if self.writer is not None:
            for process, fields in records.items():
                for key, value in fields.items():
                    self.writer.add_scalar(f"{process}/{key}", float(value), step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def track_options(tc: TrackConfig) -> dict[str, Any]:
    """The ``track`` settings that are process options, by name (each process takes those it names)."""
    return {name: getattr(tc, name) for name in process_options() if hasattr(tc, name) and name not in RULE_OPTIONS}


def track_phase(cfg: RunConfig, run: RunDir, edge: dict, problem: Problem | None = None,
                resume_state: dict | None = None, where: dict | None = None) -> Lockstep:
    """The tracked processes from ``θ₀`` in float64, streaming records and checkpointing every ``checkpoint_every``."""
    where = {} if where is None else where
    where.update(phase="tracking", step=0 if resume_state is None else int(resume_state["lockstep"]["t"]))
    problem = problem or build_problem(cfg, dtype="float64")
    obj = problem.objective.to(torch.float64)
    lr, tc = cfg.lr, cfg.track
    options = track_options(tc)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # projection/eigen shortfalls are recorded per step
        if resume_state is None:
            names, lam2 = tc.processes, math.nan
            if names is None:   # the default set, decided once at θ₀ and written into the summary
                names, lam2 = default_set(obj, edge["theta0"], lr, edge["warm"], tc.stop_lambda2)
            processes = default_processes(names, **options)
            rules = default_stop_rules(tc.stop_lambda2, tc.lambda2_rule, tc.processes, **options)
            run.write_summary({"processes": [p.name for p in processes],
                               "lambda2_rule": lambda2_rule_kind(tc.lambda2_rule, tc.processes) if tc.stop_lambda2
                               else "none",
                               **({"lambda2_theta0": lam2} if math.isfinite(lam2) else {})})
            ls = Lockstep(obj, lr, processes, stop_rules=rules).start(edge["theta0"], edge["warm"])
        else:   # the processes the checkpoint holds (a process that joined on the way included)
            processes = default_processes(list(resume_state["lockstep"]["processes"]), **options)
            rules = default_stop_rules(tc.stop_lambda2, tc.lambda2_rule, tc.processes, **options)
            ls = Lockstep.from_state(obj, lr, resume_state["lockstep"], processes, stop_rules=rules)
        start = time.perf_counter()
        board = _TensorBoard(cfg, run)
        with _progress(tc.steps, "track", cfg.quiet) as show:
            if ls.t:
                show(ls.t - 1)

            def write(t: int, rec: dict) -> None:
                where["step"] = t + 1
                timing = rec.pop("cost")
                seconds = timing.pop("seconds")
                for name, fields in rec.items():
                    run.recorder(name).append(t, **fields)
                run.recorder("cost").append(t, **timing)
                run.recorder("timing").append(t, seconds=seconds)
                board.log(t, rec)
                g = rec["gd"]
                show(t, loss=g["loss"], S=g["sharpness"], **{"2/η": cfg.edge})
                if ls.t % tc.checkpoint_every == 0 or ls.stop_reason is not None or ls.t >= tc.steps:
                    _checkpoint(run, ls.t, {"phase": "track", "edge": edge, "lockstep": ls.state_dict()})
                else:
                    run.tick()

            result = track(obj, None, lr, tc.steps, lockstep=ls, on_records=write)
        board.close()
    run.write_summary({"stop_reason": result.stop_reason, "tracked_steps": ls.t,
                       "seconds_track": time.perf_counter() - start,
                       **theory_held(ls, run.summary.get("lambda2_theta0"))})
    return ls


def theory_held(ls: Lockstep, lambda2_theta0: float | None = None) -> dict[str, Any]:
    """Which theory held over which tracked steps, for the summary (``theory``: a list of
    ``{"from", "to", "what"}``, steps ``[from, to)``), and the processes that joined or diverged on the way."""
    end = ls.t
    flagged = next((r.since for r in ls.stop_rules if isinstance(r, Lambda2Flag) and r.since is not None), None)
    names = [p.name for p in ls.processes]
    single = [n for n in names if n in SINGLE_EIGENVALUE and n not in ls.retired]
    segments = []
    if single:
        until = end if flagged is None else min(flagged, end)
        if until > 0:
            segments.append({"from": 0, "to": until, "what": "single-eigenvalue theory (one eigenvalue at the edge)"})
        if flagged is not None and flagged < end:
            segments.append({"from": flagged, "to": end,
                             "what": "several eigenvalues at the edge: single-eigenvalue processes flagged "
                                     "outside_assumptions"})
    for name in SEVERAL_EIGENVALUES:
        if name in names and name not in ls.retired:
            since = ls.joined.get(name, 0)
            why = (f" (joined at step {since}: λ₂ reached the edge)" if name in ls.joined
                   else f" (from θ₀: λ₂(θ₀) = {lambda2_theta0:.4g} was at the edge)" if lambda2_theta0 else "")
            segments.append({"from": since, "to": end, "what": f"{name} tracked{why}"})
    for rule in ls.stop_rules:
        if isinstance(rule, EpsilonFlag) and rule.steps:
            segments.append({"from": rule.first, "to": end,
                             "what": f"ε = η√α above {rule.bound:g} at {rule.steps} step"
                                     f"{'s' if rule.steps != 1 else ''} from step {rule.first}: single-eigenvalue "
                                     f"processes flagged outside_assumptions there"})
    for name, info in ls.retired.items():
        segments.append({"from": info["step"], "to": end, "what": f"{name} diverged: {info['why']}; not stepped"})
    out: dict[str, Any] = {"theory": segments}
    if ls.joined:
        out["joined"] = dict(ls.joined)
    if ls.retired:
        out["diverged"] = {k: dict(v) for k, v in ls.retired.items()}
    return out


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
        from .figures.registry import draw_figures
        draw_figures(rundir.path, out=rundir.path / "figures")
    return rundir


def resume(path: str | os.PathLike) -> RunDir:
    """Continue the run in ``path`` from its last checkpoint, as ``selfstab resume`` does (without figures)."""
    return execute(RunDir.open(path))
