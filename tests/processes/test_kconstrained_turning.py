"""The turning term of the k-constrained projection (docs/theory.md §10): how ``u_i·∇L`` changes as ``u_i`` turns,
against finite differences of a dense eigendecomposition, and what it does to the projection's convergence."""

import math
import warnings

import pytest
import torch

from references import central_difference, dense_hessian, dense_top
from selfstab import Objective
from selfstab.processes.kconstrained import k_geometry, k_project, turning_vectors
from selfstab.spectrum import EigenTracker

F64 = torch.float64


def _mlp(n=48, d_in=6, width=10, classes=4, seed=0):
    """A one-hidden-layer tanh network on random inputs with one-hot targets, as a flat-parameter function (its
    top Hessian eigenvalues cluster, one per class, as the paper's MLP's do)."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d_in, generator=g, dtype=F64)
    Y = torch.nn.functional.one_hot(torch.randint(0, classes, (n,), generator=g), classes).to(F64)
    shapes = [(width, d_in), (width,), (classes, width), (classes,)]
    sizes = [math.prod(s) for s in shapes]

    def loss(theta):
        W1, b1, W2, b2 = (t.reshape(s) for t, s in zip(torch.split(theta, sizes), shapes))
        out = torch.tanh(X @ W1.T + b1) @ W2.T + b2
        return 0.5 * ((out - Y) ** 2).sum(1).mean()

    theta0 = torch.cat([torch.randn(s, generator=g, dtype=F64).flatten() / math.sqrt(s[-1] if len(s) > 1 else 1)
                        for s in shapes])
    return loss, theta0


def _top(loss, theta):
    return dense_top(dense_hessian(loss, theta))


def test_turning_vector_is_the_derivative_of_u_dot_grad():
    loss, theta = _mlp()
    obj = Objective.from_function(loss, theta)
    w, V = _top(loss, theta)
    lr = 2.0 / float(w[0])                  # λ₁ exactly at the edge: active; λ₂, λ₃… in the block, inactive
    geom = k_geometry(obj, theta, EigenTracker(1, tol=1e-12), lr, threshold=float(w[3] / w[0]) - 1e-3)
    assert geom.k == 4
    q = turning_vectors(geom, lr, rtol=1e-13, max_iter=2000)
    u1 = geom.U[0]
    g = torch.Generator().manual_seed(1)
    for _ in range(3):
        delta = torch.randn(theta.shape, generator=g, dtype=F64)
        delta /= delta.norm()

        def f(eps):
            th = theta + eps * delta
            _, Vs = _top(loss, th)
            u = Vs[0] * torch.sign(Vs[0] @ u1)
            return float(u @ torch.func.grad(loss)(th))

        fd = central_difference(f, 1e-5)
        fixed = float(w[0]) * float(u1 @ delta)        # u₁ held fixed: the step without the term
        turned = fixed + float(q[0] @ delta)
        assert abs(fd - turned) <= 1e-6 * (abs(fd) + 1.0)
        assert abs(fd - fixed) >= 1e3 * abs(fd - turned)   # the term is what the fixed-u step misses
    assert float(q[1:].abs().max()) == 0.0            # inactive rows are zero


def test_projection_with_the_turning_term_converges_where_a_fixed_u_step_crawls():
    """Six classes, λ₂/λ₁ = 0.98 at the start: with ``u_i`` held fixed the linearized steps shrink ``u₁·∇L`` by a
    constant factor (not converged in 30 steps); with the turning term (``on``, or ``auto`` once it sees the slow
    steps) the projection converges in a few, onto points of M_k that a dense eigendecomposition confirms.  ``auto``
    starts as the fixed-u iteration and lands where that one crawls to; ``on`` may take another path on the
    (non-convex) set."""
    loss, theta = _mlp(n=100, width=16, classes=6)
    obj = Objective.from_function(loss, theta)
    w, V = _top(loss, theta)
    lr = 2.1 / float(w[0])
    tol = 1e-10
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for turning in ("off", "on", "auto"):
            tr = EigenTracker(1, tol=1e-10)
            tr.seed(V[:1])
            out[turning] = k_project(obj, theta, lr, tr, turning=turning, max_steps=30, tol=tol)
    assert out["off"].geometry.k >= 2 and not out["off"].converged and out["off"].residual_grad > 10 * tol
    # with the turning term the steps converge quadratically once near M_k: a few (5 with "on", 6 with "auto"
    # here; the old bounds 6 and 8 were those counts plus one or two).  At most 10, a third of the 30 in which
    # the fixed-u iteration does not converge, leaves room for the extra step that rounding gives a residual at
    # the tolerance and for "on" starting along another path of the non-convex set on another CPU
    assert out["on"].converged and out["on"].steps <= 10
    assert out["auto"].converged and out["auto"].steps <= 10
    crawl, auto = out["off"].geometry.theta, out["auto"].geometry.theta
    assert float((crawl - auto).norm()) <= 1e-3 * float((auto - theta).norm())   # "on" lands 0.3 away
    for p in (out["on"], out["auto"]):           # the dense check of each projected point
        ws, Vs = _top(loss, p.geometry.theta)
        grad = torch.func.grad(loss)(p.geometry.theta)
        assert float(ws[0]) <= (2 / lr) * (1 + tol) and abs(float(Vs[0] @ grad)) <= 10 * tol * float(grad.norm())
    with pytest.raises(ValueError, match="turning must be one of"):
        k_project(obj, theta, lr, EigenTracker(1), turning="yes")
