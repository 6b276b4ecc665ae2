"""Gradient flow against its closed form on a stiff quadratic, its cost accounting, and its checkpoints."""

import numpy as np
import pytest
import torch

from selfstab import Objective
from selfstab.errors import ConfigError
from selfstab.processes.flow import GradientFlow
from selfstab.records.checkpoint import decode_state, encode_state

LR = 0.2


def _quadratic(d=12, top=11.0, seed=0):
    """``L = ½ (θ−θ*)ᵀ A (θ−θ*)`` with eigenvalues up to ``top`` (> 2/η: as stiff as the flow at the edge)."""
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    lam = torch.cat([torch.tensor([top, 0.8 * top], dtype=torch.float64),
                     torch.linspace(0.01, 3.0, d - 2, dtype=torch.float64)])
    A = Q @ torch.diag(lam) @ Q.T
    star = torch.randn(d, generator=g, dtype=torch.float64)
    theta0 = star + torch.randn(d, generator=g, dtype=torch.float64)
    obj = Objective.from_function(lambda th: 0.5 * (th - star) @ A @ (th - star), theta0)

    def exact(tau):   # θ(τ) = θ* + Q e^{−Λτ} Qᵀ (θ₀ − θ*)
        return star + Q @ (torch.exp(-lam * tau) * (Q.T @ (theta0 - star)))
    return obj, theta0, exact


@pytest.mark.parametrize("method", ["RK23", "RK45"])
def test_flow_samples_match_the_closed_form_at_eta_t(method):
    obj, theta0, exact = _quadratic()
    flow = GradientFlow(obj, theta0, LR, rtol=1e-8, atol=1e-10, method=method)
    nfev, errors = [], []
    for t in range(1, 151):
        nfev.append(flow.advance())
        assert flow.time == pytest.approx(LR * t)
        errors.append(float((flow.theta - exact(LR * t)).norm()))
    travelled = float((exact(LR * 150) - theta0).norm())
    assert max(errors) < 1e-6 * travelled
    # the solver runs at its own pace: the counts add up to what it spent, and samples falling inside a
    # step already taken cost nothing (a boundary forced at every η t would cost ≥ 4–12 evaluations each)
    assert sum(nfev) == obj.counts["grad"]
    assert min(nfev) == 0 and np.mean(nfev[50:]) < {"RK23": 3.5, "RK45": 5.5}[method]


def test_flow_reuses_the_known_gradient_for_its_first_evaluation():
    obj, theta0, _ = _quadratic()
    a, b = GradientFlow(obj, theta0, LR), GradientFlow(obj, theta0, LR)
    n_plain = a.advance()
    n_reuse = b.advance(grad0=obj.grad(theta0))
    assert n_reuse == n_plain - 1
    torch.testing.assert_close(a.theta, b.theta, rtol=0, atol=1e-14)


def test_flow_state_roundtrip_continues_bit_for_bit():
    obj, theta0, _ = _quadratic()
    ref = GradientFlow(obj, theta0, LR, method="RK45")
    for _ in range(7):
        ref.advance()
    state = decode_state(encode_state(ref.state_dict()))   # through the checkpoint encoding
    resumed = GradientFlow(obj, theta0, LR, method="RK45")
    calls = []
    counting = Objective.from_function(lambda th: (calls.append(1), obj.loss(th))[1], theta0)
    resumed.objective = counting
    resumed.load_state_dict(state)
    assert not calls   # restoring evaluates nothing
    resumed.objective = obj
    for _ in range(20):
        n_ref, n_res = ref.advance(), resumed.advance()
        assert n_ref == n_res
        assert torch.equal(ref.theta, resumed.theta)


def test_unknown_flow_method_names_the_field():
    obj, theta0, _ = _quadratic()
    with pytest.raises(ConfigError, match="track.flow_method"):
        GradientFlow(obj, theta0, LR, method="BDF")
