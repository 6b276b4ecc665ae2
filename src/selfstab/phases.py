"""The two stages of a run: GD to the edge (:func:`train_phase`) and tracking from it (:func:`track_phase`).

Each stage streams its records into a :class:`~selfstab.records.RunDir`, shows
progress, mirrors to TensorBoard when asked, and checkpoints as it goes (every
rank checking it holds bitwise the same state first); :func:`theory_held` says
in the summary which theory held over which tracked steps.  The run's
lifecycle around them — starting, resuming, statuses, Ctrl-C, the public API —
is :mod:`selfstab.experiment` (docs/theory.md §3–7).
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from typing import Any

import torch

from . import distributed
from .config import RunConfig, TrackConfig, from_dict
from .errors import ConfigError
from .problem.build import Problem, build_problem, evaluator
from .processes import Lambda2Flag, Lockstep, default_processes, default_stop_rules, track
from .processes.base import SEVERAL_EIGENVALUES, SINGLE_EIGENVALUE, EpsilonFlag
from .processes.lockstep import RULE_OPTIONS, default_set, lambda2_rule_kind, process_options
from .records import RunDir
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
    rules = default_stop_rules(tc.stop_lambda2, tc.lambda2_rule, tc.processes, **options)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # projection/eigen shortfalls are recorded per step
        if resume_state is None:
            names, lam2 = tc.processes, math.nan
            if names is None:   # the default set, decided once at θ₀ and written into the summary
                names, lam2 = default_set(obj, edge["theta0"], lr, edge["warm"], tc.stop_lambda2)
            processes = default_processes(names, **options)
            run.write_summary({"processes": [p.name for p in processes],
                               "lambda2_rule": lambda2_rule_kind(tc.lambda2_rule, tc.processes) if tc.stop_lambda2
                               else "none",
                               **({"lambda2_theta0": lam2} if math.isfinite(lam2) else {})})
            ls = Lockstep(obj, lr, processes, stop_rules=rules).start(edge["theta0"], edge["warm"])
        else:   # the processes the checkpoint holds (a process that joined on the way included)
            processes = default_processes(list(resume_state["lockstep"]["processes"]), **options)
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
