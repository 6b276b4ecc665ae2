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

Breakdowns take the same path.  An HVP that returns NaN/inf (a diverged θ)
stops the solve before it reaches ``eigh``; the result keeps the last finite
Ritz pairs, or is NaN when there were none.  A LOBPCG block that has lost
orthonormality, or whose Rayleigh–Ritz step fails, is re-orthonormalized from
its Gram matrix with the numerically dependent directions dropped (images
follow as the same linear combinations: no HVP is repeated), and then, if the
step still fails, restarted without ``P``.  These guards act only where the
plain step would fail or is degenerate, so well-conditioned solves are
unchanged bit for bit.

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

GUARD_RESIDUAL = 0.1     # lobpcg(above=...): a guard's relative residual below which its Ritz value is trusted
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


_NONFINITE = ("the Hessian-vector product returned NaN/inf",
              "θ or the loss is not finite (a diverged run?): lower the learning rate or start from finite parameters")
_RAYLEIGH_RITZ = ("the Rayleigh–Ritz step (torch.linalg.eigh) failed even after re-orthonormalizing the block and "
                  "dropping P", "the operator is too ill-conditioned at this point: loosen the tolerance, or use "
                  "method='dense' on a small problem")


def _finite(t: Tensor) -> bool:
    return bool(torch.isfinite(t).all())


def _failed(k: int, d: int, dtype, device, hvps: int, iterations: int, method: str, failure: tuple[str, str],
            start_residual: float = float("nan")) -> Eigenpairs:
    """A result with no usable eigenpair: NaN throughout, so nothing downstream mistakes it for one."""
    nan = float("nan")
    vectors = torch.full((k, d), nan, dtype=dtype, device=device)
    return Eigenpairs(torch.full((k,), nan, dtype=torch.float64), vectors, vectors.clone(),
                      torch.full((k,), nan, dtype=torch.float64), hvps, iterations, False, method,
                      {"start_residual": start_residual, "guard": vectors[:0], "gap_ratio": nan, "failure": failure})


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


def _drop_tol(dtype: torch.dtype) -> float:
    """Smallest relative singular value of a block kept by :func:`_reorthonormalize`: ε^(1/3).

    An image ``Av`` known to ``ε‖A‖`` becomes ``ε‖A‖/σ`` when ``v`` is rescaled by ``1/σ``; ε^(1/3)
    keeps that far below :func:`default_tol` (about 4e-11 in float64, 2e-5 in float32).
    """
    return torch.finfo(dtype).eps ** (1 / 3)


def _reorthonormalize(S: Tensor, AS: Tensor) -> tuple[Tensor, Tensor]:
    """Rows of ``S`` made orthonormal through the eigen-decomposition of their Gram matrix (SVQB, twice).

    Directions whose singular value is below :func:`_drop_tol` of the largest are dropped (they are
    numerically dependent).  ``AS`` undergoes the same change of basis, so it stays ``A`` of the new rows
    without a single HVP.
    """
    dtype = S.dtype
    Sd, ASd = S.double(), AS.double()
    for _ in range(2):
        G = Sd @ Sd.T
        g, Q = torch.linalg.eigh(0.5 * (G + G.T))
        keep = g > (_drop_tol(dtype) ** 2) * g.max().clamp_min(0)
        M = Q[:, keep] / g[keep].sqrt()
        Sd, ASd = M.T @ Sd, M.T @ ASd
    return Sd.to(dtype), ASd.to(dtype)


def _orthonormal_enough(Sd: Tensor, dtype: torch.dtype) -> bool:
    """Is the (float64) block ``Sd`` orthonormal to within √ε of ``dtype``?  (The plain path keeps it to ~ε.)"""
    G = Sd @ Sd.T
    G.diagonal().sub_(1)
    return bool(G.abs().max() <= torch.finfo(dtype).eps ** 0.5)


def _eigh_scaled(S: Tensor, AS: Tensor) -> tuple[Tensor, Tensor] | None:
    """Rayleigh–Ritz on an orthonormal block with ``AS`` scaled to unit size (no overflow); None if it fails."""
    scale = AS.double().abs().max()
    if not (torch.isfinite(scale) and scale > 0):
        return None
    T = S.double() @ (AS.double() / scale).T
    T = 0.5 * (T + T.T)
    if not _finite(T):
        return None
    try:
        w, C = torch.linalg.eigh(T)
    except torch.linalg.LinAlgError:
        return None
    w = w * scale
    return (w, C) if _finite(w) and _finite(C) else None


def _rayleigh_ritz(S: Tensor, AS: Tensor, k: int, n_p: int):
    """The projected eigenproblem of the block ``S`` (rows ``X`` (k), ``P`` (n_p), ``W``).

    Returns ``(S, AS, w, C, recovered)``, or None when every attempt fails.

    The plain step when the block is orthonormal and ``eigh`` succeeds (unchanged arithmetic); otherwise the
    block is re-orthonormalized (dependent directions dropped), and then restarted without ``P``;
    ``recovered`` says that ``S`` was replaced.
    """
    Sd = S.double()
    if _orthonormal_enough(Sd, S.dtype):
        T = (Sd @ AS.double().T)
        T = 0.5 * (T + T.T)
        if _finite(T):
            try:
                w, C = torch.linalg.eigh(T)
                if _finite(w):
                    return S, AS, w, C, False
            except torch.linalg.LinAlgError:
                pass
    blocks = [(S, AS)]
    if n_p:   # restart: the block without P
        keep = torch.cat([torch.arange(k), torch.arange(k + n_p, S.shape[0])]).to(S.device)
        blocks.append((S[keep], AS[keep]))
    for B, AB in blocks:
        try:
            B, AB = _reorthonormalize(B, AB)
        except torch.linalg.LinAlgError:
            continue
        if B.shape[0] < k:
            continue
        out = _eigh_scaled(B, AB)
        if out is not None:
            return B, AB, *out, True
    return None


def _random_rows(n: int, against: Tensor, seed: int) -> Tensor:
    """``n`` seeded random directions made orthonormal to the rows of ``against`` (a warm start too small
    for the block; near-dependent ones dropped)."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    extra = torch.randn(n, against.shape[1], generator=g, dtype=torch.float64).to(against)
    return _orthonormalize(extra, against=against)


def lobpcg(matvec: MatVec, start: Tensor, k: int, *, tol: float, max_iter: int = 200, guard: int = 0,
           above: float | None = None, max_k: int | None = None) -> Eigenpairs:
    """Block LOBPCG for the ``k`` largest eigenpairs, Rayleigh–Ritz first on the whole ``start`` subspace.

    ``start`` (m, d), m ≥ k: the warm subspace.  Costs m HVPs for the start and
    one per unconverged vector per iteration.  No preconditioner (there is no
    cheap one for a network Hessian).  The small projected problems are solved
    in float64 whatever the vectors' dtype.  ``guard`` extra vectors are
    iterated but not required to converge: LOBPCG's rate for the ``k``-th pair
    then depends on the gap to ``λ_{k+guard+1}``, which rescues near-degenerate
    top eigenvalues (e.g. the cluster of ~10 top eigenvalues of a 10-class ``mse`` problem).  The result holds the
    ``k`` wanted pairs; the guard vectors are in ``extra["guard"]`` (their Ritz values and residuals in
    ``extra["guard_values"]``/``["guard_residuals"]``; the values are lower bounds on the next eigenvalues).

    ``above`` (the critical block, docs/theory.md §10): the number of wanted pairs adapts — every Ritz value
    ``≥ above`` of the current subspace is wanted (at least ``k``, at most ``max_k``), re-counted after every
    Rayleigh–Ritz step (Ritz values of a subspace that keeps the previous block never decrease, so the count
    never shrinks), and a block that must grow takes its new vectors from the subspace LOBPCG already holds
    (no restart).  The guards (at least one) then get fresh residual directions only while their Ritz value,
    widened by its residual, still reaches ``above`` or their residual exceeds ``GUARD_RESIDUAL``; the solve
    stops when the wanted pairs meet ``tol`` and the first guard is clearly below ``above``.  A converged
    vector just below the edge of a dense spectrum would otherwise cost the most of all.  No library LOBPCG
    lets the number of wanted pairs follow the spectrum.

    A breakdown (see the module docstring) ends the solve unconverged, with ``extra["failure"]`` = (what
    failed, what to do) and the last finite Ritz pairs (NaN when there were none).
    """
    d = start.shape[1]
    want = k
    if above is not None:
        guard = max(1, guard)
        cap = d - guard if max_k is None else max(1, min(int(max_k), d - guard))
        want = max(1, min(k, cap))
    kb = want + guard                                # the block: the wanted pairs, then the guards
    S = _orthonormalize(start)
    if S.shape[0] < kb:  # the warm start collapsed: pad with seeded random directions
        S = torch.cat([S, _random_rows(kb - S.shape[0] + 1, S, S.shape[0] + 7)])
    AS = matvec(S)
    hvps = S.shape[0]
    if not _finite(AS):
        return _failed(want, d, S.dtype, S.device, hvps, 0, "lobpcg", _NONFINITE)
    it, n_p, k_prev, failure, last = 0, 0, kb, None, None
    while True:
        rr = _rayleigh_ritz(S, AS, k_prev, n_p)
        if rr is None:
            failure = _RAYLEIGH_RITZ
            break
        S, AS, w, C, recovered = rr
        if above is not None:
            want = max(want, min(cap, int((w >= above).sum())))
            kb = want + guard
            if kb > S.shape[0]:   # grown past the subspace it holds: add random directions, no P
                R = _random_rows(kb - S.shape[0] + 1, S, S.shape[0] + 7)
                AR = matvec(R)
                hvps += R.shape[0]
                if not _finite(AR):
                    failure = _NONFINITE
                    break
                S, AS, n_p, k_prev = torch.cat([S, R]), torch.cat([AS, AR]), 0, 0
                continue
        order = torch.argsort(w, descending=True)
        ctop = C[:, order[:kb]]                      # (m, kb) orthonormal coefficients
        values = w[order[:kb]].cpu()
        X = (ctop.T.to(S) @ S)
        AX = (ctop.T.to(S) @ AS)
        res = _residuals(values, X, AX)
        last = values, X, AX, res, w[order], want
        if it == 0:
            first_residual = float(res[:want].max())
        done = bool((res[:want] <= tol).all())
        if above is not None:
            # the first guard is clearly below the edge: its Ritz value widened by its residual, and a
            # residual small enough for the value to mean something (a random padding direction's does not)
            settled = float(res[want]) <= GUARD_RESIDUAL and float(values[want]) * (1.0 + float(res[want])) < above
            done = done and settled
        if done or it >= max_iter:
            break
        it += 1
        # P: LOBPCG's implicit momentum.  After the warm start it is the rest of the warm
        # subspace (its other Ritz vectors: no history is thrown away); afterwards the part of
        # the new Ritz vectors outside the old X block, made orthonormal to the new X in
        # coefficient space, so no A-image is amplified by a bad change of basis.  A block that
        # had to be re-orthonormalized no longer starts with the old X: restart without P.
        if it == 1:
            cp = C[:, order[kb:]]
        elif recovered:
            cp = C[:, :0]
        else:
            cp = ctop.clone()
            cp[:k_prev] = 0
            cp = cp - ctop @ (ctop.T @ cp)
            cp = _orthonormalize(cp.T).T if cp.abs().max() > 0 else cp[:, :0]
        P, AP = (cp.T.to(S) @ S), (cp.T.to(S) @ AS)
        # W: residuals of the unconverged vectors, orthogonal to [X, P], fresh HVPs (with ``above``, of the
        # guards only while they are not clearly below it)
        todo = res > tol
        if above is not None and settled:
            todo[want:] = False
        elif above is not None:
            todo[want:] &= (res[want:] > GUARD_RESIDUAL) | (values[want:] * (1.0 + res[want:]) >= above)
        R = AX[todo] - values[todo].to(X)[:, None] * X[todo]
        W = _orthonormalize(R, against=torch.cat([X, P]), drop=1e-8)
        if W.shape[0] == 0:
            break
        AW = matvec(W)
        hvps += W.shape[0]
        if not _finite(AW):   # never into eigh: stop with the last Ritz pairs
            failure = _NONFINITE
            break
        S = torch.cat([X, P, W])
        AS = torch.cat([AX, AP, AW])
        n_p, k_prev = P.shape[0], kb
    if last is None or (failure is not None and it == 0):
        return _failed(want, d, S.dtype, S.device, hvps, 0, "lobpcg", failure)
    values, X, AX, res, ritz, want = last
    converged = failure is None and bool((res[:want] <= tol).all())
    # the next Ritz value below the wanted ones over the k-th: how well separated the wanted block is
    # (a lower bound on λ_{k+1}/λ_k from the last subspace; NaN when the subspace held no other direction)
    gap_ratio = float(ritz[want] / ritz[want - 1]) if ritz.numel() > want and float(ritz[want - 1]) > 0 else float("nan")
    extra = {"start_residual": first_residual, "guard": X[want:], "guard_images": AX[want:],
             "guard_values": values[want:].clone(), "guard_residuals": res[want:].clone(), "gap_ratio": gap_ratio}
    if failure is not None:
        extra["failure"] = failure
    return Eigenpairs(values[:want], X[:want], AX[:want], res[:want], hvps, it, converged, "lobpcg", extra)


def top_eigenpairs(matvec: MatVec, d: int, k: int = 1, *, dtype: torch.dtype = torch.float64,
                   device: torch.device | str = "cpu", warm: Tensor | None = None, tol: float | None = None,
                   max_iter: int = 200, method: Literal["auto", "dense", "lobpcg", "eigsh"] = "auto",
                   on_fail: Literal["raise", "warn"] = "raise", seed: int = 0, previous: Tensor | None = None,
                   guard: int = 0, above: float | None = None, max_k: int | None = None) -> Eigenpairs:
    """The ``k`` largest eigenpairs of the symmetric operator ``matvec`` (e.g. ``Point.hvp``).

    ``warm`` (m, d): a subspace to start from (previous eigenvectors, their
    history); without it the solve starts cold with ARPACK.  ``previous``
    (k, d): the last eigenvectors, for the sign convention (defaults to the
    first ``k`` rows of ``warm``).  ``tol``: relative residual (default
    :func:`default_tol`).  ``guard``: extra LOBPCG vectors (see :func:`lobpcg`).  ``above``/``max_k``:
    every eigenpair ``≥ above`` (at least ``k``, at most ``max_k``) with unconverged guards (:func:`lobpcg`).

    A solve that misses ``tol`` or breaks down (NaN/inf HVPs, a failed
    Rayleigh–Ritz step, an ARPACK error) raises :class:`ConvergenceError`
    with one line saying what failed and what to do (``on_fail="raise"``),
    or warns and returns the result with ``converged=False`` (``"warn"``).
    """
    if k < 1 or k > d:
        raise ConfigError(f"k: number of eigenpairs must be in [1, {d}], got {k}")
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
                                max_k=max_k)
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
            msg = (f"eigen-solver: top-{k} eigenpairs failed: {what} after {result.iterations} iterations "
                   f"({result.hvps} HVPs); {todo}")
        else:
            k = result.values.numel()
            msg = (f"eigen-solver: top-{k} eigenpairs did not converge: relative residual "
                   f"{float(result.residuals.max()):.2e} > tol {tol:.1e} after {result.iterations} iterations "
                   f"({result.hvps} HVPs); raise max_iter, loosen the tolerance, or use a larger block k")
        if on_fail == "raise":
            raise ConvergenceError(msg)
        warnings.warn(msg, EigenWarning, stacklevel=2)
    return result
