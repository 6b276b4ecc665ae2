"""The critical block (docs/theory.md §10): the top eigenpairs at the edge and their pair vectors.

Shared by the central flow (:mod:`~selfstab.processes.central`) and ``θ†_k``
(:mod:`~selfstab.processes.kconstrained`): the block an eigen-tracker
follows (every eigenvalue above a threshold plus a guard), the critical
count, pair vectors ``p_ij = ∇³L(u_i, u_j)`` re-expressed in a rotated basis
of the same subspace, the first-order change of the block along a direction
``[p_ij·v]``, a cache that carries pair vectors from one eigen-solve to
the next, and :class:`KGeometry`, the block at one point with the constraints
of ``θ†_k`` that are active there (:func:`active_set`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ..problem.objective import Objective
from ..problem.point import Point
from ..spectrum import EigenTracker, Eigenpairs
from ..spectrum.sdcp import smat, svec_weights
from .geometry import point_from_state, point_state

BLOCK_GUARD = 2    # unconverged guard vectors below the critical block (benchmarks/bench_block.py)


def refresh_block(tracker: EigenTracker, point: Point, lr: float, track_threshold: float = 0.975,
                  max_k: int | None = None, from_last: bool = False, guard: int = BLOCK_GUARD) -> Eigenpairs:
    """Top eigenpairs at ``point``: every eigenvalue ``≥ track_threshold·2/η`` (at least the top one), then the
    first guard.

    One LOBPCG solve whose block follows the spectrum (``lobpcg(above=...)``): a
    block that must grow takes its new vectors from the subspace it already
    holds, and ``guard`` guard vectors below the edge are iterated but not
    converged.  The result's last entry is the first guard (its Ritz value, a
    lower bound on the next eigenvalue, and its residual); ``converged`` and
    ``extra["wanted"]`` concern the wanted pairs.  ``max_k`` caps them
    (default: the dimension).  ``from_last``: warm-start from the tracker's
    last block alone instead of its history (a smooth path sampled finely,
    such as the flow's substeps, needs no history: one block costs ``k`` HVPs
    for the Rayleigh–Ritz step, the history several times that).
    """
    tracker.k = 1
    history = tracker.snapshot() if from_last else ()
    start = history[0] if history else None        # the newest block: the last solve's vectors and guards
    eig = tracker.refresh(point, start=start, above=track_threshold * 2.0 / lr, max_k=max_k, guard=guard)
    g = eig.extra["guard"][:1]
    gv, gr = eig.extra["guard_values"][:1], eig.extra["guard_residuals"][:1]
    if not g.shape[0]:
        return eig
    return Eigenpairs(torch.cat([eig.values, gv]), torch.cat([eig.vectors, g]),
                      torch.cat([eig.images, eig.extra["guard_images"][:1]]),
                      torch.cat([eig.residuals, gr]), eig.hvps, eig.iterations, eig.converged, eig.method,
                      {**eig.extra, "wanted": int(eig.values.numel())})


def critical_count(values: Tensor, lr: float, threshold: float = 0.975) -> int:
    """How many of the (descending) ``values`` are ``≥ threshold·2/η``."""
    return int((torch.as_tensor(values, dtype=torch.float64) >= threshold * 2.0 / lr).sum())


def rotation(new: Tensor, old: Tensor) -> Tensor:
    """The orthogonal polar factor (float64) of the overlap ``new·oldᵀ`` of two (k, d) bases: the rotation
    closest to it, so a subspace that has drifted a little is not shrunk."""
    W, _, Vh = torch.linalg.svd((new @ old.T).double())
    return W @ Vh


def rotate_pairs(pairs: Tensor, old: Tensor, new: Tensor) -> Tensor:
    """Pair vectors of the basis ``old`` (k, d) re-expressed in the basis ``new`` (k, d) of the same subspace.

    ``p'_ij = Σ_ab R_ia R_jb p_ab`` with ``R`` the orthogonal polar factor of the overlap ``new·oldᵀ`` (the
    rotation closest to it: a subspace that has drifted a little is not shrunk); exact when the span is
    unchanged and ``∇³L`` is.
    """
    k = old.shape[0]
    iu, ju = torch.triu_indices(k, k)
    full = pairs.new_zeros(k, k, pairs.shape[1])
    full[iu, ju] = pairs
    full[ju, iu] = pairs
    R = rotation(new, old).to(pairs)
    rot = torch.einsum("ia,jb,abd->ijd", R, R, full)
    return rot[iu, ju]


def same_subspace(U: Tensor, V: Tensor, tol: float) -> bool:
    """Whether the orthonormal rows of ``U`` and ``V`` (k, d) span nearly the same subspace:
    ``max |RRᵀ − I| ≤ tol`` for the overlap ``R = U Vᵀ``."""
    k = U.shape[0]
    if V.shape[0] != k:
        return False
    R = (U @ V.T).double()
    return float((R @ R.T - torch.eye(k, dtype=R.dtype, device=R.device)).abs().max()) <= tol


def pair_matrix(pairs: Tensor, v: Tensor) -> np.ndarray:
    """The symmetric ``k×k`` matrix ``[p_ij·v]`` of the pair vectors (``triu_indices`` rows) against ``v``: how
    the critical block ``UᵀHU`` changes along ``v`` to first order."""
    m = pairs.shape[0]
    k = int(round((math.sqrt(8 * m + 1) - 1) / 2))
    return smat((pairs @ v.to(pairs)).double().cpu().numpy() * svec_weights(k), k)


def block_fields(values: Tensor, k_crit: int, lr: float) -> dict[str, float]:
    """``lambda_i`` for the tracked block and ``next_ratio = η λ_{k+1}/2`` (the first eigenvalue outside the
    critical set over the edge; NaN when the block holds none).  From :func:`refresh_block` the last value
    is the first guard's Ritz value, a lower bound on that eigenvalue (to about its residual)."""
    out = {f"lambda_{i + 1}": float(v) for i, v in enumerate(values)}
    out["next_ratio"] = float(values[k_crit]) * lr / 2 if values.numel() > k_crit else math.nan
    return out


@dataclass
class PairCache:
    """Pair vectors kept from one eigen-solve to the next (``pairs_every > 1``).

    ``pairs`` (k(k+1)/2, d) of the basis ``U`` (k, d), computed at ``theta``
    where the critical block was ``block`` (k, k); ``age``: eigen-solves they
    have served.  In chord mode ``block + [p_ij·(θ − theta)]`` is the model of
    ``UᵀH(θ)U`` that the next solve checks (``chord_tol``).
    """

    pairs: Tensor | None = None
    U: Tensor | None = None
    theta: Tensor | None = None
    block: np.ndarray | None = None
    age: int = 0

    def reusable(self, U: Tensor, pairs_every: int, rotation_tol: float) -> bool:
        """Same critical dimension, not too old, and ``U`` spans (nearly) the same subspace."""
        if self.pairs is None or self.U is None or self.age >= pairs_every or not U.shape[0]:
            return False
        return same_subspace(U, self.U, rotation_tol)

    def model_error(self, U: Tensor, theta: Tensor, values: Tensor, lr: float) -> float:
        """``max |R(block + [p·Δθ])Rᵀ − diag(values)|·η/2``: how far the first-order model of the critical
        block, carried from where the pairs were taken, is from the block solved at ``theta`` (× 2/η)."""
        model = self.block + pair_matrix(self.pairs, theta - self.theta)
        R = rotation(U, self.U).cpu().numpy()
        return float(np.abs(R @ model @ R.T - np.diag(values.double().cpu().numpy())).max()) * lr / 2

    def state_dict(self) -> dict:
        return {"pairs": None if self.pairs is None else self.pairs.cpu(), "U": None if self.U is None else self.U.cpu(),
                "theta": None if self.theta is None else self.theta.cpu(), "block": self.block, "age": self.age}

    def load_state_dict(self, state: dict, like: Tensor) -> None:
        move = (lambda t: None if t is None else t.to(like))
        self.pairs, self.U, self.theta = move(state["pairs"]), move(state["U"]), move(state["theta"])
        self.block, self.age = state["block"], int(state["age"])


def active_set(values: Tensor, lr: float, active_rtol: float = 1e-3) -> Tensor:
    """Boolean (k,): the top eigenvalue, and every one within ``active_rtol`` of ``2/η`` or above."""
    act = torch.as_tensor(values, dtype=torch.float64) >= (1.0 - active_rtol) * 2.0 / lr
    if act.numel():
        act[0] = True
    return act


@dataclass
class KGeometry:
    """The critical block at one point: eigenpairs, gradient and (on demand) the pair vectors."""

    point: Point
    eig: Eigenpairs
    k: int                      # critical eigenvalues (the top one always counts)
    _pairs: Tensor | None = None

    @property
    def theta(self) -> Tensor:
        return self.point.theta

    @property
    def U(self) -> Tensor:
        return self.eig.vectors[: self.k]

    @property
    def values(self) -> Tensor:
        return self.eig.values[: self.k]

    @property
    def pairs(self) -> Tensor:
        if self._pairs is None:
            self._pairs = self.point.d3_pairs(self.U)
        return self._pairs

    def state_dict(self) -> dict:
        """Everything needed to rebuild this geometry without recomputing it (tensors on the CPU)."""
        return {**point_state(self.point, self.eig), "k": self.k,
                "pairs": None if self._pairs is None else self._pairs.cpu()}

    @classmethod
    def from_state(cls, objective: Objective, state: dict) -> "KGeometry":
        """The geometry :meth:`state_dict` saved, on ``objective``'s device."""
        point, eig = point_from_state(objective, state)
        pairs = state["pairs"]
        return cls(point, eig, int(state["k"]), None if pairs is None else pairs.to(objective.device))
