"""From a run's config to a problem: data set, model and full-batch objective.

The only module of ``problem/`` that reads the run's config
(:class:`~selfstab.config.RunConfig`); everything else in ``problem/`` takes
plain arguments.

Data parallelism (docs/theory.md §11): launched under ``torchrun`` (``WORLD_SIZE``
in the environment) or with a process group already initialised,
:func:`build_problem` makes the data-parallel objective (each rank keeps its
shard; every full-batch quantity is one ``all_reduce``) on this rank's device:
``cuda:LOCAL_RANK`` with NCCL when CUDA is present (and ``device`` is not
``cpu``), else the CPU with gloo.  Everything above the objective is replicated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import os

import torch

from .. import distributed
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
    parallel = data_parallel(cfg)
    device = parallel if parallel is not None else resolve_device(cfg.device)
    obj = Objective.from_module(model, ds.inputs, ds.targets, cfg.loss, chunk_size=cfg.train.chunk_size,
                                dtype=dtype or cfg.train.dtype, device=device, distributed=parallel is not None)
    return Problem(obj, ds, model)


def data_parallel(cfg: RunConfig) -> torch.device | None:
    """This rank's device when the run is data-parallel (a process group, or ``torchrun``'s environment,
    which initialises one here), else None: a plain single process.

    The backend follows ``cfg.device``: ``cpu`` → gloo on the CPU; ``auto``/``cuda`` → NCCL on
    ``cuda:LOCAL_RANK`` when CUDA is present, else gloo; an explicit ``cuda:N`` is refused (the rank
    picks its GPU)."""
    if not distributed.is_initialized() and "WORLD_SIZE" not in os.environ:
        return None
    if cfg.device not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"device: {cfg.device!r} under torchrun; each rank uses cuda:LOCAL_RANK, so set "
                          f"device = auto (or cuda, or cpu)")
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device: 'cuda' asked for but this torch has no CUDA device; use --device cpu")
    backend = "gloo" if cfg.device == "cpu" or not torch.cuda.is_available() else "nccl"
    if distributed.is_initialized():
        group = torch.distributed.get_backend()
        return torch.device("cuda", torch.cuda.current_device()) if group == "nccl" else torch.device("cpu")
    _, _, device = distributed.init(backend=backend)
    return device


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
