"""From a run's config to a problem: data set, model and full-batch objective.

The only module of ``problem/`` that reads the run's config
(:class:`~selfstab.config.RunConfig`); everything else in ``problem/`` takes
plain arguments.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

from ..config import RunConfig
from ..errors import ConfigError
from .data import Dataset, load_dataset
from .models import MODELS, build_model
from .objective import Objective


@dataclass
class Problem:
    objective: Objective
    dataset: Dataset
    model: torch.nn.Module


def resolve_device(name: str) -> torch.device:
    """``auto`` (CUDA when present), ``cpu``, ``cuda`` or ``cuda:N`` → a device, or a one-line error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"device: unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device: {name!r} asked for but this torch has no CUDA device; use --device cpu")
    return dev


def model_options(cfg: RunConfig, dataset: Dataset) -> dict[str, Any]:
    """The model's constructor options from ``cfg.model``: ``width`` (under the model's own name for it),
    ``depth`` and ``activation`` when set, every entry of ``model.options``, and the vocabulary size of
    token data.  An option the model does not have is a one-line error listing the ones it has."""
    spec = MODELS.get(cfg.model.name)
    if spec is None:
        raise ConfigError(f"model.name: unknown model {cfg.model.name!r}; choose one of {', '.join(MODELS)}")
    valid = spec.options
    opts: dict[str, Any] = {spec.width_option: cfg.model.width}
    for key in ("depth", "activation"):
        value = getattr(cfg.model, key)
        if value is None:
            continue
        if key not in valid:
            raise ConfigError(f"model.{key}: not an option of {cfg.model.name!r}; its options: {', '.join(valid)}")
        opts[key] = value
    for key, value in cfg.model.options.items():
        if key not in valid:
            raise ConfigError(f"model.options.{key}: not an option of {cfg.model.name!r}; its options: "
                              f"{', '.join(valid)}")
        if key in opts:
            raise ConfigError(f"model.options.{key}: set it with model.{'width' if key == spec.width_option else key}"
                              f" instead")
        opts[key] = tuple(value) if isinstance(value, list) else value
    if "vocab_size" in valid:
        if "vocab_size" not in dataset.meta:
            raise ConfigError(f"model.name: {cfg.model.name!r} needs token data (e.g. --data.name sst2 or "
                              f"synthetic with kind=tokens), not {cfg.data.name!r}")
        opts["vocab_size"] = dataset.meta["vocab_size"]
    return opts


def build_problem(cfg: RunConfig, dtype: str | torch.dtype | None = None) -> Problem:
    """Data set, model and full-batch objective for ``cfg`` (in ``dtype``, default ``cfg.train.dtype``)."""
    data_opts: dict[str, Any] = {"binary": True} if cfg.data.binary else {}
    if cfg.data.n_test is not None:
        data_opts["n_test"] = cfg.data.n_test
    if cfg.data.kind is not None:
        data_opts["kind"] = cfg.data.kind
    ds = load_dataset(cfg.data.name, loss=cfg.loss, n=cfg.data.n, seed=cfg.seed, data_root=cfg.data.data_root,
                      **data_opts)
    model = build_model(cfg.model.name, ds.input_shape, ds.n_outputs, seed=cfg.seed, **model_options(cfg, ds))
    obj = Objective.from_module(model, ds.inputs, ds.targets, cfg.loss, chunk_size=cfg.train.chunk_size,
                                dtype=dtype or cfg.train.dtype, device=resolve_device(cfg.device))
    return Problem(obj, ds, model)


def evaluator(problem: Problem) -> Callable[[torch.Tensor], dict] | None:
    """``θ ↦ {train_accuracy, test_loss, test_accuracy}`` for classification data (``None`` otherwise)."""
    ds, obj = problem.dataset, problem.objective
    if ds.task not in ("multiclass", "binary"):
        return None
    from .losses import get_loss, prepare_targets

    def accuracy(out, labels):
        pred = out.argmax(1) if out.shape[1] > 1 else (out[:, 0] > 0).long()
        return float((pred.cpu() == labels.cpu()).double().mean())

    def evaluate(theta):
        res = {"train_accuracy": accuracy(obj.outputs(theta, ds.inputs), ds.labels)}
        if ds.test_inputs is not None and ds.test_labels is not None and len(ds.test_labels):
            out = obj.outputs(theta, ds.test_inputs)
            y = prepare_targets(ds.loss, ds.test_targets).to(out.device)
            y = y.to(out.dtype) if y.is_floating_point() else y
            res["test_loss"] = float(get_loss(ds.loss)(out, y).mean())
            res["test_accuracy"] = accuracy(out, ds.test_labels)
        return res

    return evaluate
