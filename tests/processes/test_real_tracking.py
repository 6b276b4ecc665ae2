"""Self-stabilization on real networks: GD at the edge against θ†, the predictions and gradient flow.

The CI tests use a small MLP on 500 digits (the first blow-up and its self-stabilization happen
within ~180 tracked steps, then λ₂ reaches 1.9/η and tracking stops, as it should).  The ``slow``
tests run the default job (MLP width 64 on 1,500 digits) and a CNN at two learning rates each over
several cycles; their results are in docs/results.md, "Tracking results" (``python -m pytest -m slow``).
"""

import warnings

import pytest
import torch

from selfstab import Objective, build_model, gd_to_edge, load_dataset, track


def _run(model, n, width, lr, steps, binary=False, **track_kw):
    ds = load_dataset("digits", loss="mse", n=n, **({"binary": True} if binary else {}))
    obj = Objective.from_module(build_model(model, ds.input_shape, ds.n_outputs, seed=0, width=width),
                                ds.inputs, ds.targets, "mse")   # float32 before the edge, as the paper
    edge = gd_to_edge(obj, lr)
    assert edge.reached
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = track(obj, edge.theta0, lr, steps, warm=edge.eig.vectors, **track_kw)
    return res


def _two_step(s):
    return (s + s.shift(-1)) / 2


def _rel(a, b):
    return ((a - b).abs() / b.abs()).dropna()


def check_self_stabilization(res, lr, warmup, sharp_tol=0.10, pred_tol=0.10, flow_ratio=2.0):
    """The properties the issue names, on the window after ``warmup`` steps; returns the measured numbers."""
    f = res.frames()
    g, p, c, fl = f["gd"], f["predicted"], f["constrained"], f["flow"]
    s2 = _two_step(g.sharpness).loc[warmup:].dropna()
    dev = float((s2 * lr / 2 - 1).abs().max())
    assert dev <= sharp_tol, f"two-step-averaged GD sharpness {dev:.1%} off 2/η"
    # GD stays near θ† (order δ) while gradient flow drifts away
    dist, flow = g.dist_constrained.loc[warmup:], fl.dist_constrained.loc[warmup:]
    delta = float(c.delta.loc[warmup:].median())
    assert float(dist.iloc[-20:].median()) <= 4 * delta
    assert float(flow.iloc[-1]) > float(flow.iloc[0])
    assert float(flow.iloc[-1]) > flow_ratio * float(dist.iloc[-1])
    # Theorem 1: predicted loss and sharpness against the measured ones
    err_loss = float(_rel(p.loss, g.loss).loc[warmup:].median())
    err_sharp = float(_rel(_two_step(p.sharpness), _two_step(g.sharpness)).loc[warmup:].median())
    assert err_loss < pred_tol and err_sharp < pred_tol
    # residuals are in the records for every step, and met
    assert c.proj_residual_grad.notna().all() and c.eig_residual.notna().all() and g.eig_residual.notna().all()
    return {"sharpness_dev": dev, "dist_over_delta": float(dist.iloc[-20:].median()) / delta,
            "flow_over_delta": float(flow.iloc[-1]) / delta, "err_loss": err_loss, "err_sharp": err_sharp}


@pytest.fixture(scope="module")
def small_mlp():
    return _run("mlp", 500, 32, 0.2, 250, diagnostics_every=20)


def test_small_mlp_self_stabilizes_and_theory_tracks_gd(small_mlp):
    res = small_mlp
    f = res.frames()
    # the window holds a blow-up along u and the return below 2/η
    assert float(f["predicted"].x.abs().max()) > 1e-2 > float(f["predicted"].x.abs().iloc[:20].max())
    assert float(_two_step(f["gd"].sharpness).min()) < 2 / 0.2
    check_self_stabilization(res, 0.2, warmup=0, flow_ratio=1.5)   # one cycle only: the flow has just left
    # after the blow-up, GD is much closer to θ† + v than to θ†: the prediction carries the oscillation
    late = f["predicted"].loc[150:]
    assert float((late.dist_gd / f["gd"].dist_constrained.loc[150:]).median()) < 0.5


def test_projection_residuals_recorded_and_a_loose_tolerance_is_reported(small_mlp):
    c = small_mlp.frames()["constrained"]
    assert (c.proj_converged == 1).all() and float(c.proj_residual_grad.max()) <= 1e-9
    # a deliberately too-loose cap (one linearized step, a tight tolerance) is reported, not hidden
    ds = load_dataset("digits", loss="mse", n=300)
    obj = Objective.from_module(build_model("mlp", ds.input_shape, ds.n_outputs, seed=0, width=16),
                                ds.inputs, ds.targets, "mse", dtype="float64")
    theta = obj.theta0
    lr = 1.9 / float(torch.linalg.eigvalsh(obj.hvp(theta, torch.eye(obj.dim, dtype=torch.float64)))[-1])
    with pytest.warns(RuntimeWarning, match="projection"):
        res = track(obj, theta, lr, 3, proj_max_iter=1, proj_tol=1e-14, flow=False)
    c = res.frames()["constrained"]
    assert (c.proj_converged == 0).any() and float(c.proj_residual_grad.max()) > 1e-14


@pytest.mark.slow
@pytest.mark.parametrize("model,n,width,lr,steps,warmup,binary", [
    ("mlp", 1500, 64, 0.2, 800, 350, False), ("mlp", 1500, 64, 0.25, 800, 300, False),
    # the CNN on digits 0–4 vs 5–9 (one output): its top eigenvalue is isolated (λ₂ ≈ 0.25·2/η at the
    # edge), while the 10-class problem's cluster (λ₂ ≈ 1.8/η) stops tracking at once; 300 images keep a
    # tracked step under a second (float64 convolutions' double backward is slow on a CPU)
    ("cnn", 300, 16, 0.04, 400, 140, True), ("cnn", 300, 16, 0.05, 400, 140, True),
])
def test_default_job_and_cnn_over_several_cycles(model, n, width, lr, steps, warmup, binary):
    res = _run(model, n, width, lr, steps, binary=binary, diagnostics_every=50)
    numbers = check_self_stabilization(res, lr, warmup)
    print(model, lr, res.stop_reason, numbers)
