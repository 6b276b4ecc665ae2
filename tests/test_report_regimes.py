"""The report's regimes: steps with k_crit = 0, 1, 2, … and each theory's error in each."""

import numpy as np
import pytest

from selfstab.records import RunDir, load_run
from selfstab.report import key_numbers, regimes, write_report

STEPS = 40


@pytest.fixture
def run(tmp_path):
    rd = RunDir.create(tmp_path / "r", {"lr": 0.4, "track": {"steps": STEPS}})
    rng = np.random.default_rng(0)
    t = np.arange(STEPS)
    gd = 0.2 + 0.02 * rng.standard_normal(STEPS)
    theorem = gd * (1 + 0.01 * (1 + t % 3))
    k = np.where(t < 10, 0, np.where(t < 25, 1, 2))
    pred = 0.2 * (1 + 0.001 * (t + 1))
    for s in t:
        rd.recorder("gd").append(int(s), loss=gd[s])
        rd.recorder("predicted").append(int(s), loss=theorem[s])
        rd.recorder("central").append(int(s), k_crit=float(k[s]), predicted_loss=pred[s], x_rank=float(max(0, k[s] - 1)),
                                      dist_gd=0.01, sdcp_residual=1e-10 * s)
        rd.recorder("constrained").append(int(s), loss=0.2, outside_assumptions=float(s >= 12))
    rd.flush()
    rd.write_summary({"lr": 0.4, "tracked_steps": STEPS, "stop_reason": "steps"})
    return load_run(tmp_path / "r"), gd, theorem, pred, k


def test_regimes_count_steps_and_errors_by_k_crit(run):
    r, gd, theorem, pred, k = run
    table = regimes(r)
    assert list(table.index) == [0, 1, 2] and list(table["steps"]) == [10, 15, 15]
    avg = np.full(STEPS, np.nan)
    for i in range(5, STEPS - 4):
        avg[i] = gd[i - 5:i + 5].mean()
    for kc in (0, 1, 2):
        on = (k == kc) & np.isfinite(avg)
        cerr = np.abs(pred[on] - avg[on]) / np.abs(avg[on])
        terr = np.abs(theorem[k == kc] - gd[k == kc]) / np.abs(gd[k == kc])
        assert table.loc[kc, "central_median_rel_err"] == pytest.approx(np.median(cerr), rel=1e-12)
        assert table.loc[kc, "central_max_rel_err"] == pytest.approx(cerr.max(), rel=1e-12)
        assert table.loc[kc, "theorem1_median_rel_err"] == pytest.approx(np.median(terr), rel=1e-12)
        assert table.loc[kc, "theorem1_max_rel_err"] == pytest.approx(terr.max(), rel=1e-12)
    numbers = key_numbers(r)
    assert numbers["regime_k1_steps"] == 15 and numbers["outside_assumptions_from"] == 12
    # a regime of fewer steps than the stated minimum shows no agreement (a 1-step regime once read 5.6e-06)
    assert numbers["regime_k1_theorem1_median_rel_err"] == "too few steps (15 tracked; at least 20 needed)"
    loose = key_numbers(r, min_steps=10)
    assert loose["regime_k1_theorem1_median_rel_err"] == pytest.approx(table.loc[1, "theorem1_median_rel_err"])
    assert numbers["max_sdcp_residual"] == pytest.approx(1e-10 * (STEPS - 1))
    assert numbers["central_max_x_rank"] == 1


def test_report_page_shows_the_regimes(run, tmp_path):
    r = run[0]
    page = write_report(r, tmp_path / "report", fmt="md")
    text = page.read_text()
    assert "k_crit = 2: steps | 15" in text and "k_crit = 0: Theorem 1 loss vs GD" in text


def test_no_regimes_without_the_central_flow(tmp_path):
    rd = RunDir.create(tmp_path / "plain", {"lr": 0.4})
    for s in range(5):
        rd.recorder("gd").append(s, loss=1.0)
    rd.flush()
    r = load_run(tmp_path / "plain")
    assert regimes(r) is None and not any(key.startswith(("regime_", "central_")) for key in key_numbers(r))
