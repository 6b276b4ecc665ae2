"""Stage 3 — gradient descent from initialization to the edge of stability."""

from .gd import EdgeResult, check_lr, gd_to_edge

__all__ = ["EdgeResult", "check_lr", "gd_to_edge"]
