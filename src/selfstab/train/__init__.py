"""Stage 3 — gradient descent from initialization to the edge of stability."""

from .gd import EdgeResult, check_lr, gd_to_edge
from .schedule import gd_run

__all__ = ["EdgeResult", "check_lr", "gd_run", "gd_to_edge"]
