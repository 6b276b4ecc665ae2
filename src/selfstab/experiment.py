"""A run, end to end: config → problem → GD to the edge → tracking → records (docs/theory.md §3–7).

The one place that turns a :class:`~selfstab.config.RunConfig` into calls:
:func:`~selfstab.problem.build.build_problem` makes the objective;
:func:`train_phase` (:func:`~selfstab.train.gd_to_edge`) and :func:`track_phase`
(:func:`~selfstab.processes.track` over :func:`~selfstab.processes.default_processes`)
run the two stages into a :class:`~selfstab.records.RunDir`, checkpointing as
they go; :func:`execute` runs whatever a run directory still needs, so a fresh
run and ``selfstab resume`` are the same code; :func:`run` is the main job from
Python, as ``selfstab run`` does it.

Resume semantics: the training phase is short and deterministic, so a run
killed before the edge restarts training from initialization (its records
are rewound); once the edge is found, ``θ₀`` and its eigenvectors are
checkpointed, and tracking resumes from its latest checkpoint with every
state (iterates, warm starts, the flow's step size, counters) restored, so
the records continue bit-for-bit.  Wall-clock times live in the ``timing``
table, the only one that differs between a resumed and an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import os
import time
import warnings
from typing import Any

import torch

from .config import RunConfig, TrackConfig, from_dict, load_config
from .errors import ConfigError
from .problem.build import Problem, build_problem, evaluator
from .processes import Lockstep, default_processes, default_stop_rules, track
from .processes.lockstep import process_options
from .records import RunDir
from .spectrum import EigenTracker, default_tol
from .train import gd_run, gd_to_edge


def as_config(config: RunConfig | dict) -> RunConfig:
    return config if isinstance(config, RunConfig) else from_dict(RunConfig, config)


@contextlib.contextmanager
def _progress(total: int, desc: str, quiet: bool):
    """A tqdm bar (or nothing when quiet) with a ``show(step, **postfix)`` callback."""
    if quiet:
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


def train_phase(cfg: RunConfig, run: RunDir, problem: Problem | None = None) -> dict:
    """GD from initialization to the edge; records ``train``, checkpoints ``θ₀``, returns the edge state.

    With ``train.stop_at_edge = false`` or the ``inverse_sharpness`` schedule, GD runs ``max_steps``
    steps instead (Figure 6) and nothing is tracked.
    """
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

    with _progress(cfg.train.max_steps + 1, "train" if fixed else "train → edge", cfg.quiet) as show, \
            warnings.catch_warnings():
        warnings.simplefilter("ignore")   # eigen-solver shortfalls are in the records (eig_residual)

        def progress(t, r):
            s = r.get("sharpness")
            show(t, loss=r["loss"], **({"S": s} if s is not None else {}), **{"2/η": cfg.edge})

        try:
            if fixed:
                gd_run(obj, lr, cfg.train.max_steps, schedule=cfg.train.schedule, measure_every=cfg.train.every[1],
                       tracker=tracker, evaluate=evaluator(problem), on_record=on_record, progress=progress)
            else:
                edge = gd_to_edge(obj, lr, max_steps=cfg.train.max_steps, every=cfg.train.every, tracker=tracker,
                                  on_record=on_record, progress=progress, evaluate=evaluator(problem))
        finally:
            run.flush()
            board.close()
    seconds = time.perf_counter() - start
    if fixed:
        run.write_summary({"lr": lr, "parameters": obj.dim, "seconds_train": seconds, "reached_edge": False,
                           "stop_reason": f"trained {cfg.train.max_steps} steps ({cfg.train.schedule} step size)"})
        state = {"phase": "edge", "theta0": None, "onset_step": None, "reached": False, "warm": None, "fixed": True}
        run.save_checkpoint(cfg.train.max_steps, state)
        return state
    summary = {"lr": lr, "parameters": obj.dim, "reached_edge": edge.reached, "onset_step": edge.step,
               "onset_sharpness": edge.sharpness, "onset_loss": edge.history[-1]["loss"] if edge.history else None,
               "seconds_train": seconds, "train_grads": edge.counts.get("grad", 0),
               "train_hvps": edge.counts.get("hvp", 0)}
    run.write_summary(summary)
    state = {"phase": "edge", "theta0": edge.theta0.detach().cpu(), "onset_step": edge.step,
             "reached": edge.reached, "warm": None if edge.eig is None else edge.eig.vectors.detach().cpu()}
    run.save_checkpoint(edge.step, state)
    return state


class _TensorBoard:
    """Optional mirror of the records to TensorBoard (``tensorboard = true``); a no-op when off."""

    def __init__(self, cfg: RunConfig, run: RunDir):
        self.writer = None
        if cfg.tensorboard:
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
    return {name: getattr(tc, name) for name in process_options() if hasattr(tc, name) and name != "stop_lambda2"}


def track_phase(cfg: RunConfig, run: RunDir, edge: dict, problem: Problem | None = None,
                resume_state: dict | None = None) -> Lockstep:
    """The tracked processes from ``θ₀`` in float64, streaming records and checkpointing every ``checkpoint_every``."""
    problem = problem or build_problem(cfg, dtype="float64")
    obj = problem.objective.to(torch.float64)
    lr, tc = cfg.lr, cfg.track
    processes = default_processes(tc.processes, **track_options(tc))
    rules = default_stop_rules(tc.stop_lambda2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # projection/eigen shortfalls are recorded per step
        if resume_state is None:
            ls = Lockstep(obj, lr, processes, stop_rules=rules).start(edge["theta0"], edge["warm"])
        else:
            ls = Lockstep.from_state(obj, lr, resume_state["lockstep"], processes, stop_rules=rules)
        start = time.perf_counter()
        board = _TensorBoard(cfg, run)
        with _progress(tc.steps, "track", cfg.quiet) as show:
            if ls.t:
                show(ls.t - 1)

            def write(t: int, rec: dict) -> None:
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
                    run.save_checkpoint(ls.t, {"phase": "track", "edge": edge, "lockstep": ls.state_dict()})

            result = track(obj, None, lr, tc.steps, lockstep=ls, on_records=write)
        board.close()
    run.write_summary({"stop_reason": result.stop_reason, "tracked_steps": ls.t,
                       "seconds_track": time.perf_counter() - start})
    return ls


def execute(run: RunDir, *, train_only: bool = False) -> RunDir:
    """Run (or resume) whatever ``run`` still needs: training to the edge, then tracking."""
    cfg = as_config(run.config)
    torch.manual_seed(cfg.seed)
    latest = run.rewind_to_checkpoint()
    state = latest[1] if latest else None
    if state is None:
        edge = train_phase(cfg, run)
    elif state["phase"] == "edge":
        edge = state
    else:
        edge = state["edge"]
    if train_only or not edge["reached"]:
        if not edge["reached"] and not edge.get("fixed"):
            run.write_summary({"stop_reason": f"the sharpness did not reach 2/η within train.max_steps = "
                                              f"{cfg.train.max_steps}; raise it or the learning rate"})
        return run
    if cfg.track.steps > 0:
        track_phase(cfg, run, edge, resume_state=state if state and state["phase"] == "track" else None)
    return run


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
    rundir = RunDir.create(cfg.out, cfg, overwrite=overwrite)
    execute(rundir)
    if figures:
        from .figures.registry import draw_figures
        draw_figures(rundir.path, out=rundir.path / "figures")
    return rundir



def resume(path: str | os.PathLike) -> RunDir:
    """Continue the run in ``path`` from its last checkpoint, as ``selfstab resume`` does (without figures)."""
    return execute(RunDir.open(path))
