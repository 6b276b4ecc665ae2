"""Full-batch GD for a fixed number of steps, with a constant step or ``η_t = 1/S(θ_t)`` (Figure 6).

Unlike :func:`~selfstab.train.gd_to_edge` this does not stop at the edge: it
is the paper's Figure 6 experiment (train loss, test accuracy and sharpness
against steps for several ``η``, and for the step size that keeps GD at
``S·η_t = 1``, half-way to the edge).  The sharpness ``S(θ_t)`` is measured
every ``measure_every`` steps (warm-started, a few HVPs) and, for the
inverse-sharpness schedule, the last measured value sets ``η_t`` until the
next measurement.
"""

from __future__ import annotations

from typing import Callable, Literal

from torch import Tensor

from ..errors import ConfigError
from ..keywords import suggest_keywords
from ..problem.objective import Objective
from ..spectrum import EigenTracker
from ..processes.gd import check_lr, gd_step
from .gd import DivergenceGuard

Evaluate = Callable[[Tensor], dict]


@suggest_keywords
def gd_run(objective: Objective, lr: float, steps: int, *, schedule: Literal["constant", "inverse_sharpness"] =
           "constant", measure_every: int = 10, theta: Tensor | None = None, tracker: EigenTracker | None = None,
           evaluate: Evaluate | None = None, on_record: Callable[[dict], None] | None = None,
           divergence_factor: float = 1e4, progress: Callable[[int, dict], None] | None = None,
           on_checkpoint: Callable[[int, dict], None] | None = None, checkpoint_every: int = 100,
           state: dict | None = None) -> Tensor:
    """GD for ``steps`` steps; returns the last iterate.  Records: ``step, loss, grad_norm, lr`` every step and
    ``sharpness`` (at ``θ_t``) plus whatever ``evaluate(θ)`` returns every ``measure_every`` steps.

    With ``schedule="inverse_sharpness"``, ``η_t = 1/S`` (``lr`` is then only the first step size's cap
    before the first measurement, which happens at step 0).

    ``on_checkpoint(t, state)`` is called after step ``t`` is recorded, every ``checkpoint_every`` steps,
    with the whole state (``θ_{t+1}``, the step size, the tracker, the divergence guard, the counters);
    ``gd_run(..., state=state)`` continues from it with the same records as an uninterrupted run.
    """
    lr = check_lr(lr)
    if schedule not in ("constant", "inverse_sharpness"):
        raise ConfigError(f"schedule: unknown schedule {schedule!r}; use constant or inverse_sharpness")
    if measure_every < 1:
        raise ConfigError(f"measure_every: must be ≥ 1, got {measure_every}")
    if checkpoint_every < 1:
        raise ConfigError(f"checkpoint_every: must be ≥ 1, got {checkpoint_every}")
    tracker = tracker or EigenTracker(1, on_fail="warn")
    diverge = DivergenceGuard(lr, divergence_factor)
    theta_t = objective.vector(theta).clone()
    step_size, first = lr, 0
    if state is not None:
        first, step_size = int(state["t"]), float(state["step_size"])
        theta_t = state["theta"].to(theta_t).clone()
        tracker.load_state_dict(state["tracker"], device=theta_t.device)
        diverge.first = state["first_loss"]
        objective.counts.clear()
        objective.counts.update(state["counts"])
    for t in range(first, steps + 1):
        point = objective.at(theta_t)
        rec = {"step": t, "loss": float(point.loss), "grad_norm": float(point.grad.norm())}
        if t % measure_every == 0 or t == steps:
            eig = tracker.refresh(point)
            rec.update(sharpness=eig.sharpness, eig_residual=float(eig.residuals.max()), eig_hvps=eig.hvps)
            if schedule == "inverse_sharpness" and eig.sharpness > 0:
                step_size = 1.0 / eig.sharpness
            if evaluate is not None:
                rec.update(evaluate(theta_t))
        rec["lr"] = step_size
        if on_record is not None:
            on_record(rec)
        if progress is not None:
            progress(t, rec)
        diverge.check(t, rec["loss"])   # raises after the record was emitted: the history is kept
        if t < steps:
            theta_t = gd_step(theta_t, point.grad, step_size)
            if on_checkpoint is not None and (t + 1) % checkpoint_every == 0:
                on_checkpoint(t, {"t": t + 1, "theta": theta_t, "step_size": step_size,
                                  "tracker": tracker.state_dict(), "first_loss": diverge.first,
                                  "counts": dict(objective.counts)})
    return theta_t
