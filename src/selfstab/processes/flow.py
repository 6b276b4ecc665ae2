"""Gradient flow from ``θ₀`` (docs/theory.md §5): ``dθ/dτ = −∇L(θ)``, with ``τ = η t``.

Integrated by one of scipy's adaptive explicit Runge–Kutta solvers (``RK23``
or ``RK45``), kept alive across GD steps and stepped at its own
pace: the flow is sampled at the GD times ``τ = η t`` from the solver's dense
output (the interpolant of the step that covers ``η t``), not by stopping the
integration at every ``η t``.  This matters for cost.  At the edge the flow is
stiff: its sharpness is ``≈ 2/η`` and grows, so every explicit method is held
to ``h·S ≲ 2.5`` (RK23) or ``≈ 3.3`` (RK45) by stability, i.e. one solver step
per one or two GD steps whatever the tolerance.  Forcing a step boundary at
each ``η t`` (what ``solve_ivp`` over ``[η t, η(t+1)]`` does) cuts every step
short and costs several times more gradients per GD step than sampling the
dense output at the same accuracy (the numbers are in benchmarks/RESULTS.md).
An implicit method would need the dense Hessian (or Krylov linear solves),
which is not worth it for a reference curve.

The number of gradient evaluations the solver spent while reaching each
sample (``nfev``, zero when the sample lies inside a step already taken) is
recorded per GD step.  The solver's state (its current step, step size and
dense-output stages) is part of :meth:`state_dict`, so a resumed run
continues the same integration bit for bit.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from scipy.integrate import RK23, RK45
from torch import Tensor

from ..errors import ConfigError, ConvergenceError, DivergenceError
from ..problem.objective import Objective
from ..spectrum import EigenTracker
from .base import Context, Fields, Process, all_finite, tracker_options
from .geometry import Geometry, geometry_at

SOLVERS = {"RK23": RK23, "RK45": RK45}
# what a scipy Runge–Kutta solver needs to continue (and to interpolate its last step) after a restore
_SOLVER_STATE = ("t", "y", "f", "h_abs", "h_previous", "t_old", "y_old", "K")


class GradientFlow:
    """The flow's samples ``θ(η t)`` and the Runge–Kutta solver that produces them."""

    def __init__(self, objective: Objective, theta0: Tensor, lr: float, *, rtol: float = 1e-8, atol: float = 1e-10,
                 method: Literal["RK23", "RK45"] = "RK45"):
        if method not in SOLVERS:
            raise ConfigError(f"track.flow_method: unknown ODE solver {method!r}; use one of {', '.join(SOLVERS)} "
                              f"(explicit Runge–Kutta: implicit ones would need the dense Hessian)")
        self.objective, self.lr, self.rtol, self.atol, self.method = objective, lr, rtol, atol, method
        self.theta = objective.vector(theta0).clone()
        self.step_index = 0
        self._solver = None
        self._f0: np.ndarray | None = None   # −∇L at the solver's start, when already known
        self.evaluations = 0                  # gradients the solver has computed (its own nfev counts reuses too)

    @property
    def time(self) -> float:
        return self.lr * self.step_index

    def _rhs(self, _t: float, y: np.ndarray) -> np.ndarray:
        if self._f0 is not None:   # the solver's first evaluation, at a point whose gradient is known
            out, self._f0 = self._f0, None
            return out
        obj = self.objective
        g = obj.grad(torch.from_numpy(y).to(dtype=obj.dtype, device=obj.device))
        self.evaluations += 1
        return -g.double().cpu().numpy()

    def _new_solver(self, y0: np.ndarray, f0: np.ndarray | None, first_step: float | None = None):
        self._f0 = f0
        solver = SOLVERS[self.method](self._rhs, self.time, y0, np.inf, rtol=self.rtol, atol=self.atol,
                                      first_step=first_step)
        self._f0 = None
        return solver

    def advance(self, grad0: Tensor | None = None) -> int:
        """Move the sample from ``τ = η t`` to ``η (t+1)``; returns the gradient evaluations spent.

        ``grad0``: ``∇L`` at the current sample if already known; used when the
        solver starts (the first step), where it saves one evaluation.
        """
        evaluations0 = self.evaluations
        if self._solver is None:
            y0 = self.theta.double().cpu().numpy()
            self._solver = self._new_solver(y0, None if grad0 is None else -grad0.double().cpu().numpy())
        solver, target = self._solver, self.lr * (self.step_index + 1)
        while solver.t < target:
            message = solver.step()
            if solver.status == "failed":
                raise ConvergenceError(f"flow: the ODE solver failed at τ = {solver.t:g} (sampling τ = {target:g}): "
                                       f"{message}; loosen track.flow_rtol/flow_atol")
            if not np.isfinite(solver.y).all():
                raise DivergenceError(f"flow: gradient flow left the finite numbers at τ ≈ {solver.t:g}",
                                      step=self.step_index)
        y1 = solver.y if solver.t == target else solver.dense_output()(target)
        obj = self.objective
        self.theta = torch.from_numpy(np.array(y1, dtype=np.float64)).to(dtype=obj.dtype, device=obj.device)
        self.step_index += 1
        return self.evaluations - evaluations0

    def state_dict(self) -> dict:
        solver = None
        if self._solver is not None:
            solver = {k: (np.array(v, copy=True) if isinstance(v, np.ndarray) else v)
                      for k, v in ((k, getattr(self._solver, k)) for k in _SOLVER_STATE)}
        return {"theta": self.theta.cpu(), "step_index": self.step_index, "method": self.method, "solver": solver,
                "evaluations": self.evaluations}

    def load_state_dict(self, state: dict) -> None:
        self.theta = state["theta"].to(dtype=self.objective.dtype, device=self.objective.device)
        self.step_index = int(state["step_index"])
        self.evaluations = int(state.get("evaluations", 0))
        saved = state.get("solver")
        if saved is None or state.get("method", self.method) != self.method:
            self._solver = None   # (a different method: restart the integration from the sample)
            return
        # a solver at the saved point, built without evaluating anything, then given the saved step
        solver = self._new_solver(np.array(saved["y"]), np.array(saved["f"]), first_step=float(saved["h_abs"]))
        for k in _SOLVER_STATE:
            setattr(solver, k, saved[k])
        self._solver = solver


class Flow(Process):
    """Gradient flow from ``θ₀`` sampled at ``τ = ηt``: loss, sharpness, distances to GD and to ``θ†``.

    ``nfev`` in step ``t``'s record is what the solver spent reaching ``τ = η(t+1)``.
    """

    name = "flow"
    retires = True
    needs = ("theta", "here")

    def __init__(self, *, sharpness_tol: float = 1e-5, flow_rtol: float = 1e-8, flow_atol: float = 1e-10,
                 flow_method: Literal["RK23", "RK45"] = "RK23"):
        if flow_method not in SOLVERS:   # before any work: the same one-line error as GradientFlow's
            raise ConfigError(f"track.flow_method: unknown ODE solver {flow_method!r}; use one of "
                              f"{', '.join(SOLVERS)}")
        self.tracker = EigenTracker(1, **tracker_options(sharpness_tol))
        self.options = dict(rtol=flow_rtol, atol=flow_atol, method=flow_method)
        self.flow: GradientFlow | None = None
        self.geometry: Geometry | None = None
        self.last: Fields = {}

    def setup(self, ctx: Context) -> None:
        super().setup(ctx)
        self.flow = GradientFlow(ctx.objective, ctx.objective.theta0, ctx.lr, **self.options)

    def start(self, ctx: Context) -> None:
        self.flow.theta = ctx.theta.clone()
        if ctx.warm is not None:
            self.tracker.seed(ctx.warm.to(ctx.theta))

    def record(self, ctx: Context) -> Fields:
        flow = self.flow
        geom = self.geometry = geometry_at(ctx.objective, flow.theta, self.tracker)
        self.last = {"time": flow.time, "loss": geom.loss, "sharpness": geom.sharpness,
                     "dist_gd": float((flow.theta - ctx.need("theta", self.name)).norm()),
                     "dist_constrained": float((flow.theta - ctx.need("here", self.name).theta).norm())}
        return self.last

    def advance(self, ctx: Context) -> Fields:
        return {"nfev": self.flow.advance(self.geometry.grad)}   # ∇L at the flow point is already known

    def finite(self) -> bool:
        return all_finite(self.last.get("loss", 0.0), self.last.get("sharpness", 0.0))

    def state_dict(self) -> dict:
        return {"flow": self.flow.state_dict(), "tracker": self.tracker.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.flow.load_state_dict(state["flow"])
        self.tracker.load_state_dict(state["tracker"], self.objective.device)
