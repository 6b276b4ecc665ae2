"""Eq. (3) against its ODE eq. (4): the discrete orbit stays in a band around the ODE orbit that
shrinks linearly in η (time τ = η·t, X = |x_t|, Y = y_t)."""

import math

import numpy as np
import pytest

from selfstab.errors import ConfigError, DivergenceError
from selfstab.theory import conserved, integrate_ode, linearized_period, period_quadrature, simplified_dynamics


def test_one_step_is_eq3():
    alpha, beta, lr, x0, y0 = 0.7, 1.9, 0.03, 0.4, -0.2
    x, y = simplified_dynamics(alpha, beta, lr, x0, y0, 1)
    assert x[1] == pytest.approx(-(1 + lr * y0) * x0, rel=1e-15)
    assert y[1] == pytest.approx(y0 + lr * (alpha - beta * x0 ** 2 / 2), rel=1e-15)
    assert x.shape == y.shape == (2,)


def test_x_flips_sign_every_step_while_stable():
    x, y = simplified_dynamics(1.0, 1.0, 0.01, 0.1, 0.0, 800)
    assert np.all(np.abs(0.01 * y) < 1)
    assert np.all(np.sign(x[1:]) == -np.sign(x[:-1]))


def test_band_around_ode_orbit_shrinks_linearly_in_lr():
    """Band = max over two ODE periods of |g(|x_t|, y_t) − g₀| / g₀ (g of Lemma 3), and the distance
    ‖(|x_t|, y_t) − (X, Y)(η t)‖.  Each update is an explicit Euler-type step of eq. (4) with local
    error O(η²); over the O(1/η) steps of a period that is O(η): log-log slope ≈ 1."""
    alpha, beta, x0 = 1.0, 1.0, 0.3
    T = period_quadrature(alpha, beta, x0)
    g0 = float(conserved(alpha, beta, x0, 0.0))
    orbit = integrate_ode(alpha, beta, x0, 0.0, n_periods=2)
    lrs = np.array([0.02, 0.01, 0.005, 0.0025])
    bands, dists = [], []
    for lr in lrs:
        n = math.ceil(2 * T / lr)
        x, y = simplified_dynamics(alpha, beta, lr, x0, 0.0, n)
        bands.append(np.max(np.abs(conserved(alpha, beta, np.abs(x), y) - g0)) / g0)
        X, Y = orbit(lr * np.arange(n + 1))
        dists.append(np.max(np.hypot(np.abs(x) - X, y - Y)))
    bands, dists = np.array(bands), np.array(dists)
    assert np.all(np.diff(bands) < 0) and np.all(np.diff(dists) < 0)
    slope_band = np.polyfit(np.log(lrs), np.log(bands), 1)[0]
    slope_dist = np.polyfit(np.log(lrs), np.log(dists), 1)[0]
    assert 0.9 < slope_band < 1.3, slope_band        # measured 1.09
    assert 0.9 < slope_dist < 1.3, slope_dist        # measured 1.07
    assert np.all(bands[:-1] / bands[1:] > 1.9)      # halving η at least ~halves the band
    assert bands[-1] < 0.06


def test_discrete_small_oscillation_period_in_steps():
    """Near (δ, 0) eq. (3) oscillates with period 2π/(η sqrt(2α)) steps (docs/theory.md §8, *Period*); measured by
    the steps between upward crossings of y = 0 over the first two cycles."""
    alpha, beta, lr = 2.0, 0.5, 0.005
    d = math.sqrt(2 * alpha / beta)
    n = int(2.2 * linearized_period(alpha, lr))
    x, y = simplified_dynamics(alpha, beta, lr, d * 0.99, 0.0, n)
    up = np.flatnonzero((y[:-1] <= 0) & (y[1:] > 0))
    assert len(up) >= 2
    assert np.mean(np.diff(up)) == pytest.approx(linearized_period(alpha, lr), rel=3e-3)


def test_errors():
    with pytest.raises(ConfigError):
        simplified_dynamics(1, 1, 0.0, 0.1, 0, 10)
    with pytest.raises(DivergenceError):
        simplified_dynamics(1, 1, 1.5, 3.0, 5.0, 500)
