"""The series read off a loaded run (:mod:`selfstab.records.series`): the two-step sharpness average, η of a run.

The two-step average against the tracker's own ``gd.sharpness_avg2`` of a real run is in
tests/figures/test_style.py, beside the run it needs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from selfstab.config import RunConfig, from_dict, to_dict
from selfstab.records import Run
from selfstab.records.series import lr_of, sharpness_two_step


def test_two_step_average_of_a_process_without_the_recorded_column():
    run = Run(path="r", config={}, records={"predicted": pd.DataFrame(
        {"sharpness": [1.0, 3.0, np.nan, 7.0, 9.0]}, index=pd.Index([0, 1, 2, 3, 4], name="step"))})
    np.testing.assert_array_equal(sharpness_two_step(run, "predicted").to_numpy(), [np.nan, 2.0, np.nan, np.nan, 8.0])
    assert sharpness_two_step(run, "gd") is None


def test_lr_is_the_value_the_run_resolved():
    assert lr_of(Run(path="r", config={"lr": 0.3}, summary={"lr": 0.2})) == 0.2   # the summary first
    assert lr_of(Run(path="r", config={"lr": 0.3}, summary={})) == 0.3
    assert np.isnan(lr_of(Run(path="r", config={}, summary={})))


def test_an_old_train_lr_is_migrated_once_by_the_config():
    """``train.lr`` reaches a run's η through :meth:`RunConfig.migrate` only: the run's config.toml is the
    resolved config, with the run-level ``lr``; the reader does not read the old key a second time."""
    with pytest.warns(DeprecationWarning, match="train.lr is deprecated"):
        resolved = to_dict(from_dict(RunConfig, {"train": {"lr": 0.1}}))
    assert lr_of(Run(path="r", config=resolved, summary={})) == 0.1
    assert np.isnan(lr_of(Run(path="r", config={"train": {"lr": 0.1}}, summary={})))
