"""scikit-learn's bundled 8×8 handwritten digits (1,797 images, 10 classes; no download).

Images become float ``(n, 1, 8, 8)`` tensors so that the CNN and the ResNet
take them as they are (the MLP flattens).  A seeded permutation sets aside
``n_test`` images (default 297) as the test split; the first ``n`` of the rest
are the training set.  Standardization uses training statistics only and is
applied to both splits: ``"feature"`` (default) per pixel, as scikit-learn's
``StandardScaler`` (pixels constant on the training set are centred, not
scaled); ``"channel"`` one mean and std over all pixels, like CIFAR's
per-channel convention; ``"none"`` raw values 0–16.
``binary=True`` relabels 0–4 as class 0 and 5–9 as class 1.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ...errors import ConfigError

_N_TOTAL = 1797


def _standardize(train: np.ndarray, test: np.ndarray, how: str) -> tuple[np.ndarray, np.ndarray, dict]:
    if how == "none":
        return train, test, {}
    axis = 0 if how == "feature" else None
    mean, std = train.mean(axis=axis), train.std(axis=axis)
    std = np.where(std > 0, std, 1.0)  # a constant pixel has nothing to scale
    return (train - mean) / std, (test - mean) / std, {"mean": mean, "std": std}


def load(n: int = _N_TOTAL - 297, seed: int = 0, data_root: Path | None = None, *, n_test: int = 297,
         binary: bool = False, standardize: str = "feature") -> dict:
    """Training/test split of the digits; see the module docstring."""
    from sklearn.datasets import load_digits  # bundled with scikit-learn, read from its package data

    if standardize not in ("feature", "channel", "none"):
        raise ConfigError(f"standardize: unknown choice {standardize!r}; choose one of feature, channel, none")
    if n_test < 0 or n + n_test > _N_TOTAL:
        raise ConfigError(f"n: digits has {_N_TOTAL} images; n + n_test = {n} + {n_test} is too many")
    bunch = load_digits()
    x, y = bunch.data.astype(np.float64), bunch.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(_N_TOTAL)
    test_idx, train_idx = order[:n_test], order[n_test:n_test + n]
    x_train, x_test, stats = _standardize(x[train_idx], x[test_idx], standardize)
    y_train, y_test = y[train_idx], y[test_idx]
    classes = tuple(str(c) for c in range(10))
    task = "multiclass"
    if binary:
        y_train, y_test, classes, task = (y_train >= 5).astype(np.int64), (y_test >= 5).astype(np.int64), \
            ("0-4", "5-9"), "binary"

    def images(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a.reshape(-1, 1, 8, 8)).to(torch.float32)

    return {
        "inputs": images(x_train), "labels": torch.from_numpy(y_train), "task": task, "classes": classes,
        "input_shape": (1, 8, 8),
        "test_inputs": images(x_test) if n_test else None, "test_labels": torch.from_numpy(y_test) if n_test else None,
        "meta": {"standardize": standardize, **stats, "train_index": train_idx, "test_index": test_idx},
    }
