"""Eq. (4): Lemma 3's conserved quantity, the Lambert-W orbit extremes, the period two ways,
the linearized period, and Corollary 1."""

import math

import numpy as np
import pytest

from selfstab.errors import ConfigError
from selfstab.theory import (conserved, corollary1_bounds, delta, h, integrate_ode, linearized_period,
                             orbit_extremes, period_quadrature)

CASES = [(1.0, 1.0, 0.5), (2.0, 0.5, 0.05), (0.3, 3.0, 0.2)]


@pytest.fixture(scope="module")
def orbits():
    return {c: integrate_ode(*c, 0.0, n_periods=20) for c in CASES}


@pytest.mark.parametrize("case", CASES)
def test_g_conserved_over_20_periods(orbits, case):
    orb = orbits[case]
    assert len(orb.t_xmin) >= 21  # t = 0 and twenty returns
    g = conserved(case[0], case[1], orb.X, orb.Y)
    assert np.max(np.abs(g / g[0] - 1)) < 1e-8


def test_g_is_lemma3_formula():
    alpha, beta, X, Y = 1.3, 0.7, 0.9, -0.4
    assert conserved(alpha, beta, X, Y) == pytest.approx(h(beta * X ** 2 / (2 * alpha)) + Y ** 2 / alpha, rel=1e-14)
    # and its time derivative along eq. (4) vanishes (Lemma 3), by central differences
    def g_at(s):
        return conserved(alpha, beta, X + s * X * Y, Y + s * (alpha - beta * X ** 2 / 2))
    assert (g_at(1e-6) - g_at(-1e-6)) / 2e-6 == pytest.approx(0.0, abs=1e-8)


@pytest.mark.parametrize("case", CASES)
def test_event_extremes_match_lambert_w(orbits, case):
    alpha, beta, x0 = case
    orb, ext = orbits[case], orbit_extremes(alpha, beta, x0, 0.0)
    assert ext.X_min == pytest.approx(x0, rel=1e-12)          # Y(0) = 0: the start is the left end
    for got, want in [(orb.xmin_at[:, 0], ext.X_min), (orb.xmax_at[:, 0], ext.X_max),
                      (orb.ymax_at[:, 1], ext.Y_max), (-orb.ymin_at[:, 1], ext.Y_max)]:
        assert len(got) >= 20
        np.testing.assert_allclose(got, want, rtol=1e-6)
    # the extremes are extremes of the sampled orbit too
    assert orb.X.min() >= ext.X_min * (1 - 1e-9) and orb.X.max() <= ext.X_max * (1 + 1e-9)
    assert np.abs(orb.Y).max() <= ext.Y_max * (1 + 1e-9)


def test_lambert_w_roots_solve_h_equals_g():
    for g in [1e-4, 0.3, 5.0, 80.0, 900.0]:  # 900: e^{-1-g} underflows, Newton from asymptotics
        alpha, beta = 1.0, 2.0
        d = delta(alpha, beta)
        ext = orbit_extremes(alpha, beta, d, math.sqrt(alpha * g))  # the orbit through (δ, sqrt(αg))
        zmin, zmax = (ext.X_min / d) ** 2, (ext.X_max / d) ** 2
        assert zmin < 1 < zmax
        assert zmax - math.log(zmax) - 1 == pytest.approx(g, rel=1e-12)
        # for the small root, h(z) = z − log z − 1 computed with log z, which keeps precision
        assert zmin - 2 * math.log(ext.X_min / d) - 1 == pytest.approx(g, rel=1e-10)


@pytest.mark.parametrize("case", CASES)
def test_period_events_agree_with_quadrature(orbits, case):
    orb = orbits[case]
    T = period_quadrature(*case, 0.0)
    gaps = np.diff(orb.t_xmin)
    np.testing.assert_allclose(gaps, T, rtol=1e-8)
    np.testing.assert_allclose(np.diff(orb.t_xmax), T, rtol=1e-8)
    assert orb.period == pytest.approx(T, rel=1e-9)


def test_small_oscillation_period_is_linearized_period():
    """X = δ + ξ: ξ'' = −βδ² ξ = −2α ξ, period 2π/sqrt(2α); the error of the full period is O(amplitude²)."""
    alpha, beta = 2.0, 0.5
    d, T0 = delta(alpha, beta), linearized_period(alpha)
    assert T0 == pytest.approx(2 * math.pi / math.sqrt(2 * alpha))
    assert linearized_period(alpha, 0.01) == pytest.approx(T0 / 0.01)
    errs = [abs(period_quadrature(alpha, beta, d * (1 - a)) / T0 - 1) for a in (0.1, 0.01, 0.001)]
    assert errs[0] > errs[1] > errs[2] and errs[2] < 1e-6
    assert errs[1] / errs[2] > 50  # quadratic in the amplitude
    orb = integrate_ode(alpha, beta, d * 0.999, 0.0, n_periods=3)
    assert orb.period == pytest.approx(T0, rel=1e-6)


def test_corollary1_bounds_and_asymptotics():
    alpha, beta = 1.5, 0.6
    d = delta(alpha, beta)
    x0s = [1e-2, 1e-4, 1e-8, 1e-16, 1e-32, 1e-64, 1e-128]
    err_x, err_y = [], []
    for x0 in x0s:
        b, ext = corollary1_bounds(alpha, beta, x0), orbit_extremes(alpha, beta, x0, 0.0)
        assert ext.X_min == pytest.approx(b["x_min"], rel=1e-12)
        assert ext.X_max <= b["x_max_bound"] and ext.Y_max <= b["y_max_bound"]
        err_x.append(abs(ext.X_max / b["x_max_asymptotic"] - 1))
        err_y.append(abs(ext.Y_max / b["y_max_bound"] - 1))
    assert np.all(np.diff(err_x) < 0) and np.all(np.diff(err_y) < 0)
    assert err_x[-1] < 0.02 and err_y[-1] < 2e-3
    assert err_x[0] / err_x[-1] > 4 and err_y[0] / err_y[-1] > 50
    # the integrator agrees with the bounds too (X = 1e-8·δ keeps its precision in log X)
    orb = integrate_ode(alpha, beta, 1e-8 * d, 0.0, n_periods=2)
    b = corollary1_bounds(alpha, beta, 1e-8 * d)
    assert orb.X.min() >= b["x_min"] * (1 - 1e-9)
    assert orb.xmax_at[:, 0].max() <= b["x_max_bound"] and np.abs(orb.Y).max() <= b["y_max_bound"]


def test_errors():
    with pytest.raises(ConfigError):
        delta(0.0, 1.0)
    with pytest.raises(ConfigError):
        integrate_ode(1.0, 1.0, -0.1, 0.0, t_max=1.0)
    with pytest.raises(ConfigError):
        integrate_ode(1.0, 1.0, 0.1, 0.0)
    with pytest.raises(ConfigError):
        corollary1_bounds(1.0, 1.0, 2.0)
