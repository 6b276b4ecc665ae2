"""Semidefinite complementarity problems of the critical block (docs/theory.md §10).

``SDCP(A, B)``: find a symmetric ``k×k`` matrix ``X`` with

    X ⪰ 0,    Z = A + B(X) ⪰ 0,    ⟨X, Z⟩ = 0,

where ``A`` is symmetric and ``B`` a PSD linear operator on symmetric
matrices.  These are the KKT conditions of the convex program
``min_{X ⪰ 0} ½⟨X, B(X)⟩ + ⟨A, X⟩``; it is how the central flow
(Cohen, Damian, Talwalkar, Kolter & Lee, *Understanding Optimization in Deep
Learning with Central Flows*, 2024) keeps every critical eigenvalue at or below
``2/η``, and how a linearized step of the k-constrained projection stays on
``{λ_i ≤ 2/η}``.

Coordinates.  A symmetric ``X`` is stored as ``svec(X)`` (length
``m = k(k+1)/2``, the upper triangle in ``torch.triu_indices`` order, off-diagonal
entries times ``√2``), so that ``⟨X, Y⟩ = svec(X)·svec(Y)``.  ``B`` is then an
``m×m`` PSD matrix ``M`` with ``⟨X, B(X)⟩ = svec(X)ᵀ M svec(X)``.  For the
Gram operator of the pair vectors ``p_ij = ∇³L(u_i, u_j)``,
``G(X)_ij = p_ij·D(X)`` with ``D(X) = Σ_ij X_ij p_ij``, this is
``M = P̃P̃ᵀ`` where ``P̃`` holds ``p_ij`` scaled by ``1`` (``i = j``) or ``√2``
(``i < j``) — :func:`gram_matrix`.

Solution.  ``A ⪰ 0`` gives ``X = 0`` without a solver; ``k = 1`` is
``X = max(0, −A/B)``.  Otherwise cvxpy with the Clarabel interior-point
solver on ``½‖R svec(X)‖² + ⟨A, X⟩`` (``RᵀR = M``, a DCP sum of squares,
compiled once per ``k``), on a rescaled copy (``‖A‖ = ‖M‖ = 1``).  An interior
point stops a little inside the cone; the answer is then *polished*: on the
face ``X = V Y Vᵀ`` spanned by its ``r`` clearly nonzero eigenvectors, the
stationarity ``Vᵀ(A + B(VYVᵀ))V = 0`` is a linear system in ``Y`` (exact: the
objective is quadratic; where ``B`` is singular on the face, so that ``X`` is
not unique, its minimum-norm solution), and ``V`` is re-taken from the null space of ``Z``
until the KKT residuals below stop improving.  Every result carries them:

- ``primal``: ``max(0, −λ_min(X)) / ‖X‖``,
- ``dual``: ``max(0, −λ_min(Z)) / s``, ``s = max(‖A‖, ‖B(X)‖)``,
- ``complementarity``: ``|⟨X, Z⟩| / (‖X‖ s)``

(Frobenius norms; 0 for ``X = 0``).  A solve whose residuals exceed ``tol``
raises :class:`~selfstab.errors.ConvergenceError` (``on_fail="raise"``) or
warns with :class:`SDCPWarning` and returns ``converged=False``
(``on_fail="warn"``).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Callable, Literal

import numpy as np
import torch
from torch import Tensor

from ..errors import ConfigError, ConvergenceError

SymOp = Callable[[np.ndarray], np.ndarray]


class SDCPWarning(RuntimeWarning):
    """An SDCP solve whose KKT residuals stayed above tolerance (recorded in the result too)."""


@dataclass
class SDCPResult:
    """``X`` (k, k) float64 and ``Z = A + B(X)``, with the relative KKT residuals (module docstring)."""

    X: Tensor
    Z: Tensor
    primal: float
    dual: float
    complementarity: float
    status: str                 # "stable" (A ⪰ 0, X = 0), "closed_form" (k = 1), "solved", "inaccurate"
    converged: bool
    solver_calls: int = 0
    extra: dict = field(default_factory=dict)

    @property
    def residual(self) -> float:
        """The largest of the three relative KKT residuals."""
        return max(self.primal, self.dual, self.complementarity)

    @property
    def rank(self) -> int:
        """The number of directions with ``X``'s eigenvalue above ``1e-9`` of the largest."""
        w = torch.linalg.eigvalsh(self.X) if self.X.numel() else self.X.new_zeros(0)
        return int((w > 1e-9 * float(w.abs().max())).sum()) if w.numel() and float(w.abs().max()) > 0 else 0


# -- symmetric-matrix coordinates -------------------------------------------------------------
def svec_weights(k: int) -> np.ndarray:
    """``1`` on the diagonal, ``√2`` off it, in ``triu_indices`` order (length ``k(k+1)/2``)."""
    i, j = np.triu_indices(k)
    return np.where(i == j, 1.0, math.sqrt(2.0))


def svec(X: np.ndarray) -> np.ndarray:
    """The isometric vector of a symmetric ``X``: ``⟨X, Y⟩ = svec(X)·svec(Y)``."""
    k = X.shape[0]
    i, j = np.triu_indices(k)
    return X[i, j] * svec_weights(k)


def smat(s: np.ndarray, k: int) -> np.ndarray:
    """The inverse of :func:`svec`."""
    i, j = np.triu_indices(k)
    v = s / svec_weights(k)
    X = np.zeros((k, k))
    X[i, j] = v
    X[j, i] = v
    return X


def pair_coefficients(X: Tensor | np.ndarray) -> Tensor:
    """``c`` with ``D(X) = Σ_{i≤j} c_ij p_ij`` for pair vectors in ``triu_indices`` order: ``X_ii`` and ``2X_ij``."""
    X = torch.as_tensor(X, dtype=torch.float64)
    k = X.shape[0]
    i, j = torch.triu_indices(k, k)
    return torch.where(i == j, 1.0, 2.0).to(torch.float64) * X[i, j]


def gram_matrix(pairs: Tensor) -> np.ndarray:
    """The Gram operator ``G`` of the pair vectors (``(k(k+1)/2, d)``, ``triu_indices`` order) as an ``m×m``
    PSD matrix in svec coordinates: ``⟨X, G(X)⟩ = ‖D(X)‖²``."""
    m = pairs.shape[0]
    k = int(round((math.sqrt(8 * m + 1) - 1) / 2))
    if k * (k + 1) // 2 != m:
        raise ConfigError(f"pairs: expected k(k+1)/2 rows, got {m}")
    w = torch.as_tensor(svec_weights(k), dtype=pairs.dtype, device=pairs.device)
    P = pairs * w[:, None]
    M = (P.double() @ P.double().T).cpu().numpy()
    return 0.5 * (M + M.T)


def operator_matrix(B: SymOp, k: int) -> np.ndarray:
    """The ``m×m`` matrix of a linear map ``B`` on symmetric ``k×k`` matrices, in svec coordinates."""
    m = k * (k + 1) // 2
    M = np.zeros((m, m))
    for b in range(m):
        e = np.zeros(m)
        e[b] = 1.0
        M[:, b] = svec(np.asarray(B(smat(e, k)), dtype=np.float64))
    return 0.5 * (M + M.T)


def _apply(M: np.ndarray, X: np.ndarray) -> np.ndarray:
    return smat(M @ svec(X), X.shape[0])


# -- residuals ----------------------------------------------------------------------------------
def kkt_residuals(A: np.ndarray, M: np.ndarray, X: np.ndarray) -> tuple[float, float, float, np.ndarray]:
    """``(primal, dual, complementarity, Z)`` of ``X`` for ``SDCP(A, M)`` (module docstring)."""
    BX = _apply(M, X)
    Z = A + BX
    Z = 0.5 * (Z + Z.T)
    xn = float(np.linalg.norm(X))
    s = max(float(np.linalg.norm(A)), float(np.linalg.norm(BX)), 1e-300)
    dual = max(0.0, -float(np.linalg.eigvalsh(Z)[0])) / s
    if xn == 0.0:
        return 0.0, dual, 0.0, Z
    primal = max(0.0, -float(np.linalg.eigvalsh(X)[0])) / xn
    comp = abs(float(np.sum(X * Z))) / (xn * s)
    return primal, dual, comp, Z


# -- the conic solve ------------------------------------------------------------------------------
_PROBLEMS: dict[int, tuple] = {}


def _problem(k: int):
    """``min ½‖R svec(X)‖² + ⟨A, X⟩`` over ``X ⪰ 0``, with ``A`` and ``R`` as parameters (compiled once per ``k``)."""
    if k not in _PROBLEMS:
        import cvxpy as cp

        m = k * (k + 1) // 2
        T = np.zeros((m, k * k))            # svec(X) = T vec(X), vec column-major
        w = svec_weights(k)
        for row, (i, j) in enumerate(zip(*np.triu_indices(k))):
            T[row, i + k * j] = w[row]
        A = cp.Parameter((k, k), symmetric=True)
        R = cp.Parameter((m, m))
        X = cp.Variable((k, k), PSD=True)
        s = T @ cp.vec(X, order="F")
        prob = cp.Problem(cp.Minimize(0.5 * cp.sum_squares(R @ s) + cp.sum(cp.multiply(A, X))))
        _PROBLEMS[k] = (prob, A, R, X)
    return _PROBLEMS[k]


def _conic_solve(A: np.ndarray, M: np.ndarray) -> tuple[np.ndarray | None, str]:
    """Clarabel on the rescaled problem; returns ``(X or None, cvxpy status)``."""
    import cvxpy as cp

    k = A.shape[0]
    a, b = float(np.linalg.norm(A)), float(np.linalg.norm(M, 2))
    w, V = np.linalg.eigh(M / b)
    R = (V * np.sqrt(np.clip(w, 0.0, None))) @ V.T
    prob, Ap, Rp, Xv = _problem(k)
    Ap.value, Rp.value = A / a, R
    try:
        with warnings.catch_warnings():  # cvxpy's "may be inaccurate": the polish and the residual check decide
            warnings.simplefilter("ignore", UserWarning)
            prob.solve(solver=cp.CLARABEL, tol_gap_abs=1e-11, tol_gap_rel=1e-11, tol_feas=1e-11, max_iter=200)
    except cp.error.SolverError as exc:
        return None, f"solver error: {exc}"
    if Xv.value is None or prob.status not in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE):
        return None, str(prob.status)
    X = np.asarray(Xv.value, dtype=np.float64)
    return 0.5 * (X + X.T) * (a / b), str(prob.status)


def _face_solve(A: np.ndarray, M: np.ndarray, V: np.ndarray) -> np.ndarray | None:
    """``X = V Y Vᵀ`` with ``Vᵀ(A + B(X))V = 0``: the exact minimizer on the face spanned by ``V`` (k, r)."""
    k, r = V.shape
    mr = r * (r + 1) // 2
    L = np.zeros((mr, mr))
    for c in range(mr):
        e = np.zeros(mr)
        e[c] = 1.0
        L[:, c] = svec(V.T @ _apply(M, V @ smat(e, r) @ V.T) @ V)
    rhs = -svec(V.T @ A @ V)
    # B may be singular on the face (e.g. a zero pair vector ∇³L(u_i, u_j)): then X is not unique, only
    # D(X) is, and the minimum-norm X is taken (a pseudo-inverse of the PSD face operator)
    w, E = np.linalg.eigh(0.5 * (L + L.T))
    keep = w > 1e-12 * max(float(w[-1]), 1e-300)
    y = E[:, keep] @ ((E[:, keep].T @ rhs) / w[keep])
    X = V @ smat(y, r) @ V.T
    return 0.5 * (X + X.T)


def _polish(A: np.ndarray, M: np.ndarray, X0: np.ndarray, tol: float) -> tuple[np.ndarray, tuple]:
    """Refine an interior-point ``X0`` on its active face (module docstring); the best ``(X, residuals)``.

    A polished ``X`` within ``tol`` is preferred to the raw one even when the raw residuals are as small:
    it is exactly on its face and, where ``X`` is not unique, the minimum-norm solution there.
    """
    raw = (X0, kkt_residuals(A, M, X0))
    mu, W = np.linalg.eigh(X0)
    mu, W = mu[::-1], W[:, ::-1]
    top = max(float(mu[0]), 0.0)
    if top == 0.0:
        return raw
    # candidate ranks: the clear one first (an interior point leaves the zero eigenvalues at about its
    # tolerance, far below the others), then its neighbours
    r0 = max(1, int((mu > 1e-6 * top).sum()))
    ranks = sorted(range(1, len(mu) + 1), key=lambda r: (abs(r - r0), r))
    best = None
    for r in ranks:
        V = W[:, :r]
        for _ in range(4):
            X = _face_solve(A, M, V)
            res = kkt_residuals(A, M, X)
            if best is None or max(res[:3]) < max(best[1][:3]):
                best = (X, res)
            if max(res[:3]) <= tol * 1e-2:
                break
            V = np.linalg.eigh(res[3])[1][:, :r]          # the face of X is the null space of Z
        if max(best[1][:3]) <= tol:
            return best
    return best if max(best[1][:3]) < max(raw[1][:3]) else raw


def solve_sdcp(A: Tensor | np.ndarray, B: Tensor | np.ndarray | SymOp, *, tol: float = 1e-8,
               on_fail: Literal["raise", "warn"] = "raise") -> SDCPResult:
    """``X = SDCP(A, B)`` for symmetric ``A`` (k, k) and a PSD ``B`` (module docstring).

    ``B``: an ``m×m`` matrix in svec coordinates (``m = k(k+1)/2``, e.g.
    ``dt·(η/2)·gram_matrix(pairs)``) or a callable on symmetric ``k×k`` numpy
    matrices.  ``tol``: the relative KKT residual to reach.  Returns an
    :class:`SDCPResult` in float64 on the CPU.
    """
    A = np.asarray(torch.as_tensor(A, dtype=torch.float64).cpu(), dtype=np.float64)
    if A.ndim != 2 or A.shape[0] != A.shape[1]:
        raise ConfigError(f"A: expected a square symmetric matrix, got shape {A.shape}")
    if on_fail not in ("raise", "warn"):
        raise ConfigError(f"on_fail: expected 'raise' or 'warn', got {on_fail!r}")
    k = A.shape[0]
    A = 0.5 * (A + A.T)
    m = k * (k + 1) // 2
    if callable(B):
        M = operator_matrix(B, k)
    else:
        M = np.asarray(torch.as_tensor(B, dtype=torch.float64).cpu(), dtype=np.float64)
        if M.shape != (m, m):
            raise ConfigError(f"B: expected a {m}×{m} matrix in svec coordinates for k = {k}, got shape {M.shape}")
        M = 0.5 * (M + M.T)

    def result(X: np.ndarray, status: str, calls: int = 0, **extra) -> SDCPResult:
        p, d, c, Z = kkt_residuals(A, M, X)
        ok = max(p, d, c) <= tol
        out = SDCPResult(torch.from_numpy(X.copy()), torch.from_numpy(Z), p, d, c, status if ok else "inaccurate",
                         ok, calls, extra)
        if not ok:
            msg = (f"SDCP (k = {k}): KKT residuals primal {p:.1e}, dual {d:.1e}, complementarity {c:.1e} above "
                   f"tol {tol:.0e} ({status}); check that B is PSD and A finite, or loosen the tolerance")
            if on_fail == "raise":
                raise ConvergenceError(msg)
            warnings.warn(msg, SDCPWarning, stacklevel=3)
        return out

    if k == 0:
        return result(np.zeros((0, 0)), "stable")
    if not (np.isfinite(A).all() and np.isfinite(M).all()):
        raise ConfigError("SDCP: A or B has non-finite entries")
    if float(np.linalg.eigvalsh(A)[0]) >= 0:
        return result(np.zeros((k, k)), "stable")
    if k == 1:
        a, b = float(A[0, 0]), float(M[0, 0])
        if b <= 0:
            msg = (f"SDCP (k = 1): A = {a:.3e} < 0 with B = {b:.3e} ≤ 0 has no solution "
                   f"(no third derivative moves the eigenvalue back)")
            if on_fail == "raise":
                raise ConvergenceError(msg)
            warnings.warn(msg, SDCPWarning, stacklevel=2)
            return SDCPResult(torch.full((1, 1), math.nan, dtype=torch.float64), torch.from_numpy(A.copy()),
                              math.nan, math.nan, math.nan, "failed", False)
        return result(np.array([[-a / b]]), "closed_form")
    X0, status = _conic_solve(A, M)
    if X0 is None:
        msg = (f"SDCP (k = {k}): the conic solver returned {status!r}; B is probably singular along a direction "
               f"where A is negative (no bounded solution)")
        if on_fail == "raise":
            raise ConvergenceError(msg)
        warnings.warn(msg, SDCPWarning, stacklevel=2)
        return SDCPResult(torch.full((k, k), math.nan, dtype=torch.float64), torch.from_numpy(A.copy()),
                          math.nan, math.nan, math.nan, "failed", False, 1, {"solver_status": status})
    raw = kkt_residuals(A, M, X0)
    X, _ = _polish(A, M, X0, tol)
    return result(X, "solved", 1, solver_status=status, solver_residual=max(raw[:3]))
