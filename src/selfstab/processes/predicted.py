"""The predicted dynamics (Definition 7, eq. (6)) and the generalized form (Appendix F).

A displacement ``v_t`` predicts ``θ_t ≈ θ†_t + v_t``.  Every quantity is taken
at ``θ†_t`` (``H_t``, ``u_t``, ``∇S⊥_t``, ``δ_t``); with ``x_t = u_t·v_t`` and
``y_t = ∇S⊥_t·v_t``:

    v_{t+1} = P⊥_{u_{t+1}} (I − ηH_t) P⊥_{u_t} v_t
            + η P⊥_{u_{t+1}} ∇S⊥_t (δ_t² − x_t²)/2
            − (1 + η y_t) x_t u_{t+1}

The generalized dynamics replace only the coefficient of ``u_{t+1}``:
``x_{t+1} = −(1 + η y_t) x_t − η F_t'(x_t)`` with
``F_t'(x) = u_t·∇L(θ†_t + x u_t) − 2x/η`` (one extra gradient; two for the
even part ``(F'(x) − F'(−x))/2``).

``δ_t² = 2α_t/β_t`` enters only squared, so the step is defined for ``α ≤ 0``
too (then ``δ`` itself is missing and recorded as such); with ``β = 0`` the
``∇S⊥`` term vanishes.  Cost: one HVP with ``P⊥_{u_t} v_t`` at ``θ†_t``.
"""

from __future__ import annotations

from torch import Tensor

from .base import Context, Fields, Process, tensor_finite
from .geometry import Geometry, perp


def predicted_fields(v: Tensor, here: Geometry, lr: float, *, generalized: bool = False,
                     even_part: bool = False) -> dict:
    """``x_t = u_t·v_t``, ``y_t = ∇S⊥_t·v_t`` and, for the generalized form, ``F_t'(x_t)`` (one more gradient;
    two for the even part)."""
    fields = {"x": float(here.u @ v), "y": float(here.grad_sharpness_perp @ v)}
    if generalized:
        x = fields["x"]
        fp = _f_prime(here, x, lr)
        if even_part:
            fp = 0.5 * (fp - _f_prime(here, -x, lr))
        fields["F_prime"] = fp
    return fields


def predicted_step(v: Tensor, here: Geometry, u_next: Tensor, lr: float, fields: dict | None = None, *,
                   generalized: bool = False, even_part: bool = False) -> Tensor:
    """``v_{t+1}`` from ``v_t``, the geometry at ``θ†_t`` and ``u_{t+1}`` (eq. (6); Appendix F when
    ``fields`` holds ``F_prime``).  ``fields``: :func:`predicted_fields` at ``t`` if already computed.

    Cost: one HVP with ``P⊥_{u_t} v_t`` at ``θ†_t``.
    """
    if fields is None:
        fields = predicted_fields(v, here, lr, generalized=generalized, even_part=even_part)
    x, y = fields["x"], fields["y"]
    w = perp(here.u, v)
    w = w - lr * here.point.hvp(w)                            # (I − ηH_t) P⊥_{u_t} v_t
    w = w + lr * here.grad_sharpness_perp * (here.delta_sq - x * x) / 2
    coef = -(1 + lr * y) * x
    if "F_prime" in fields:
        coef -= lr * fields["F_prime"]
    return perp(u_next, w) + coef * u_next


def _f_prime(here: Geometry, x: float, lr: float) -> float:
    """``F_t'(x) = u_t·∇L(θ†_t + x u_t) − 2x/η``."""
    if x == 0.0:
        return float(here.u @ here.grad)
    g = here.point.objective.grad(here.theta + x * here.u)
    return float(here.u @ g) - 2 * x / lr


def theorem1_predictions(here: Geometry, x: float, y: float, lr: float) -> dict:
    """Theorem 1: ``L(θ_t) ≈ L(θ†_t) + x_t²/η`` and ``S(θ_t) ≈ 2/η + y_t + (∇S_t·u_t) x_t``."""
    return {"loss": here.loss + x * x / lr,
            "sharpness": 2.0 / lr + y + float(here.grad_sharpness @ here.u) * x}


class Predicted(Process):
    """The predicted dynamics ``θ†_t + v_t`` (eq. (6)); needs the constrained trajectory before it.

    Records ``x, y`` (and ``F_prime`` for the generalized form), ``‖v_t‖``, the
    Theorem 1 loss and sharpness, and ``‖θ_t − (θ†_t + v_t)‖``.
    """

    name = "predicted"
    retires = True
    bounded_losses = ("loss",)
    bounded_sharpness = ("sharpness",)
    needs = ("theta", "here", "next")
    generalized = False

    def __init__(self, *, even_part: bool = False):
        self.even_part = even_part
        self.v: Tensor | None = None
        self.fields: dict = {}

    def start(self, ctx: Context) -> None:
        self.v = ctx.theta - ctx.need("here", self.name).theta

    def record(self, ctx: Context) -> Fields:
        here, v = ctx.need("here", self.name), self.v
        self.fields = predicted_fields(v, here, ctx.lr, generalized=self.generalized, even_part=self.even_part)
        pred = theorem1_predictions(here, self.fields["x"], self.fields["y"], ctx.lr)
        return {**self.fields, "v_norm": float(v.norm()), **pred,
                "dist_gd": float((ctx.need("theta", self.name) - here.theta - v).norm())}

    def advance(self, ctx: Context) -> None:
        self.v = predicted_step(self.v, ctx.here, ctx.need("next", self.name).u, ctx.lr, self.fields)

    def finite(self) -> bool:
        return tensor_finite(self.v)

    def state_dict(self) -> dict:
        return {"v": self.v.cpu()}

    def load_state_dict(self, state: dict) -> None:
        self.v = state["v"].to(self.objective.theta0)


class Generalized(Predicted):
    """The generalized predicted dynamics of Appendix F (the ``u``-part through ``F_t'``)."""

    name = "generalized"
    generalized = True
