"""Stage 4 — the processes tracked from the edge: GD, the constrained trajectory, gradient flow, the predictions."""

from .constrained import Projection, ProjectionWarning, constrained_step, project
from .diagnostics import diagnostics, tensor_power_norm
from .flow import GradientFlow
from .geometry import Geometry, geometry_at, perp
from .lockstep import PROCESSES, Lockstep, TrackResult, track
from .predicted import predicted_step, theorem1_predictions

__all__ = ["PROCESSES", "Geometry", "GradientFlow", "Lockstep", "Projection", "ProjectionWarning", "TrackResult",
           "constrained_step", "diagnostics", "geometry_at", "perp", "predicted_step", "project",
           "tensor_power_norm", "theorem1_predictions", "track"]
