"""Full-batch gradient descent from initialization to the edge of stability (docs/theory.md §3).

GD ``θ_{t+1} = θ_t − η∇L(θ_t)``.  The sharpness is measured at the midpoint
``(θ_t + θ_{t+1})/2`` — once unstable the iterates oscillate across the
valley and the midpoint is the honest estimate — on a schedule: every
``every[0]`` steps while ``S < 1/η``, every ``every[1]`` while ``S < 1.5/η``,
every ``every[2]`` beyond — and never more than half the steps to ``2/η``
extrapolated from the growth between the last two checks.  When a check first finds ``S ≥ 2/η``, GD is
replayed from the last check below it, testing every step, so the returned
``θ₀`` is the **first** iterate whose midpoint sharpness is ``≥ 2/η``.  The
replay is deterministic (the same operations on the same inputs).

Each measurement reuses the warm-started :class:`EigenTracker`, so a check
costs a few HVPs.  Records stream to ``on_record`` in step order (a check's
sharpness is attached to its step); when the run diverges they are all
emitted before the :class:`~selfstab.errors.DivergenceError`, so what was
written is kept.

Checkpoints: with ``on_checkpoint``, after a sharpness check below the edge
at least ``checkpoint_every`` steps after the previous checkpoint (every
record so far emitted, none pending), ``on_checkpoint(t, state)`` receives
the whole search state — ``θ_{t+1}``, the tracker, the last check, the next
check, the divergence guard, the cost counters.  ``gd_to_edge(..., state=state)``
continues from it and emits exactly the records an uninterrupted call emits
after step ``t``, and returns the same result.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from torch import Tensor

from ..errors import ConfigError, DivergenceError
from ..keywords import suggest_keywords
from ..problem.objective import Objective
from ..processes.gd import check_lr, gd_step
from ..spectrum import EigenTracker, Eigenpairs

Record = dict
OnRecord = Callable[[Record], None]


@dataclass
class EdgeResult:
    """Where GD reached the edge of stability.

    ``theta0``: the first iterate whose midpoint sharpness is ``≥ 2/η`` (or the
    last iterate when ``reached`` is False); ``step``: its index; ``sharpness``:
    that midpoint sharpness; ``eig``: the eigenpairs there (their vectors warm
    the tracking); ``records``: one dict per step (``step, loss, grad_norm``
    and, where measured, ``sharpness``, ``eig_residual``, ``eig_hvps``) —
    from the start, or, for a call resumed from a checkpoint, from the step
    after it; :attr:`history`: the same as a DataFrame indexed by ``step``
    (like :meth:`TrackResult.frames() <selfstab.processes.TrackResult.frames>`).
    """

    theta0: Tensor
    step: int
    sharpness: float
    reached: bool
    lr: float
    eig: Eigenpairs | None
    records: list[Record] = field(default_factory=list)
    counts: dict = field(default_factory=dict)

    @property
    def history(self):
        """The records as a pandas DataFrame indexed by ``step`` (NaN where a field was not measured)."""
        import pandas as pd
        frame = pd.DataFrame(self.records, columns=None if self.records else ["step", "loss", "grad_norm"])
        return frame.set_index("step")

    def save(self, path, *, config=None, overwrite: bool = False):
        """Write a run directory at ``path`` (its ``train`` table, summary and ``config.toml``) that
        ``load_run``, ``selfstab plot`` and ``report`` read like any other; returns its
        :class:`~selfstab.records.RunDir`.  ``config``: the run's config (a ``RunConfig`` or dict), if known;
        otherwise ``config.toml`` holds what is known (``lr``)."""
        from ..records.results import save_results
        return save_results(path, edge=self, config=config, overwrite=overwrite)


class DivergenceGuard:
    """Loss NaN/inf, or above ``factor`` × the initial loss (and ``floor``)."""

    def __init__(self, lr: float, factor: float):
        self.lr, self.factor, self.first = lr, factor, None

    def check(self, step: int, loss: float, where: str = "gd") -> None:
        if self.first is None:
            if not math.isfinite(loss):   # before any step: bad input, not a learning rate too large
                raise ConfigError(f"{where}: the loss at the starting point (step {step}) is {loss}, before any "
                                  f"GD step: the data (inputs, targets) or the starting weights hold NaN or inf "
                                  f"values; check them (the learning rate is not the cause)")
            self.first = loss
        bound = self.factor * max(abs(self.first), 1e-12)
        if not math.isfinite(loss) or loss > bound:
            why = "is not finite" if not math.isfinite(loss) else f"exceeds {self.factor:g}× the initial loss {self.first:.4g}"
            raise DivergenceError(f"{where}: diverged at step {step} with learning rate η = {self.lr:g}: the loss "
                                  f"{loss:.4g} {why}; lower the learning rate", step=step, lr=self.lr)


class EdgeNotReachedWarning(RuntimeWarning):
    """GD stopped at ``max_steps`` below the edge: its last iterate is no ``θ₀``."""


def _refuse_past_the_edge(objective: Objective, theta: Tensor, lr: float, midpoint: float, emit,
                          pending: list) -> None:
    """GD starts at or past the edge: there is no edge to reach, and the theory does not apply there."""
    emit(pending)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # far past the edge a loose solve still says enough for the message
        s = EigenTracker(1, on_fail="warn").refresh(objective.at(theta)).sharpness
    if s >= 2 / lr:
        raise ConfigError(f"lr: GD starts past the edge of stability: S(θ_init) = {s:.4g} ≥ 2/η = {2 / lr:.4g}, so "
                          f"there is no edge to reach; use a learning rate below 2/S(θ_init) = {2 / s:.4g}")
    raise ConfigError(f"lr: GD's first step is already at the edge of stability (midpoint sharpness {midpoint:.4g} "
                      f"≥ 2/η = {2 / lr:.4g}, S(θ_init) = {s:.4g}), so there is no edge to reach; use a learning "
                      f"rate somewhat below {lr:g}")


def _interval(sharpness: float, lr: float, every: Sequence[int], rate: float | None = None) -> int:
    """Steps to the next check: the band's interval, shortened to half the extrapolated steps to ``2/η``.

    ``rate`` is the sharpness growth per step between the last two checks; extrapolating it keeps
    checks sparse far from the edge and dense just before it, so the replay after a crossing is short.
    """
    band = every[0] if sharpness < 1.0 / lr else every[1] if sharpness < 1.5 / lr else every[2]
    if rate is not None and rate > 0:
        return int(max(1, min(band, 0.5 * (2.0 / lr - sharpness) / rate)))
    return band


@suggest_keywords
def gd_to_edge(objective: Objective, lr: float, *, theta: Tensor | None = None, max_steps: int = 20000,
               every: Sequence[int] = (50, 25, 10), tracker: EigenTracker | None = None,
               on_record: OnRecord | None = None, divergence_factor: float = 1e4,
               progress: Callable[[int, Record], None] | None = None,
               evaluate: Callable[[Tensor], dict] | None = None,
               on_checkpoint: Callable[[int, dict], None] | None = None, checkpoint_every: int = 100,
               state: dict | None = None) -> EdgeResult:
    """GD from ``theta`` (default ``objective.theta0``) until the midpoint sharpness first reaches ``2/η``.

    Returns an :class:`EdgeResult`; ``reached`` is False when ``max_steps``
    passed first.  Raises :class:`DivergenceError` (with every record already
    emitted) if the loss becomes NaN/inf or exceeds ``divergence_factor`` ×
    the initial loss.  ``evaluate(θ)`` (e.g. test accuracy) is recorded at every sharpness check.
    ``on_checkpoint(t, state)`` and ``state``: checkpoints and resuming (module docstring); a resumed
    call takes the same ``objective``, ``lr``, ``every``, ``max_steps`` and tracker settings.
    """
    lr = check_lr(lr)
    if len(every) != 3 or min(every) < 1:
        raise ConfigError(f"every: expected 3 positive step counts, got {list(every)!r}")
    if max_steps < 0:
        raise ConfigError(f"max_steps: must be ≥ 0, got {max_steps}")
    if checkpoint_every < 1:
        raise ConfigError(f"checkpoint_every: must be ≥ 1, got {checkpoint_every}")
    tracker = tracker or EigenTracker(1, on_fail="warn")
    edge = 2.0 / lr
    diverge = DivergenceGuard(lr, divergence_factor)
    history: list[Record] = []
    pending: list[Record] = []   # records since the last check below the edge

    def emit(records: list[Record]) -> None:
        for r in records:
            history.append(r)
            if on_record is not None:
                on_record(r)
        records.clear()

    def step_from(theta_t: Tensor, t: int, measure: bool) -> tuple[Tensor, Record, Eigenpairs | None]:
        point = objective.at(theta_t)
        loss = float(point.loss)
        rec: Record = {"step": t, "loss": loss, "grad_norm": float(point.grad.norm())}
        try:
            diverge.check(t, loss)
        except DivergenceError as exc:
            pending.append(rec)
            emit(pending)
            exc.history = history
            raise
        theta_next = gd_step(theta_t, point.grad, lr)
        eig = None
        if measure:
            mid = objective.at(0.5 * (theta_t + theta_next))
            eig = tracker.refresh(mid)
            rec.update(sharpness=eig.sharpness, eig_residual=float(eig.residuals.max()), eig_hvps=eig.hvps)
            if evaluate is not None:
                rec.update(evaluate(theta_t))
            if not math.isfinite(eig.sharpness):
                pending.append(rec)
                emit(pending)
                raise DivergenceError(f"gd: the sharpness is not finite at step {t} with learning rate η = {lr:g}; "
                                      f"lower the learning rate", step=t, lr=lr)
        return theta_next, rec, eig

    def _replay(check: tuple, t_cross: int) -> EdgeResult | None:
        """Replay GD from the last check below the edge, testing every step up to ``t_cross``."""
        t0, theta_r, hist, _ = check
        tracker.restore(hist)
        by_step = {r["step"]: r for r in pending}
        theta_r, _, _ = step_from(theta_r, t0, False)   # the check step itself was below the edge
        for s in range(t0 + 1, t_cross + 1):
            theta_r_next, rec_s, eig_s = step_from(theta_r, s, True)
            by_step[s].update({k: v for k, v in rec_s.items() if k not in ("step", "loss", "grad_norm")})
            if eig_s.sharpness >= edge:
                pending[:] = [r for r in pending if r["step"] <= s]
                emit(pending)
                return EdgeResult(theta_r, s, eig_s.sharpness, True, lr, eig_s, history, dict(objective.counts))
            theta_r = theta_r_next
        return None

    theta_t = objective.vector(theta).clone()
    bad = int((~torch.isfinite(theta_t)).sum())
    if bad:
        raise ConfigError(f"theta: {bad} of its {theta_t.numel()} entries {'is' if bad == 1 else 'are'} NaN or "
                          f"inf; pass a finite starting point (or leave theta out: the objective's own θ)")
    t, next_check = 0, 0
    last_check: tuple | None = None   # step, θ there, tracker history, sharpness
    saved = 0   # step of the last checkpoint
    if state is not None:
        t, next_check, saved = int(state["t"]), int(state["next_check"]), int(state["t"]) - 1
        theta_t = state["theta"].to(theta_t).clone()
        lc = state["last_check"]
        last_check = None if lc is None else (int(lc["step"]), lc["theta"].to(theta_t),
                                              tuple(h.to(theta_t) for h in lc["tracker"]), float(lc["sharpness"]))
        tracker.load_state_dict(state["tracker"], device=theta_t.device)
        diverge.first = state["first_loss"]
        objective.counts.clear()
        objective.counts.update(state["counts"])
        torch.set_rng_state(state["rng"])
    while True:
        measure = t == next_check or t == max_steps
        theta_next, rec, eig = step_from(theta_t, t, measure)
        crossed = eig is not None and eig.sharpness >= edge
        if crossed and t == 0:   # refused before the progress bar shows a midpoint S the error then contradicts
            pending.append(rec)
            _refuse_past_the_edge(objective, theta_t, lr, eig.sharpness, emit, pending)
        if progress is not None:
            progress(t, rec)
        if crossed:
            pending.append(rec)
            if last_check is not None and t > last_check[0] + 1:
                found = _replay(last_check, t)
                if found is not None:
                    return found
                # Not crossed in the replay (a transient between checks): the check at t stands.
            emit(pending)
            return EdgeResult(theta_t, t, eig.sharpness, True, lr, eig, history, dict(objective.counts))
        pending.append(rec)
        if eig is not None:
            emit(pending)
            rate = None if last_check is None else (eig.sharpness - last_check[3]) / (t - last_check[0])
            last_check = (t, theta_t.clone(), tracker.snapshot(), eig.sharpness)
            next_check = t + _interval(eig.sharpness, lr, every, rate)
            if on_checkpoint is not None and t < max_steps and t - saved >= checkpoint_every:
                saved = t
                on_checkpoint(t, {"t": t + 1, "theta": theta_next, "next_check": next_check,
                                  "last_check": {"step": last_check[0], "theta": last_check[1],
                                                 "tracker": list(last_check[2]), "sharpness": last_check[3]},
                                  "tracker": tracker.state_dict(), "first_loss": diverge.first,
                                  "counts": dict(objective.counts), "rng": torch.get_rng_state()})
        if t >= max_steps:
            break
        theta_t = theta_next
        t += 1
    emit(pending)
    last = tracker.last
    warnings.warn(f"gd_to_edge: the sharpness did not reach 2/η = {edge:.4g} within max_steps = {max_steps} "
                  f"(last measured {float('nan') if last is None else last.sharpness:.4g}); the result has "
                  f"reached=False — raise max_steps or the learning rate before tracking", EdgeNotReachedWarning,
                  stacklevel=2)
    return EdgeResult(theta_t, t, float("nan") if last is None else last.sharpness, False, lr, last, history,
                      dict(objective.counts))
