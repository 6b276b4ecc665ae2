"""Stage 3 — gradient descent from initialization to the edge of stability."""

from .gd import EdgeNotReachedWarning, EdgeResult, check_lr, gd_to_edge
from .schedule import gd_run

__all__ = ["EdgeNotReachedWarning", "EdgeResult", "check_lr", "gd_run", "gd_to_edge"]
