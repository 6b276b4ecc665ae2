"""The four trajectories of SPEC.md §3 advanced in lockstep from the edge ``θ₀``, in float64.

One :meth:`Lockstep.step` records everything at time ``t`` and moves every
process to ``t+1``:

- **gd** ``θ_t``: loss, exact sharpness and its two-step average ``(S_{t−1} + S_t)/2``,
  ``‖θ_t − θ†_t‖`` and GD's own ``x_t = u_t·(θ_t − θ†_t)``, ``y_t = ∇S⊥_t·(θ_t − θ†_t)``;
- **constrained** ``θ†_t``: loss, ``S, α, β, δ, ε``, projection residuals;
- **predicted** / **generalized** ``v_t``: ``x, y, ‖v‖``, the Theorem 1 loss
  and sharpness, ``‖θ_t − (θ†_t + v_t)‖``;
- **flow** ``θ(ηt)``: loss, sharpness, distances to GD and to ``θ†``;
- **diagnostics** every ``k`` steps (Appendix E, ``λ₂``, top-k eigenvalues);
- **cost**: HVPs, gradients, third derivatives and seconds spent in the step.

Work is shared, never repeated: the geometry at ``θ†_{t+1}`` (eigenpair,
gradient) is what the projection computed to check its residuals, and the
same object serves the predicted step, the records and the diagnostics of the
next step; each trajectory keeps its own warm-started eigen-solver.

Tracking stops, with :attr:`Lockstep.stop_reason`, at the step limit, when
``λ₂(θ†) ≥ stop_lambda2/η`` (several unstable directions, paper §8.2), or when
a process leaves the finite numbers.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor

from ..config import TrackConfig
from ..errors import ConfigError
from ..problem.objective import Objective
from ..spectrum import EigenTracker
from .constrained import constrained_step, project
from .diagnostics import diagnostics
from .flow import GradientFlow
from .geometry import from_cpu_state, geometry_at, to_cpu_state
from .predicted import predicted_step, theorem1_predictions

Records = dict[str, dict[str, float]]

PROCESSES = ("gd", "constrained", "predicted", "generalized", "flow", "diagnostics", "cost")
PROJECTION_TRACKERS = ("constrained", "constrained_corrector")


def _finite(*values: float) -> bool:
    return all(math.isfinite(v) for v in values)


class Lockstep:
    """GD, the constrained trajectory, the predicted dynamics (both forms) and gradient flow from ``θ₀``."""

    def __init__(self, objective: Objective, theta0: Tensor, lr: float, config: TrackConfig | None = None,
                 *, warm: Tensor | None = None):
        self._setup(objective, lr, config)
        if warm is not None:   # the eigenvectors found at the edge warm every solver
            for tr in self.trackers.values():
                tr._history.append(warm.to(self.objective.theta0).reshape(-1, self.objective.dim)[: tr.k])
        c = self.config
        self.theta = self.objective.vector(theta0).clone()
        proj = project(self.objective, self.theta, self.lr, self._projection_trackers(), tol=c.proj_tol,
                       max_steps=c.proj_max_iter, min_steps=c.proj_min_iter, coupled=c.proj_coupled,
                       two_sided=True)   # θ†₀ on the boundary S = 2/η (see constrained.py)
        self.here, self.proj = proj.geometry, _proj_fields(proj)
        self.v = self.theta - self.here.theta
        self.vg = self.v.clone()
        if self.flow is not None:
            self.flow.theta = self.theta.clone()

    def _setup(self, objective: Objective, lr: float, config: TrackConfig | None) -> None:
        self.config = config or TrackConfig()
        if not lr > 0:
            raise ConfigError(f"lr: the learning rate must be positive, got {lr}")
        self.objective = objective.to(torch.float64)
        self.lr = float(lr)
        c = self.config
        eig_kwargs = dict(tol=c.eig_tol, on_fail="warn", history=4, min_history=2)   # adaptive depth: EigenTracker
        # one tracker per kind of point: GD, flow, θ†'s first solved point and its corrector points (project()).
        # GD's and the flow's eigenpairs are only recorded (their sharpness), so they are solved to
        # sharpness_tol; θ†'s feed the projection and the predicted dynamics, so they are solved to eig_tol.
        self.trackers = {name: EigenTracker(1, **{**eig_kwargs, "tol": c.sharpness_tol}) for name in ("gd", "flow")}
        self.trackers.update({name: EigenTracker(1, **eig_kwargs) for name in PROJECTION_TRACKERS})
        # the top-k eigenvalues every diagnostics_every steps: records and the λ₂ stop rule, so sharpness_tol
        self.trackers["diagnostics"] = EigenTracker(c.k_eigs, **{**eig_kwargs, "tol": c.sharpness_tol})
        self.t = 0
        self.flow = GradientFlow(self.objective, self.objective.theta0, self.lr, rtol=c.flow_rtol,
                                 atol=c.flow_atol, method=c.flow_method) if c.flow else None
        self.prev_gd_sharpness = math.nan
        self.stop_reason: str | None = None
        self.power_starts: dict[str, Tensor] = {}   # the diagnostics' tensor power iterations continue from here

    def _projection_trackers(self) -> list[EigenTracker]:
        return [self.trackers[name] for name in PROJECTION_TRACKERS]

    @classmethod
    def from_state(cls, objective: Objective, lr: float, config: TrackConfig | None, state: dict) -> "Lockstep":
        """A lockstep restored from :meth:`state_dict` (a checkpoint), without recomputing anything."""
        self = cls.__new__(cls)
        self._setup(objective, lr, config)
        self.load_state_dict(state)
        return self

    # -- one step -----------------------------------------------------------------------------
    def step(self) -> Records:
        """Record time ``t`` and advance every process to ``t+1``."""
        c, lr, obj, here = self.config, self.lr, self.objective, self.here
        start, counts0 = time.perf_counter(), Counter(obj.counts)
        rec: Records = {}

        gd_geom = geometry_at(obj, self.theta, self.trackers["gd"])
        s_gd = gd_geom.sharpness
        disp = self.theta - here.theta   # GD's own x_t, y_t: its displacement from θ† along u_t and ∇S⊥_t
        rec["gd"] = {"loss": gd_geom.loss, "sharpness": s_gd, "sharpness_avg2": 0.5 * (self.prev_gd_sharpness + s_gd),
                     "x": float(here.u @ disp), "y": float(here.grad_sharpness_perp @ disp),
                     "dist_constrained": float(disp.norm()),
                     "grad_norm": float(gd_geom.grad.norm()), "u_dot_grad": float(gd_geom.u @ gd_geom.grad),
                     "eig_residual": float(gd_geom.eig.residuals.max())}
        alpha, beta = here.alpha, here.beta
        rec["constrained"] = {"loss": here.loss, "sharpness": here.sharpness, "alpha": alpha, "beta": beta,
                              "delta": here.delta, "epsilon": here.epsilon(lr), "alpha_nonpositive": float(alpha <= 0),
                              "grad_norm": float(here.grad.norm()), "eig_residual": float(here.eig.residuals.max()),
                              "gradS_dot_u": float(here.grad_sharpness @ here.u), **self.proj}
        if self.flow is not None:
            fl = geometry_at(obj, self.flow.theta, self.trackers["flow"])
            rec["flow"] = {"time": self.flow.time, "loss": fl.loss, "sharpness": fl.sharpness,
                           "dist_gd": float((self.flow.theta - self.theta).norm()),
                           "dist_constrained": float((self.flow.theta - here.theta).norm())}
        if self.t % c.diagnostics_every == 0:
            rec["diagnostics"] = self._diagnostics()

        # advance: GD, the constrained trajectory, then the predictions (they need u_{t+1})
        theta_next = self.theta - lr * gd_geom.grad
        proj = constrained_step(obj, here, lr, self._projection_trackers(), tol=c.proj_tol,
                                max_steps=c.proj_max_iter, min_steps=c.proj_min_iter, coupled=c.proj_coupled,
                                chord=c.proj_chord, predict=c.proj_predict)
        u_next = proj.geometry.u
        if float(u_next @ here.u) < 0:   # the θ† sequence keeps u_{t+1}·u_t > 0 whichever solver found u_{t+1}
            proj.geometry.eig.vectors.neg_()
            proj.geometry.eig.images.neg_()
        nxt = {}
        for name, v, general in (("predicted", self.v, False), ("generalized", self.vg, True)):
            if general and not c.generalized:
                continue
            nxt[name], f = predicted_step(v, here, u_next, lr, generalized=general, even_part=c.even_part)
            pred = theorem1_predictions(here, f["x"], f["y"], lr)
            rec[name] = {**f, "v_norm": float(v.norm()), **pred,
                         "dist_gd": float((self.theta - here.theta - v).norm())}
        if self.flow is not None:
            rec["flow"]["nfev"] = self.flow.advance(fl.grad)   # ∇L at the flow point is already known
        spent = Counter(obj.counts)
        spent.subtract(counts0)
        rec["cost"] = {"hvps": spent["hvp"], "grads": spent["grad"], "d3": spent["d3"] + spent["d4"],
                       "seconds": time.perf_counter() - start}

        self.theta, self.here, self.proj = theta_next, proj.geometry, _proj_fields(proj)
        self.v = nxt["predicted"]
        self.vg = nxt.get("generalized", self.vg)
        self.prev_gd_sharpness = s_gd
        self.t += 1
        self._check_stop(rec)
        return rec

    def _diagnostics(self) -> dict:
        here = self.here
        # its history is diagnostics_every steps old: u(θ†_t), known exactly, joins the warm subspace
        eig = self.trackers["diagnostics"].refresh(here.point, extra=here.u)
        out = diagnostics(here, self.v, self.lr, power_iters=self.config.power_iters, starts=self.power_starts)
        out["lambda2"] = float(eig.values[1]) if eig.values.numel() > 1 else math.nan
        for i, val in enumerate(eig.values.tolist()):
            out[f"eig_{i}"] = val
        return out

    def _check_stop(self, rec: Records) -> None:
        lam2 = rec.get("diagnostics", {}).get("lambda2", math.nan)
        if math.isfinite(lam2) and lam2 >= self.config.stop_lambda2 / self.lr:
            self.stop_reason = (f"lambda2: λ₂(θ†) = {lam2:.4g} reached {self.config.stop_lambda2:g}/η at step "
                                f"{self.t - 1} (several unstable eigenvalues)")
        for name in ("gd", "constrained", "flow"):
            r = rec.get(name)
            if r is not None and not _finite(r["loss"], r["sharpness"]):
                self.stop_reason = f"diverged: the {name} process left the finite numbers at step {self.t - 1}"
        if not bool(torch.isfinite(self.v).all()):
            self.stop_reason = f"diverged: the predicted displacement v left the finite numbers at step {self.t - 1}"

    # -- checkpoints --------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"t": self.t, "theta": self.theta.cpu(), "v": self.v.cpu(), "vg": self.vg.cpu(),
                "here": to_cpu_state(self.here), "proj": dict(self.proj),
                "trackers": {k: tr.state_dict() for k, tr in self.trackers.items()},
                "flow": None if self.flow is None else self.flow.state_dict(),
                "prev_gd_sharpness": self.prev_gd_sharpness, "stop_reason": self.stop_reason,
                "power_starts": {k: w.cpu() for k, w in self.power_starts.items()},
                "counts": dict(self.objective.counts)}

    def load_state_dict(self, state: dict) -> None:
        obj = self.objective
        self.t = int(state["t"])
        self.theta = state["theta"].to(obj.theta0)
        self.v, self.vg = state["v"].to(obj.theta0), state["vg"].to(obj.theta0)
        self.here = from_cpu_state(obj, state["here"])
        self.proj = dict(state["proj"])
        for k, tr in self.trackers.items():
            tr.load_state_dict(state["trackers"][k], obj.device)
        if self.flow is not None and state["flow"] is not None:
            self.flow.load_state_dict(state["flow"])
        self.prev_gd_sharpness = float(state["prev_gd_sharpness"])
        self.stop_reason = state["stop_reason"]
        self.power_starts = {k: w.to(obj.theta0) for k, w in state.get("power_starts", {}).items()}
        obj.counts.clear()
        obj.counts.update(state["counts"])


def _proj_fields(proj) -> dict:
    return {"proj_residual_sharpness": proj.residual_sharpness, "proj_residual_grad": proj.residual_grad,
            "proj_steps": float(proj.steps), "proj_converged": float(proj.converged)}


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


def track(objective: Objective, theta0: Tensor, lr: float, steps: int | None = None, *,
          config: TrackConfig | None = None, warm: Tensor | None = None,
          on_records: Callable[[int, Records], None] | None = None, lockstep: Lockstep | None = None,
          **overrides) -> TrackResult:
    """Track GD, ``θ†``, the predicted dynamics and gradient flow from ``θ₀`` for ``steps`` steps.

    ``config`` (a :class:`~selfstab.config.TrackConfig`) and keyword
    ``overrides`` of its fields set the tolerances; ``on_records(t, records)``
    streams each step; ``lockstep`` continues an existing (e.g. resumed) run.
    Returns a :class:`TrackResult` whose :meth:`~TrackResult.frames` are pandas
    DataFrames indexed by step.
    """
    import dataclasses
    config = dataclasses.replace(config or TrackConfig(), **overrides)
    steps = config.steps if steps is None else int(steps)
    ls = lockstep or Lockstep(objective, theta0, lr, config, warm=warm)
    result = TrackResult(lockstep=ls)
    while ls.t < steps and ls.stop_reason is None:
        t = ls.t
        rec = ls.step()
        for name, fields in rec.items():
            result.records.setdefault(name, []).append({"step": t, **fields})
        if on_records is not None:
            on_records(t, rec)
    result.steps = ls.t
    result.stop_reason = ls.stop_reason or f"steps: reached the step limit {steps}"
    return result

