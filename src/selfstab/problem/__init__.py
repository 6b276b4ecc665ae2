"""Stage 1 — the problem: model + data + loss → an :class:`Objective` on a flat θ."""

from .losses import LOSSES, get_loss
from .objective import Objective, Point, as_dtype

__all__ = ["LOSSES", "Objective", "Point", "as_dtype", "get_loss"]
