"""Stage 4 — the processes tracked from the edge: GD, the constrained trajectory, gradient flow, the
predictions and the diagnostics, each one :class:`Process` (``base.py``), stepped by one :class:`Lockstep`."""

from .base import Context, Lambda2Central, Lambda2Flag, Lambda2Threshold, NonFinite, Process, StepLimit, StopRule
from .central import CentralFlow, CentralStep, central_flow_step
from .constrained import Constrained, Projection, ProjectionWarning, constrained_step, project
from .diagnostics import Diagnostics, diagnostics, tensor_power_norm
from .flow import Flow, GradientFlow
from .gd import GD, gd_step
from .geometry import Geometry, geometry_at, perp
from .kconstrained import KConstrained, KGeometry, KProjection, KProjectionWarning, k_constrained_step, k_project
from .lockstep import PROCESSES, Lockstep, TrackResult, default_processes, default_stop_rules, register_process, track
from .predicted import Generalized, Predicted, predicted_step, theorem1_predictions

__all__ = ["CentralFlow", "CentralStep", "Constrained", "Context", "Diagnostics", "Flow", "GD", "Generalized",
           "Geometry", "GradientFlow", "KConstrained", "KGeometry", "KProjection", "KProjectionWarning",
           "Lambda2Central", "Lambda2Flag", "Lambda2Threshold", "central_flow_step", "k_constrained_step", "k_project", "Lockstep", "NonFinite", "PROCESSES", "Predicted", "Process", "Projection",
           "ProjectionWarning", "StepLimit", "StopRule", "TrackResult", "constrained_step", "default_processes",
           "default_stop_rules", "diagnostics", "gd_step", "geometry_at", "perp", "predicted_step", "project",
           "register_process", "tensor_power_norm", "theorem1_predictions", "track"]
