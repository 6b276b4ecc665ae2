"""``selfstab export``: one table per process (CSV round-trips the records exactly), the summary and config
beside them; parquet only with pyarrow or fastparquet installed, else one line saying what to install."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from selfstab.cli import export
from selfstab.cli.main import main
from selfstab.records import RunDir, load_run


def _run(path):
    """A run with awkward values: NaN gaps, a field that starts late, inf, tiny and huge magnitudes."""
    rd = RunDir.create(path, {"lr": 0.1, "model": {"name": "mlp", "width": 8}})
    rng = np.random.default_rng(0)
    for t in range(40):
        rd.recorder("train").append(t, loss=float(rng.standard_normal() * 10.0 ** rng.integers(-300, 300)),
                                    sharpness=1 / 3 + t if t % 5 == 0 else None)
    for t in range(12):
        rd.recorder("gd").append(t, loss=math.pi * t, sharpness=math.inf if t == 3 else 2.0 ** -1074 * t,
                                 **({"late": 1e-17 * t} if t >= 7 else {}))
    rd.recorder("diagnostics").append(0, alpha=1.0)
    rd.recorder("diagnostics").append(10, alpha=np.nextafter(1.0, 2.0))
    rd.flush()
    rd.write_summary({"lr": 0.1, "stop_reason": "steps", "tracked_steps": 12})
    return load_run(path)


def test_csv_round_trips_the_records(tmp_path, capsys):
    run = _run(tmp_path / "r")
    assert main(["export", str(run.path), "--format", "csv"]) == 0
    folder = run.path / "export"
    assert capsys.readouterr().out.strip() == (f"wrote train.csv, gd.csv, diagnostics.csv (+ summary.json, "
                                               f"config.toml) in {folder}")
    assert sorted(p.name for p in folder.iterdir()) == ["config.toml", "diagnostics.csv", "gd.csv", "summary.json",
                                                        "train.csv"]
    for name, frame in run.records.items():
        back = pd.read_csv(folder / f"{name}.csv", index_col="step")
        pd.testing.assert_frame_equal(back, frame, check_exact=True)
    assert json.loads((folder / "summary.json").read_text()) == run.summary
    assert (folder / "config.toml").read_text() == (run.path / "config.toml").read_text()
    first = (folder / "gd.csv").read_text().splitlines()[:2]
    assert first[0] == "step,loss,sharpness,late" and first[1] == "0,0.0,0.0,"   # a field not yet recorded: empty


def test_out_folder_and_parquet(tmp_path, capsys):
    run = _run(tmp_path / "r")
    assert main(["export", str(run.path), "--out", str(tmp_path / "csv")]) == 0     # csv is the default
    assert (tmp_path / "csv" / "gd.csv").is_file() and not (run.path / "export").exists()
    try:
        engine = export.parquet_engine()
    except Exception:
        pytest.skip("neither pyarrow nor fastparquet is installed")
    assert main(["export", str(run.path), "--format", "parquet", "--out", str(tmp_path / "pq")]) == 0
    for name, frame in run.records.items():
        pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "pq" / f"{name}.parquet", engine=engine), frame,
                                      check_exact=True)


def test_parquet_without_a_writer_is_one_line_and_writes_nothing(tmp_path, capsys, monkeypatch):
    run = _run(tmp_path / "r")
    real = export.importlib.util.find_spec
    monkeypatch.setattr(export.importlib.util, "find_spec",
                        lambda name, *a: None if name in ("pyarrow", "fastparquet") else real(name, *a))
    assert main(["export", str(run.path), "--format", "parquet"]) == 2
    err = capsys.readouterr().err
    assert err == ("selfstab export: error: export: --format parquet needs pyarrow or fastparquet "
                   "(pip install pyarrow); --format csv needs nothing\n")
    assert not (run.path / "export").exists()
