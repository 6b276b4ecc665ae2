"""The paper's data sets by name (the paper's section 6 and Appendix D.2), with targets encoded for a loss.

``load_dataset(name, loss=..., n=..., seed=..., data_root=..., **options)``
returns a :class:`Dataset`: training inputs and labels, the targets the loss
expects, the number of model outputs, and a held-out test split.

Target conventions (docs/theory.md §1), implemented once in :func:`encode_targets`:

=============  ===========================  ============================  ===========
task           mse / half_mse               ce                            logistic
=============  ===========================  ============================  ===========
multiclass     one-hot float, k outputs     class indices, k outputs      refused
binary         ±1 float ``(n,)``, 1 output  class indices, 2 outputs      ±1 float, 1 output
regression     the float labels             refused                       refused
=============  ===========================  ============================  ===========

Binary labels are 0/1 class indices; label 1 becomes +1.  Inputs are stored in
float32 (token ids as int64); ``Objective.from_module(..., dtype=...)`` casts.

A new data set is one file with a loader
``load(n, seed, data_root, *, option=default, ...) -> dict`` (keys
``inputs, labels, task, classes, input_shape`` and optionally
``test_inputs, test_labels, meta``) plus one line in :data:`DATASETS`; its
options are read from the loader's keyword-only parameters.
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor

from ...errors import ConfigError
from ..losses import LOSSES
from . import cifar10, digits, mnist1d, sst2, synthetic

TASKS = ("multiclass", "binary", "regression")


@dataclass
class Dataset:
    """A training set (and a test set, or None) with targets encoded for ``loss``.

    ``inputs`` is a tensor ``(n, *input_shape)`` or a tuple of tensors (for
    token data ``(tokens, mask)``, both ``(n, T)``); ``labels`` are class
    indices (int64) or regression values (float); ``targets`` what the loss
    takes (see :func:`encode_targets`).  ``meta`` holds what a model or a
    report may need beyond that (e.g. ``vocab_size``, normalization statistics).
    """

    name: str
    inputs: Tensor | tuple[Tensor, ...]
    labels: Tensor
    targets: Tensor
    n_outputs: int
    input_shape: tuple
    task: str
    classes: tuple[str, ...]
    test_inputs: Tensor | tuple[Tensor, ...] | None = None
    test_labels: Tensor | None = None
    test_targets: Tensor | None = None
    loss: str = "mse"
    meta: dict = field(default_factory=dict)

    @property
    def n(self) -> int:
        return self.labels.shape[0]


@dataclass(frozen=True)
class DatasetSpec:
    """A registered data set: its loader, a one-line description, where the data come from."""

    name: str
    load: Callable[..., dict]
    description: str
    source: str
    input_shape: str
    classes: str
    option_defaults: dict | None = None   # when the loader takes **options (synthetic)

    @property
    def options(self) -> dict[str, Any]:
        if self.option_defaults is not None:
            return dict(self.option_defaults)
        params = inspect.signature(self.load).parameters.values()
        return {p.name: p.default for p in params if p.kind is p.KEYWORD_ONLY}

    @property
    def n_default(self) -> int:
        return inspect.signature(self.load).parameters["n"].default


_CIFAR_SOURCE = f"{cifar10.ARCHIVE} or {cifar10.FOLDER}/ under data_root or $SELFSTAB_DATA ({cifar10.URL})"

DATASETS: dict[str, DatasetSpec] = {s.name: s for s in (
    DatasetSpec("digits", digits.load, "scikit-learn 8x8 digits as images, standardized per pixel; "
                "binary=True: 0-4 vs 5-9", "bundled with scikit-learn (no download)", "(1, 8, 8)", "0-9"),
    DatasetSpec("cifar10", cifar10.load, "first n CIFAR-10 training images, per-channel standardized",
                _CIFAR_SOURCE, "(3, 32, 32)", "airplane, automobile, ..., truck (10)"),
    DatasetSpec("cifar10-catdog", cifar10.load_catdog, "CIFAR-10 cats vs dogs, balanced, per-channel standardized",
                _CIFAR_SOURCE, "(3, 32, 32)", "cat (-1), dog (+1)"),
    DatasetSpec("sst2", sst2.load, "GLUE SST-2 sentences, balanced; inputs (tokens, mask), word vocabulary",
                "SST-2/train.tsv and dev.tsv under data_root or $SELFSTAB_DATA (GLUE)", "(T,) padded length",
                "negative (-1), positive (+1)"),
    DatasetSpec("mnist1d", mnist1d.load, "MNIST-1D signals of length 40",
                "generated offline by the mnist1d package from its templates", "(1, 40)", "0-9"),
    DatasetSpec("synthetic", synthetic.load, "seeded synthetic data: kind = teacher | mixture | images | tokens",
                "generated from the seed", "per kind", "per kind", option_defaults=synthetic.DEFAULTS),
)}


def _root(data_root: str | os.PathLike | None) -> Path | None:
    root = data_root if data_root is not None else os.environ.get("SELFSTAB_DATA")
    return Path(root).expanduser() if root else None


def n_outputs_for(task: str, loss: str, n_classes: int | None, labels: Tensor | None = None) -> int:
    """How many outputs a model needs for ``task`` under ``loss`` (see the table above)."""
    if task == "multiclass":
        return int(n_classes)
    if task == "binary":
        return 2 if loss == "ce" else 1
    return 1 if labels is None or labels.dim() == 1 else int(labels.shape[1])


def encode_targets(labels: Tensor, task: str, loss: str, n_classes: int | None = None) -> Tensor:
    """Targets for ``loss`` from ``labels`` (docs/theory.md §1 conventions; table in the module docstring)."""
    if loss not in LOSSES:
        raise ConfigError(f"loss: unknown loss {loss!r}; choose one of {', '.join(LOSSES)}")
    if task not in TASKS:
        raise ConfigError(f"task: unknown task {task!r}; choose one of {', '.join(TASKS)}")
    if task == "regression":
        if loss not in ("mse", "half_mse"):
            raise ConfigError(f"loss: {loss!r} needs class labels but the task is regression; use mse or half_mse")
        return labels.to(torch.float32)
    if labels.is_floating_point():
        raise ConfigError(f"labels: a {task} task needs integer class indices, got {labels.dtype}")
    k = 2 if task == "binary" else int(n_classes)
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= k):
        raise ConfigError(f"labels: class indices must lie in [0, {k}) for a {task} task")
    if loss == "ce":
        return labels.to(torch.int64)
    if task == "binary":  # mse, half_mse, logistic: one output, label 1 → +1, label 0 → −1
        return labels.to(torch.float32) * 2 - 1
    if loss == "logistic":
        raise ConfigError(f"loss: 'logistic' is for binary tasks (one output, ±1 targets); this task has {k} "
                          f"classes: use mse, half_mse or ce")
    return torch.nn.functional.one_hot(labels.to(torch.int64), k).to(torch.float32)


def load_dataset(name: str, *, loss: str = "mse", n: int | None = None, seed: int = 0,
                 data_root: str | os.PathLike | None = None, **options) -> Dataset:
    """The data set ``name`` with ``n`` training examples (default: the data set's) and targets for ``loss``.

    ``data_root`` (default ``$SELFSTAB_DATA``) is where file-based data sets
    look; nothing is ever downloaded here.  Unknown names or options are
    one-line :class:`ConfigError` s listing the choices; missing or unreadable
    files are :class:`~selfstab.errors.DataError` s saying what to put where.
    """
    if name not in DATASETS:
        raise ConfigError(f"dataset: unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    spec = DATASETS[name]
    for key in options:
        if key not in spec.options:
            raise ConfigError(f"dataset option {key!r}: not an option of {name!r}; valid options: "
                              f"{', '.join(spec.options) or 'none'}")
    if loss not in LOSSES:
        raise ConfigError(f"loss: unknown loss {loss!r}; choose one of {', '.join(LOSSES)}")
    n = spec.n_default if n is None else int(n)
    if n < 1:
        raise ConfigError(f"n: must be at least 1, got {n}")
    raw = spec.load(n, int(seed), _root(data_root), **options)
    task, classes = raw["task"], tuple(raw["classes"])
    n_classes = len(classes) if task != "regression" else None
    encode = (lambda y: None if y is None else encode_targets(y, task, loss, n_classes))
    return Dataset(
        name=name, inputs=raw["inputs"], labels=raw["labels"], targets=encode(raw["labels"]),
        n_outputs=n_outputs_for(task, loss, n_classes, raw["labels"]), input_shape=tuple(raw["input_shape"]),
        task=task, classes=classes, test_inputs=raw.get("test_inputs"), test_labels=raw.get("test_labels"),
        test_targets=encode(raw.get("test_labels")), loss=loss, meta=dict(raw.get("meta", {})),
    )


def describe_datasets() -> list[dict]:
    """One dict per data set: name, description, default n, input shape, classes, options, source."""
    rows = []
    for spec in DATASETS.values():
        rows.append({"name": spec.name, "description": spec.description, "n": spec.n_default,
                     "input_shape": spec.input_shape, "classes": spec.classes,
                     "options": spec.options, "source": spec.source})
    return rows


__all__ = ["DATASETS", "Dataset", "DatasetSpec", "describe_datasets", "encode_targets", "load_dataset",
           "n_outputs_for"]
