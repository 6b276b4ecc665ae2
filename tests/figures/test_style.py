"""The shared pieces of the figures: the two-step sharpness average, the process table, η of a run."""

from __future__ import annotations

import numpy as np
import pandas as pd

from selfstab.figures.style import PROCESSES, lr_of, sharpness_two_step, style_of, two_step_average
from selfstab.records import Run


def test_two_step_average_is_the_pairing_the_tracker_records(tracked_run):
    """two_step_average(gd.sharpness) is gd.sharpness_avg2 of a real tracked run, bit for bit."""
    gd = tracked_run["gd"]
    recorded = gd["sharpness_avg2"].to_numpy()
    ours = two_step_average(gd["sharpness"])
    assert list(ours.index) == list(gd.index) and np.isnan(recorded[0])
    np.testing.assert_array_equal(ours.to_numpy(), recorded)
    np.testing.assert_array_equal(sharpness_two_step(tracked_run, "gd").to_numpy(), recorded)
    # the other pairing, (S_t + S_{t+1})/2, is a different series on this run
    s = gd["sharpness"].to_numpy()
    assert not np.allclose((s[:-1] + s[1:]) / 2, recorded[:-1], rtol=1e-6)


def test_two_step_average_of_a_process_without_the_recorded_column():
    run = Run(path="r", config={}, records={"predicted": pd.DataFrame(
        {"sharpness": [1.0, 3.0, np.nan, 7.0, 9.0]}, index=pd.Index([0, 1, 2, 3, 4], name="step"))})
    np.testing.assert_array_equal(sharpness_two_step(run, "predicted").to_numpy(), [np.nan, 2.0, np.nan, np.nan, 8.0])
    assert sharpness_two_step(run, "gd") is None


def test_one_table_of_process_styles():
    for name in ("gd", "constrained", "predicted", "generalized", "flow", "central", "constrained_k"):
        assert PROCESSES[name].label and PROCESSES[name].color
    tracked = [PROCESSES[p] for p in ("gd", "constrained", "predicted", "generalized", "flow", "central",
                                      "constrained_k")]
    assert len({p.label for p in tracked}) == len(tracked) and len({p.color for p in tracked}) == len(tracked)
    assert style_of("my_process").label == "my_process"   # a user's process still plots, under its name


def test_lr_from_the_summary_the_run_level_config_or_train():
    assert lr_of(Run(path="r", config={"lr": 0.3, "train": {"lr": 0.1}}, summary={})) == 0.3
    assert lr_of(Run(path="r", config={"train": {"lr": 0.1}}, summary={})) == 0.1
    assert lr_of(Run(path="r", config={"lr": 0.3}, summary={"lr": 0.2})) == 0.2
    assert np.isnan(lr_of(Run(path="r", config={}, summary={})))
