"""The shared pieces of the figures: the process table, and the two-step sharpness average they draw (as recorded)."""

from __future__ import annotations

import numpy as np

from selfstab.figures.style import PROCESSES, style_of
from selfstab.records.series import sharpness_two_step, two_step_average


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


def test_one_table_of_process_styles():
    for name in ("gd", "constrained", "predicted", "generalized", "flow", "central", "constrained_k"):
        assert PROCESSES[name].label and PROCESSES[name].color
    tracked = [PROCESSES[p] for p in ("gd", "constrained", "predicted", "generalized", "flow", "central",
                                      "constrained_k")]
    assert len({p.label for p in tracked}) == len(tracked) and len({p.color for p in tracked}) == len(tracked)
    assert style_of("my_process").label == "my_process"   # a user's process still plots, under its name
