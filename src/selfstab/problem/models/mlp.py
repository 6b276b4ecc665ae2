"""The paper's fully connected network (Appendix D.1: Cohen et al.'s 3-layer MLP, width 200, swish).

``flatten → Linear(width) → act → … → Linear(n_outputs)`` with ``depth``
linear layers in all (so ``depth − 1`` hidden layers), biases on.
"""

from __future__ import annotations

import math

from torch import Tensor, nn

from ...errors import ConfigError
from .activations import get_activation


class MLP(nn.Module):
    def __init__(self, input_shape: tuple, n_outputs: int, *, width: int = 200, depth: int = 3,
                 activation: str = "swish", bias: bool = True):
        super().__init__()
        if int(depth) < 1:
            raise ConfigError(f"depth: the MLP needs at least one linear layer, got {depth}")
        if int(width) < 1:
            raise ConfigError(f"width: must be at least 1, got {width}")
        sizes = [math.prod(input_shape)] + [int(width)] * (int(depth) - 1) + [n_outputs]
        layers: list[nn.Module] = [nn.Flatten()]
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            if i:
                layers.append(get_activation(activation))
            layers.append(nn.Linear(a, b, bias=bias))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)
