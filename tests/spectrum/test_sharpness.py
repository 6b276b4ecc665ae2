"""The sharpness along a trajectory (spectrum/sharpness.py, docs/theory.md §2): ``sharpness_gradient`` against the
dense ``∇³L(u, u)`` and finite differences of the dense top eigenvalue; :class:`EigenTracker`'s warm starts, its
public ``seed``, the sign rule, and its snapshot and state, against ``torch.linalg.eigh`` of the dense Hessian
(tests/references.py)."""

import pytest
import torch
from torch import nn

from references import d3_contract, dense_d3, dense_hessian, dense_sharpness, dense_top, module_function, stencil
from selfstab import Objective
from selfstab.spectrum import EigenTracker, sharpness_gradient

F64 = torch.float64
# torch.func.hessian's forward mode loads decompositions through torch.jit.script, which warns in torch 2.13.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")


@pytest.fixture(scope="module")
def problem():
    """A 4-8-3 tanh network on 30 random examples (d = 67, top eigenvalues 6.4, 4.8, 4.5, …), the flat-θ loss
    written with functional_call for the references, and a point off the initialization."""
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3)).double()
    x, y = torch.randn(30, 4, generator=g, dtype=F64), torch.randn(30, 3, generator=g, dtype=F64)
    obj = Objective.from_module(model, x, y, "mse")
    f = module_function(model, x, lambda out: (out - y).pow(2).sum(1).mean())
    theta = obj.theta0 + 0.3 * torch.randn(obj.dim, generator=g, dtype=F64)
    return obj, f, theta


def _tracker(k=1):
    return EigenTracker(k, tol=1e-10, method="lobpcg")


def test_sharpness_gradient_is_lemma_2(problem):
    obj, f, theta = problem
    w, V = dense_top(dense_hessian(f, theta))
    u = V[0]
    gs = sharpness_gradient(obj, theta, u)
    assert torch.equal(sharpness_gradient(obj.at(theta), u=u), gs)          # a Point or an Objective and θ
    ref = d3_contract(dense_d3(f, theta), u, u)
    assert torch.allclose(gs, ref, rtol=0, atol=1e-12 * float(ref.norm()))
    assert torch.equal(sharpness_gradient(obj, theta, -u), gs)              # even in u: the sign rule is moot
    # the derivative of the dense top eigenvalue along a direction (gap λ₁ − λ₂ ≈ 1.6: S is smooth there;
    # 4-point stencil, h = 1e-4: truncation ~h⁴, rounding ~ε‖H‖/h ≈ 1e-11)
    d = torch.randn(obj.dim, generator=torch.Generator().manual_seed(1), dtype=F64)
    fd = stencil(lambda s: dense_sharpness(f, theta + s * d), 1e-4)
    assert float(gs @ d) == pytest.approx(fd, rel=1e-9)
    with pytest.raises(TypeError, match="needs the top eigenvector"):
        sharpness_gradient(obj, theta)


def test_warm_starts_along_a_path_reproduce_the_dense_top_eigenpairs(problem):
    """k = 2 along a slowly moving θ: each solve's values are eigh's to the Kato–Temple bound (residual² λ²/gap,
    far below the tolerance), its vectors eigh's up to sign, and the sign rule ``u_t·u_{t−1} > 0`` holds."""
    obj, f, theta = problem
    tracker = _tracker(2)
    d = torch.randn(obj.dim, generator=torch.Generator().manual_seed(2), dtype=F64)
    previous = None
    for s in range(5):
        t = theta + 1e-3 * s * d
        res = tracker.refresh(obj.at(t))
        w, V = dense_top(dense_hessian(f, t))
        assert res.converged and torch.allclose(res.values, w[:2], rtol=1e-12, atol=0)
        for i in range(2):
            assert abs(float(res.vectors[i] @ V[i])) > 1 - 1e-12
        if previous is None:      # a first solve: the largest entry of each vector positive
            assert all(float(v[v.abs().argmax()]) > 0 for v in res.vectors)
        else:
            assert all(float(a @ b) > 0 for a, b in zip(res.vectors, previous))
        previous = res.vectors
    assert tracker.calls == 5 and tracker.hvps > 0


def test_seed_starts_the_next_solve_at_the_given_vectors(problem):
    """``seed`` with eigh's top eigenvectors: the warm block already holds the answer to rounding, so the
    Rayleigh–Ritz step meets the tolerance with no LOBPCG iteration (at most one more where the residual sits at
    the tolerance), cheaper than the cold solve of the same point; the signs follow the seed."""
    obj, f, theta = problem
    w, V = dense_top(dense_hessian(f, theta))
    cold = _tracker(2).refresh(obj.at(theta))
    seeded = _tracker(2)
    seeded.seed(V[:4])                                      # (m, d): the first k rows are kept
    assert [h.shape for h in seeded.snapshot()] == [(2, obj.dim)]
    res = seeded.refresh(obj.at(theta))
    assert res.iterations <= 1 and res.hvps < cold.hvps
    assert torch.allclose(res.values, w[:2], rtol=1e-12, atol=0)
    assert torch.allclose(res.vectors, V[:2], rtol=0, atol=1e-10)
    flipped = _tracker(1)
    flipped.seed(-V[0])                                     # (d,): one vector
    assert float(flipped.refresh(obj.at(theta)).u @ V[0]) < -1 + 1e-10


def test_snapshot_and_state_replay_bit_for_bit(problem):
    obj, f, theta = problem
    d = torch.randn(obj.dim, generator=torch.Generator().manual_seed(3), dtype=F64)
    tracker = _tracker(1)
    for s in range(3):
        tracker.refresh(obj.at(theta + 1e-3 * s * d))
    snap, state = tracker.snapshot(), tracker.state_dict()
    nxt = theta + 3e-3 * d
    a = tracker.refresh(obj.at(nxt))
    tracker.restore(snap)
    b = tracker.refresh(obj.at(nxt))
    other = _tracker(1)
    other.load_state_dict(state)
    c = other.refresh(obj.at(nxt))
    for r in (b, c):
        assert torch.equal(r.values, a.values) and torch.equal(r.vectors, a.vectors) and r.hvps == a.hvps
    assert other.hvps == state["hvps"] + c.hvps and other.calls == state["calls"] + 1
    assert a.sharpness == pytest.approx(dense_sharpness(f, nxt), rel=1e-12)
    tracker.reset()
    assert tracker.snapshot() == () and tracker.last is None and tracker.warm_subspace() is None
