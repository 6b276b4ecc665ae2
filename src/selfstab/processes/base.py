"""The process protocol: every trajectory tracked from ``θ₀`` is one small :class:`Process`.

A :class:`~selfstab.processes.lockstep.Lockstep` holds a list of processes and
a :class:`Context`, and one step is two passes over the list:

1. ``record(ctx)`` — each process returns its fields at time ``t`` (a flat
   ``dict[str, float]``, one row of its table in the records), or ``None``
   when it records nothing at this step (an observer that runs every ``k``
   steps);
2. ``advance(ctx)`` — each process moves itself from ``t`` to ``t+1`` (it may
   return fields to add to its row of time ``t``, e.g. what the move cost).

Processes share work through the context, never by recomputing it:
``ctx.theta`` is GD's iterate ``θ_t``, ``ctx.here`` the geometry at ``θ†_t``
(:class:`~selfstab.processes.geometry.Geometry`: eigenpair, gradient, ``∇S``,
``α, β, δ``), and ``ctx.next`` the geometry at ``θ†_{t+1}``, published by the
constrained trajectory during its ``advance`` (so it must come before the
processes that need ``u_{t+1}``).  A process publishes what it owns in
``publish(ctx)``, called after ``start``, after a restore and at the end of
every step, so that between steps the context shows time ``t``.  ``ctx.get(name)`` reaches another process when an observer needs its
state (the diagnostics read the predicted displacement ``v_t``).

A process keeps its own eigen-tracker(s) and tolerances (plain keyword
arguments of its constructor: no process reads the run's config), and its
whole state goes through ``state_dict()``/``load_state_dict()`` so that a run
resumed from a checkpoint continues bit for bit.

Stop rules are small objects too (:class:`StopRule`): after each step every
rule may return a reason, and the first one ends the tracking.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

if TYPE_CHECKING:
    from ..problem.objective import Objective
    from .geometry import Geometry

Fields = dict[str, float]
Records = dict[str, Fields]


@dataclass
class Context:
    """What one lockstep step shares between processes (module docstring)."""

    objective: "Objective"
    lr: float
    t: int = 0
    theta: Tensor | None = None           # GD's θ_t
    here: "Geometry | None" = None        # the geometry at θ†_t
    next: "Geometry | None" = None        # the geometry at θ†_{t+1} (set while advancing)
    warm: Tensor | None = None            # eigenvectors that warm-start every tracker at the start
    processes: dict[str, "Process"] = field(default_factory=dict)

    @property
    def edge(self) -> float:
        """``2/η``, the edge of stability."""
        return 2.0 / self.lr

    def get(self, name: str) -> "Process | None":
        """The process called ``name`` in this lockstep, or ``None``."""
        return self.processes.get(name)

    def need(self, what: str, by: str) -> Any:
        """``ctx.<what>``, or a clear error saying which process must come first."""
        value = getattr(self, what)
        if value is None:
            provider = PROVIDERS.get(what, what)
            raise RuntimeError(f"process {by!r} needs ctx.{what}, which the {provider!r} process provides; "
                               f"list {provider!r} before {by!r}")
        return value


PROVIDERS = {"theta": "gd", "here": "constrained", "next": "constrained"}   # context field → the process setting it
# Processes that track several unstable eigenvalues: with one of them the λ₂ rule flags instead of stopping, and
# GD's sharpness solves start plain (processes/gd.py)
SEVERAL_EIGENVALUES = ("central", "kconstrained")


# A prediction of GD has blown up (docs/theory.md §7) when the loss it predicts is off GD's loss at the same step
# by more than LOSS_BOUND × max(|GD's loss then|, |GD's loss at θ₀|), or the sharpness it predicts is off GD's by
# more than SHARPNESS_BOUND · 2/η.  Where the theory holds the two agree to a few percent, so a prediction past
# either bound has left what it describes by an order of magnitude (the residual-LayerNorm case of that section:
# loss 4e5 against GD's 0.3, sharpness −893 against 2/η = 5).  The predicted dynamics declare these bounds (their
# loss and sharpness); the flows retire only when non-finite.
LOSS_BOUND = 10.0
SHARPNESS_BOUND = 1.0


def out_of_bounds(process: "Process", fields: "Fields", gd: "Fields", lr: float, loss0: float) -> str | None:
    """Why ``process``'s recorded ``fields`` are past the bounds above against GD's row ``gd`` of the same
    step, or ``None`` (also when GD is not recorded)."""
    for name in process.bounded_losses:
        value, ref = fields.get(name, math.nan), gd.get("loss", math.nan)
        scale = LOSS_BOUND * max(abs(ref), abs(loss0) if math.isfinite(loss0) else 0.0)
        if math.isfinite(value) and math.isfinite(ref) and abs(value - ref) > scale:
            return f"its {name} {value:.4g} is off GD's {ref:.4g} by more than {LOSS_BOUND:g}× GD's loss"
    for name in process.bounded_sharpness:
        value, ref = fields.get(name, math.nan), gd.get("sharpness", math.nan)
        if math.isfinite(value) and math.isfinite(ref) and abs(value - ref) > SHARPNESS_BOUND * 2.0 / lr:
            return (f"its {name} {value:.4g} is off GD's {ref:.4g} by more than "
                    f"{SHARPNESS_BOUND:g}·2/η = {SHARPNESS_BOUND * 2 / lr:.4g}")
    return None


class Process:
    """One trajectory (or observer) in lockstep; subclasses override what they need.

    ``name`` is the process's table in the records.  ``setup(ctx)`` binds it to
the objective; ``start(ctx)`` then sets it up
    at ``θ₀ = ctx.theta``; ``record`` and ``advance`` make one step (module
    docstring); ``finite()`` says whether its state is still finite (the
    :class:`NonFinite` rule reads it).
    """

    name: str = "process"
    default: bool = True   # part of the default set of processes (lockstep.PROCESSES)
    needs: tuple[str, ...] = ()   # context fields it reads, which another process provides (PROVIDERS)
    # A theory process that no other process reads: when it leaves the finite numbers or its bounded fields
    # pass the bounds (out_of_bounds) it is retired — flagged ``diverged`` and no longer stepped — while GD
    # and the rest go on.  Any other process that diverges ends the run (NonFinite).
    retires: bool = False
    bounded_losses: tuple[str, ...] = ()
    bounded_sharpness: tuple[str, ...] = ()

    def setup(self, ctx: Context) -> None:
        """Bind to the run's objective (called once, before :meth:`start` or a restore); ``η`` is ``ctx.lr``."""
        self.objective = ctx.objective

    def start(self, ctx: Context) -> None:
        """Initialize at ``t = 0`` from ``θ₀`` (``ctx.theta``; ``ctx.warm`` may seed eigen-trackers)."""

    def publish(self, ctx: Context) -> None:
        """Put what this process shares into ``ctx`` (after ``start``, a restore, and each step)."""

    def record(self, ctx: Context) -> Fields | None:
        return None

    def advance(self, ctx: Context) -> Fields | None:
        """Move from ``t`` to ``t+1``; returned fields are added to this step's row (``None``: nothing)."""

    def finite(self) -> bool:
        return True

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` saved (tensors are on the CPU there)."""


def tracker_options(tol: float) -> dict:
    """:class:`~selfstab.spectrum.EigenTracker` settings shared by the tracked processes: failures are
    warned about and recorded (never raised mid-run), and the warm subspace adapts between 2 and 4 blocks."""
    return dict(tol=tol, on_fail="warn", history=4, min_history=2)


def spent_since(objective: "Objective", counts: dict) -> Fields:
    """``cost_hvps``, ``cost_grads``, ``cost_d3s``: what ``objective`` counted since the snapshot ``counts``
    (``dict(objective.counts)``), for a process that records its own cost."""
    return {f"cost_{name}s": float(objective.counts[name] - counts.get(name, 0)) for name in ("hvp", "grad", "d3")}


def all_finite(*values: float) -> bool:
    return all(math.isfinite(v) for v in values)


def tensor_finite(v: Tensor | None) -> bool:
    return v is None or bool(torch.isfinite(v).all())


class StopRule:
    """Decides after each step whether tracking ends; ``check`` returns the reason, or ``None``.

    A rule may also add fields to the step's ``records`` (see :class:`Lambda2Flag`); one that keeps state
    across steps returns it from ``state_dict`` (``None``: stateless) so that a resumed run continues it.
    """

    def check(self, ctx: Context, records: Records) -> str | None:
        return None

    def state_dict(self) -> dict | None:
        return None

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` saved."""

    def joins(self, ctx: Context) -> list["Process"]:
        """Processes this rule adds to the lockstep now (after :meth:`check`); none by default."""
        return []


class NonFinite(StopRule):
    """A process whose state left the finite numbers ends the run (never a silent NaN downstream)."""

    def check(self, ctx: Context, records: Records) -> str | None:
        for name, process in ctx.processes.items():
            if not process.finite():
                return f"diverged: the {name} process left the finite numbers at step {ctx.t - 1}"
        return None


@dataclass
class Lambda2Threshold(StopRule):
    """Stop once ``λ₂(θ†) ≥ factor/η`` (several unstable directions: the paper's §8.2 and docs/theory.md §7)."""

    factor: float = 1.9
    process: str = "diagnostics"

    def check(self, ctx: Context, records: Records) -> str | None:
        lam2 = records.get(self.process, {}).get("lambda2", math.nan)
        if math.isfinite(lam2) and lam2 >= self.factor / ctx.lr:
            return (f"lambda2: λ₂(θ†) = {lam2:.4g} reached {self.factor:g}/η at step {ctx.t - 1} "
                    f"(several unstable eigenvalues)")
        return None


# Where a λ₂ is recorded each step: (process, field).  The diagnostics' is λ₂(θ†) itself but only every
# diagnostics_every steps; the central flow's and θ†_k's blocks are solved at every step.
LAMBDA2_SOURCES = (("diagnostics", "lambda2"), ("central", "lambda_2"), ("kconstrained", "lambda_2"))
# The processes whose theory assumes one unstable eigenvalue (the paper's §3–§6).
SINGLE_EIGENVALUE = ("constrained", "predicted", "generalized")


@dataclass
class Lambda2Flag(StopRule):
    """Never stops: marks the single-eigenvalue processes "outside their assumptions" instead.

    Every step adds ``outside_assumptions`` (0.0 or 1.0) to the tables of the
    processes in ``flagged`` that recorded; it becomes 1.0 at the first step
    where any recorded λ₂ (:data:`LAMBDA2_SOURCES`: ``λ₂(θ†)`` from the
    diagnostics, the second eigenvalue of the central flow's or ``θ†_k``'s
    block) is ``≥ factor/η``, and stays 1.0 from then on (``since``: that
    step).  This is the λ₂ rule of a run that tracks the central flow or
    ``θ†_k`` (docs/theory.md §7, §10): those continue past ``λ₂ = 2/η``, the
    single-eigenvalue predictions are kept but marked.
    """

    factor: float = 1.9
    flagged: tuple[str, ...] = SINGLE_EIGENVALUE
    sources: tuple[tuple[str, str], ...] = LAMBDA2_SOURCES
    since: int | None = None
    mark_before: bool = True   # write 0.0 before the rule fires (False: nothing, so the tables stay as without it)

    def check(self, ctx: Context, records: Records) -> str | None:
        if self.since is None:
            for process, name in self.sources:
                lam2 = records.get(process, {}).get(name, math.nan)
                if math.isfinite(lam2) and lam2 >= self.factor / ctx.lr:
                    self.since = ctx.t - 1
                    break
        if self.since is None and not self.mark_before:
            return None
        flag = 0.0 if self.since is None else 1.0
        for process in self.flagged:
            if process in records:
                records[process]["outside_assumptions"] = flag
        return None

    def state_dict(self) -> dict | None:
        return {"since": self.since}

    def load_state_dict(self, state: dict) -> None:
        self.since = state.get("since")


# Theorem 1 describes GD up to relative errors of order ε = η√α (its loss and sharpness terms carry O(ε) against
# the oscillation's own size, docs/theory.md §2, §5): past ε = 0.1 those errors can reach ten percent, and the
# single-eigenvalue processes are flagged outside their assumptions at that step.  The default job keeps ε at
# 0.02–0.05 (docs/results.md).
EPSILON_BOUND = 0.1


@dataclass
class EpsilonFlag(StopRule):
    """Never stops: at a step where the constrained trajectory's ``ε = η√α`` exceeds ``bound``, the
    single-eigenvalue processes' rows get ``outside_assumptions = 1.0`` (nothing is written at the other
    steps, so a run that stays within the bound keeps its tables); ``first`` and ``steps`` count them."""

    bound: float = EPSILON_BOUND
    flagged: tuple[str, ...] = SINGLE_EIGENVALUE
    first: int | None = None
    steps: int = 0

    def check(self, ctx: Context, records: Records) -> str | None:
        eps = records.get("constrained", {}).get("epsilon", math.nan)
        if math.isfinite(eps) and eps > self.bound:
            self.steps += 1
            if self.first is None:
                self.first = ctx.t - 1
            for process in self.flagged:
                if process in records:
                    records[process]["outside_assumptions"] = 1.0
        return None

    def state_dict(self) -> dict | None:
        return {"first": self.first, "steps": self.steps} if self.steps else None

    def load_state_dict(self, state: dict) -> None:
        self.first, self.steps = state.get("first"), int(state.get("steps", 0))


@dataclass
class Lambda2Central(Lambda2Flag):
    """The default set's λ₂ rule: once ``λ₂ ≥ factor/η`` the central flow joins the run and the
    single-eigenvalue processes are flagged ``outside_assumptions`` from there on; tracking goes on.

    Unlike :class:`Lambda2Flag` it writes nothing before it fires (a run whose λ₂ stays below the line has
    the same tables as one without the rule); from ``since`` the flag is 1.0.  :meth:`joins` hands the
    lockstep the central flow (built by ``make``) once, at the step after ``since``, unless one already runs.
    """

    make: Any = None   # () -> Process: the central flow with the run's options
    joined: bool = False

    mark_before: bool = False

    def joins(self, ctx: Context) -> list["Process"]:
        if self.since is None or self.joined:
            return []
        self.joined = True
        if any(name in ctx.processes for name in SEVERAL_EIGENVALUES) or self.make is None:
            return []
        return [self.make()]

    def state_dict(self) -> dict | None:
        return {"since": self.since, "joined": self.joined}

    def load_state_dict(self, state: dict) -> None:
        self.since = state.get("since")
        self.joined = bool(state.get("joined", self.since is not None))


@dataclass
class StepLimit(StopRule):
    """Stop after ``steps`` steps."""

    steps: int

    def check(self, ctx: Context, records: Records) -> str | None:
        return f"steps: reached the step limit {self.steps}" if ctx.t >= self.steps else None
