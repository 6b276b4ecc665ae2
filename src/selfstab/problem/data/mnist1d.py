"""MNIST-1D (Greydanus 2020): 1-D signals of length 40 generated from ten digit templates.

Generated in memory by the ``mnist1d`` package's ``make_dataset``, which only
transforms its built-in templates (shift, scale, shear, correlated and i.i.d.
noise) and never touches the network — unlike its ``get_dataset``, which may
download, and which is therefore not used.  ``n`` training signals (default
5,000) and ``n_test`` test signals (default 1,000) come from one generation
of ``10·⌈(n + n_test)/10⌉`` signals with the package's default arguments and
``seed``; the package standardizes all of them together (one mean and std).
Inputs are ``(n, 1, 40)`` float32 (``(C, L)`` for the 1-D CNN; the MLP
flattens).  The package seeds NumPy's and Python's global generators; their
states are restored afterwards.  Nothing is cached on disk.
"""

from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
import torch

from ...errors import ConfigError


def load(n: int = 5000, seed: int = 0, data_root: Path | None = None, *, n_test: int = 1000) -> dict:
    """MNIST-1D training and test signals; see the module docstring."""
    from mnist1d.data import get_dataset_args, make_dataset

    if n_test < 0:
        raise ConfigError(f"n_test: must be ≥ 0, got {n_test}")
    args = get_dataset_args()
    args.num_samples = 10 * math.ceil((n + n_test) / 10)
    args.train_split = 1.0  # split here, exactly, rather than through a float fraction
    args.seed = int(seed)
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        data = make_dataset(args)
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    x = torch.from_numpy(np.asarray(data["x"], dtype=np.float64)).to(torch.float32).unsqueeze(1)
    y = torch.from_numpy(np.asarray(data["y"], dtype=np.int64))
    return {"inputs": x[:n], "labels": y[:n], "task": "multiclass", "classes": tuple(str(c) for c in range(10)),
            "input_shape": (1, x.shape[-1]),
            "test_inputs": x[n:n + n_test] if n_test else None, "test_labels": y[n:n + n_test] if n_test else None,
            "meta": {"generator_args": {k: v for k, v in vars(args).items() if k != "url"}}}
