"""Top eigenpairs of ``∇²L(θ)`` from Hessian-vector products (docs/theory.md §2).

Three paths, one result type (:class:`Eigenpairs`):

- ``dense``: the whole Hessian from ``d`` HVPs and ``torch.linalg.eigh``; exact,
  for small ``d`` and for tests.
- ``eigsh``: scipy's ARPACK Lanczos on a ``LinearOperator`` — the cold start,
  when no previous eigenvectors exist.  Its cost hardly depends on the start
  (Lanczos builds a Krylov space before it converges; see
  benchmarks/RESULTS.md), so it is used only once per run.
- ``lobpcg``: a block LOBPCG warm-started from a *subspace* (the previous
  eigenvectors and their recent history).  Written here rather than taken
  from scipy/torch because a warm start along a trajectory needs three things
  neither offers: (1) Rayleigh–Ritz on several history vectors at once, which
  captures both the smooth drift of ``u`` and the period-2 wobble of GD at the
  edge; (2) every ``A``-image kept as a linear combination, so each iteration
  costs exactly one HVP per unconverged vector and the residual check is free;
  (3) an exact HVP count.  How ``torch.lobpcg`` and scipy's warm-started
  LOBPCG compare is in benchmarks/RESULTS.md.

Every result carries its relative residuals ``‖Hu − λu‖ / |λ|``, the HVPs
spent, and whether it met the tolerance.  When it does not, the solver raises
:class:`~selfstab.errors.ConvergenceError` (``on_fail="raise"``) or issues a
warning and marks the result (``on_fail="warn"``) — never silence.

Eigenvector signs: a new ``u`` is flipped so that ``u_t · u_{t−1} > 0``; the
first ``u`` of a run has its largest-magnitude entry positive.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Callable, Literal

import numpy as np
import torch
from torch import Tensor

from ..errors import ConfigError, ConvergenceError

MatVec = Callable[[Tensor], Tensor]          # (m, d) -> (m, d)

DENSE_MAX = 64           # auto: dense eigh (d HVPs) up to this dimension; beyond, warm LOBPCG is cheaper


class EigenWarning(RuntimeWarning):
    """An eigen-solve that stopped above its tolerance (recorded in the result too)."""


@dataclass
class Eigenpairs:
    """Top-``k`` eigenpairs, largest first.

    ``values`` (k,) float64 on the CPU; ``vectors`` (k, d) in the objective's
    dtype/device, orthonormal; ``images`` = ``H @ vectors`` (k, d), a free
    by-product; ``residuals`` (k,) relative ``‖Hu − λu‖/|λ|``.
    """

    values: Tensor
    vectors: Tensor
    images: Tensor
    residuals: Tensor
    hvps: int
    iterations: int
    converged: bool
    method: str
    extra: dict = field(default_factory=dict)

    @property
    def sharpness(self) -> float:
        return float(self.values[0])

    @property
    def u(self) -> Tensor:
        return self.vectors[0]


def default_tol(dtype: torch.dtype) -> float:
    """Relative residual the solver aims for: eigenvalue error ≈ tol² λ/gap."""
    return 1e-6 if dtype == torch.float64 else 1e-4


def _residuals(values: Tensor, X: Tensor, AX: Tensor) -> Tensor:
    R = AX - values.to(X.dtype)[:, None] * X
    return (R.norm(dim=1).double().cpu() / values.abs().clamp_min(1e-300)).to(torch.float64)


def _orthonormalize(V: Tensor, against: Tensor | None = None, drop: float = 1e-10) -> Tensor:
    """Rows of ``V`` made orthonormal (and orthogonal to the rows of ``against``); near-dependent rows dropped."""
    out = []
    basis = [] if against is None else list(against)
    for v in V:
        n0 = v.norm()
        if n0 == 0:
            continue
        w = v.clone()
        for _ in range(2):  # twice is enough (Kahan–Parlett)
            for b in basis + out:
                w -= (b @ w) * b
        n = w.norm()
        if n > drop * n0:
            out.append(w / n)
    return torch.stack(out) if out else V.new_zeros((0, V.shape[1]))


def _align_signs(vectors: Tensor, images: Tensor, previous: Tensor | None) -> None:
    """In place: ``u_t · u_{t−1} > 0`` column by column; the first time, largest entry positive."""
    for i in range(vectors.shape[0]):
        if previous is not None and i < previous.shape[0]:
            s = torch.sign(vectors[i] @ previous[i].to(vectors))
        else:
            s = torch.sign(vectors[i][vectors[i].abs().argmax()])
        if s < 0:
            vectors[i].neg_()
            images[i].neg_()


def _dense(matvec: MatVec, d: int, k: int, dtype, device) -> Eigenpairs:
    eye = torch.eye(d, dtype=dtype, device=device)
    H = torch.cat([matvec(eye[i:i + 64]) for i in range(0, d, 64)]).double()
    H = 0.5 * (H + H.T)
    w, V = torch.linalg.eigh(H)
    idx = torch.argsort(w, descending=True)[:k]
    X = V[:, idx].T.contiguous()
    vals = w[idx].cpu()
    AX = (H @ X.T).T
    res = _residuals(vals, X, AX)
    return Eigenpairs(vals, X.to(dtype), AX.to(dtype), res, d, 1, True, "dense")


def _eigsh(matvec: MatVec, d: int, k: int, dtype, device, tol: float, seed: int) -> tuple[Tensor, int]:
    """Cold start with ARPACK (Lanczos); returns approximate top-``k`` vectors and the HVPs spent."""
    from scipy.sparse.linalg import ArpackNoConvergence, LinearOperator, eigsh

    count = [0]

    def mv(x):
        count[0] += 1
        v = torch.as_tensor(np.asarray(x).reshape(-1), dtype=dtype, device=device)
        return matvec(v[None])[0].double().cpu().numpy()

    op = LinearOperator((d, d), matvec=mv, dtype=np.float64)
    v0 = np.random.default_rng(seed).standard_normal(d)
    try:
        _, vecs = eigsh(op, k=k, which="LA", tol=tol, v0=v0, maxiter=max(300, 10 * k))
    except ArpackNoConvergence as exc:  # keep what converged; LOBPCG polishes it
        vecs = exc.eigenvectors if exc.eigenvectors is not None and exc.eigenvectors.shape[1] else v0[:, None]
    X = torch.as_tensor(vecs.T.copy(), dtype=dtype, device=device)
    return X, count[0]


def lobpcg(matvec: MatVec, start: Tensor, k: int, *, tol: float, max_iter: int = 200, guard: int = 0) -> Eigenpairs:
    """Block LOBPCG for the ``k`` largest eigenpairs, Rayleigh–Ritz first on the whole ``start`` subspace.

    ``start`` (m, d), m ≥ k: the warm subspace.  Costs m HVPs for the start and
    one per unconverged vector per iteration.  No preconditioner (there is no
    cheap one for a network Hessian).  The small projected problems are solved
    in float64 whatever the vectors' dtype.  ``guard`` extra vectors are
    iterated but not required to converge: LOBPCG's rate for the ``k``-th pair
    then depends on the gap to ``λ_{k+guard+1}``, which rescues near-degenerate
    top eigenvalues (e.g. the cluster of ~10 top eigenvalues of a 10-class ``mse`` problem).  The result holds the
    ``k`` wanted pairs; the guard vectors are in ``extra["guard"]``.
    """
    want, k = k, k + guard
    S = _orthonormalize(start)
    if S.shape[0] < k:  # the warm start collapsed: pad with seeded random directions
        g = torch.Generator(device="cpu").manual_seed(S.shape[0] + 7)
        extra = torch.randn(k - S.shape[0] + 1, S.shape[1], generator=g, dtype=torch.float64).to(S)
        S = torch.cat([S, _orthonormalize(extra, against=S)])
    AS = matvec(S)
    hvps = S.shape[0]
    values = None
    it = 0
    while True:
        T = (S.double() @ AS.double().T)
        T = 0.5 * (T + T.T)
        w, C = torch.linalg.eigh(T)
        order = torch.argsort(w, descending=True)
        ctop = C[:, order[:k]]                       # (m, k) orthonormal coefficients
        values = w[order[:k]].cpu()
        X = (ctop.T.to(S) @ S)
        AX = (ctop.T.to(S) @ AS)
        res = _residuals(values, X, AX)
        if it == 0:
            first_residual = float(res[:want].max())
        if bool((res[:want] <= tol).all()) or it >= max_iter:
            break
        it += 1
        # P: LOBPCG's implicit momentum.  After the warm start it is the rest of the warm
        # subspace (its other Ritz vectors: no history is thrown away); afterwards the part of
        # the new Ritz vectors outside the old X block, made orthonormal to the new X in
        # coefficient space, so no A-image is amplified by a bad change of basis.
        if it == 1:
            cp = C[:, order[k:]]
        else:
            cp = ctop.clone()
            cp[:k] = 0
            cp = cp - ctop @ (ctop.T @ cp)
            cp = _orthonormalize(cp.T).T if cp.abs().max() > 0 else cp[:, :0]
        P, AP = (cp.T.to(S) @ S), (cp.T.to(S) @ AS)
        # W: residuals of the unconverged vectors, orthogonal to [X, P], fresh HVPs.
        todo = res > tol
        R = AX[todo] - values[todo].to(X)[:, None] * X[todo]
        W = _orthonormalize(R, against=torch.cat([X, P]), drop=1e-8)
        if W.shape[0] == 0:
            break
        AW = matvec(W)
        hvps += W.shape[0]
        S = torch.cat([X, P, W])
        AS = torch.cat([AX, AP, AW])
    converged = bool((res[:want] <= tol).all())
    # the next Ritz value below the wanted ones over the k-th: how well separated the wanted block is
    # (a lower bound on λ_{k+1}/λ_k from the last subspace; NaN when the subspace held no other direction)
    ritz = w[order]
    gap_ratio = float(ritz[want] / ritz[want - 1]) if ritz.numel() > want and float(ritz[want - 1]) > 0 else float("nan")
    return Eigenpairs(values[:want], X[:want], AX[:want], res[:want], hvps, it, converged, "lobpcg",
                      {"start_residual": first_residual, "guard": X[want:], "gap_ratio": gap_ratio})


def top_eigenpairs(matvec: MatVec, d: int, k: int = 1, *, dtype: torch.dtype = torch.float64,
                   device: torch.device | str = "cpu", warm: Tensor | None = None, tol: float | None = None,
                   max_iter: int = 200, method: Literal["auto", "dense", "lobpcg", "eigsh"] = "auto",
                   on_fail: Literal["raise", "warn"] = "raise", seed: int = 0, previous: Tensor | None = None,
                   guard: int = 0) -> Eigenpairs:
    """The ``k`` largest eigenpairs of the symmetric operator ``matvec`` (e.g. ``Point.hvp``).

    ``warm`` (m, d): a subspace to start from (previous eigenvectors, their
    history); without it the solve starts cold with ARPACK.  ``previous``
    (k, d): the last eigenvectors, for the sign convention (defaults to the
    first ``k`` rows of ``warm``).  ``tol``: relative residual (default
    :func:`default_tol`).  ``guard``: extra LOBPCG vectors (see :func:`lobpcg`).
    """
    if k < 1 or k > d:
        raise ConfigError(f"k: number of eigenpairs must be in [1, {d}], got {k}")
    if method not in ("auto", "dense", "lobpcg", "eigsh"):
        raise ConfigError(f"method: unknown eigen-solver {method!r}; use auto, dense, lobpcg or eigsh")
    tol = default_tol(dtype) if tol is None else float(tol)
    if method == "dense" or (method == "auto" and d <= DENSE_MAX):
        result = _dense(matvec, d, k, dtype, device)
    else:
        hvps0 = 0
        if warm is None or method == "eigsh":
            start, hvps0 = _eigsh(matvec, d, min(k + guard, d - 1), dtype, device, tol, seed)
            if start.shape[0] < k:
                start = torch.cat([start, torch.randn(k - start.shape[0], d, dtype=dtype, device=device)])
        else:
            start = warm.to(dtype=dtype, device=device).reshape(-1, d)
        result = lobpcg(matvec, start, k, tol=tol, max_iter=max_iter, guard=min(guard, d - k))
        result.hvps += hvps0
        if hvps0:
            result.method = "eigsh+lobpcg"
    prev = previous if previous is not None else (warm[:k] if warm is not None else None)
    _align_signs(result.vectors, result.images, prev)
    if not result.converged:
        msg = (f"eigen-solver: top-{k} eigenpairs did not converge: relative residual "
               f"{float(result.residuals.max()):.2e} > tol {tol:.1e} after {result.iterations} iterations "
               f"({result.hvps} HVPs); raise max_iter, loosen the tolerance, or use a larger block k")
        if on_fail == "raise":
            raise ConvergenceError(msg)
        warnings.warn(msg, EigenWarning, stacklevel=2)
    return result
