"""Gradient descent ``θ_{t+1} = θ_t − η∇L(θ_t)`` as a tracked process (docs/theory.md §1, §6).

:func:`gd_step` is the one GD step of selfstab: training to the edge, the
``η_t = 1/S`` schedule, the theory's experiments and this process all call it.
"""

from __future__ import annotations

import math
from typing import Literal

from torch import Tensor

from ..errors import ConfigError
from ..spectrum import EigenTracker
from .base import SEVERAL_EIGENVALUES, Context, Fields, Process, all_finite, tracker_options
from .geometry import Geometry, geometry_at


def check_lr(lr: float) -> float:
    """``η`` as a float, or a one-line :class:`ConfigError` (it must be a positive, finite number)."""
    try:
        lr = float(lr)
    except (TypeError, ValueError):
        raise ConfigError(f"lr: the learning rate must be a number, got {lr!r}") from None
    if not math.isfinite(lr) or lr <= 0:
        raise ConfigError(f"lr: the learning rate must be positive and finite, got {lr}")
    return lr


def gd_step(theta: Tensor, grad: Tensor, lr: float) -> Tensor:
    """``θ − η ∇L(θ)`` (a new tensor)."""
    return theta - lr * grad


class GD(Process):
    """GD from ``θ₀``: loss, sharpness ``S(θ_t)``, its two-step average, and GD's own ``x_t, y_t``.

    Records ``x_t = u_t·(θ_t − θ†_t)`` and ``y_t = ∇S⊥_t·(θ_t − θ†_t)`` with
    ``u_t, ∇S⊥_t`` at ``θ†_t`` (so they compare with the predicted dynamics'
    ``x, y``), and ``sharpness_avg2 = (S_{t−1} + S_t)/2`` (docs/theory.md §6;
    missing at ``t = 0``).  ``x``, ``y`` and ``dist_constrained`` need the
    constrained trajectory; without it (e.g. GD beside the several-eigenvalue
    processes alone) they are not recorded.  The sharpness is only recorded, so it is solved to
    ``sharpness_tol`` (the eigenvalue's error is about ``tol²·λ²/gap``).

    ``sharpness_start``: how each warm sharpness solve starts.  ``"warm"``:
    LOBPCG with the rest of the tracker's warm history as its first momentum,
    and the tracker's guard rule (:class:`~selfstab.spectrum.EigenTracker`);
    along the single-eigenvalue edge that is the cheapest.  ``"plain"``: from
    the Ritz vector of the warm history alone, no guard rule.  ``"auto"``
    (default): plain when the lockstep holds a several-eigenvalue process
    (central flow, θ†_k), warm otherwise.  With several eigenvalues at the edge
    the top one sits in a cluster whose members take turns on top along GD;
    the history's older vectors are then other members of it, and as momentum
    and guard they cost more than they save: at the near-degenerate paper-MLP
    edge 25.3 instead of 34.9 HVPs a solve over seven steps
    (benchmarks/RESULTS.md).  The single-eigenvalue lockstep (the default job)
    keeps the warm start, its records bit for bit.
    """

    name = "gd"

    def __init__(self, *, sharpness_tol: float = 1e-5, sharpness_start: Literal["auto", "warm", "plain"] = "auto"):
        if sharpness_start not in ("auto", "warm", "plain"):
            raise ConfigError(f"sharpness_start: must be auto, warm or plain, got {sharpness_start!r}")
        self.sharpness_start = sharpness_start
        self.tracker = EigenTracker(1, **tracker_options(sharpness_tol))
        self.theta: Tensor | None = None
        self.prev_sharpness = math.nan
        self.geometry: Geometry | None = None
        self.last: Fields = {}

    def setup(self, ctx: Context) -> None:
        super().setup(ctx)
        plain = self.sharpness_start == "plain" or (
            self.sharpness_start == "auto" and any(n in SEVERAL_EIGENVALUES for n in ctx.processes))
        if plain:
            self.tracker.momentum, self.tracker.guard_after = False, None

    def start(self, ctx: Context) -> None:
        self.theta = ctx.theta.clone()
        if ctx.warm is not None:
            self.tracker.seed(ctx.warm.to(self.theta))

    def publish(self, ctx: Context) -> None:
        ctx.theta = self.theta

    def record(self, ctx: Context) -> Fields:
        geom = self.geometry = geometry_at(ctx.objective, self.theta, self.tracker)
        s = geom.sharpness
        fields = {"loss": geom.loss, "sharpness": s, "sharpness_avg2": 0.5 * (self.prev_sharpness + s)}
        if ctx.here is not None:
            here = ctx.here
            disp = self.theta - here.theta   # GD's displacement from θ† along u_t and ∇S⊥_t
            fields.update(x=float(here.u @ disp), y=float(here.grad_sharpness_perp @ disp),
                          dist_constrained=float(disp.norm()))
        fields.update(grad_norm=float(geom.grad.norm()), u_dot_grad=float(geom.u @ geom.grad),
                      eig_residual=float(geom.eig.residuals.max()))
        self.last = fields
        return fields

    def advance(self, ctx: Context) -> None:
        self.theta = gd_step(self.theta, self.geometry.grad, ctx.lr)
        self.prev_sharpness = self.geometry.sharpness
        self.geometry = None

    def finite(self) -> bool:
        return all_finite(self.last.get("loss", 0.0), self.last.get("sharpness", 0.0))

    def state_dict(self) -> dict:
        # the start resolved at setup travels with the state: a process that joined later (the central flow
        # under the default set's λ₂ rule) must not switch a resumed run's solves to the plain start
        return {"theta": self.theta.cpu(), "prev_sharpness": self.prev_sharpness,
                "tracker": self.tracker.state_dict(),
                "start": {"momentum": self.tracker.momentum, "guard_after": self.tracker.guard_after}}

    def load_state_dict(self, state: dict) -> None:
        obj = self.objective
        self.theta = state["theta"].to(obj.theta0)
        self.prev_sharpness = float(state["prev_sharpness"])
        self.tracker.load_state_dict(state["tracker"], obj.device)
        if "start" in state:
            self.tracker.momentum, self.tracker.guard_after = state["start"]["momentum"], state["start"]["guard_after"]
