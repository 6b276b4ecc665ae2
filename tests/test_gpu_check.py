"""benchmarks/gpu_check.py: runs on a CPU-only machine (CUDA parts skipped), and its comparisons catch mismatches."""

import importlib
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from selfstab.problem.objective import Objective

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def gpu_check():
    threads = torch.get_num_threads()   # benchmarks/common.py sets one thread on import: not for the other tests
    sys.path.insert(0, str(BENCHMARKS))
    try:
        yield importlib.import_module("gpu_check")
    finally:
        sys.path.remove(str(BENCHMARKS))
        torch.set_num_threads(threads)


def _function_objective(scale: float) -> Objective:
    c = torch.linspace(0.5, 1.5, 6, dtype=torch.float64)
    return Objective.from_function(lambda t: scale * (c * torch.sin(t)).sum() + (t ** 4).sum() * scale,
                                   torch.linspace(-1, 1, 6, dtype=torch.float64))


def test_compare_objectives_catches_a_1e8_mismatch(gpu_check):
    ref, off = _function_objective(1.0), _function_objective(1.0 + 1e-8)
    theta = ref.theta0
    u = torch.ones(6, dtype=torch.float64) / 6 ** 0.5
    v = torch.arange(6, dtype=torch.float64) / torch.arange(6, dtype=torch.float64).norm()
    same = gpu_check.compare_objectives(ref, _function_objective(1.0), theta, u, v)
    assert same == {"loss": 0.0, "grad": 0.0, "hvp": 0.0, "d3": 0.0}
    errs = gpu_check.compare_objectives(ref, off, theta, u, v)
    assert set(errs) == {"loss", "grad", "hvp", "d3"}
    for name, e in errs.items():   # every derivative of (1 + 1e-8)·f is off by exactly 1e-8 relative
        assert e == pytest.approx(1e-8, rel=1e-6), name
        assert e > gpu_check.RTOL


def test_rel_err_is_a_norm_ratio(gpu_check):
    assert gpu_check.rel_err(torch.tensor([3.0, 4.0]), torch.tensor([3.0, 4.5])) == pytest.approx(0.1)
    assert gpu_check.rel_err(torch.zeros(2), torch.tensor([0.0, 2e-3])) == pytest.approx(2e-3)


def test_compare_records_judges_the_first_steps_and_reports_the_rest(gpu_check):
    ref = {"gd": [{"step": t, "loss": 2.0 - 0.1 * t, "x": 1e-3 * t, "eig_residual": 1e-8} for t in range(10)]}
    early = {"gd": [dict(r) for r in ref["gd"]]}
    early["gd"][1]["loss"] += 2e-8          # 1e-8 of the largest |loss|, within the tight steps
    late = {"gd": [dict(r) for r in ref["gd"]]}
    late["gd"][8]["loss"] += 2e-3
    late["gd"][5]["eig_residual"] = 1.0     # a solver tolerance, not compared
    nan = {"gd": [dict(r) for r in ref["gd"]]}
    nan["gd"][9]["x"] = math.nan

    c = gpu_check.compare_records(ref, early, tables=("gd",))["gd"]
    assert c["fields"]["loss"]["tight"] == pytest.approx(1e-8, rel=1e-6) and not c["ok"]
    assert "eig_residual" not in c["fields"]
    c = gpu_check.compare_records(ref, late, tables=("gd",))["gd"]
    assert c["ok"] and c["fields"]["loss"]["tight"] == 0.0 and c["fields"]["loss"]["all"] == pytest.approx(1e-3)
    c = gpu_check.compare_records(ref, nan, tables=("gd",))["gd"]
    assert c["ok"] and c["fields"]["x"]["all"] == math.inf
    short = {"gd": ref["gd"][:1]}
    assert not gpu_check.compare_records(ref, short, tables=("gd",))["gd"]["ok"]   # a side that stopped early


def test_the_quick_check_runs_on_the_cpu_and_says_what_it_skipped(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this test is the CPU-only run; on a GPU machine run benchmarks/gpu_check.py itself")
    out = tmp_path / "check.json"
    proc = subprocess.run([sys.executable, str(BENCHMARKS / "gpu_check.py"), "--quick", "--json", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    res = json.loads(out.read_text())
    assert res["cuda_devices"] == 0 and res["ok"]
    for part in ("derivatives", "tracking", "nccl"):
        assert "no CUDA" in res[part]["skipped"]
    assert "Skipped: derivatives: CUDA against the CPU: no CUDA" in proc.stdout
    assert "two CUDA devices, found 0" in proc.stdout
    # what runs on the CPU: every registered model against the CPU summed in another order, to rounding
    from selfstab.problem.models import MODELS
    rows = res["derivatives"]["rows"]
    assert [r["model"] for r in rows] == list(MODELS)
    for r in rows:
        assert math.isfinite(r["L"]) and r["L"] > 0
        assert all(0 <= r[k] <= 1e-13 for k in ("loss", "grad", "hvp", "d3")), r
    tr = res["tracking"]
    assert tr["ok"] and tr["steps"] == 6 and len(tr["loss_cpu"]) == 6
    assert all(math.isfinite(x) for x in tr["loss_cpu"])
    assert all(tr["compare"][t]["steps"] == 6 for t in ("gd", "constrained", "predicted"))
    assert tr["compare"]["gd"]["fields"]["loss"]["all"] <= 1e-12
    tm = res["timing"]
    assert tm["device"] == "cpu" and len(tm["track_steps"]) == 2 and len(tm["central_steps"]) == 2
    assert all(math.isfinite(s) and s > 0 for s in [*tm["track_steps"], *tm["central_steps"]])
    assert tm["lr"] == pytest.approx(2.1 / tm["sharpness"])


@pytest.mark.slow
def test_two_gloo_ranks_agree_with_one(gpu_check):
    """Part 4's launcher and worker on the CPU (gloo in place of NCCL): 1 and 2 ranks under torchrun."""
    res = gpu_check.nccl(quick=True, backend="gloo")
    assert res["ok"], res
    assert set(res["errors"]) == {"loss", "grad", "hvp", "d3"}
    assert all(e <= gpu_check.RTOL for e in res["errors"].values())
    assert all(s > 0 for w in (1, 2) for s in res["seconds"][w].values())
