"""Data parallelism with ``torch.distributed``: one data shard per rank, one all-reduce per product.

A full-batch quantity is a sum over examples divided by the global ``n``
(``docs/theory.md §11``): each rank sums its own contiguous shard, and one
``all_reduce(SUM)`` of a flat contiguous tensor makes the loss, the gradient,
a batch of HVPs, ``∇³L(u, v)`` or ``∇⁴L(w, w, w)`` the full-batch value, equal
to the one-process value up to the order of the float additions.  Everything
above the objective (eigen-solvers, projections, the predicted dynamics, the
flow) runs replicated on every rank from identical inputs; :func:`check_same`
is the cheap guard that the ranks still hold the same ``θ``.

Launch with ``torchrun --nproc-per-node N ...`` and call :func:`init` once:
NCCL on ``cuda:LOCAL_RANK`` when CUDA is present, gloo on the CPU otherwise.
Communication goes through ``torch.distributed`` only.  The helpers
:func:`rank`, :func:`world_size` and :func:`is_main` also work without a
process group (rank 0 of 1).
"""

from __future__ import annotations

import os
from collections import Counter
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import Tensor

from .errors import ConfigError, SelfstabError

DEFAULT_TIMEOUT_S = 300.0
"""Collective timeout: a rank that died or hangs ends the others' waits after this many seconds."""

traffic: Counter = Counter()
"""All-reduces made by :func:`all_reduce_sum` in this process: ``calls`` and ``bytes`` (payload per rank)."""


class RankMismatchError(SelfstabError, RuntimeError):
    """Ranks that should hold identical replicated state (``θ``) do not."""


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's rank, 0 without a process group."""
    return dist.get_rank() if is_initialized() else 0


def world_size() -> int:
    """The number of ranks, 1 without a process group."""
    return dist.get_world_size() if is_initialized() else 1


def is_main() -> bool:
    """True on rank 0 (and in a plain single process): the rank that writes files and prints.

    Before the process group exists, a process that ``torchrun`` started reads its rank from ``RANK``."""
    return rank() == 0 if is_initialized() else launched_rank() == 0


def launched_rank() -> int:
    """The rank ``torchrun`` gave this process (its ``RANK``), 0 when not launched by it."""
    try:
        return int(os.environ.get("RANK", 0))
    except ValueError:
        raise ConfigError(f"RANK: not an integer ({os.environ['RANK']!r}); launch with torchrun") from None


def launched_world_size() -> int:
    """The world size of this process group, else ``torchrun``'s ``WORLD_SIZE``, else 1."""
    if is_initialized():
        return world_size()
    try:
        return int(os.environ.get("WORLD_SIZE", 1))
    except ValueError:
        raise ConfigError(f"WORLD_SIZE: not an integer ({os.environ['WORLD_SIZE']!r}); launch with torchrun") \
            from None


def init(backend: str | None = None, timeout: float = DEFAULT_TIMEOUT_S) -> tuple[int, int, torch.device]:
    """Initialise the default process group from ``torchrun``'s environment; returns ``(rank, world_size, device)``.

    Reads ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and
    ``MASTER_PORT``.  ``backend=None`` picks NCCL with device
    ``cuda:LOCAL_RANK`` when CUDA is available, else gloo with the CPU.
    ``timeout`` (seconds) bounds every collective, so a dead rank never hangs
    the others forever.  Calling it again when a group exists returns the
    existing group's values.
    """
    if not dist.is_available():
        raise ConfigError("distributed: this torch build has no torch.distributed; install a build with it")
    if float(timeout) <= 0:
        raise ConfigError(f"timeout: must be a positive number of seconds, got {timeout}")
    if backend is not None and backend not in ("gloo", "nccl"):
        raise ConfigError(f"backend: unknown backend {backend!r}; use gloo or nccl")
    if is_initialized():
        return rank(), world_size(), _default_device(dist.get_backend())
    missing = [k for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise ConfigError(f"distributed: {', '.join(missing)} not set; launch with "
                          f"`torchrun --nproc-per-node N ...` (or set them as torchrun does)")
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    if backend == "nccl":
        if not torch.cuda.is_available():
            raise ConfigError("backend: nccl needs CUDA, which is not available here; use gloo")
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group(backend=backend, timeout=timedelta(seconds=float(timeout)))
    return rank(), world_size(), _default_device(backend)


def _default_device(backend: str) -> torch.device:
    if backend == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def shutdown() -> None:
    """Destroy the default process group if there is one."""
    if is_initialized():
        dist.destroy_process_group()


def shard_bounds(n: int, world_size: int, rank: int) -> tuple[int, int]:
    """Examples ``[a, b)`` of rank ``rank`` among ``world_size``: contiguous, sizes differing by at most one.

    The first ``n % world_size`` ranks get one example more; the result depends
    on ``(n, world_size, rank)`` alone.
    """
    n, world_size, rank = int(n), int(world_size), int(rank)
    if world_size < 1:
        raise ConfigError(f"world_size: must be at least 1, got {world_size}")
    if not 0 <= rank < world_size:
        raise ConfigError(f"rank: must be in [0, {world_size}), got {rank}")
    if n < world_size:
        raise ConfigError(f"data: {n} examples for {world_size} ranks; every rank needs at least one example, "
                          f"so use at most {n} ranks or more data")
    q, r = divmod(n, world_size)
    a = rank * q + min(rank, r)
    return a, a + q + (rank < r)


def require_group() -> None:
    """A one-line error unless a default process group is initialised."""
    if not is_initialized():
        raise ConfigError("distributed: no process group is initialised; launch with torchrun and call "
                          "selfstab.distributed.init() first, or use distributed=False")


def all_reduce_sum(t: Tensor) -> Tensor:
    """The sum of ``t`` over the ranks, in one ``all_reduce`` (in place when ``t`` is contiguous; returned)."""
    t = t.contiguous()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    traffic["calls"] += 1
    traffic["bytes"] += t.numel() * t.element_size()
    return t


def _checksum(t: Tensor) -> Tensor:
    """Int64 features of ``t``'s bits (as float64, an exact conversion) that any one-bit change alters.

    Each 64-bit word is cut into four 16-bit parts; per part the plain sum and a
    position-weighted sum (weights below 2¹⁶) stay below 2⁶³ for up to 2³¹
    entries, so nothing overflows and equal tensors give equal features on any device.
    """
    x = t.detach().reshape(-1).to(torch.float64).contiguous().view(torch.int64)
    w = torch.arange(x.numel(), dtype=torch.int64, device=x.device) % 65521 + 1
    feats = [torch.tensor(x.numel(), dtype=torch.int64, device=x.device)]
    for shift in (0, 16, 32, 48):
        part = (x >> shift) & 0xFFFF
        feats += [part.sum(), (part * w).sum()]
    return torch.stack(feats)


def check_same(t: Tensor, what: str = "theta") -> None:
    """Raise :class:`RankMismatchError` on every rank unless all ranks hold bitwise the same ``t``.

    One ``all_gather`` of nine int64 checksums of ``t``'s bits (a no-op
    without a process group); the message names the ranks that differ from
    rank 0.  Costs a few elementwise passes over ``t``: cheap next to a gradient.
    """
    if not is_initialized() or world_size() == 1:
        return
    dev = _default_device(dist.get_backend())
    mine = _checksum(t).to(dev)
    every = [torch.empty_like(mine) for _ in range(world_size())]
    dist.all_gather(every, mine)
    every = torch.stack(every).cpu()
    odd = [r for r in range(1, every.shape[0]) if not torch.equal(every[r], every[0])]
    if odd:
        many = len(odd) > 1
        raise RankMismatchError(f"{what}: rank{'s' if many else ''} {', '.join(map(str, odd))} hold{'' if many else 's'} "
                                f"a different {what} than rank 0 (bitwise checksums differ); the replicated "
                                f"computation diverged across ranks")


__all__ = ["DEFAULT_TIMEOUT_S", "RankMismatchError", "all_reduce_sum", "check_same", "init", "is_initialized",
           "is_main", "launched_rank", "launched_world_size", "rank", "require_group", "shard_bounds", "shutdown",
           "traffic", "world_size"]
