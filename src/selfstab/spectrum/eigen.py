"""Top eigenpairs of ``∇²L(θ)`` from Hessian-vector products (docs/theory.md §2).

Three paths, one result type (:class:`Eigenpairs`):

- ``dense``: the whole Hessian from ``d`` HVPs and ``torch.linalg.eigh``; exact,
  for small ``d`` and for tests.
- ``eigsh``: scipy's ARPACK Lanczos on a ``LinearOperator`` — the cold start,
  when no previous eigenvectors exist.  Its cost hardly depends on the start
  (Lanczos builds a Krylov space before it converges; see
  benchmarks/RESULTS.md), so it is used only once per run.
- ``lobpcg``: a block LOBPCG warm-started from a *subspace* (the previous
  eigenvectors and their recent history), written here for the reasons in
  :mod:`~selfstab.spectrum.block_solver`, where its breakdown guards are described.

Every result carries its relative residuals ``‖Hu − λu‖ / |λ|``, the HVPs
spent, and whether it met the tolerance.  When it does not, the solver raises
:class:`~selfstab.errors.ConvergenceError` (``on_fail="raise"``) or issues a
warning and marks the result (``on_fail="warn"``) — never silence.

Breakdowns take the same path: an HVP that returns NaN/inf (a diverged θ)
stops the solve before it reaches ``eigh``, with the last finite Ritz pairs,
or NaN when there were none.

Eigenvector signs: a new ``u`` is flipped so that ``u_t · u_{t−1} > 0``; the
first ``u`` of a run has its largest-magnitude entry positive.
"""

from __future__ import annotations

import warnings
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from ..errors import ConfigError, ConvergenceError
from ..keywords import suggest_keywords
from ..wording import plural
from .block_solver import lobpcg
from .result import _NONFINITE, EigenWarning, Eigenpairs, MatVec, _failed, _finite, _residuals, default_tol

__all__ = ["DENSE_MAX", "EigenWarning", "Eigenpairs", "default_tol", "lobpcg", "top_eigenpairs"]

DENSE_MAX = 64           # auto: dense eigh (d HVPs) up to this dimension; beyond, warm LOBPCG is cheaper


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


def _dense(matvec: MatVec, d: int, k: int, dtype, device, above: float | None = None, guard: int = 0,
           max_k: int | None = None) -> Eigenpairs:
    eye = torch.eye(d, dtype=dtype, device=device)
    H = torch.cat([matvec(eye[i:i + 64]) for i in range(0, d, 64)]).double()
    if not _finite(H):
        return _failed(k, d, dtype, device, d, 1, "dense", _NONFINITE)
    H = 0.5 * (H + H.T)
    w, V = torch.linalg.eigh(H)
    extra = {}
    if above is not None:   # as lobpcg(above=...): every eigenvalue ≥ above (at least k), then the guards
        cap = d - 1 if max_k is None else max(1, min(int(max_k), d - 1))
        k = min(max(k, int((w >= above).sum())), cap)
        order = torch.argsort(w, descending=True)
        gidx = order[k:k + max(1, guard)]
        G = V[:, gidx].T.contiguous()
        extra = {"guard": G.to(dtype), "guard_images": (H @ G.T).T.to(dtype), "guard_values": w[gidx].cpu(),
                 "guard_residuals": _residuals(w[gidx].cpu(), G, (H @ G.T).T),
                 "gap_ratio": float(w[gidx[0]] / w[order[k - 1]]) if float(w[order[k - 1]]) > 0 else float("nan")}
    idx = torch.argsort(w, descending=True)[:k]
    X = V[:, idx].T.contiguous()
    vals = w[idx].cpu()
    AX = (H @ X.T).T
    res = _residuals(vals, X, AX)
    return Eigenpairs(vals, X.to(dtype), AX.to(dtype), res, d, 1, True, "dense", extra)


class _NonFiniteImage(ArithmeticError):
    """Raised from inside ARPACK's callback to stop it at the first NaN/inf image."""


def _eigsh(matvec: MatVec, d: int, k: int, dtype, device, tol: float,
           seed: int) -> tuple[Tensor | None, int, tuple[str, str] | None]:
    """Cold start with ARPACK (Lanczos): approximate top-``k`` vectors, the HVPs spent, and why it failed (or None).

    A run out of iterations keeps the vectors that converged (LOBPCG polishes them); an HVP that is not finite
    or any other ARPACK error returns no vectors and the reason.
    """
    from scipy.sparse.linalg import ArpackError, ArpackNoConvergence, LinearOperator, eigsh

    count = [0]

    def mv(x):
        count[0] += 1
        v = torch.as_tensor(np.asarray(x).reshape(-1), dtype=dtype, device=device)
        y = matvec(v[None])[0]
        if not _finite(y):
            raise _NonFiniteImage
        return y.double().cpu().numpy()

    op = LinearOperator((d, d), matvec=mv, dtype=np.float64)
    v0 = np.random.default_rng(seed).standard_normal(d)
    try:
        _, vecs = eigsh(op, k=k, which="LA", tol=tol, v0=v0, maxiter=max(300, 10 * k))
    except ArpackNoConvergence as exc:  # keep what converged; LOBPCG polishes it
        vecs = exc.eigenvectors if exc.eigenvectors is not None and exc.eigenvectors.shape[1] else v0[:, None]
    except _NonFiniteImage:
        return None, count[0], _NONFINITE
    except (ArpackError, ValueError, ArithmeticError, np.linalg.LinAlgError) as exc:
        what = " ".join(str(exc).split()) or type(exc).__name__
        return None, count[0], (f"ARPACK (scipy's eigsh) failed: {what}",
                                "pass a warm start, or use method='lobpcg' or method='dense'")
    if not np.isfinite(vecs).all():
        return None, count[0], _NONFINITE
    X = torch.as_tensor(vecs.T.copy(), dtype=dtype, device=device)
    return X, count[0], None


@suggest_keywords
def top_eigenpairs(matvec: MatVec, d: int, k: int = 1, *, dtype: torch.dtype = torch.float64,
                   device: torch.device | str = "cpu", warm: Tensor | None = None, tol: float | None = None,
                   max_iter: int = 200, method: Literal["auto", "dense", "lobpcg", "eigsh"] = "auto",
                   on_fail: Literal["raise", "warn"] = "raise", seed: int = 0, previous: Tensor | None = None,
                   guard: int = 0, above: float | None = None, max_k: int | None = None,
                   momentum: bool = True) -> Eigenpairs:
    """The ``k`` largest eigenpairs of the symmetric operator ``matvec`` (e.g. ``Point.hvp``).

    ``warm`` (m, d): a subspace to start from (previous eigenvectors, their
    history); without it the solve starts cold with ARPACK.  ``previous``
    (k, d): the last eigenvectors, for the sign convention (defaults to the
    first ``k`` rows of ``warm``).  ``tol``: relative residual (default
    :func:`default_tol`).  ``guard``: extra LOBPCG vectors (see :func:`lobpcg`).  ``above``/``max_k``:
    every eigenpair ``≥ above`` (at least ``k``, at most ``max_k``) with unconverged guards (:func:`lobpcg`).
    ``momentum``: a warm LOBPCG's first momentum is the rest of ``warm`` (``False``: none; :func:`lobpcg`).

    A solve that misses ``tol`` or breaks down (NaN/inf HVPs, a failed
    Rayleigh–Ritz step, an ARPACK error) raises :class:`ConvergenceError`
    with one line saying what failed and what to do (``on_fail="raise"``),
    or warns and returns the result with ``converged=False`` (``"warn"``).
    """
    if not callable(matvec) or isinstance(d, bool) or not isinstance(d, (int, np.integer)):
        raise ConfigError(f"top_eigenpairs(matvec, d, k): matvec is a function V ↦ HV (e.g. a Point's hvp) and d "
                          f"its dimension (an int), got {type(matvec).__name__} and {type(d).__name__}; "
                          f"for ∇²L at θ "
                          f"call top_eigenpairs(objective.at(theta).hvp, objective.dim, k)")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1 or k > d:
        raise ConfigError(f"k: number of eigenpairs must be an int in [1, {d}], got {k!r}")
    if method not in ("auto", "dense", "lobpcg", "eigsh"):
        raise ConfigError(f"method: unknown eigen-solver {method!r}; use auto, dense, lobpcg or eigsh")
    tol = default_tol(dtype) if tol is None else float(tol)
    spent = [0]

    def counted(V: Tensor) -> Tensor:   # an exact HVP count even when a torch.linalg error escapes below
        spent[0] += V.shape[0]
        return matvec(V)

    try:
        if method == "dense" or (method == "auto" and d <= DENSE_MAX):
            result = _dense(counted, d, k, dtype, device, above, guard, max_k)
        else:
            hvps0, failure = 0, None
            if warm is None or method == "eigsh":
                start, hvps0, failure = _eigsh(counted, d, min(k + guard, d - 1), dtype, device, tol, seed)
                if start is not None and start.shape[0] < k:
                    start = torch.cat([start, torch.randn(k - start.shape[0], d, dtype=dtype, device=device)])
            else:
                start = warm.to(dtype=dtype, device=device).reshape(-1, d)
            if failure is not None:
                result = _failed(k, d, dtype, device, hvps0, 0, "eigsh", failure)
            else:
                result = lobpcg(counted, start, k, tol=tol, max_iter=max_iter, guard=min(guard, d - k), above=above,
                                max_k=max_k, momentum=momentum)
                result.hvps += hvps0
                if hvps0:
                    result.method = "eigsh+lobpcg"
    except torch.linalg.LinAlgError as exc:
        what = " ".join(str(exc).split())
        result = _failed(k, d, dtype, device, spent[0], 0, method,
                         (f"torch.linalg failed ({what})", "the operator may be too ill-conditioned or not finite "
                          "here: loosen the tolerance, or use method='dense' on a small problem"))
    prev = previous if previous is not None else (warm[:result.values.numel()] if warm is not None else None)
    _align_signs(result.vectors, result.images, prev)
    if not result.converged:
        if "failure" in result.extra:
            what, todo = result.extra["failure"]
            k = result.values.numel()
            msg = (f"eigen-solver: top-{k} eigenpairs failed: {what} after {plural(result.iterations, 'iteration')} "
                   f"({result.hvps} HVPs); {todo}")
        else:
            k = result.values.numel()
            msg = (f"eigen-solver: top-{k} eigenpairs did not converge: relative residual "
                   f"{float(result.residuals.max()):.2e} > tol {tol:.1e} after "
                   f"{plural(result.iterations, 'iteration')} "
                   f"({result.hvps} HVPs); raise max_iter, loosen the tolerance, or use a larger block k")
        if on_fail == "raise":
            raise ConvergenceError(msg)
        warnings.warn(msg, EigenWarning, stacklevel=2)
    return result
