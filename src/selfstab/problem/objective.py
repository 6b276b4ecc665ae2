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
from typing import Callable, Iterator, Sequence

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from .layers import replace_layernorms
from .losses import check_targets, get_loss, prepare_targets
from .autodiff import grad_or_zero
from .point import Point

__all__ = ["Objective", "Point", "as_dtype"]

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
            g += grad_or_zero(val, theta)
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
