"""Block LOBPCG warm-started from a subspace (docs/theory.md §2, §10).

Written here rather than taken from scipy/torch because a warm start along a
trajectory needs what neither offers: (1) Rayleigh–Ritz on several history
vectors at once, which captures both the smooth drift of ``u`` and the
period-2 wobble of GD at the edge; (2) every ``A``-image kept as a linear
combination, so each iteration costs exactly one HVP per unconverged vector
and the residual check is free; (3) an exact HVP count; (4) a number of
wanted pairs that follows the spectrum (the critical block: every eigenvalue
above an edge).  How ``torch.lobpcg`` and scipy's warm-started LOBPCG compare
is in benchmarks/RESULTS.md.

Breakdowns: an HVP that returns NaN/inf (a diverged θ) stops the solve
before it reaches ``eigh``; the result keeps the last finite Ritz pairs, or
is NaN when there were none.  A LOBPCG block that has lost
orthonormality, or whose Rayleigh–Ritz step fails, is re-orthonormalized from
its Gram matrix with the numerically dependent directions dropped (images
follow as the same linear combinations: no HVP is repeated), and then, if the
step still fails, restarted without ``P``.  These guards act only where the
plain step would fail or is degenerate, so well-conditioned solves are
unchanged bit for bit.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .result import _NONFINITE, Eigenpairs, MatVec, _failed, _finite, _residuals

GUARD_RESIDUAL = 0.1     # lobpcg(above=...): a guard's relative residual below which its Ritz value is trusted

_RAYLEIGH_RITZ = ("the Rayleigh–Ritz step (torch.linalg.eigh) failed even after re-orthonormalizing the block and "
                  "dropping P", "the operator is too ill-conditioned at this point: loosen the tolerance, or use "
                  "method='dense' on a small problem")


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
           above: float | None = None, max_k: int | None = None, momentum: bool = True) -> Eigenpairs:
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

    ``momentum``: the first iteration's implicit momentum ``P`` is the rest of the warm subspace (its other Ritz
    vectors); ``False`` starts from the block's Ritz vectors alone (``P`` empty), as a cold LOBPCG would.  Where
    the top eigenvalue sits in a cluster, the older vectors of a warm history are other members of it and slow
    the first iterations down (benchmarks/RESULTS.md, the near-degenerate edge).

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
            # residual small enough for the value to mean something (a random padding direction's does not);
            # or it has converged like the wanted pairs (its value then exact to about tol²: an eigenvalue a
            # hair below the edge needs no more)
            r, v = float(res[want]), float(values[want])
            settled = r <= tol or (r <= GUARD_RESIDUAL and v * (1.0 + r) < above)
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
            cp = C[:, order[kb:]] if momentum else C[:, :0]
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
