"""The simplified dynamics of self-stabilization, eq. (3) of section 4.1.

    x_{t+1} = −(1 + η y_t) x_t,        y_{t+1} = y_t + η (α − β x_t² / 2)

``x`` is the displacement along the top eigenvector ``u`` and ``y`` the change
in sharpness (``S ≈ 2/η + y``).  Stage 1–4 of section 4.1 are the four
quadrants of ``(y, α − βx²/2)``; see :mod:`selfstab.theory.stages`.

With ``τ = η t``, ``(|x_t|, y_t)`` follows the ODE eq. (4) ``(X(τ), Y(τ))``
(:mod:`selfstab.theory.ode`): each step is an explicit Euler-type step of
eq. (4) (in ``log|x|``, ``log(1 + ηy) = ηy + O(η²)``), so the discrete orbit
stays within ``O(η)`` of the ODE orbit over a bounded number of cycles
(tests/theory/test_simplified.py checks that the band in Lemma 3's ``g``
shrinks in proportion to η).
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import ConfigError, DivergenceError


def simplified_dynamics(alpha: float, beta: float, lr: float, x0: float, y0: float = 0.0,
                        steps: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """Iterate eq. (3) for ``steps`` steps from ``(x0, y0)``.

    Returns ``(x, y)``, two float64 arrays of length ``steps + 1`` (index 0 is
    the start).  Both updates use the values at step ``t`` (the map is
    explicit, as GD is).  Raises :class:`DivergenceError` if the orbit
    overflows (eq. (3) is forward-Euler-like: its orbits drift outward by
    ``O(η)`` per cycle, so very long runs do diverge).
    """
    if lr <= 0:
        raise ConfigError(f"lr: must be > 0, got {lr}")
    if steps < 0:
        raise ConfigError(f"steps: must be ≥ 0, got {steps}")
    x = np.empty(steps + 1)
    y = np.empty(steps + 1)
    x[0], y[0] = float(x0), float(y0)
    for t in range(steps):
        x[t + 1] = -(1.0 + lr * y[t]) * x[t]
        y[t + 1] = y[t] + lr * (alpha - 0.5 * beta * x[t] ** 2)
        if not (abs(x[t + 1]) < 1e150 and math.isfinite(y[t + 1])):
            raise DivergenceError(f"eq. (3) diverged at step {t + 1} (x = {x[t + 1]:.3g})", step=t + 1, lr=lr)
    return x, y
