"""The stage map of section 4.1 on trajectories whose stages are known."""

import numpy as np
import pytest

from selfstab.errors import ConfigError
from selfstab.theory import integrate_ode, simplified_dynamics, stage_labels, stage_spans


def _cyclic(seq):
    """Each stage is followed by the next one, 4 by 1."""
    return all(b == a % 4 + 1 for a, b in zip(seq[:-1], seq[1:]))


def test_quadrants():
    alpha, beta = 1.0, 2.0  # δ = 1
    x = np.array([0.5, 0.5, 1.5, 1.5, -0.5, -1.5])
    y = np.array([-0.1, 0.1, 0.1, -0.1, -0.1, 0.1])
    np.testing.assert_array_equal(stage_labels(x, y, alpha, beta), [1, 2, 3, 4, 1, 3])


def test_one_ode_orbit_goes_1_2_3_4():
    """From (X(0), 0) with X(0) < δ the orbit turns counter-clockwise around (δ, 0):
    Y rises (stage 1 → 2 at Y = 0), X passes δ (2 → 3), Y falls through 0 (3 → 4),
    X falls back below δ (4 → 1)."""
    orb = integrate_ode(1.0, 1.0, 0.1, 0.0, n_periods=1.0, n_samples=4001)
    spans = stage_spans(stage_labels(orb.X, orb.Y, 1.0, 1.0))
    seq = [s for s, _, _ in spans]
    assert seq[:4] == [1, 2, 3, 4] or seq[1:5] == [1, 2, 3, 4]
    assert _cyclic(seq)
    # the boundaries are the events of the integrator: 2 → 3 where X = δ going up (max Y) ...
    t23 = orb.t[[a for s, a, _ in spans if s == 3][0]]
    assert t23 == pytest.approx(orb.t_ymax[0], abs=2 * (orb.t[1] - orb.t[0]))
    # ... and 3 → 4 where Y = 0 going down (max X)
    t34 = orb.t[[a for s, a, _ in spans if s == 4][0]]
    assert t34 == pytest.approx(orb.t_xmax[0], abs=2 * (orb.t[1] - orb.t[0]))


def test_eq3_cycles_in_order():
    x, y = simplified_dynamics(1.0, 1.0, 0.01, 0.1, 0.0, 2000)
    seq = [s for s, _, _ in stage_spans(stage_labels(x, y, 1.0, 1.0))]
    assert _cyclic(seq) and len(seq) >= 8  # at least two full cycles, never out of order


def test_spans_cover_and_roundtrip():
    labels = np.array([1, 1, 2, 2, 2, 3, 4, 4, 1])
    assert stage_spans(labels) == [(1, 0, 2), (2, 2, 5), (3, 5, 6), (4, 6, 8), (1, 8, 9)]
    rng = np.random.default_rng(0)
    labels = rng.integers(1, 5, size=200)
    rebuilt = np.concatenate([[s] * (b - a) for s, a, b in stage_spans(labels)])
    np.testing.assert_array_equal(rebuilt, labels)
    assert stage_spans([]) == []


def test_shape_mismatch():
    with pytest.raises(ConfigError):
        stage_labels([1.0, 2.0], [0.0], 1.0, 1.0)
