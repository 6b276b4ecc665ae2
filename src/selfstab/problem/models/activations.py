"""Activation functions by name (the paper's MLP and CNN use swish, Appendix D.1).

Each activation is written with plain differentiable ops, so that the third
derivatives the objective takes through it are exact (see the tests, which
compare ``∇³L(u, v)`` with finite differences of HVPs for every activation).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor, nn

from ...errors import ConfigError


def swish(x: Tensor) -> Tensor:
    """``x·sigmoid(x)`` (Ramachandran et al. 2017), the paper's activation."""
    return x * torch.sigmoid(x)


def gelu(x: Tensor) -> Tensor:
    """Exact GELU ``x·Φ(x)`` with the Gauss error function (not the tanh approximation)."""
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


def softplus(x: Tensor) -> Tensor:
    """``log(1 + eˣ)`` without overflow and without PyTorch's linear cut-off above x = 20."""
    return torch.logaddexp(x, torch.zeros_like(x))


def elu(x: Tensor) -> Tensor:
    """``x`` for x > 0, ``eˣ − 1`` otherwise (α = 1)."""
    # clamp keeps exp from overflowing in the branch that torch.where discards.
    return torch.where(x > 0, x, torch.expm1(x.clamp(max=0.0)))


ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "swish": swish,
    "relu": torch.relu,
    "tanh": torch.tanh,
    "gelu": gelu,
    "softplus": softplus,
    "elu": elu,
}


class Activation(nn.Module):
    """An element-wise activation as a module (no parameters), printed with its name."""

    def __init__(self, name: str):
        super().__init__()
        self.name = name
        self.fn = ACTIVATIONS[name]

    def forward(self, x: Tensor) -> Tensor:
        return self.fn(x)

    def extra_repr(self) -> str:
        return self.name


def get_activation(name: str) -> Activation:
    """The activation module called ``name``; an unknown name is a one-line :class:`ConfigError`."""
    if name not in ACTIVATIONS:
        raise ConfigError(f"activation: unknown activation {name!r}; choose one of {', '.join(ACTIVATIONS)}")
    return Activation(name)
