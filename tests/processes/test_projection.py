"""The constrained step's projection: the predictor's first step, the warm-started correctors, the result."""

import warnings

import pytest
import torch

from selfstab import Objective, build_model, gd_to_edge, load_dataset
from selfstab.processes.constrained import constrained_step, project
from selfstab.processes.geometry import geometry_at
from selfstab.spectrum import EigenTracker, top_eigenpairs

TOL = 1e-9


@pytest.fixture(scope="module")
def past_the_edge():
    """A small MLP trained to the edge (float32, as the paper), then float64 with θ†₀ on the boundary of M."""
    ds = load_dataset("digits", loss="mse", n=300)
    obj = Objective.from_module(build_model("mlp", ds.input_shape, ds.n_outputs, seed=0, width=16),
                                ds.inputs, ds.targets, "mse")
    lr = 0.3
    edge = gd_to_edge(obj, lr)
    assert edge.reached
    obj = obj.to(torch.float64)
    tracker = EigenTracker(1, tol=1e-10)
    tracker._history.append(edge.eig.vectors.double())
    here = project(obj, edge.theta0.double(), lr, [tracker, EigenTracker(1, tol=1e-10)], tol=1e-12,
                   two_sided=True).geometry
    return obj, lr, here


def _trackers(here):
    first, corrector = EigenTracker(1, tol=1e-10), EigenTracker(1, tol=1e-10)
    first._history.append(here.u[None].clone())
    return [first, corrector]


def test_predicted_sharpness_at_the_gd_point_is_first_order_accurate(past_the_edge):
    obj, lr, here = past_the_edge
    phi0 = here.theta - lr * here.grad
    at_phi0 = geometry_at(obj, phi0, EigenTracker(1, tol=1e-12))
    # S(θ† − η∇L) ≈ S + ηα (α = −∇L·∇S): the error is second order in the step, small against the change
    change = at_phi0.sharpness - here.sharpness
    assert abs(change) > 1e-6
    assert abs(at_phi0.sharpness - (here.sharpness + lr * here.alpha)) < 0.05 * abs(change)
    # (u·∇L there is not predicted as well: its first-order change includes the rotation of u,
    # ∇L·(S − H)⁺∇³L[u, ·], which needs a linear solve; the correctors measure it instead)


@pytest.mark.parametrize("chord", [True, False])
def test_predictor_reaches_M_with_no_more_solves_and_nearer_the_boundary(past_the_edge, chord):
    obj, lr, here = past_the_edge
    results = {}
    for predict in (False, True):
        trackers = _trackers(here)
        with warnings.catch_warnings():
            warnings.simplefilter("error")   # no projection or eigen-solver warning
            proj = constrained_step(obj, here, lr, trackers, tol=TOL, chord=chord, predict=predict)
        assert proj.converged
        # the residuals hold for an independent tight solve at the result, not only for the solver's own
        check = top_eigenpairs(proj.geometry.point.hvp, obj.dim, 1, dtype=torch.float64, tol=1e-12,
                               warm=proj.geometry.u[None])
        assert abs(check.sharpness - proj.geometry.sharpness) < 1e-12 * check.sharpness
        assert lr * max(0.0, check.sharpness - 2 / lr) <= TOL
        assert abs(float(check.u @ proj.geometry.grad)) <= 10 * TOL * float(proj.geometry.grad.norm())
        results[predict] = (proj, sum(t.calls for t in trackers))
    (plain, plain_solves), (pred, pred_solves) = results[False], results[True]
    assert pred_solves <= plain_solves
    # φ₀ lies outside M, so proj_M(φ₀) is on the boundary S = 2/η.  Both land there to second order;
    # with the chord ∇S, a step from the measured S(φ₀) overshoots inside by far more than the predicted one
    assert lr * abs(pred.geometry.sharpness - 2 / lr) < 1e-6
    if chord:
        assert abs(pred.geometry.sharpness - 2 / lr) < 0.1 * abs(plain.geometry.sharpness - 2 / lr)
    step = float((plain.geometry.theta - here.theta).norm())
    assert float((pred.geometry.theta - plain.geometry.theta).norm()) < 1e-2 * step


def test_correctors_warm_started_from_the_previous_point_are_cheap(past_the_edge):
    obj, lr, here = past_the_edge
    first, corrector = EigenTracker(1, tol=1e-7), EigenTracker(1, tol=1e-7)   # the tracking tolerance
    first._history.append(here.u[None].clone())
    geom, steps = here, 0
    for _ in range(6):   # a few steps along θ†, as the lockstep takes them
        proj = constrained_step(obj, geom, lr, [first, corrector], tol=TOL, chord=True, predict=True)
        assert proj.converged
        geom, steps = proj.geometry, steps + proj.steps
    assert corrector.calls == steps - 6   # one solve per linearized step after the predictor's
    # a corrector point is a small Newton correction away from the previous one: far fewer HVPs per
    # solve than the first point, which is a whole GD step away from anything solved before
    assert corrector.hvps / corrector.calls < 0.6 * first.hvps / first.calls
