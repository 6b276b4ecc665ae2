"""The exact full-batch objective ``L(θ)`` on a flat parameter vector (docs/theory.md §1).

Everything downstream (spectrum, gradient descent, the tracked processes) sees
only an :class:`Objective`: ``loss``, ``grad``, ``hvp`` and ``d3`` of a flat
``θ ∈ R^d``.  Nothing there knows about modules or batches.

Derivatives are taken by plain reverse mode, nested: an HVP is a backward pass
through the gradient's graph (reverse-over-reverse), which is not slower
than ``jvp`` of ``grad`` (forward-over-reverse; benchmarks/RESULTS.md, table 1), and
``∇³L(u, v)`` is one more backward pass through ``u·∇²L v``.

The data are processed in chunks to bound memory.  Each chunk contributes
``Σ_{i∈chunk} ℓ_i / n`` and the contributions are added, so the full-batch
value does not depend on the chunking beyond rounding.

At a fixed ``θ``, :meth:`Objective.at` returns a :class:`Point` that keeps the
gradient's graph, so the loss, the gradient and any number of HVPs and
third-derivative products at that ``θ`` share one forward pass and one
backward pass.  This is what makes a warm-started eigen-solve cheap: every HVP
after the first costs one backward pass of the gradient graph.
"""

from __future__ import annotations

import copy
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from .layers import replace_layernorms
from .losses import check_targets, get_loss, prepare_targets

Term = Callable[[Tensor], Tensor]

_DTYPES = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16, "bfloat16": torch.bfloat16}


def as_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """``"float64"`` or ``torch.float64`` → ``torch.float64``; anything else is a one-line error."""
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return _DTYPES[str(dtype).removeprefix("torch.")]
    except KeyError:
        raise ConfigError(f"dtype: unknown dtype {dtype!r}; use float32 or float64") from None


def _as_tuple(x: Tensor | Sequence[Tensor]) -> tuple[Tensor, ...]:
    return (x,) if isinstance(x, Tensor) else tuple(x)


def _refuse_running_stats(model: nn.Module) -> None:
    """A full-batch loss must be a function of θ alone: refuse layers with running statistics."""
    for name, mod in model.named_modules():
        is_bn = isinstance(mod, nn.modules.batchnorm._BatchNorm)
        is_in = isinstance(mod, nn.modules.instancenorm._InstanceNorm) and mod.track_running_stats
        if is_bn or is_in:
            raise ConfigError(
                f"model: layer {name or type(mod).__name__!r} ({type(mod).__name__}) keeps running statistics, "
                f"so the loss depends on how the batch is split; use GroupNorm or LayerNorm instead"
            )


def _grad(outputs: Tensor, inputs: Tensor, grad_outputs: Tensor | None = None, create_graph: bool = False,
          retain_graph: bool | None = None) -> Tensor:
    """``torch.autograd.grad`` with a zero result where the output does not depend on the input."""
    if not outputs.requires_grad:
        return torch.zeros_like(inputs)
    (g,) = torch.autograd.grad(outputs, inputs, grad_outputs=grad_outputs, create_graph=create_graph,
                               retain_graph=retain_graph, allow_unused=True, materialize_grads=True)
    return g


class Objective:
    """Full-batch ``L(θ)`` on a flat ``θ`` with exact derivatives to third order.

    Build one with :meth:`from_module` (a ``nn.Module``, inputs, targets, a loss
    name) or :meth:`from_function` (a function of the flat vector).  All
    vectors are 1-D tensors of length :attr:`dim` in :attr:`dtype` on
    :attr:`device`; a batch of vectors is a ``(k, dim)`` tensor.

    :attr:`counts` tallies the evaluations (``loss``, ``grad``, ``hvp``,
    ``d3``) so that processes and benchmarks can report what they spent.
    """

    def __init__(self, terms: Callable[[], Iterator[Term]], theta0: Tensor, *, n_chunks: int = 1,
                 remake: Callable[[torch.dtype | None, torch.device | None], "Objective"] | None = None,
                 cache_graphs: bool | None = None, outputs: Callable[[Tensor, tuple], Tensor] | None = None,
                 info: dict | None = None, reduce: Callable[[Tensor], Tensor] | None = None,
                 model: nn.Module | None = None):
        self._terms = terms
        self.model = model   # the module behind a from_module objective (None for a plain function)
        # Totals the per-chunk sums across processes (data parallelism, docs/theory.md §11): one call per
        # product on a flat contiguous tensor; None is the identity (one process holds all the data).
        self._reduce = reduce
        self.theta0 = theta0.detach()
        self.n_chunks = n_chunks
        self._remake = remake
        self.cache_graphs = (n_chunks == 1) if cache_graphs is None else bool(cache_graphs)
        self._outputs = outputs
        self.info = dict(info or {})
        self.counts: Counter = Counter()

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_function(cls, fn: Callable[[Tensor], Tensor], theta0: Tensor) -> "Objective":
        """``L = fn(θ)`` for a differentiable scalar function of the flat vector."""
        theta0 = torch.as_tensor(theta0)
        if theta0.dim() != 1:
            raise ConfigError(f"theta0: must be a flat vector, got shape {tuple(theta0.shape)}")

        def terms():
            yield fn

        def remake(dtype, device):
            t = theta0.to(dtype=dtype or theta0.dtype, device=device or theta0.device)
            return cls.from_function(fn, t)

        return cls(terms, theta0, remake=remake, info={"kind": "function"})

    @classmethod
    def from_module(cls, model: nn.Module, inputs: Tensor | Sequence[Tensor], targets: Tensor, loss: str = "mse",
                    *, chunk_size: int | None = None, weight_decay: float = 0.0, dtype: str | torch.dtype | None = None,
                    device: str | torch.device | None = None, cache_graphs: bool | None = None,
                    distributed: bool = False, global_n: int | None = None) -> "Objective":
        """``L(θ) = mean_i ℓ(f_θ(x_i), y_i) [+ weight_decay/2 ‖θ‖²]`` over the whole data set.

        ``inputs`` is a tensor or a tuple of tensors (e.g. tokens and a padding
        mask) whose first dimension indexes examples; the model is called as
        ``model(*chunk)``.  ``chunk_size`` bounds how many examples go through
        the model at once (``None``: all).  The model is copied, put in eval
        mode (no dropout), and must not keep running statistics; its
        ``nn.LayerNorm`` layers are computed with plain ops (same parameters)
        so that third derivatives are exact.

        ``distributed=True`` (data parallelism, docs/theory.md §11) needs an
        initialised process group (:func:`selfstab.distributed.init`).  Each
        rank keeps its contiguous shard
        (:func:`selfstab.distributed.shard_bounds`) of the given data, chunks
        it as above, divides by the global ``n``, and totals every loss,
        gradient, HVP batch, ``d3`` and ``d4`` with one ``all_reduce(SUM)``;
        the weight-decay term is added on rank 0 only.  With ``global_n`` the
        inputs are already this rank's shard of a data set of ``global_n``
        examples (a loader that reads its shard alone).  ``outputs`` stays
        local.
        """
        loss_fn = get_loss(loss)
        if not isinstance(model, nn.Module):
            raise ConfigError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
        _refuse_running_stats(model)
        xs = _as_tuple(inputs)
        if not xs or not all(isinstance(x, Tensor) for x in xs):
            raise ConfigError("inputs: expected a tensor or a tuple of tensors")
        targets = torch.as_tensor(targets)
        n = targets.shape[0] if targets.dim() else 0
        for x in xs:
            if x.shape[0] != n:
                raise ConfigError(f"inputs: {x.shape[0]} examples but targets have {n}; they must match")
        if n == 0:
            raise ConfigError("targets: the data set is empty")
        if chunk_size is not None and int(chunk_size) <= 0:
            raise ConfigError(f"chunk_size: must be a positive number of examples, got {chunk_size}")
        if weight_decay < 0:
            raise ConfigError(f"weight_decay: must be ≥ 0, got {weight_decay}")
        n_all, reduce, shard, add_decay, n_most = n, None, None, True, n
        if distributed:
            from .. import distributed as dist_
            dist_.require_group()
            rank, ws = dist_.rank(), dist_.world_size()
            n_all = n if global_n is None else int(global_n)
            shard = dist_.shard_bounds(n_all, ws, rank)
            if global_n is None:
                xs, targets = tuple(x[shard[0]:shard[1]] for x in xs), targets[shard[0]:shard[1]]
            elif n != shard[1] - shard[0]:
                raise ConfigError(f"global_n: rank {rank} of {ws} should hold examples [{shard[0]}, {shard[1]}) of "
                                  f"{n_all}, but was given {n}; load the shard from shard_bounds")
            n = shard[1] - shard[0]
            n_most = dist_.shard_bounds(n_all, ws, 0)[1]  # rank 0 holds a largest shard
            reduce, add_decay = dist_.all_reduce_sum, rank == 0
        elif global_n is not None:
            raise ConfigError("global_n: only meaningful with distributed=True; drop it or set distributed=True")

        model = copy.deepcopy(model)
        replace_layernorms(model)  # the fused kernel's third derivative is wrong (see layers.py)
        ref = next(iter(model.parameters()), None)
        if ref is None:
            raise ConfigError("model: it has no trainable parameters")
        dt = as_dtype(dtype) if dtype is not None else ref.dtype
        dev = torch.device(device) if device is not None else ref.device
        model = model.to(dtype=dt, device=dev)
        xs = tuple(x.to(device=dev, dtype=dt) if x.is_floating_point() else x.to(device=dev) for x in xs)
        y = prepare_targets(loss, targets)
        y = y.to(device=dev, dtype=dt) if y.is_floating_point() else y.to(device=dev)

        names = [k for k, p in model.named_parameters() if p.requires_grad]
        params = dict(model.named_parameters())
        shapes = [params[k].shape for k in names]
        sizes = [params[k].numel() for k in names]
        theta0 = torch.cat([params[k].detach().reshape(-1) for k in names])

        def unflatten(theta: Tensor) -> dict[str, Tensor]:
            return {k: t.view(s) for k, t, s in zip(names, torch.split(theta, sizes), shapes)}

        def call(theta: Tensor, chunk: tuple[Tensor, ...]) -> Tensor:
            return torch.func.functional_call(model, unflatten(theta), chunk)

        # A generic check beyond the known layer types: buffers that move in training mode.
        probe = tuple(x[: min(n, 4)] for x in xs)
        before = {k: b.clone() for k, b in model.named_buffers()}
        model.train()
        try:
            with torch.no_grad():
                out = call(theta0, probe)
        except Exception as exc:  # the user's model failed on the user's data: say so in one line
            shapes = ", ".join(str(tuple(x.shape)) for x in xs)   # the user's data, not the probe
            raise ConfigError(f"inputs: the model failed on the inputs of shape {shapes} (tried on the first "
                              f"{probe[0].shape[0]} examples): {type(exc).__name__}: "
                              f"{' '.join(str(exc).split())}") from None
        finally:
            for k, b in model.named_buffers():
                if k in before:
                    b.copy_(before[k])
        changed = [k for k, b in model.named_buffers() if k in before and b.shape == before[k].shape
                   and not torch.equal(b, before[k])]
        if changed:
            raise ConfigError(f"model: buffer {changed[0]!r} changes in training mode, so the loss depends on how "
                              f"the batch is split; use GroupNorm or LayerNorm instead of BatchNorm")
        model.eval()
        check_targets(loss, out, y)

        size = n if chunk_size is None else min(int(chunk_size), n)
        bounds = [(i, min(i + size, n)) for i in range(0, n, size)]

        def terms():
            for a, b in bounds:
                chunk = tuple(x[a:b] for x in xs)
                yb = y[a:b]
                yield lambda theta, chunk=chunk, yb=yb: loss_fn(call(theta, chunk), yb).sum() / n_all
            if weight_decay and add_decay:
                yield lambda theta: 0.5 * weight_decay * theta.pow(2).sum()

        def remake(dtype_, device_):
            return cls.from_module(model, xs, targets, loss, chunk_size=chunk_size, weight_decay=weight_decay,
                                   dtype=dtype_ or dt, device=device_ or dev, cache_graphs=cache_graphs,
                                   distributed=distributed, global_n=n_all if distributed else None)

        def outputs(theta: Tensor, inputs_: tuple[Tensor, ...]) -> Tensor:
            with torch.no_grad():
                outs = [call(theta, tuple(x[a:b] for x in inputs_))
                        for a, b in [(i, min(i + size, inputs_[0].shape[0])) for i in range(0, inputs_[0].shape[0], size)]]
            return torch.cat(outs)

        info = {"kind": "module", "loss": loss, "n": n_all, "chunk_size": size, "weight_decay": weight_decay,
                "param_names": names, "param_sizes": sizes}
        n_bounds = len(bounds)
        if distributed:
            # Every rank takes the same path through Point (same collectives in the same order), so the
            # chunk count and the graph-caching default follow the largest shard, not this one.
            n_bounds = 1 if chunk_size is None else -(-n_most // int(chunk_size))
            info.update(world_size=dist_.world_size(), rank=dist_.rank(), shard=shard)
        obj = cls(terms, theta0, n_chunks=n_bounds + bool(weight_decay), remake=remake,
                  cache_graphs=cache_graphs if cache_graphs is not None else n_bounds == 1,
                  outputs=outputs, info=info, reduce=reduce, model=model)
        return obj

    # -- basic properties ---------------------------------------------------------------------
    @property
    def dim(self) -> int:
        return self.theta0.numel()

    @property
    def dtype(self) -> torch.dtype:
        return self.theta0.dtype

    @property
    def device(self) -> torch.device:
        return self.theta0.device

    def to(self, dtype: str | torch.dtype | None = None, device: str | torch.device | None = None) -> "Objective":
        """The same objective in another dtype and/or on another device (a new object)."""
        dt = as_dtype(dtype) if dtype is not None else None
        dev = torch.device(device) if device is not None else None
        if (dt is None or dt == self.dtype) and (dev is None or dev == self.device):
            return self
        if self._remake is None:
            raise ConfigError("objective: this objective cannot change dtype or device")
        new = self._remake(dt, dev)
        new.counts = self.counts  # one tally across precisions
        return new

    def vector(self, theta: Tensor | None = None) -> Tensor:
        """``theta`` (default ``theta0``) as a detached flat vector in this objective's dtype and device."""
        t = self.theta0 if theta is None else torch.as_tensor(theta)
        if t.dim() != 1 or t.numel() != self.dim:
            raise ConfigError(f"theta: expected a flat vector of length {self.dim}, got shape {tuple(t.shape)}")
        return t.detach().to(dtype=self.dtype, device=self.device)

    def terms(self) -> Iterator[Term]:
        """The terms whose sum is this rank's share of ``L`` (one per chunk, plus weight decay)."""
        return self._terms()

    def as_vectors(self, v: Tensor) -> Tensor:
        v = torch.as_tensor(v).to(dtype=self.dtype, device=self.device)
        if v.shape[-1] != self.dim or v.dim() not in (1, 2):
            raise ConfigError(f"vector: expected shape ({self.dim},) or (k, {self.dim}), got {tuple(v.shape)}")
        return v

    # -- evaluations --------------------------------------------------------------------------
    def loss(self, theta: Tensor) -> Tensor:
        """``L(θ)`` as a 0-d tensor."""
        theta = self.vector(theta)
        self.counts["loss"] += 1
        with torch.no_grad():
            value = sum(term(theta) for term in self.terms())
            return self.reduce_sum(torch.as_tensor(value).reshape(1))[0]

    def loss_and_grad(self, theta: Tensor) -> tuple[Tensor, Tensor]:
        theta = self.vector(theta).requires_grad_(True)
        self.counts["grad"] += 1
        value = torch.zeros((), dtype=self.dtype, device=self.device)
        g = torch.zeros_like(theta)
        for term in self.terms():
            val = term(theta)
            value = value + val.detach()
            g += _grad(val, theta)
        return self.reduce_value_and_grad(value, g.detach())

    def reduce_sum(self, total: Tensor) -> Tensor:
        """This rank's sum totalled over all ranks (one collective); the identity with one process."""
        return total if self._reduce is None else self._reduce(total)

    def reduce_value_and_grad(self, value: Tensor, grad: Tensor) -> tuple[Tensor, Tensor]:
        """The loss and the gradient totalled over all ranks in one collective of ``[L, ∇L]``."""
        if self._reduce is None:
            return value, grad
        both = self._reduce(torch.cat([value.reshape(1), grad.reshape(-1)]))
        return both[0], both[1:]

    def grad(self, theta: Tensor) -> Tensor:
        """``∇L(θ)``, shape ``(d,)``."""
        return self.loss_and_grad(theta)[1]

    def hvp(self, theta: Tensor, v: Tensor) -> Tensor:
        """``∇²L(θ) v`` for ``v`` of shape ``(d,)`` or a batch ``(k, d)`` (one forward pass for the batch)."""
        return self.at(theta).hvp(v)

    def d3(self, theta: Tensor, u: Tensor, v: Tensor) -> Tensor:
        """The vector ``∇³L(θ)(u, v)`` = ``∇_θ (uᵀ ∇²L(θ) v)``, shape ``(d,)``."""
        return self.at(theta).d3(u, v)

    def at(self, theta: Tensor, *, loss: Tensor | None = None, grad: Tensor | None = None) -> "Point":
        """Everything at one ``θ``, sharing one gradient graph (see :class:`Point`).

        ``loss`` and ``grad``: values already known at ``θ`` (e.g. restored from a
        checkpoint); they are used as they are, not recomputed nor counted.
        """
        return Point(self, self.vector(theta), loss=loss, grad=grad)

    def outputs(self, theta: Tensor, inputs: Tensor | Sequence[Tensor]) -> Tensor:
        """Model outputs on other inputs (e.g. a test split), in chunks, without gradients."""
        if self._outputs is None:
            raise ConfigError("objective: built from a function, it has no model outputs")
        xs = tuple(x.to(device=self.device, dtype=self.dtype) if x.is_floating_point() else x.to(self.device)
                   for x in _as_tuple(inputs))
        return self._outputs(self.vector(theta), xs)


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

    def __init__(self, objective: Objective, theta: Tensor, *, loss: Tensor | None = None,
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
            g = _grad(val, leaf, create_graph=True)
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
                out[i] += _grad(gr.grad, gr.theta, vs[i], retain_graph=True)
        out = obj.reduce_sum(out)
        obj.counts["hvp"] += vs.shape[0]
        return out.reshape(v.shape)

    def d3(self, u: Tensor, v: Tensor) -> Tensor:
        """``∇³L(θ)(u, v)``, shape ``(d,)`` (Lemma 2 with ``u = v``: ``∇S``)."""
        obj = self.objective
        u, v = obj.as_vectors(u), obj.as_vectors(v)
        out = torch.zeros_like(self.theta)
        for gr in self._graphs_iter():
            hu = _grad(gr.grad, gr.theta, u, create_graph=True, retain_graph=True)
            out += _grad(hu, gr.theta, v, retain_graph=True)
        out = obj.reduce_sum(out)
        obj.counts["d3"] += 1
        return out

    def _hvps_with_graph(self, gr: _Graph, V: Tensor) -> Tensor:
        """``H V`` for the rows of ``V`` (m, d) on one chunk's graph, keeping the graph for a further backward."""
        try:  # one batched backward (vmap over the gradient graph)
            return torch.autograd.grad(gr.grad, gr.theta, V, is_grads_batched=True, create_graph=True,
                                       retain_graph=True, allow_unused=True, materialize_grads=True)[0]
        except RuntimeError:  # an op without a batching rule: the same products one by one
            return torch.stack([_grad(gr.grad, gr.theta, v, create_graph=True, retain_graph=True) for v in V])

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
            out += _grad((mu[:, None] * W * HW).sum(), gr.theta, retain_graph=True)
        out = obj.reduce_sum(out)
        obj.counts["d3"] += 1
        return out

    def d3_pairs(self, U: Tensor) -> Tensor:
        """The pair vectors ``∇³L(θ)(u_i, u_j)`` for ``i ≤ j`` (docs/theory.md §10), shape ``(k(k+1)/2, d)``.

        Rows in the order of ``torch.triu_indices(k, k)``: (0,0), (0,1), …, (0,k−1),
        (1,1), ….  Cost: ``k`` HVPs kept in the point's gradient graph (``Hu_i``)
        and then ``k(k+1)/2`` backward passes through them (``∇(u_jᵀHu_i)`` for
        ``j ≥ i``, one batched backward per ``i``), i.e. somewhat less
        than ``k(k+1)/2`` separate :meth:`d3` calls, which would each rebuild
        their ``Hu_i``.  Counted as ``k(k+1)/2`` ``d3``.
        """
        obj = self.objective
        U = obj.as_vectors(U).reshape(-1, obj.dim)
        k = U.shape[0]
        out = torch.zeros(k * (k + 1) // 2, obj.dim, dtype=self.theta.dtype, device=self.theta.device)
        if k == 0:
            return out
        for gr in self._graphs_iter():
            row = 0
            for i in range(k):
                rest = U[i:]
                # Hu_i on its own graph (a slice of a batched product would carry the whole batch backwards)
                hu = _grad(gr.grad, gr.theta, U[i], create_graph=True, retain_graph=True)
                if hu.requires_grad:
                    try:
                        block = torch.autograd.grad(hu, gr.theta, rest, is_grads_batched=True, retain_graph=True,
                                                    allow_unused=True, materialize_grads=True)[0]
                    except RuntimeError:
                        block = torch.stack([_grad(hu, gr.theta, v, retain_graph=True) for v in rest])
                    out[row:row + rest.shape[0]] += block
                row += rest.shape[0]
        out = obj.reduce_sum(out)
        obj.counts["d3"] += k * (k + 1) // 2
        return out

    def d4(self, w: Tensor) -> Tensor:
        """``∇⁴L(θ)(w, w, w)``, shape ``(d,)`` (for the ``ρ₄`` estimate of Appendix E)."""
        obj = self.objective
        w = obj.as_vectors(w)
        out = torch.zeros_like(self.theta)
        for gr in self._graphs_iter():
            hw = _grad(gr.grad, gr.theta, w, create_graph=True, retain_graph=True)
            tww = _grad(hw, gr.theta, w, create_graph=True, retain_graph=True)
            out += _grad(tww, gr.theta, w, retain_graph=True)
        out = obj.reduce_sum(out)
        obj.counts["d4"] += 1
        return out
