"""The ODE of the simplified dynamics, eq. (4), its conserved quantity (Lemma 3) and its orbits.

    X' = X Y,        Y' = α − β X² / 2,        fixed point (δ, 0),  δ = sqrt(2α/β).

Time: with ``τ = η t``, ``X(τ) ≈ |x_t|`` and ``Y(τ) ≈ y_t`` for eq. (3), since
``|x_{t+1}| / |x_t| = 1 + η y_t`` and ``y_{t+1} − y_t = η (α − β x_t²/2)``.

Conserved (Lemma 3): ``g(X, Y) = h(βX²/(2α)) + Y²/α`` with ``h(z) = z − log z − 1``.
With ``z = X²/δ²`` the orbit through ``(X, Y)`` is the level set ``{g = const}``:

* ``Y = 0`` at the extremes of ``X``, where ``h(z) = g``.  Writing ``z = −w``,
  ``z − log z − 1 = g ⇔ w e^w = −e^{−1−g}``, so ``z = −W_k(−e^{−1−g})``; branch
  ``k = 0`` gives the root ``z ≤ 1`` (``X_min``), branch ``k = −1`` the root
  ``z ≥ 1`` (``X_max``).  Both are polished by Newton steps on ``s = log z``
  (which also serves where ``e^{−1−g}`` underflows).
* ``X = δ`` (``h = 0``) at the extremes of ``Y``: ``max |Y| = sqrt(α g)``.

Period: by quadrature along the level set (:func:`period_quadrature`) and by
the integrator's events (:func:`integrate_ode`, successive upward crossings of
``Y = 0``).  Near the fixed point, ``X = δ + ξ`` gives ``ξ'' = −βδ² ξ = −2α ξ``:
the linearized period is ``2π / sqrt(2α)`` in ODE time, ``2π / (η sqrt(2α))``
steps of eq. (3), independent of β.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy.integrate import quad, solve_ivp
from scipy.special import lambertw

from ..errors import ConfigError


def _check(alpha: float, beta: float) -> None:
    if not alpha > 0:
        raise ConfigError(f"alpha: the ODE needs progressive sharpening α > 0, got {alpha} (δ is undefined)")
    if not beta > 0:
        raise ConfigError(f"beta: must be > 0, got {beta}")


def delta(alpha: float, beta: float) -> float:
    """``δ = sqrt(2α/β)``, the fixed point of eq. (4) (docs/theory.md §2, §8)."""
    _check(alpha, beta)
    return math.sqrt(2.0 * alpha / beta)


def h(z):
    """``h(z) = z − log z − 1`` (Lemma 3); ``h ≥ 0`` with equality at ``z = 1``."""
    z = np.asarray(z, dtype=float)
    return z - np.log(z) - 1.0


def conserved(alpha: float, beta: float, X, Y):
    """``g(X, Y) = h(βX²/(2α)) + Y²/α`` (Lemma 3), elementwise; ``log z`` taken as ``2 log(|X|/δ)``
    so that tiny ``X`` keep their precision."""
    d = delta(alpha, beta)
    X, Y = np.asarray(X, dtype=float), np.asarray(Y, dtype=float)
    return (X / d) ** 2 - 2.0 * np.log(np.abs(X) / d) - 1.0 + Y ** 2 / alpha


def _level_roots(g: float) -> tuple[float, float]:
    """``(s_min, s_max)`` with ``s = log z``, the two roots of ``e^s − s − 1 = g``."""
    if not g > 0:
        raise ConfigError(f"g: the orbit's level must be > 0 (g = 0 is the fixed point), got {g}")
    arg = -math.exp(-1.0 - g)
    if arg != 0.0:
        s_lo = math.log(-lambertw(arg, 0).real)
        s_hi = math.log(-lambertw(arg, -1).real)
    else:  # e^{−1−g} underflows: asymptotic starts, then Newton
        s_lo, s_hi = -1.0 - g, math.log(g + 1.0 + math.log(g + 1.0))
    out = []
    for s in (s_lo, s_hi):
        for _ in range(3):  # Newton on H(s) = e^s − s − 1 − g; H' = e^s − 1 ≠ 0 away from s = 0
            s -= (math.expm1(s) - s - g) / math.expm1(s)
        out.append(s)
    return out[0], out[1]


@dataclass(frozen=True)
class OrbitExtremes:
    """Exact extremes of the orbit ``{g = level}`` of eq. (4)."""
    level: float
    X_min: float
    X_max: float
    Y_max: float  # = max |Y| = sqrt(α g)


def orbit_extremes(alpha: float, beta: float, X0: float, Y0: float = 0.0) -> OrbitExtremes:
    """``X_min, X_max`` (Lambert W, see the module docstring) and ``max |Y| = sqrt(α g)`` of the
    orbit through ``(X0, Y0)``."""
    d = delta(alpha, beta)
    g = float(conserved(alpha, beta, X0, Y0))
    s_lo, s_hi = _level_roots(g)
    return OrbitExtremes(g, d * math.exp(s_lo / 2), d * math.exp(s_hi / 2), math.sqrt(alpha * g))


def period_quadrature(alpha: float, beta: float, X0: float, Y0: float = 0.0) -> float:
    """Period of the orbit through ``(X0, Y0)`` in ODE time, by quadrature along the level set.

    With ``s = log z = 2 log(X/δ)``: ``ds/dt = 2Y`` and on the upper half
    ``Y = sqrt(α(g − H(s)))``, ``H(s) = e^s − s − 1``; the lower half takes the
    same time, so ``T = α^{-1/2} ∫_{s_min}^{s_max} ds / sqrt(g − H(s))``.  The
    end-point singularities are removed by ``s = s_min + (s_max − s_min) sin²(φ/2)``:
    ``T = α^{-1/2} ∫_0^π dφ / sqrt(R)``, ``R = (g − H) / ((s − s_min)(s_max − s))``,
    a smooth positive integrand; ``g − H`` is formed from the nearer end point
    with ``expm1`` so that ``R`` keeps its precision there.
    """
    _check(alpha, beta)
    g = float(conserved(alpha, beta, X0, Y0))
    if g < 1e-12:  # at the fixed point (to rounding): the period's correction is O(g)
        return linearized_period(alpha)
    a, b = _level_roots(g)
    w = b - a

    def integrand(phi: float) -> float:
        da, db = w * math.sin(phi / 2) ** 2, w * math.cos(phi / 2) ** 2
        if da <= db:
            gap = da - math.exp(a) * math.expm1(da)       # H(a) − H(a + da)
        else:
            gap = -math.exp(b) * math.expm1(-db) - db     # H(b) − H(b − db)
        return 1.0 / math.sqrt(gap / (da * db))

    val, _ = quad(integrand, 0.0, math.pi, epsabs=0.0, epsrel=1e-13, limit=200)
    return val / math.sqrt(alpha)


def linearized_period(alpha: float, lr: float | None = None) -> float:
    """Small-oscillation period of eq. (4) around ``(δ, 0)``: ``2π/sqrt(2α)`` in ODE time, or
    ``2π/(η sqrt(2α))`` steps of eq. (3) when ``lr = η`` is given."""
    _check(alpha, 1.0)
    T = 2.0 * math.pi / math.sqrt(2.0 * alpha)
    return T if lr is None else T / lr


@dataclass
class OdeOrbit:
    """A solution of eq. (4): samples, dense output and the events that mark the extremes.

    ``t_xmin``/``t_xmax``: ``Y = 0`` crossed upward/downward (minima/maxima of ``X``);
    ``t_ymax``/``t_ymin``: ``X = δ`` crossed upward/downward (maxima/minima of ``Y``);
    ``*_at``: the state ``(X, Y)`` at those events, shape ``(k, 2)``.
    ``period``: mean gap between successive ``t_xmin`` (NaN with fewer than two).
    """
    alpha: float
    beta: float
    t: np.ndarray
    X: np.ndarray
    Y: np.ndarray
    t_xmin: np.ndarray
    t_xmax: np.ndarray
    t_ymax: np.ndarray
    t_ymin: np.ndarray
    xmin_at: np.ndarray
    xmax_at: np.ndarray
    ymax_at: np.ndarray
    ymin_at: np.ndarray
    method: str
    rtol: float
    atol: float
    _dense: object = field(repr=False, default=None)

    @property
    def period(self) -> float:
        return float(np.mean(np.diff(self.t_xmin))) if len(self.t_xmin) > 1 else float("nan")

    def __call__(self, t) -> tuple[np.ndarray, np.ndarray]:
        """``(X(t), Y(t))`` from the dense output."""
        p, y = self._dense(np.asarray(t, dtype=float))
        return np.exp(p), y


def integrate_ode(alpha: float, beta: float, X0: float, Y0: float = 0.0, *, t_max: float | None = None,
                  n_periods: float | None = None, rtol: float = 1e-12, atol: float = 1e-12,
                  method: str = "DOP853", n_samples: int = 2001) -> OdeOrbit:
    """Integrate eq. (4) from ``(X0, Y0)`` with ``scipy.integrate.solve_ivp`` (dense output, events).

    The state is ``(P, Y)`` with ``P = log X`` (``P' = Y``, ``Y' = α − β e^{2P}/2``): ``X`` stays
    positive and keeps its *relative* precision when it is tiny (small ``X(0)``), where an
    absolute tolerance on ``X`` would not.  Give ``t_max`` (ODE time) or ``n_periods`` (in units
    of :func:`period_quadrature`, plus 0.1% so that the last crossing is caught).  The default
    DOP853 with ``rtol = atol = 1e-12`` keeps ``g`` to ~1e-11 relative over tens of periods.
    """
    d = delta(alpha, beta)
    if not X0 > 0:
        raise ConfigError(f"X0: eq. (4) models |x|, so X(0) must be > 0, got {X0}")
    if (t_max is None) == (n_periods is None):
        raise ConfigError("integrate_ode: give exactly one of t_max and n_periods")
    if t_max is None:
        t_max = (float(n_periods) + 1e-3) * period_quadrature(alpha, beta, X0, Y0)
    if not t_max > 0:
        raise ConfigError(f"t_max: must be > 0, got {t_max}")
    logd = math.log(d)

    def rhs(_t, s):
        return [s[1], alpha - 0.5 * beta * math.exp(2.0 * s[0])]

    def y_zero(_t, s):
        return s[1]

    def x_delta(_t, s):
        return s[0] - logd

    events = []
    for fn, direction in ((y_zero, 1), (y_zero, -1), (x_delta, 1), (x_delta, -1)):
        ev = (lambda f: lambda t, s: f(t, s))(fn)  # a fresh function each, to carry its own direction
        ev.direction = direction
        events.append(ev)
    sol = solve_ivp(rhs, (0.0, t_max), [math.log(X0), float(Y0)], method=method, rtol=rtol, atol=atol,
                    dense_output=True, events=events)
    if sol.status < 0:
        raise ConfigError(f"integrate_ode: solve_ivp failed: {sol.message}")
    t = np.linspace(0.0, t_max, n_samples)
    p, y = sol.sol(t)

    def at(k):
        ye = np.asarray(sol.y_events[k]).reshape(-1, 2)
        return np.column_stack([np.exp(ye[:, 0]), ye[:, 1]])

    def dense(tt):
        return sol.sol(tt)

    te = [np.asarray(x, dtype=float) for x in sol.t_events]
    return OdeOrbit(alpha, beta, t, np.exp(p), y, te[0], te[1], te[2], te[3], at(0), at(1), at(2), at(3),
                    method, rtol, atol, dense)


def corollary1_bounds(alpha: float, beta: float, x0: float) -> dict[str, float]:
    """Corollary 1 (section 4.2): the orbit from ``(X(0), Y(0)) = (x0, 0)`` with small ``x0``.

    With ``L = log(δ/x0)``, ``g = h(x0²/δ²) = 2L + x0²/δ² − 1 < 2L``.  Hence, exactly,

    * ``X_min = x0`` (``Y(0) = 0`` and ``x0 < δ``: the start is the left end of the orbit);
    * ``max |Y| = sqrt(α g) < sqrt(2α L)`` (the OCR of the paper reads ``sqrt(α log(δ/X(0)))``;
      the factor 2 is needed, since ``sqrt(α g) / sqrt(α L) → sqrt 2``);
    * ``X_max = δ sqrt(z_max)``, ``h(z_max) = g``; for ``g ≥ 1 + log(2g)`` (``g ≳ 2.68``)
      ``h(2g) ≥ g`` so ``z_max ≤ 2g < 4L``: ``X_max < δ sqrt(4L)``, the paper's bound.

    Asymptotically (``x0 → 0``) ``z_max = g + 1 + log z_max ≈ 2L``: ``X_max ≈ δ sqrt(2L)`` and
    ``max |Y| ≈ sqrt(2αL)``, with relative errors ``O(log L / L)`` and ``O(1/L)``.
    Returns ``x_min``, ``x_max_bound``, ``x_max_asymptotic``, ``y_max_bound`` (= its asymptotic form).
    """
    d = delta(alpha, beta)
    if not 0 < x0 < d:
        raise ConfigError(f"x0: Corollary 1 needs 0 < X(0) < δ = {d:.6g}, got {x0}")
    L = math.log(d / x0)
    return {"x_min": float(x0), "x_max_bound": d * math.sqrt(4 * L), "x_max_asymptotic": d * math.sqrt(2 * L),
            "y_max_bound": math.sqrt(2 * alpha * L)}
