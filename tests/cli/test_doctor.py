"""``selfstab doctor``: every version it prints is the installed one, read here by other means."""

import importlib.metadata
import os
import platform
import re
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import torch

import selfstab

SRC = str(Path(selfstab.__file__).resolve().parents[1])
# what a bug report needs at least (the list), beside every dependency that selfstab's metadata names
REQUIRED = ["torch", "numpy", "scipy", "cvxpy", "clarabel", "h5py", "pandas", "matplotlib", "scikit-learn"]


def _doctor() -> dict[str, list[str]]:
    env = dict(os.environ, PYTHONPATH=SRC)
    proc = subprocess.run([sys.executable, "-m", "selfstab", "doctor"], capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 0 and not proc.stderr, proc.stderr
    rows: dict[str, list[str]] = {}
    for line in proc.stdout.splitlines():
        name, text = line.split(None, 1)
        rows.setdefault(name, []).append(text)
    return rows


def _dependencies() -> list[str]:
    """The distributions that the installed selfstab requires (not its extras), by name."""
    reqs = importlib.metadata.requires("selfstab") or []
    return [re.match(r"[A-Za-z0-9_.-]+", r).group(0) for r in reqs if "extra ==" not in r]


def test_doctor_prints_the_installed_versions():
    rows = _doctor()
    assert rows["selfstab"] == [importlib.metadata.version("selfstab")]
    assert rows["python"][0].split()[0] == platform.python_version()
    for dist in {*REQUIRED, *_dependencies()}:
        assert dist in rows, f"doctor does not print {dist}"
        assert rows[dist][0].split()[0] == importlib.metadata.version(dist), (dist, rows[dist])
    # the details that decide results: CUDA or not, HDF5's version, and the BLAS numpy was built with
    assert ("CUDA not available" in rows["torch"][0]) == (not torch.cuda.is_available())
    assert f"HDF5 {h5py.version.hdf5_version}" in rows["h5py"][0]
    blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
    if "openblas" in blas["name"]:
        assert any(line.startswith(f"openblas {blas['version']}") for line in rows["blas"]), rows["blas"]
