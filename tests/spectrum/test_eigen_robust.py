"""The eigen-solver on blocks and operators that break the plain LOBPCG step.

References are ``torch.linalg.eigh`` of the dense matrix; every solve's HVP
count is checked against a counter around the matvec.  Where no answer exists
(NaN/inf images, a Rayleigh–Ritz step that keeps failing), the solver must end
in one line of :class:`ConvergenceError` — never a ``torch.linalg`` or ARPACK
error — or, with ``on_fail="warn"``, in a result marked unconverged.
"""

import json

import h5py
import pandas as pd
import pytest
import torch

from selfstab import ConvergenceError
from selfstab.spectrum import EigenWarning, lobpcg, top_eigenpairs
from selfstab.spectrum import block_solver as lobpcg_module

F64 = torch.float64


class Counted:
    """A dense symmetric matrix as a matvec on rows, counting the vectors it is applied to."""

    def __init__(self, A: torch.Tensor, nan_after: int | None = None, value: float = float("nan")):
        self.A, self.rows, self.calls, self.nan_after, self.value = A, 0, 0, nan_after, value
        self.sizes = []

    def __call__(self, V: torch.Tensor) -> torch.Tensor:
        self.rows += V.shape[0]
        self.sizes.append(V.shape[0])
        self.calls += 1
        out = V @ self.A
        if self.nan_after is not None and self.calls > self.nan_after:
            out = out.clone()
            out[:, 0] = self.value
        return out


def _matrix(eigenvalues, seed=0):
    d = len(eigenvalues)
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=F64))
    A = Q @ torch.diag(torch.as_tensor(eigenvalues, dtype=F64)) @ Q.T
    return 0.5 * (A + A.T)


def _spread(d=120, top=(5.0, 4.0, 3.0), seed=0):
    g = torch.Generator().manual_seed(seed + 1)
    rest = torch.rand(d - len(top), generator=g, dtype=F64) * 2.0 - 0.5
    return _matrix(list(top) + rest.tolist(), seed)


def _reference(A, k):
    w, V = torch.linalg.eigh(A)
    return w.flip(0)[:k], V.flip(1)[:, :k].T


def _one_line(exc: BaseException) -> str:
    msg = str(exc)
    assert "\n" not in msg and msg.startswith("eigen-solver:")
    # raised outside any except block: no LinAlgError/ARPACK error chained behind it
    assert exc.__cause__ is None and exc.__context__ is None
    return msg


def _assert_pairs(res, A, k, rtol=1e-9):
    w, V = _reference(A, k)
    assert res.converged
    assert torch.allclose(res.values, w, rtol=rtol, atol=0)
    for i in range(k):   # the honest residual, from a fresh product with the dense matrix
        r = A @ res.vectors[i] - res.values[i] * res.vectors[i]
        assert float(r.norm()) <= 1e-7 * float(abs(w[i]))
    assert torch.allclose(res.vectors @ res.vectors.T, torch.eye(k, dtype=F64), atol=1e-10)


# -- rank-deficient warm starts ---------------------------------------------------------------------------------

@pytest.mark.parametrize("k", [1, 2])
def test_duplicated_and_dependent_warm_vectors(k):
    A = _spread()
    _, V = _reference(A, 3)
    g = torch.Generator().manual_seed(5)
    noise = torch.randn(A.shape[0], generator=g, dtype=F64)
    v = V[0] + 0.3 * V[2] + 0.1 * noise / noise.norm()
    # v three times (once scaled), 1e-13 away from v, and a sum of two of them: rank 1
    warm = torch.stack([v, v, 2.0 * v, v + 1e-13 * noise, v + 2.0 * v])
    mv = Counted(A)
    res = top_eigenpairs(mv, A.shape[0], k, warm=warm, tol=1e-10, method="lobpcg")
    _assert_pairs(res, A, k)
    assert res.hvps == mv.rows
    # the collapsed start costs one HVP per independent row, not five: 1, padded with random rows to k + 1 if k > 1
    assert mv.sizes[0] == (1 if k == 1 else k + 1)


def test_warm_vectors_that_are_not_finite_are_dropped():
    A = _spread()
    _, V = _reference(A, 1)
    warm = torch.stack([torch.full_like(V[0], float("nan")), V[0] + 0.2, torch.full_like(V[0], float("inf"))])
    mv = Counted(A)
    res = top_eigenpairs(mv, A.shape[0], 1, warm=warm, tol=1e-10, method="lobpcg")
    _assert_pairs(res, A, 1)
    assert res.hvps == mv.rows


@pytest.mark.parametrize("k", [1, 2, 3])
def test_exactly_repeated_top_eigenvalues(k):
    # λ₁ = λ₂ = λ₃ = 2 exactly: any orthonormal basis of that eigenspace is an answer
    A = _matrix([2.0, 2.0, 2.0, 1.0] + torch.linspace(-1.0, 0.9, 96, dtype=F64).tolist(), seed=3)
    w, V = torch.linalg.eigh(A)
    top = V[:, -3:]
    g = torch.Generator().manual_seed(1)
    warm = torch.randn(k + 1, A.shape[0], generator=g, dtype=F64)
    mv = Counted(A)
    res = top_eigenpairs(mv, A.shape[0], k, warm=warm, tol=1e-10, method="lobpcg")
    _assert_pairs(res, A, k)
    inside = (res.vectors @ top).norm(dim=1)   # each vector lies in the top eigenspace
    assert torch.allclose(inside, torch.ones(k, dtype=F64), atol=1e-10)
    assert res.hvps == mv.rows


def test_huge_condition_number_with_a_reachable_tolerance():
    # eigenvalues from 1 down to 1e-14 (condition number 1e14), the top two 1 and 0.999
    lam = torch.logspace(0, -14, 150, dtype=F64)
    lam[1] = 0.999
    A = _matrix(lam.tolist(), seed=7)
    mv = Counted(A)
    res = top_eigenpairs(mv, A.shape[0], 2, tol=1e-9, method="eigsh")
    _assert_pairs(res, A, 2, rtol=1e-12)
    assert res.hvps == mv.rows


def test_huge_negative_eigenvalue_makes_the_tolerance_unreachable():
    # |λ_min| = 1e12 |λ_max|: H u is known to ~1e-4 relative, so a 1e-10 residual cannot be met
    A = _matrix([1.0, 0.5] + torch.linspace(-0.5, 0.4, 58, dtype=F64).tolist() + [-1e12], seed=2)
    g = torch.Generator().manual_seed(2)
    warm = torch.randn(2, A.shape[0], generator=g, dtype=F64)
    mv = Counted(A)
    with pytest.raises(ConvergenceError) as err:
        top_eigenpairs(mv, A.shape[0], 1, warm=warm, tol=1e-10, max_iter=25, method="lobpcg")
    msg = _one_line(err.value)
    assert "did not converge" in msg and f"({mv.rows} HVPs)" in msg


# -- NaN/inf from the matvec ------------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["lobpcg", "eigsh", "dense"])
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_nonfinite_hvp_from_the_first_product_raises_one_line(method, value):
    A = _spread(d=80)
    mv = Counted(A, nan_after=0, value=value)
    warm = torch.randn(2, 80, dtype=F64) if method == "lobpcg" else None
    with pytest.raises(ConvergenceError) as err:
        top_eigenpairs(mv, 80, 1, warm=warm, tol=1e-10, method=method)
    msg = _one_line(err.value)
    assert "NaN/inf" in msg and "lower the learning rate" in msg and f"({mv.rows} HVPs)" in msg


def test_nonfinite_hvp_warns_and_marks_the_result():
    A = _spread(d=80)
    mv = Counted(A, nan_after=0)
    with pytest.warns(EigenWarning, match="NaN/inf"):
        res = top_eigenpairs(mv, 80, 2, warm=torch.randn(3, 80, dtype=F64), method="lobpcg", on_fail="warn")
    assert not res.converged and res.hvps == mv.rows == 3
    # no Ritz pairs exist: everything NaN, so nothing downstream takes it for an eigenvector
    assert torch.isnan(res.values).all() and torch.isnan(res.vectors).all() and torch.isnan(res.residuals).all()


def test_nonfinite_hvp_mid_solve_keeps_the_last_ritz_pairs():
    A = _spread(d=100)
    g = torch.Generator().manual_seed(4)
    warm = torch.randn(2, 100, generator=g, dtype=F64)
    mv = Counted(A, nan_after=3)   # the start and two iterations are finite, the third iteration's HVP is NaN
    with pytest.warns(EigenWarning, match="NaN/inf"):
        res = top_eigenpairs(mv, 100, 1, warm=warm, tol=1e-12, method="lobpcg", on_fail="warn")
    assert not res.converged and res.hvps == mv.rows and mv.calls == 4
    assert torch.isfinite(res.values).all() and torch.isfinite(res.vectors).all()
    # the Ritz pair of the last finite subspace: a Rayleigh quotient of A, at most λ₁, and close to it
    u = res.vectors[0]
    assert abs(float(u.norm()) - 1) < 1e-12
    assert float(res.values[0]) == pytest.approx(float(u @ A @ u), rel=1e-12)
    assert float(res.values[0]) <= 5.0 + 1e-12
    r = A @ u - res.values[0] * u
    assert float(r.norm() / res.values[0]) == pytest.approx(float(res.residuals[0]), rel=1e-6)
    with pytest.raises(ConvergenceError) as err:
        top_eigenpairs(Counted(A, nan_after=3), 100, 1, warm=warm, tol=1e-12, method="lobpcg")
    assert "NaN/inf" in _one_line(err.value)


def test_nonfinite_hvp_midway_through_arpack():
    A = _spread(d=90)
    mv = Counted(A, nan_after=5)
    with pytest.raises(ConvergenceError) as err:
        top_eigenpairs(mv, 90, 1, tol=1e-10, method="eigsh")
    msg = _one_line(err.value)
    assert "NaN/inf" in msg and mv.rows == 6 and "(6 HVPs)" in msg   # ARPACK stopped at the first NaN


def test_arpack_errors_become_convergence_errors(monkeypatch):
    import scipy.sparse.linalg as sla

    def broken(op, **kw):
        op.matvec(kw["v0"])
        op.matvec(kw["v0"])
        raise sla.ArpackError(-9999)

    monkeypatch.setattr(sla, "eigsh", broken)
    mv = Counted(_spread(d=80))
    with pytest.raises(ConvergenceError) as err:
        top_eigenpairs(mv, 80, 1, method="eigsh")
    msg = _one_line(err.value)
    assert "ARPACK" in msg and "method='lobpcg'" in msg and "(2 HVPs)" in msg and mv.rows == 2


# -- Rayleigh–Ritz failures: re-orthonormalize, then restart without P ----------------------------------------

_EIGH = torch.linalg.eigh


class FlakyEigh:
    """``torch.linalg.eigh`` that fails on chosen calls for projected matrices (Gram matrices ≈ I pass)."""

    def __init__(self, fail_on):
        self.real, self.fail_on, self.projected, self.failed = _EIGH, set(fail_on), 0, 0

    def __call__(self, T, *args, **kw):
        gram = torch.allclose(T, torch.eye(T.shape[0], dtype=T.dtype), atol=1e-3)
        if not gram:
            self.projected += 1
            if self.projected in self.fail_on or ("all" in self.fail_on and self.projected > 1):
                self.failed += 1
                raise torch.linalg.LinAlgError("linalg.eigh: The algorithm failed to converge (injected)")
        return self.real(T, *args, **kw)


@pytest.mark.parametrize("fail_on, attempts", [({2}, 3), ({2, 3}, 4), ({1}, 2)])
def test_rayleigh_ritz_failure_recovers(monkeypatch, fail_on, attempts):
    # fail_on {2}: the plain step of iteration 1 (S = [X, P, W]) fails, the re-orthonormalized block succeeds;
    # {2, 3}: that fails too and the restart without P succeeds; {1}: the very first (warm-start) step fails
    A = _spread(d=100)
    g = torch.Generator().manual_seed(6)
    warm = torch.randn(3, 100, generator=g, dtype=F64)   # k = 1 and 3 rows: P is not empty at iteration 1
    flaky = FlakyEigh(fail_on)
    monkeypatch.setattr(torch.linalg, "eigh", flaky)
    mv = Counted(A)
    res = top_eigenpairs(mv, 100, 1, warm=warm, tol=1e-10, method="lobpcg")
    monkeypatch.undo()
    assert flaky.failed == len(fail_on) and flaky.projected >= attempts
    _assert_pairs(res, A, 1)
    assert res.hvps == mv.rows


def test_rayleigh_ritz_that_keeps_failing(monkeypatch):
    A = _spread(d=100)
    warm = torch.randn(3, 100, dtype=F64)
    monkeypatch.setattr(torch.linalg, "eigh", FlakyEigh({"all"}))
    mv = Counted(A)
    with pytest.raises(ConvergenceError) as err:
        top_eigenpairs(mv, 100, 1, warm=warm, tol=1e-10, method="lobpcg")
    msg = _one_line(err.value)
    assert "Rayleigh–Ritz" in msg and "dropping P" in msg and f"({mv.rows} HVPs)" in msg
    monkeypatch.setattr(torch.linalg, "eigh", FlakyEigh({"all"}))
    mv = Counted(A)
    with pytest.warns(EigenWarning, match="Rayleigh–Ritz"):
        res = top_eigenpairs(mv, 100, 1, warm=warm, tol=1e-10, method="lobpcg", on_fail="warn")
    monkeypatch.undo()
    # the warm start's Ritz pair survives, finite and honest about its residual
    assert not res.converged and res.hvps == mv.rows and res.iterations == 1
    u = res.vectors[0]
    assert float(res.values[0]) == pytest.approx(float(u @ A @ u), rel=1e-12)
    assert float((A @ u - res.values[0] * u).norm() / res.values[0]) == pytest.approx(float(res.residuals[0]),
                                                                                      rel=1e-6)


def test_any_linalg_error_becomes_a_convergence_error(monkeypatch):
    # the dense path has no recovery: its eigh failing must still end in the one-line error
    monkeypatch.setattr(torch.linalg, "eigh", FlakyEigh({1}))
    mv = Counted(_spread(d=40))
    with pytest.raises(ConvergenceError) as err:
        top_eigenpairs(mv, 40, 1, method="dense")
    msg = _one_line(err.value)
    assert "torch.linalg failed (linalg.eigh: The algorithm failed to converge (injected))" in msg
    assert "(40 HVPs)" in msg and mv.rows == 40


def test_block_that_lost_orthonormality_is_reorthonormalized():
    # three rows spanning two directions (the third is the first plus 1e-13), not orthonormal: the plain
    # Rayleigh–Ritz would treat them as an orthonormal basis and report wrong values
    A = _spread(d=60)
    g = torch.Generator().manual_seed(8)
    a, b = torch.randn(2, 60, generator=g, dtype=F64)
    S = torch.stack([a / a.norm(), b / b.norm(), a / a.norm() + 1e-13 * b])
    out = lobpcg_module._rayleigh_ritz(S, S @ A, 1, 0)
    B, AB, w, C, recovered = out
    assert recovered and B.shape[0] == 2
    assert torch.allclose(B @ B.T, torch.eye(2, dtype=F64), atol=1e-12)
    assert torch.allclose(AB, B @ A, atol=1e-12)          # the images follow the change of basis, no HVP
    Q, _ = torch.linalg.qr(torch.stack([a, b]).T)          # reference: the projected matrix on the same span
    ref = torch.linalg.eigvalsh(Q.T @ A @ Q)
    assert torch.allclose(w.sort().values, ref, rtol=1e-10, atol=1e-12)


def test_well_conditioned_lobpcg_takes_the_plain_path(monkeypatch):
    calls = []
    monkeypatch.setattr(lobpcg_module, "_reorthonormalize", lambda *a: calls.append(1))
    A = _spread(d=100)
    res = lobpcg(Counted(A), torch.randn(3, 100, dtype=F64), 2, tol=1e-10)
    assert res.converged and not calls


# -- the run layer -----------------------------------------------------------------------------------------------

TINY = {"lr": 0.5, "quiet": True, "data": {"name": "synthetic", "n": 64, "n_test": 32}, "model": {"width": 8},
        "track": {"steps": 8, "checkpoint_every": 4, "stop_lambda2": 50.0, "processes": ["gd", "constrained"]}}
TINY_ARGS = ["--lr", "0.5", "--quiet", "--data.name", "synthetic", "--data.n", "64", "--data.n_test", "32",
             "--model.width", "8", "--track.steps", "8", "--track.checkpoint_every", "4",
             "--track.stop_lambda2", "50", "--track.processes", "gd,constrained"]


def test_a_run_ended_by_a_convergence_error(tmp_path, monkeypatch, capsys):
    from selfstab import experiment, phases
    from selfstab.cli.main import main
    from selfstab.records import load_run
    from selfstab.spectrum import sharpness

    real_solver, real_track = sharpness.top_eigenpairs, phases.track
    written = []

    def track(*args, on_records, **kw):   # count the tracked steps written to the records
        def write(t, rec):
            on_records(t, rec)
            written.append(t)
        return real_track(*args, on_records=write, **kw)

    def solver(matvec, *args, **kw):      # the real solver, fed NaN HVPs after tracking step 5
        if len(written) >= 6:
            return real_solver(lambda V: torch.full_like(V, float("nan")), *args, **{**kw, "on_fail": "raise"})
        return real_solver(matvec, *args, **kw)

    monkeypatch.setattr(phases, "track", track)
    monkeypatch.setattr(sharpness, "top_eigenpairs", solver)
    out = tmp_path / "run"
    capsys.readouterr()
    assert main(["run", "--out", str(out), *TINY_ARGS]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("selfstab run: error: eigen-solver:") and "NaN/inf" in err[0]
    assert "Traceback" not in err[0] and "LinAlgError" not in err[0]

    summary = json.loads((out / "summary.json").read_text())
    assert summary["stop_reason"] == "error: " + err[0].removeprefix("selfstab run: error: ")
    assert summary["status"].startswith("failed: eigen-solver:")
    with h5py.File(out / "records.h5", "r") as f:   # readable, and holds the steps tracked before the error
        assert "gd" in f and "train" in f
    gd = load_run(out).records["gd"]
    assert list(gd.index) == list(range(6))
    assert list((out / "checkpoints").iterdir())

    # the checkpoints are intact: once the solver works again, resume finishes the run from step 4, with the
    # records of a run that never failed
    monkeypatch.undo()
    experiment.resume(out)
    ref = experiment.run({**TINY, "out": str(tmp_path / "ref")}, figures=False)
    a, b = load_run(ref.path), load_run(out)
    assert b.summary["stop_reason"] == a.summary["stop_reason"] and b.summary["tracked_steps"] == 8
    assert set(a.records) == set(b.records)
    for name in a.records:
        if name != "timing":
            pd.testing.assert_frame_equal(a.records[name], b.records[name], check_exact=True)
