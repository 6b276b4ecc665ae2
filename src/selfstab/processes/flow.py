"""Gradient flow from ``θ₀`` (SPEC.md §3, item 3): ``dθ/dτ = −∇L(θ)``, with ``τ = η t``.

Integrated by scipy's adaptive ``solve_ivp`` (explicit RK45 by default:
the flow is stiff-ish — ``S`` grows past ``2/η`` — but the stability limit of
RK45, ``h·S ≲ 3.3``, still allows about one step per GD step, while an
implicit method would need the dense Hessian).  Each GD step ``t → t+1`` is
one call over ``[η t, η (t+1)]``, continued with the last accepted step size,
so the flow is sampled exactly at the GD times and its cost (gradient
evaluations, ``nfev``) is known per step.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.integrate import solve_ivp
from torch import Tensor

from ..errors import ConvergenceError, DivergenceError
from ..problem.objective import Objective


class GradientFlow:
    """The flow's state ``θ(τ)`` and its integrator settings."""

    def __init__(self, objective: Objective, theta0: Tensor, lr: float, *, rtol: float = 1e-8, atol: float = 1e-10,
                 method: str = "RK45"):
        self.objective, self.lr, self.rtol, self.atol, self.method = objective, lr, rtol, atol, method
        self.theta = objective.vector(theta0).clone()
        self.step_index = 0
        self.first_step: float | None = None

    @property
    def time(self) -> float:
        return self.lr * self.step_index

    def advance(self, grad0: Tensor | None = None) -> int:
        """Integrate from ``τ = η t`` to ``η (t+1)``; returns the gradient evaluations spent.

        ``grad0``: ``∇L`` at the current point if already known (the solver's first stage reuses it).
        """
        obj = self.objective
        t0, t1 = self.time, self.lr * (self.step_index + 1)
        y0 = self.theta.double().cpu().numpy()
        first = None if grad0 is None else -grad0.double().cpu().numpy()

        def rhs(_, y):
            nonlocal first
            if first is not None and np.array_equal(y, y0):
                out, first = first, None
                return out
            g = obj.grad(torch.from_numpy(y).to(dtype=obj.dtype, device=obj.device))
            return -g.double().cpu().numpy()

        kwargs = {"first_step": min(self.first_step, t1 - t0)} if self.first_step else {}
        sol = solve_ivp(rhs, (t0, t1), y0, method=self.method, rtol=self.rtol, atol=self.atol, **kwargs)
        if sol.status != 0:
            raise ConvergenceError(f"flow: the ODE solver failed between τ = {t0:g} and {t1:g}: {sol.message}; "
                                   f"loosen track.flow_rtol/flow_atol")
        y1 = sol.y[:, -1]
        if not np.isfinite(y1).all():
            raise DivergenceError(f"flow: gradient flow left the finite numbers at τ = {t1:g}", step=self.step_index)
        if sol.t.size >= 2:
            self.first_step = float(sol.t[-1] - sol.t[-2]) if sol.t.size > 2 else float(t1 - t0)
        self.theta = torch.from_numpy(y1.copy()).to(dtype=obj.dtype, device=obj.device)
        self.step_index += 1
        return int(sol.nfev)

    def state_dict(self) -> dict:
        return {"theta": self.theta.cpu(), "step_index": self.step_index, "first_step": self.first_step}

    def load_state_dict(self, state: dict) -> None:
        self.theta = state["theta"].to(dtype=self.objective.dtype, device=self.objective.device)
        self.step_index = int(state["step_index"])
        self.first_step = state["first_step"]
