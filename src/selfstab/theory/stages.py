"""The four stages of edge of stability (section 4.1, Figure 2), as labels on a trajectory.

The rule, in eq. (3)'s coordinates (``x`` along ``u``, ``y`` = sharpness − 2/η):

    force  = α − β x_t² / 2     (= (y_{t+1} − y_t)/η: sharpness rising if > 0)
    growth = y_t > 0             (|x_{t+1}| = |1 + η y_t| |x_t| > |x_t| iff y_t > 0, for η y_t > −2)

    stage 1  progressive sharpening   y ≤ 0, force ≥ 0   (|x| shrinks, S rises toward 2/η)
    stage 2  blow-up                  y > 0, force ≥ 0   (S > 2/η, |x| grows)
    stage 3  self-stabilization       y > 0, force < 0   (|x| > δ: the cubic term pulls S down)
    stage 4  return to stability      y ≤ 0, force < 0   (S < 2/η, |x| shrinks back below δ)

These are the four quadrants of the ODE plane (X, Y) around the fixed point
(δ, 0); an orbit of eq. (4) visits them in the order 1 → 2 → 3 → 4 → 1.  The
sign of ``y`` is used rather than the measured ratio ``|x_{t+1}|/|x_t|`` so
that a label depends on step ``t`` alone (and the last step gets one).
"""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError

STAGE_NAMES = {1: "progressive sharpening", 2: "blow-up", 3: "self-stabilization", 4: "return to stability"}


def stage_labels(x, y, alpha: float, beta: float) -> np.ndarray:
    """Stage (1–4, int8) of each step of a trajectory ``(x_t, y_t)`` by the rule above."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.shape != y.shape:
        raise ConfigError(f"x, y: shapes {x.shape} and {y.shape} differ")
    force = alpha - 0.5 * beta * x ** 2
    up = y > 0
    pull = force < 0
    labels = np.where(up, np.where(pull, 3, 2), np.where(pull, 4, 1))
    return labels.astype(np.int8)


def stage_spans(labels) -> list[tuple[int, int, int]]:
    """Runs of equal labels as ``(stage, start, end)`` with ``end`` exclusive (for ``axvspan``)."""
    labels = np.asarray(labels)
    if labels.size == 0:
        return []
    cut = np.flatnonzero(labels[1:] != labels[:-1]) + 1
    starts = np.concatenate([[0], cut])
    ends = np.concatenate([cut, [labels.size]])
    return [(int(labels[s]), int(s), int(e)) for s, e in zip(starts, ends)]
