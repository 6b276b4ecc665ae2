"""The quantities of docs/theory.md §2 at one point: ``S, u, ∇L, ∇S, ∇S⊥, α, β, δ``.

A :class:`Geometry` is computed once per point and shared by everyone who
needs it (the projection, the predicted step, the diagnostics): the
eigenpair, the gradient and ``∇S = ∇³L(u, u)`` (Lemma 2) all come from one
:class:`~selfstab.problem.objective.Point`, i.e. one gradient graph.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import Tensor

from ..problem.objective import Objective, Point
from ..spectrum import EigenTracker, Eigenpairs


def perp(u: Tensor, v: Tensor) -> Tensor:
    """``P⊥_u v = v − (u·v) u`` for a unit ``u``."""
    return v - (u @ v) * u


def squared_norm(v: Tensor) -> float:
    return float(v.pow(2).sum())


def point_state(point: Point, eig: Eigenpairs) -> dict:
    """The checkpoint of a point and its eigenpairs: θ, the loss and gradient as computed, and the solve."""
    return {"theta": point.theta.cpu(), "loss": point.loss.cpu(), "grad": point.grad.cpu(),
            "values": eig.values, "vectors": eig.vectors.cpu(), "images": eig.images.cpu(),
            "residuals": eig.residuals, "hvps": eig.hvps, "iterations": eig.iterations, "converged": eig.converged,
            "method": eig.method}


def point_from_state(objective: Objective, state: dict) -> tuple[Point, Eigenpairs]:
    """:func:`point_state` back on ``objective``'s device; the loss and gradient as computed before the
    checkpoint, not recomputed (nor counted) on resume."""
    dev = objective.device
    eig = Eigenpairs(state["values"], state["vectors"].to(dev), state["images"].to(dev), state["residuals"],
                     int(state["hvps"]), int(state["iterations"]), bool(state["converged"]), str(state["method"]))
    point = objective.at(state["theta"].to(dev), loss=state["loss"].to(dev), grad=state["grad"].to(dev))
    return point, eig


@dataclass
class Geometry:
    """Everything at ``theta`` that the tracked processes use (float64 vectors of shape ``(d,)``)."""

    theta: Tensor
    point: Point
    eig: Eigenpairs
    _grad_sharpness: Tensor | None = None

    @property
    def loss(self) -> float:
        return float(self.point.loss)

    @property
    def grad(self) -> Tensor:
        return self.point.grad

    @property
    def sharpness(self) -> float:
        return self.eig.sharpness

    @property
    def u(self) -> Tensor:
        return self.eig.u

    @property
    def grad_sharpness(self) -> Tensor:
        """``∇S`` (Lemma 2), computed on first use."""
        if self._grad_sharpness is None:
            self._grad_sharpness = self.point.d3(self.u, self.u)
        return self._grad_sharpness

    @property
    def grad_sharpness_perp(self) -> Tensor:
        return perp(self.u, self.grad_sharpness)

    @property
    def alpha(self) -> float:
        """``α = −∇L·∇S``, the progressive-sharpening coefficient."""
        return -float(self.grad @ self.grad_sharpness)

    @property
    def beta(self) -> float:
        """``β = ‖∇S⊥‖²``."""
        return squared_norm(self.grad_sharpness_perp)

    @property
    def delta_sq(self) -> float:
        """``δ² = 2α/β`` — finite for any sign of ``α`` (0 when ``β = 0``); the predicted step uses this."""
        beta = self.beta
        return 2 * self.alpha / beta if beta > 0 else 0.0

    @property
    def delta(self) -> float:
        """``δ = sqrt(2α/β)``; NaN (recorded as missing) when ``α ≤ 0`` or ``β = 0``."""
        return math.sqrt(self.delta_sq) if self.alpha > 0 and self.beta > 0 else math.nan

    def epsilon(self, lr: float) -> float:
        """``ε = η sqrt(α)``; NaN when ``α ≤ 0``."""
        return lr * math.sqrt(self.alpha) if self.alpha > 0 else math.nan

    def state_dict(self) -> dict:
        """Everything needed to rebuild this geometry without recomputing (or counting) anything."""
        return {**point_state(self.point, self.eig),
                "grad_sharpness": None if self._grad_sharpness is None else self._grad_sharpness.cpu()}

    @classmethod
    def from_state(cls, objective: Objective, state: dict) -> "Geometry":
        point, eig = point_from_state(objective, state)
        gs = state["grad_sharpness"]
        return cls(point.theta, point, eig, None if gs is None else gs.to(objective.device))


def geometry_at(objective: Objective, theta: Tensor, tracker: EigenTracker) -> Geometry:
    """The geometry at ``theta`` with the top eigenpair from ``tracker`` (warm-started)."""
    point = objective.at(theta)
    return Geometry(point.theta, point, tracker.refresh(point))


def to_cpu_state(geom: Geometry | None) -> dict | None:
    """What a checkpoint needs to rebuild ``geom`` without recomputing it (bit-for-bit resume)."""
    return None if geom is None else geom.state_dict()


def from_cpu_state(objective: Objective, state: dict | None) -> Geometry | None:
    return None if state is None else Geometry.from_state(objective, state)
