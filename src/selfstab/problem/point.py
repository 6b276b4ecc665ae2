"""The objective at one fixed ``θ`` (docs/theory.md §1): :class:`Point`, made by :meth:`Objective.at`.

A point keeps the gradient's graph, so the loss, the gradient and any number
of HVPs and third-derivative products at that ``θ`` share one forward pass
and one backward pass; each HVP after the first is one backward pass through
that graph, each ``∇³L(u, v)`` one more backward pass through ``u·∇²L v``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Callable, Iterator, Protocol

import torch
from torch import Tensor

from .autodiff import grad_or_zero

# Rows of one batched backward (``is_grads_batched``) in :meth:`Point.d3_pairs` on the CPU.  There the
# vmapped backward through an HVP's graph is memory-bound: per pair vector, with eight vectors (36 pairs),
# 2.71 HVPs in one batch of a row against 1.89 in batches of two on the paper's MLP at 5,000 inputs, 3.02
# against 2.85 on the default job's MLP (benchmarks/bench_pairs.py, RESULTS.md).  On CUDA a whole row is one
# batch.
PAIR_ROWS_CPU = 2


class Differentiable(Protocol):
    """What a :class:`Point` uses of its objective; :class:`~selfstab.problem.objective.Objective` is one.

    Named here rather than imported, so that ``point.py`` does not import
    ``objective.py`` (which imports this module to build points).
    """

    counts: Counter
    cache_graphs: bool

    @property
    def dim(self) -> int: ...
    @property
    def dtype(self) -> torch.dtype: ...
    @property
    def device(self) -> torch.device: ...
    def terms(self) -> Iterator[Callable[[Tensor], Tensor]]: ...
    def as_vectors(self, v: Tensor) -> Tensor: ...
    def loss_and_grad(self, theta: Tensor) -> tuple[Tensor, Tensor]: ...
    def reduce_sum(self, total: Tensor) -> Tensor: ...
    def reduce_value_and_grad(self, value: Tensor, grad: Tensor) -> tuple[Tensor, Tensor]: ...


@dataclass
class _Graph:
    theta: Tensor       # leaf with requires_grad
    grad: Tensor        # ∇ of this chunk's term, with its graph kept


class Point:
    """The objective at one fixed ``θ``: ``loss``, ``grad``, ``hvp`` and ``d3`` sharing work.

    The first call builds the gradient with its graph (one forward and one
    backward pass over the data); afterwards each HVP is one backward pass
    through that graph.  When the objective has several chunks and
    ``cache_graphs`` is off, the graphs are not kept (memory stays at one
    chunk) and each HVP batch recomputes them.
    """

    def __init__(self, objective: Differentiable, theta: Tensor, *, loss: Tensor | None = None,
                 grad: Tensor | None = None):
        if (loss is None) != (grad is None):
            raise ValueError("Point: give both loss and grad, or neither")
        self.objective = objective
        self.theta = theta
        self._loss: Tensor | None = loss
        self._grad: Tensor | None = grad
        self._graphs: list[_Graph] | None = None

    def _build(self, keep: bool) -> Iterator[_Graph]:
        obj = self.objective
        value = torch.zeros((), dtype=obj.dtype, device=obj.device)
        total = torch.zeros_like(self.theta)
        graphs = []
        need_value = self._grad is None
        if need_value:
            obj.counts["grad"] += 1
        for term in obj.terms():
            leaf = self.theta.detach().requires_grad_(True)
            val = term(leaf)
            g = grad_or_zero(val, leaf, create_graph=True)
            if need_value:
                value = value + val.detach()
                total += g.detach()
            gr = _Graph(leaf, g)
            if keep:
                graphs.append(gr)
            yield gr
        if need_value:
            value, total = obj.reduce_value_and_grad(value, total)
            self._loss, self._grad = value, total
        if keep:
            self._graphs = graphs

    def _graphs_iter(self) -> Iterator[_Graph]:
        if self._graphs is not None:
            return iter(self._graphs)
        return self._build(self.objective.cache_graphs)

    @property
    def loss(self) -> Tensor:
        if self._loss is None:
            if self._grad is None and not self.objective.cache_graphs:
                self._loss, self._grad = self.objective.loss_and_grad(self.theta)
            else:
                for _ in self._graphs_iter():
                    pass
        return self._loss

    @property
    def grad(self) -> Tensor:
        self.loss
        return self._grad

    def hvp(self, v: Tensor) -> Tensor:
        """``∇²L(θ) v``; ``v`` of shape ``(d,)`` or ``(k, d)``."""
        obj = self.objective
        v = obj.as_vectors(v)
        vs = v.reshape(-1, obj.dim)
        out = torch.zeros_like(vs)
        for gr in self._graphs_iter():
            for i in range(vs.shape[0]):
                out[i] += grad_or_zero(gr.grad, gr.theta, vs[i], retain_graph=True)
        out = obj.reduce_sum(out)
        obj.counts["hvp"] += vs.shape[0]
        return out.reshape(v.shape)

    def d3(self, u: Tensor, v: Tensor) -> Tensor:
        """``∇³L(θ)(u, v)``, shape ``(d,)`` (Lemma 2 with ``u = v``: ``∇S``)."""
        obj = self.objective
        u, v = obj.as_vectors(u), obj.as_vectors(v)
        out = torch.zeros_like(self.theta)
        for gr in self._graphs_iter():
            hu = grad_or_zero(gr.grad, gr.theta, u, create_graph=True, retain_graph=True)
            out += grad_or_zero(hu, gr.theta, v, retain_graph=True)
        out = obj.reduce_sum(out)
        obj.counts["d3"] += 1
        return out

    def _hvps_with_graph(self, gr: _Graph, V: Tensor) -> Tensor:
        """``H V`` for the rows of ``V`` (m, d) on one chunk's graph, keeping the graph for a further backward."""
        try:  # one batched backward (vmap over the gradient graph)
            return torch.autograd.grad(gr.grad, gr.theta, V, is_grads_batched=True, create_graph=True,
                                       retain_graph=True, allow_unused=True, materialize_grads=True)[0]
        except RuntimeError:  # an op without a batching rule: the same products one by one
            return torch.stack([grad_or_zero(gr.grad, gr.theta, v, create_graph=True, retain_graph=True) for v in V])

    def d3_form(self, U: Tensor, X: Tensor) -> Tensor:
        """``D(X) = Σ_ij X_ij ∇³L(θ)(u_i, u_j) = ∇_θ ⟨X, UᵀH(θ)U⟩`` with ``U`` held fixed (docs/theory.md §10).

        ``U`` (k, d): the vectors ``u_i`` as rows; ``X`` (k, k) symmetric (any
        dtype; used in float64 and cast).  Returns shape ``(d,)``.  One
        third-derivative product whatever ``k``: ``X`` is diagonalized,
        ``X = Σ_m μ_m c_m c_mᵀ``, so ``⟨X, UᵀHU⟩ = Σ_m μ_m w_mᵀHw_m`` with
        ``w_m = Uᵀc_m``; the ``r = rank(X)`` products ``Hw_m`` are one batched
        HVP kept in the graph and the scalar is differentiated once.  The work
        therefore grows with the rank of ``X``, not with ``k`` (a zero ``X``
        costs nothing).  Counted as one ``d3``.
        """
        obj = self.objective
        U = obj.as_vectors(U).reshape(-1, obj.dim)
        X = torch.as_tensor(X, dtype=torch.float64).reshape(U.shape[0], U.shape[0]).cpu()
        X = 0.5 * (X + X.T)
        out = torch.zeros_like(self.theta)
        if U.shape[0] == 0:
            return out
        mu, C = torch.linalg.eigh(X)
        keep = mu.abs() > 1e-15 * float(mu.abs().max()) if float(mu.abs().max()) > 0 else mu.abs() > 0
        if not bool(keep.any()):
            return out
        W = C[:, keep].T.to(U) @ U                         # (r, d)
        mu = mu[keep].to(U)
        for gr in self._graphs_iter():
            HW = self._hvps_with_graph(gr, W)
            out += grad_or_zero((mu[:, None] * W * HW).sum(), gr.theta, retain_graph=True)
        out = obj.reduce_sum(out)
        obj.counts["d3"] += 1
        return out

    def d3_pairs(self, U: Tensor) -> Tensor:
        """The pair vectors ``∇³L(θ)(u_i, u_j)`` for ``i ≤ j`` (docs/theory.md §10), shape ``(k(k+1)/2, d)``.

        Rows in the order of ``torch.triu_indices(k, k)``: (0,0), (0,1), …, (0,k−1),
        (1,1), ….  Cost: ``k`` HVPs kept in the point's gradient graph (``Hu_i``)
        and then ``k(k+1)/2`` backward passes through them (``∇(u_jᵀHu_i)`` for
        ``j ≥ i``, batched: all of a row on CUDA, :data:`PAIR_ROWS_CPU` at a
        time on the CPU), i.e. less than ``k(k+1)/2`` separate :meth:`d3` calls,
        which would each rebuild their ``Hu_i``.  Counted as ``k(k+1)/2`` ``d3``.
        """
        obj = self.objective
        U = obj.as_vectors(U).reshape(-1, obj.dim)
        k = U.shape[0]
        out = torch.zeros(k * (k + 1) // 2, obj.dim, dtype=self.theta.dtype, device=self.theta.device)
        if k == 0:
            return out
        chunk = k if self.theta.device.type == "cuda" else PAIR_ROWS_CPU
        for gr in self._graphs_iter():
            row = 0
            for i in range(k):
                # Hu_i on its own graph (a slice of a batched product would carry the whole batch backwards)
                hu = grad_or_zero(gr.grad, gr.theta, U[i], create_graph=True, retain_graph=True)
                for s in range(i, k, chunk):
                    rows = U[s:s + chunk]
                    if hu.requires_grad:
                        try:
                            block = torch.autograd.grad(hu, gr.theta, rows, is_grads_batched=True, retain_graph=True,
                                                        allow_unused=True, materialize_grads=True)[0]
                        except RuntimeError:
                            block = torch.stack([grad_or_zero(hu, gr.theta, v, retain_graph=True) for v in rows])
                        out[row:row + rows.shape[0]] += block
                    row += rows.shape[0]
        out = obj.reduce_sum(out)
        obj.counts["d3"] += k * (k + 1) // 2
        return out

    def d4(self, w: Tensor) -> Tensor:
        """``∇⁴L(θ)(w, w, w)``, shape ``(d,)`` (for the ``ρ₄`` estimate of Appendix E)."""
        obj = self.objective
        w = obj.as_vectors(w)
        out = torch.zeros_like(self.theta)
        for gr in self._graphs_iter():
            hw = grad_or_zero(gr.grad, gr.theta, w, create_graph=True, retain_graph=True)
            tww = grad_or_zero(hw, gr.theta, w, create_graph=True, retain_graph=True)
            out += grad_or_zero(tww, gr.theta, w, retain_graph=True)
        out = obj.reduce_sum(out)
        obj.counts["d4"] += 1
        return out
