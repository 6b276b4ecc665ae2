"""The sharpness along a trajectory, and its gradient (Lemma 2).

:class:`EigenTracker` keeps the last few eigenvectors of one trajectory and
warm-starts each refresh from the subspace they span.  Along GD the top
eigenvector drifts slowly and, once unstable, wobbles with period 2;
Rayleigh–Ritz on the span of the last two eigenvectors (the default
``history``; the cost of one to three is in benchmarks/RESULTS.md) contains
the linear extrapolation of the drift and the wobble's two phases, so LOBPCG
has little left to do.
"""

from __future__ import annotations

from collections import deque
from typing import Literal

import torch
from torch import Tensor

from ..problem.objective import Objective, Point
from .eigen import Eigenpairs, top_eigenpairs


def sharpness_gradient(where: Objective | Point, theta: Tensor | None = None, u: Tensor | None = None) -> Tensor:
    """``∇S(θ) = ∇³L(θ)(u, u)`` (Lemma 2): the gradient of ``θ ↦ uᵀ∇²L(θ)u`` with ``u`` held fixed.

    ``where`` is a :class:`Point` (then ``theta`` is omitted) or an
    :class:`Objective` with ``theta``.  ``u`` must be the unit top eigenvector
    at ``θ``; the result has shape ``(d,)``.
    """
    point = where if isinstance(where, Point) else where.at(theta)
    if u is None:
        raise TypeError("sharpness_gradient needs the top eigenvector u")
    return point.d3(u, u)


class EigenTracker:
    """Warm-started top-``k`` eigenpairs of ``∇²L`` along one trajectory.

    ``history``: how many previous eigenvector blocks span the warm subspace.
    ``refresh(point)`` returns :class:`Eigenpairs` with signs aligned to the
    previous result (``u_t·u_{t−1} > 0``).  :attr:`hvps` and :attr:`calls`
    tally the cost.

    When a solve needs more than ``guard_after`` LOBPCG iterations *and* the
    top eigenvalues are nearly degenerate (the next Ritz value above
    ``guard_gap`` of the k-th), the tracker adds a guard vector to the block
    (``guard`` becomes 1): one more HVP per warm start and iteration, far fewer
    iterations.  After ``guard_off`` solves in a row that needed at most two
    iterations, it drops the guard again (the hard stretch is over, or the
    slow solve was only a poor first warm start).  Slow solves with a clear
    gap come from a poor warm start instead, which a guard does not help:
    there it costs more HVPs than it saves, while in a nearly degenerate
    cluster it saves many (benchmarks/RESULTS.md).

    ``min_history`` (< ``history``) makes the depth of the warm subspace
    adaptive: it starts at ``min_history`` blocks, grows by one (up to
    ``history``) after a solve that needed more than two LOBPCG iterations,
    and shrinks by one after ``guard_off`` solves in a row that needed at most one.
    Along GD far into a self-stabilization cycle the period-2 wobble of ``u``
    is large and not linear in the last two vectors: more blocks then cost one
    HVP each for the Rayleigh–Ritz step but save several LOBPCG iterations
    (benchmarks/RESULTS.md), while near the edge two suffice.

    ``momentum=False`` and ``guard_after=None`` make the *plain* start: LOBPCG
    from the Ritz vector(s) of the warm subspace alone, no guard rule.  Where
    the top eigenvalue sits in a tight cluster whose members take turns on top
    (several eigenvalues at the edge), the older vectors of the history are
    other members of the cluster: as momentum and as a guard they cost more
    iterations than they save (benchmarks/RESULTS.md, the near-degenerate edge).
    """

    def __init__(self, k: int = 1, *, tol: float | None = None, history: int = 2, max_iter: int = 200,
                 method: Literal["auto", "dense", "lobpcg", "eigsh"] = "auto",
                 on_fail: Literal["raise", "warn"] = "raise", seed: int = 0, guard: int = 0,
                 guard_after: int | None = 6, guard_gap: float = 0.97, min_history: int | None = None,
                 momentum: bool = True):
        self.k, self.tol, self.max_iter, self.method, self.on_fail = k, tol, max_iter, method, on_fail
        self.random_seed = seed   # of the cold start (ARPACK's starting vector)
        self.momentum = momentum
        self.guard, self.guard_after, self.guard_off, self.guard_gap = guard, guard_after, 10, guard_gap
        self._easy = 0
        self._history: deque[Tensor] = deque(maxlen=max(1, history))
        self.min_history = None if min_history is None else max(1, min(min_history, history))
        self.depth = self._history.maxlen if self.min_history is None else self.min_history
        self._idle = 0
        self.last: Eigenpairs | None = None
        self.last_iterations: int | None = None   # of the last solve; kept in state_dict (warm-start choices read it)
        self.hvps = 0
        self.calls = 0

    def warm_subspace(self) -> Tensor | None:
        if not self._history:
            return None
        return torch.cat(list(self._history)[: self.depth])

    def refresh(self, point: Point, extra: Tensor | None = None, start: Tensor | None = None,
                above: float | None = None, max_k: int | None = None, guard: int | None = None) -> Eigenpairs:
        """Top eigenpairs at ``point``; ``extra`` (m, d) optionally adds directions to the warm subspace.

        ``start`` (m, d), m ≥ k: warm-start from this block instead of the
        history (e.g. the eigenvectors just found at a point very close to
        ``point``); its first ``k`` rows also fix the signs.  The result joins the
        history as usual.  ``above``/``max_k``/``guard``: every eigenpair ``≥ above``
        (at least ``k``) with ``guard`` unconverged guards (:func:`~selfstab.spectrum.block_solver.lobpcg`);
        the tracker's own guard rule then stays out of it (the depth of the warm subspace still adapts).
        """
        obj = point.objective
        warm = self.warm_subspace() if start is None else start.reshape(-1, obj.dim)
        if warm is not None:
            warm = warm.to(dtype=obj.dtype, device=obj.device)
            if extra is not None:
                warm = torch.cat([warm, extra.reshape(-1, obj.dim).to(warm)])
        previous = (self._history[0] if self._history else None) if start is None else warm
        if previous is not None and above is None:
            previous = previous[: self.k]
        result = top_eigenpairs(point.hvp, obj.dim, self.k, dtype=obj.dtype, device=obj.device, warm=warm,
                                tol=self.tol, max_iter=self.max_iter, method=self.method, on_fail=self.on_fail,
                                seed=self.random_seed, previous=previous,
                                guard=self.guard if guard is None else guard, above=above, max_k=max_k,
                                momentum=self.momentum)
        if above is None:   # the guard rule (a block that follows the spectrum has its own guards)
            self._easy = self._easy + 1 if result.iterations <= 2 else 0
            gap = result.extra.get("gap_ratio", float("nan"))
            if (self.guard == 0 and self.guard_after is not None and result.iterations > self.guard_after
                    and not gap < self.guard_gap):
                self.guard = 1
            elif self.guard and self._easy >= self.guard_off:
                self.guard, self._easy = 0, 0
        if self.min_history is not None and start is None:
            self._idle = self._idle + 1 if result.iterations <= 1 else 0
            if result.iterations > 2:   # one more block costs one HVP; worth it when it saves several
                self.depth = min(self.depth + 1, self._history.maxlen)
            elif self._idle >= self.guard_off and self.depth > self.min_history:
                self.depth, self._idle = self.depth - 1, 0
        block = result.vectors
        if result.extra.get("guard") is not None and result.extra["guard"].shape[0]:
            block = torch.cat([block, result.extra["guard"]])
        self._history.appendleft(block.detach().clone())
        self.last = result
        self.last_iterations = result.iterations
        self.hvps += result.hvps
        self.calls += 1
        return result

    def reset(self) -> None:
        self._history.clear()
        self.last = self.last_iterations = None

    def seed(self, vectors: Tensor) -> None:
        """Warm-start the next solve from ``vectors`` (``(m, d)`` or ``(d,)``; e.g. eigenvectors found at a
        nearby point): the first ``k`` rows join the history as its oldest block."""
        self._history.append(vectors.reshape(-1, vectors.shape[-1])[: self.k].detach())

    def snapshot(self) -> tuple[Tensor, ...]:
        """The warm-start history as it is now (newest first), for :meth:`restore`."""
        return tuple(self._history)

    def restore(self, snapshot: tuple[Tensor, ...]) -> None:
        """Put back a history taken by :meth:`snapshot` (e.g. to replay a stretch of GD exactly)."""
        self._history.clear()
        self._history.extend(snapshot)

    def state_dict(self) -> dict:
        return {"history": [h.cpu() for h in self._history], "hvps": self.hvps, "calls": self.calls,
                "last_iterations": self.last_iterations,
                "guard": self.guard, "easy": self._easy, "depth": self.depth, "idle": self._idle}

    def load_state_dict(self, state: dict, device: torch.device | str | None = None) -> None:
        self._history.clear()
        for h in state["history"]:
            self._history.append(h.to(device) if device is not None else h)
        self.hvps, self.calls = int(state["hvps"]), int(state["calls"])
        self.last_iterations = state.get("last_iterations")
        self.guard, self._easy = int(state.get("guard", 0)), int(state.get("easy", 0))
        self.depth, self._idle = int(state.get("depth", self.depth)), int(state.get("idle", 0))
