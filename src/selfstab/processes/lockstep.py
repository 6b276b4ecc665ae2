"""The tracked processes advanced in lockstep from the edge ``θ₀``, in float64 (docs/theory.md §4–7).

A :class:`Lockstep` is one loop over a list of :class:`~selfstab.processes.base.Process`
objects (the protocol is in ``base.py``): each step records every process at
time ``t``, then advances every process to ``t+1``, then asks the stop rules.
It adds one table of its own, ``cost``: the HVPs, gradients and third/fourth
derivatives spent in the step, and its wall-clock seconds.

:data:`PROCESSES` names every process selfstab has; :func:`default_processes`
builds a list of them from plain keyword options (the run's ``track`` settings
or :func:`track`'s keywords), each process taking the options its constructor
names.  A new process is one file plus one line in :data:`PROCESSES`; a user's
own process object can be passed to :func:`track` directly.

:func:`track` is the one stepping loop: the Python API and ``selfstab run``
both use it.
"""

from __future__ import annotations

import inspect
import math
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import torch
from torch import Tensor

from ..errors import ConfigError
from ..keywords import did_you_mean
from ..problem.objective import Objective
from ..rules import track_problems
from .base import (SEVERAL_EIGENVALUES, Context, EpsilonFlag, Lambda2Central, Lambda2Flag, Lambda2Threshold, NonFinite,
                   Process, PROVIDERS, Records, StepLimit, StopRule, out_of_bounds)
from .central import CentralFlow
from .constrained import Constrained
from .diagnostics import Diagnostics
from .flow import Flow
from .gd import GD, check_lr
from .kconstrained import KConstrained
from .predicted import Generalized, Predicted

# Every process selfstab has, in the order they step (a process that reads ctx.next comes after
# "constrained", which provides it).  A class whose `default` is False runs only when named.
PROCESSES: dict[str, type[Process]] = {
    "gd": GD,
    "constrained": Constrained,
    "predicted": Predicted,
    "generalized": Generalized,
    "flow": Flow,
    "central": CentralFlow,
    "kconstrained": KConstrained,
    "diagnostics": Diagnostics,
}

def register_process(cls: type[Process]) -> type[Process]:
    """Add a process class (e.g. a user's own) to :data:`PROCESSES` under ``cls.name``; it then steps after
    the built-in ones and can be named in ``track.processes``.  Usable as a class decorator."""
    if not (isinstance(cls, type) and issubclass(cls, Process)):
        raise ConfigError(f"register_process: expected a Process subclass, got {cls!r}")
    if cls.name in PROCESSES and PROCESSES[cls.name] is not cls:
        raise ConfigError(f"register_process: a different process is already called {cls.name!r}; rename yours")
    PROCESSES[cls.name] = cls
    return cls


# Options that are not a process's: the λ₂ rule's threshold and kind; and switches that leave a default
# process out (the run's track.flow and track.generalized settings).
RULE_OPTIONS = ("stop_lambda2", "lambda2_rule")
LAMBDA2_RULES = ("auto", "stop", "flag", "central")
SWITCHES = ("flow", "generalized")
# track()'s own keywords, named in the "did you mean" of a misspelt option
TRACK_KEYWORDS = ("steps", "processes", "stop_rules", "warm", "on_records", "lockstep", "allow_off_edge", "edge_tol")


def _accepted(cls: type) -> list[str]:
    return [p.name for p in inspect.signature(cls.__init__).parameters.values()
            if p.kind is inspect.Parameter.KEYWORD_ONLY]


def process_options() -> list[str]:
    """Every keyword option that some registered process (or a stop rule) accepts."""
    names = {name for cls in PROCESSES.values() for name in _accepted(cls)}
    return sorted(names | set(RULE_OPTIONS) | set(SWITCHES))


def check_options(options: dict, extra: Sequence[str] = ()) -> None:
    """A one-line error for an option no process accepts, with a "did you mean"."""
    valid = process_options() + list(extra)
    for key in options:
        if key not in valid:
            raise ConfigError(f"track: unknown option {key!r}{did_you_mean(key, valid)} "
                              f"(options: {', '.join(valid)})")


def default_processes(names: Iterable[str] | None = None, *, api: bool = False, **options) -> list[Process]:
    """The processes called ``names`` (default: every process of :data:`PROCESSES` marked default), each
    built with the ``options`` its constructor accepts (e.g. ``eig_tol=1e-8, flow_method="RK45"``).
    ``api``: the messages name :func:`track`'s keyword ``processes=`` instead of ``--track.processes``."""
    check_options(options)
    chosen = [n for n, cls in PROCESSES.items() if cls.default] if names is None else list(names)
    chosen = [n for n in chosen if options.pop(n, True) or n not in SWITCHES]   # flow=False leaves it out
    for name in chosen:
        if name not in PROCESSES:
            raise ConfigError(f"{'processes' if api else 'track.processes'}: unknown process "
                              f"{name!r}{did_you_mean(name, PROCESSES)} "
                              f"(processes: {', '.join(PROCESSES)})")
    order = [n for n in PROCESSES if n in chosen]   # the registry's order is the stepping order
    for name in order:
        missing = [PROVIDERS[w] for w in PROCESSES[name].needs if w in PROVIDERS and PROVIDERS[w] not in order]
        if missing:
            need = sorted(set(missing))
            names_needed = [n for n in PROCESSES if n in order or n in need]
            fix = f"processes={names_needed!r}" if api else f"--track.processes {','.join(names_needed)}"
            raise ConfigError(f"{'processes' if api else 'track.processes'}: {name!r} needs the "
                              f"{' and '.join(map(repr, need))} process{'es' if len(need) > 1 else ''} "
                              f"(it reads their state every step); add {'them' if len(need) > 1 else 'it'}: {fix}")
    return [PROCESSES[n](**{k: v for k, v in options.items() if k in _accepted(PROCESSES[n])}) for n in order]


def lambda2_rule_kind(lambda2_rule: str = "auto", processes: Iterable[str] | None = None) -> str:
    """``"stop"``, ``"flag"`` or ``"central"``.  ``"auto"``: ``"central"`` for the default set (``processes``
    ``None``: the run did not name its processes), ``"flag"`` when named processes include one of
    :data:`SEVERAL_EIGENVALUES`, ``"stop"`` when they do not (the user chose the single-eigenvalue theory)."""
    if lambda2_rule not in LAMBDA2_RULES:
        raise ConfigError(f"track.lambda2_rule: must be one of {', '.join(LAMBDA2_RULES)}, got {lambda2_rule!r}")
    if lambda2_rule != "auto":
        return lambda2_rule
    if processes is None:
        return "central"
    return "flag" if any(n in SEVERAL_EIGENVALUES for n in processes) else "stop"


def default_stop_rules(stop_lambda2: float | None = 1.9, lambda2_rule: str = "auto",
                       processes: Iterable[str] | None = None, **central_options) -> list[StopRule]:
    """Non-finite state, then the λ₂ rule at ``λ₂ ≥ stop_lambda2/η`` (``None`` or 0: no λ₂ rule).

    The λ₂ rule (:func:`lambda2_rule_kind`): ``"stop"`` ends the run there
    (:class:`~selfstab.processes.base.Lambda2Threshold`, the paper's
    experiments); ``"flag"`` lets it continue and marks the single-eigenvalue
    processes ``outside_assumptions`` (:class:`~selfstab.processes.base.Lambda2Flag`);
    ``"central"`` does the same and adds the central flow at that step when none
    runs (:class:`~selfstab.processes.base.Lambda2Central`, built with
    ``central_options``, the run's process options); ``"auto"`` is ``"central"``
    for the default set (``processes`` None), ``"flag"`` for named processes with
    the central flow or ``θ†_k``, ``"stop"`` for other named processes.
    """
    kind = lambda2_rule_kind(lambda2_rule, processes)
    if stop_lambda2 is not None and not (isinstance(stop_lambda2, (int, float)) and stop_lambda2 >= 0):
        raise ConfigError(f"track.stop_lambda2: must be a number ≥ 0 (0 or none: no λ₂ rule), got {stop_lambda2!r}")
    rules: list[StopRule] = [NonFinite()]
    if stop_lambda2:
        if kind == "stop":
            rules.append(Lambda2Threshold(stop_lambda2))
        elif kind == "flag":
            rules.append(Lambda2Flag(stop_lambda2))
        else:
            accepted = _accepted(CentralFlow)
            options = {k: v for k, v in central_options.items() if k in accepted}
            rules.append(Lambda2Central(stop_lambda2, make=lambda: CentralFlow(**options)))
    rules.append(EpsilonFlag())
    return rules


def lambda2_at(objective: Objective, theta: Tensor, warm: Tensor | None = None) -> float:
    """``λ₂(θ)``, the second eigenvalue of ``∇²L(θ)`` (float64; a solve of its own, the run's random state
    untouched), for the choice of the default set at ``θ₀`` (:func:`default_set`)."""
    from ..spectrum import EigenTracker
    obj = objective.to(torch.float64)
    cuda = [obj.device.index or 0] if obj.device.type == "cuda" else []
    counts = dict(obj.counts)
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(0)
        tracker = EigenTracker(2, tol=1e-6, on_fail="warn")
        if warm is not None:
            tracker.seed(warm.to(obj.theta0))
        lam2 = float(tracker.refresh(obj.at(theta)).values[1])
    obj.counts.clear()   # a choice made before tracking: not part of the tracked steps' cost
    obj.counts.update(counts)
    return lam2


def default_set(objective: Objective, theta0: Tensor, lr: float, warm: Tensor | None = None,
                stop_lambda2: float | None = 1.9) -> tuple[list[str], float]:
    """The processes of a run that did not name them, decided at ``θ₀``, and ``λ₂(θ₀)`` (NaN: not solved).

    The default processes, plus the central flow when ``λ₂(θ₀) ≥ stop_lambda2/η``: several eigenvalues are
    at the edge from the start, where the single-eigenvalue theory does not apply and the λ₂ rule would act
    at once (docs/theory.md §7, §10).  Without a λ₂ rule (``stop_lambda2`` 0 or None) nothing is solved.
    """
    names = [n for n, cls in PROCESSES.items() if cls.default]
    if not stop_lambda2:
        return names, math.nan
    lam2 = lambda2_at(objective, theta0, warm)
    if lam2 >= stop_lambda2 / lr and "central" not in names:
        names.append("central")
    return names, lam2


class Lockstep:
    """A list of processes stepped together from ``θ₀`` (module docstring).

    Build it, then either :meth:`start` it at ``θ₀`` or restore it with
    :meth:`load_state_dict` (:meth:`from_state` does both steps of the latter).
    """

    def __init__(self, objective: Objective, lr: float, processes: Sequence[Process] | None = None, *,
                 stop_rules: Sequence[StopRule] | None = None):
        self.objective = objective.to(torch.float64)
        self.lr = check_lr(lr)
        self.processes = list(default_processes() if processes is None else processes)
        names = [p.name for p in self.processes]
        if len(set(names)) != len(names):
            raise ConfigError(f"processes: two processes share a name in {names}; names are the record tables")
        self.stop_rules = list(default_stop_rules(processes=names) if stop_rules is None else stop_rules)
        self.ctx = Context(self.objective, self.lr, processes={p.name: p for p in self.processes})
        for p in self.processes:
            p.setup(self.ctx)
        self.stop_reason: str | None = None
        self.joined: dict[str, int] = {}          # process → the step it joined at (a stop rule added it)
        self.retired: dict[str, dict] = {}        # process → {"step", "why"}: diverged, no longer stepped
        self.loss0 = math.nan                     # GD's loss at θ₀, the scale of the bounds (base.out_of_bounds)

    @property
    def active(self) -> list[Process]:
        """The processes still stepped (all but the retired ones)."""
        return [p for p in self.processes if p.name not in self.retired]

    @property
    def t(self) -> int:
        return self.ctx.t

    def get(self, name: str) -> Process:
        return self.ctx.processes[name]

    def start(self, theta0: Tensor, warm: Tensor | None = None) -> "Lockstep":
        """Set every process up at ``θ₀``; ``warm`` (eigenvectors found at the edge) seeds their solvers."""
        ctx = self.ctx
        ctx.t, ctx.theta = 0, self.objective.vector(theta0).clone()
        ctx.warm = None if warm is None else warm.to(ctx.theta)
        for p in self.processes:
            p.start(ctx)
            p.publish(ctx)
        ctx.warm = None
        return self

    def step(self) -> Records:
        """Record time ``t`` and advance every process to ``t+1``; then apply the stop rules."""
        ctx, obj = self.ctx, self.objective
        start, counts0 = time.perf_counter(), Counter(obj.counts)
        rec: Records = {}
        active = self.active
        for p in active:
            fields = p.record(ctx)
            if fields is not None:
                rec[p.name] = fields
        if ctx.t == 0 and "gd" in rec:
            self.loss0 = float(rec["gd"].get("loss", math.nan))
        for p in active:
            extra = p.advance(ctx)
            if extra:
                rec.setdefault(p.name, {}).update(extra)
        spent = Counter(obj.counts)
        spent.subtract(counts0)
        rec["cost"] = {"hvps": spent["hvp"], "grads": spent["grad"], "d3": spent["d3"] + spent["d4"],
                       "seconds": time.perf_counter() - start}
        ctx.t += 1
        ctx.next = None
        for p in active:   # between steps the context shows time t+1
            p.publish(ctx)
        self._retire_diverged(rec)
        for rule in self.stop_rules:
            reason = rule.check(ctx, rec)
            if reason is not None:
                self.stop_reason = reason
                break
        for rule in self.stop_rules:
            for process in rule.joins(ctx):
                self.join(process)
        return rec

    def _retire_diverged(self, rec: Records) -> None:
        """Retire each retirable process that left the finite numbers or its bounds at this step: its row gets
        ``diverged = 1.0``, and it is no longer stepped (nor seen by the others through ``ctx.get``)."""
        for p in self.active:
            if not p.retires:
                continue
            why = None if p.finite() else "it left the finite numbers"
            why = why or out_of_bounds(p, rec.get(p.name, {}), rec.get("gd", {}), self.lr, self.loss0)
            if why is not None:
                step = self.ctx.t - 1
                self.retired[p.name] = {"step": step, "why": why}
                rec.setdefault(p.name, {})["diverged"] = 1.0
                self.ctx.processes.pop(p.name, None)

    def join(self, process: Process) -> None:
        """Add ``process`` at the current time ``t`` from GD's iterate ``θ_t`` (its records start at ``t``);
        GD's current eigenvectors seed its solvers.  Used by a stop rule's ``joins`` (:class:`Lambda2Central`)."""
        ctx = self.ctx
        if process.name in ctx.processes or process.name in self.retired:
            raise ConfigError(f"processes: {process.name!r} is already in this lockstep")
        process.setup(ctx)
        gd = ctx.get("gd")
        last = getattr(getattr(gd, "tracker", None), "last", None)
        ctx.warm = None if last is None else last.vectors.reshape(-1, self.objective.dim)
        process.start(ctx)
        ctx.warm = None
        order = list(PROCESSES)
        rank = {n: i for i, n in enumerate(order)}
        self.processes.append(process)
        self.processes.sort(key=lambda p: rank.get(p.name, len(order)))
        ctx.processes = {p.name: p for p in self.processes if p.name not in self.retired}
        process.publish(ctx)
        self.joined[process.name] = ctx.t

    # -- checkpoints --------------------------------------------------------------------------
    def state_dict(self) -> dict:
        state = {"t": self.t, "stop_reason": self.stop_reason, "counts": dict(self.objective.counts),
                 "processes": {p.name: p.state_dict() for p in self.processes}}
        # keys only where they say something, so the default job's checkpoints keep their layout
        if self.joined:
            state["joined"] = dict(self.joined)
        if self.retired:
            state["retired"] = {k: dict(v) for k, v in self.retired.items()}
        if math.isfinite(self.loss0):
            state["loss0"] = self.loss0
        rules = [rule.state_dict() for rule in self.stop_rules]
        if any(r is not None for r in rules):   # only rules with state (the λ₂ flag) add the key
            state["rules"] = rules
        return state

    def load_state_dict(self, state: dict) -> None:
        if "processes" not in state:
            state = _from_legacy(state)
        missing = [p.name for p in self.processes if p.name not in state["processes"]]
        if missing:
            raise ConfigError(f"checkpoint: it holds no state for the process(es) {', '.join(missing)}; resume "
                              f"with the processes it was made with ({', '.join(state['processes'])})")
        self.ctx.t = int(state["t"])
        self.stop_reason = state["stop_reason"]
        for p in self.processes:
            p.load_state_dict(state["processes"][p.name])
            p.publish(self.ctx)
        self.objective.counts.clear()
        self.objective.counts.update(state["counts"])
        self.joined = {k: int(v) for k, v in state.get("joined", {}).items()}
        self.retired = {k: dict(v) for k, v in state.get("retired", {}).items()}
        self.loss0 = float(state.get("loss0", math.nan))
        for name in self.retired:
            self.ctx.processes.pop(name, None)
        for rule, saved in zip(self.stop_rules, state.get("rules", ())):
            if saved is not None and rule.state_dict() is not None:
                rule.load_state_dict(saved)

    @classmethod
    def from_state(cls, objective: Objective, lr: float, state: dict, processes: Sequence[Process] | None = None,
                   *, stop_rules: Sequence[StopRule] | None = None) -> "Lockstep":
        """A lockstep restored from :meth:`state_dict` (a checkpoint), without recomputing anything."""
        self = cls(objective, lr, processes, stop_rules=stop_rules)
        self.load_state_dict(state)
        return self


def _from_legacy(state: dict) -> dict:
    """A checkpoint written before the process protocol, in today's layout (same values)."""
    tr = state["trackers"]
    procs = {"gd": {"theta": state["theta"], "prev_sharpness": state["prev_gd_sharpness"], "tracker": tr["gd"]},
             "constrained": {"here": state["here"], "proj": state["proj"],
                             "trackers": [tr["constrained"], tr["constrained_corrector"]]},
             "predicted": {"v": state["v"]}, "generalized": {"v": state["vg"]},
             "diagnostics": {"tracker": tr["diagnostics"], "power_starts": state.get("power_starts", {})}}
    if state.get("flow") is not None:
        procs["flow"] = {"flow": state["flow"], "tracker": tr["flow"]}
    return {"t": state["t"], "stop_reason": state["stop_reason"], "counts": state["counts"], "processes": procs}


@dataclass
class TrackResult:
    """Records of every process (``{process: [ {step, field: value} ]}``), why tracking stopped, the state."""

    records: dict[str, list[dict]] = field(default_factory=dict)
    stop_reason: str = ""
    steps: int = 0
    lockstep: Lockstep | None = None

    def frames(self) -> dict:
        import pandas as pd
        return {k: pd.DataFrame(v).set_index("step") for k, v in self.records.items() if v}

    def save(self, path, edge=None, config=None, *, overwrite: bool = False):
        """Write a run directory at ``path`` that ``load_run``, ``selfstab plot`` and ``report`` read like any
        other: these records (``cost``'s seconds in ``timing``, as in a run), ``edge``'s (``gd_to_edge``'s
        result) as the ``train`` table, the summary, and ``config.toml`` (``config``, the run's config as a
        ``RunConfig`` or dict, if known; else what is known: ``lr``).  Returns the
        :class:`~selfstab.records.RunDir`."""
        from ..records.results import save_results
        return save_results(path, edge=edge, track=self, config=config, overwrite=overwrite,
                            lr=None if self.lockstep is None else self.lockstep.lr)


def check_edge(objective: Objective, theta0: Tensor, lr: float, warm: Tensor | None, tol: float) -> float:
    """``S(θ₀)``, or a :class:`ConfigError` when it is not within ``tol`` (relative) of ``2/η``.

    The theory tracked here starts at the edge of stability; from elsewhere its
    predictions are meaningless (docs/theory.md §3).  The solve uses its own
    tracker, so the tracked processes' warm starts are untouched.
    """
    from ..spectrum import EigenTracker
    obj = objective.to(torch.float64)
    tracker = EigenTracker(1, tol=1e-6, on_fail="warn")
    if warm is not None:
        tracker.seed(warm.to(obj.theta0))
    point = obj.at(theta0)
    loss = float(point.loss)
    s = tracker.refresh(point).sharpness if math.isfinite(loss) else math.nan
    if not math.isfinite(s):   # NaN data or weights, not a learning rate far from 2/S
        raise ConfigError(f"theta0: L(θ₀) = {loss:.4g} and S(θ₀) = {s:.4g}: the objective's data (inputs, "
                          f"targets) or θ₀ hold NaN or inf values; check them (the learning rate is not the cause)")
    ratio = s * lr / 2
    if not abs(ratio - 1) <= tol:
        where = "below" if ratio < 1 else "above"
        raise ConfigError(f"theta0: S(θ₀) = {s:.4g} is {abs(ratio - 1):.0%} {where} the edge 2/η = {2 / lr:.4g} "
                          f"(allowed: {tol:.0%}); start from selfstab.gd_to_edge(objective, lr).theta0, or choose "
                          f"lr near 2/S(θ₀) = {2 / s:.4g}, or pass allow_off_edge=True to track from there anyway")
    return s


def _option_defaults() -> dict:
    """Each process option's default, as the processes' constructors declare it."""
    out = {}
    for cls in PROCESSES.values():
        for p in inspect.signature(cls.__init__).parameters.values():
            if p.kind is inspect.Parameter.KEYWORD_ONLY and p.default is not inspect.Parameter.empty:
                out.setdefault(p.name, p.default)
    return out


def check_option_values(options: dict) -> None:
    """A one-line error for a keyword option whose value breaks the rule its ``track`` config key obeys
    (:func:`selfstab.rules.track_problems`, the rule ``TrackConfig.validate`` applies too)."""
    defaults, problems = _option_defaults(), []
    for name, value in options.items():
        try:
            problems += [p for p in track_problems({**defaults, name: value}) if p[0] == name]
        except TypeError:   # e.g. a string where a number belongs
            raise ConfigError(f"track: {name} has the wrong type, got {value!r} (the keyword argument "
                              f"{name}=)") from None
    if problems:
        name, why = problems[0]
        raise ConfigError(f"track: {name} {why}")


def _check_point(objective: Objective, theta0) -> Tensor:
    """``theta0`` as a flat vector of the objective's length with finite entries, else a one-line error."""
    if not isinstance(theta0, Tensor):
        raise ConfigError(f"theta0: expected a torch tensor of {objective.dim} parameters, got "
                          f"{type(theta0).__name__}")
    if theta0.dim() != 1 or theta0.numel() != objective.dim:
        raise ConfigError(f"theta0: expected a flat vector of length {objective.dim} (objective.dim), got shape "
                          f"{tuple(theta0.shape)}; e.g. gd_to_edge(objective, lr).theta0")
    bad = int((~torch.isfinite(theta0)).sum())
    if bad:
        raise ConfigError(f"theta0: {bad} of its {objective.dim} entries {'is' if bad == 1 else 'are'} NaN or inf; "
                          f"pass a finite point (e.g. gd_to_edge(objective, lr).theta0)")
    return theta0


def _check_warm(objective: Objective, warm) -> Tensor:
    """``warm`` as eigenvectors ``(d,)`` or ``(m, d)``, ``d = objective.dim``, else a one-line error."""
    d = objective.dim
    if not isinstance(warm, Tensor) or warm.dim() not in (1, 2) or warm.shape[-1] != d:
        got = tuple(warm.shape) if isinstance(warm, Tensor) else type(warm).__name__
        raise ConfigError(f"warm: expected eigenvectors of shape ({d},) or (m, {d}) (d = objective.dim), got {got}; "
                          f"e.g. warm=gd_to_edge(objective, lr).eig.vectors, or leave it out")
    if not bool(torch.isfinite(warm).all()):
        raise ConfigError("warm: it holds NaN or inf values; pass finite eigenvectors, or leave it out")
    return warm


def track(objective: Objective, theta0: Tensor | None, lr: float, steps: int = 800, *,
          processes: Sequence[Process] | Sequence[str] | None = None, stop_rules: Sequence[StopRule] | None = None,
          warm: Tensor | None = None, on_records: Callable[[int, Records], None] | None = None,
          lockstep: Lockstep | None = None, allow_off_edge: bool = False, edge_tol: float = 0.1,
          **options) -> TrackResult:
    """Track GD, ``θ†``, the predicted dynamics, gradient flow and the diagnostics from ``θ₀``.

    ``steps``: GD steps from ``θ₀`` (time restarts at 0 there).  ``processes``:
    process objects or names (default: :func:`default_processes`); keyword
    ``options`` set their tolerances (``eig_tol``, ``proj_tol``,
    ``flow_method``, ``diagnostics_every``, …, and the λ₂ rule's
    ``stop_lambda2``/``lambda2_rule``, see :func:`default_stop_rules`; an unknown
    one is an error that suggests the nearest).  ``warm``: eigenvectors found
    at the edge (``gd_to_edge(...).eig.vectors``).  ``on_records(t, records)``
    streams each step; ``lockstep`` continues an existing (e.g. resumed) run
    instead of starting at ``theta0``.

    ``θ₀`` must be at the edge: ``S(θ₀)`` within ``edge_tol`` (relative) of
    ``2/η``, or a :class:`~selfstab.errors.ConfigError` says how far off it is;
    ``allow_off_edge=True`` tracks from anywhere.  Returns a
    :class:`TrackResult` whose :meth:`~TrackResult.frames` are pandas
    DataFrames indexed by step.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ConfigError(f"steps: the number of steps to track must be an int ≥ 0, got {steps!r}")
    check_options(options, extra=TRACK_KEYWORDS)
    check_option_values(options)
    lr = check_lr(lr)
    rule_options = {k: options.pop(k) for k in RULE_OPTIONS if k in options}
    if lockstep is None:
        if theta0 is None:
            raise ConfigError("theta0: give the point to track from (or lockstep= to continue a run)")
        theta0 = _check_point(objective, theta0)
        if warm is not None:
            warm = _check_warm(objective, warm)
        named = None if processes is None else [p if isinstance(p, str) else p.name for p in processes]
        if processes is None:
            default_processes(None, api=True, **options)   # the options checked before any solve
        elif all(isinstance(p, str) for p in processes):
            processes = default_processes(processes, api=True, **options)
        elif options:
            raise ConfigError(f"track: options {', '.join(options)} apply to the default processes; set them on "
                              f"your process objects instead")
        if not allow_off_edge:
            check_edge(objective, theta0, lr, warm, edge_tol)
        if processes is None:   # the default set, decided at θ₀ (the central flow joins when λ₂ is at the edge)
            names, _ = default_set(objective, theta0, lr, warm, rule_options.get("stop_lambda2", 1.9))
            processes = default_processes(names, api=True, **options)
        rules = default_stop_rules(**rule_options, processes=named, **options) if stop_rules is None else stop_rules
        lockstep = Lockstep(objective, lr, processes, stop_rules=rules).start(theta0, warm)
    result = TrackResult(lockstep=lockstep)
    limit = StepLimit(steps)
    while lockstep.stop_reason is None and limit.check(lockstep.ctx, {}) is None:
        t = lockstep.t
        rec = lockstep.step()
        for name, fields in rec.items():
            result.records.setdefault(name, []).append({"step": t, **fields})
        if on_records is not None:
            on_records(t, rec)
    result.steps = lockstep.t
    result.stop_reason = lockstep.stop_reason or limit.check(lockstep.ctx, {}) or ""
    return result
