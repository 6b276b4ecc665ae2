"""The paper's models by name (the paper's section 6 and Appendix D.1).

``build_model(name, input_shape, n_outputs, seed=..., **options)`` returns a
freshly initialized ``nn.Module`` for examples of shape ``input_shape``
(without the batch dimension).  Initialization is PyTorch's default for each
layer (Cohen et al.'s MLP and CNN, which the paper copies, are PyTorch models),
drawn from a private generator seeded with ``seed``: the same seed gives the
same parameters, and the global RNG is left as it was.

A new model is one file with a constructor
``Model(input_shape, n_outputs, *, option=default, ...)`` plus one line in
:data:`MODELS`; its options are read from the constructor's keyword-only
parameters.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from ...errors import ConfigError
from .activations import ACTIVATIONS, get_activation
from .cnn import CNN
from .mlp import MLP
from .resnet import ResNet18
from .transformer import Transformer

# (label, input_shape, n_outputs, options): the shapes describe_models() counts parameters on.
_CIFAR = ("cifar10 3x32x32, 10 outputs", (3, 32, 32), 10, {})
_DIGITS = ("digits 1x8x8, 10 outputs", (1, 8, 8), 10, {})
_MNIST1D = ("mnist1d 1x40, 10 outputs", (1, 40), 10, {})
_SST2 = ("sst2 64 tokens, vocab 5000, 1 output", (64,), 1, {"vocab_size": 5000})


@dataclass(frozen=True)
class ModelSpec:
    """A registered model: its constructor, a one-line description, the shapes to count parameters on."""

    name: str
    build: Callable[..., nn.Module]
    description: str
    examples: tuple[tuple[str, tuple, int, dict], ...] = (_CIFAR, _DIGITS)
    width_option: str = "width"   # the option that a run's model.width sets (the transformer's is hidden)

    @property
    def options(self) -> dict[str, Any]:
        """Option name → default, from the constructor's keyword-only parameters."""
        params = inspect.signature(self.build).parameters.values()
        return {p.name: p.default for p in params if p.kind is p.KEYWORD_ONLY}


MODELS: dict[str, ModelSpec] = {s.name: s for s in (
    ModelSpec("mlp", MLP, "fully connected: flatten, depth linear layers of the given width, swish (paper: 3 layers, width 200)"),
    ModelSpec("cnn", CNN, "two 3x3 convs (width 32) each with avg-pool 2, then linear; conv1d for (C, L) or (L,) inputs",
              (_CIFAR, _DIGITS, _MNIST1D)),
    ModelSpec("resnet18", ResNet18, "CIFAR ResNet-18, stage widths 16/32/64/128, GroupNorm, 3x3 stem, no max-pool"),
    ModelSpec("transformer", Transformer, "pre-LN encoder, 2 layers, hidden 64, 2 heads, masked mean-pool; "
              "inputs (tokens, mask)", (_SST2,), width_option="hidden"),
)}


def _spec(name: str) -> ModelSpec:
    if name not in MODELS:
        raise ConfigError(f"model: unknown model {name!r}; choose one of {', '.join(MODELS)}")
    return MODELS[name]


def build_model(name: str, input_shape: tuple, n_outputs: int, *, seed: int = 0, **options) -> nn.Module:
    """A new ``name`` model for examples of shape ``input_shape`` with ``n_outputs`` outputs.

    Unknown names and options are one-line :class:`ConfigError` s listing the
    valid choices.  Parameters are in PyTorch's default dtype; the objective
    casts them (``Objective.from_module(..., dtype="float64")``).
    """
    spec = _spec(name)
    valid = spec.options
    for key in options:
        if key not in valid:
            raise ConfigError(f"model option {key!r}: not an option of {name!r}; valid options: "
                              f"{', '.join(valid) or 'none'}")
    try:
        shape = tuple(int(s) for s in input_shape)
    except (TypeError, ValueError):
        raise ConfigError(f"input_shape: expected a tuple of ints, got {input_shape!r}") from None
    if not shape or min(shape) < 1:
        raise ConfigError(f"input_shape: expected positive sizes, got {input_shape!r}")
    if int(n_outputs) < 1:
        raise ConfigError(f"n_outputs: must be at least 1, got {n_outputs}")
    with torch.random.fork_rng(devices=[]):
        # Only the CPU generator: models are built on the CPU and moved by the objective.
        torch.default_generator.manual_seed(int(seed))
        return spec.build(shape, int(n_outputs), **options)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def describe_models() -> list[dict]:
    """One dict per model: name, description, options with defaults, parameter counts on stated shapes."""
    rows = []
    for spec in MODELS.values():
        counts = {label: count_parameters(build_model(spec.name, shape, k, **opts))
                  for label, shape, k, opts in spec.examples}
        rows.append({"name": spec.name, "description": spec.description, "options": spec.options,
                     "parameters": counts})
    return rows


__all__ = ["ACTIVATIONS", "MODELS", "ModelSpec", "build_model", "count_parameters", "describe_models",
           "get_activation"]
