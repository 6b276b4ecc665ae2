"""CIFAR ResNet-18 with GroupNorm (Appendix D.1: "ResNet18 with progressive widths 16, 32, 64, 128").

He et al.'s BasicBlock (two 3×3 convolutions and an identity or 1×1
projection shortcut), ``blocks = (2, 2, 2, 2)`` of them in four stages of
widths ``width·(1, 2, 4, 8)`` with strides ``(1, 2, 2, 2)``; a 3×3 stride-1
stem and no max-pool (the CIFAR variant), global average pooling, a linear head.

Normalization is GroupNorm, never BatchNorm: a full-batch objective must be a
function of θ alone, not of how the batch is chunked (docs/theory.md §1; the paper's
authors used GroupNorm too).  Each norm
layer over ``C`` channels uses ``gcd(C, groups)`` groups, so the count always
divides ``C``; with the defaults (``groups = 8``, widths 16–128) that is 8
groups of 2 to 16 channels.  Convolutions followed by a norm carry no bias
(the norm's shift plays that role).

The ``blocks`` option also sets the number of stages (``len(blocks)``), which
the tests use to build a tiny network with a dense Hessian.  On 8×8 digits the
feature maps go 8 → 8 → 4 → 2 → 1.
"""

from __future__ import annotations

import math

from torch import Tensor, nn

from ...errors import ConfigError
from .activations import get_activation


def _norm(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(channels, groups), channels)


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int, groups: int, activation: str):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.norm1 = _norm(c_out, groups)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.norm2 = _norm(c_out, groups)
        self.act = get_activation(activation)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), _norm(c_out, groups))

    def forward(self, x: Tensor) -> Tensor:
        h = self.act(self.norm1(self.conv1(x)))
        h = self.norm2(self.conv2(h))
        return self.act(h + self.shortcut(x))


class ResNet18(nn.Module):
    def __init__(self, input_shape: tuple, n_outputs: int, *, width: int = 16, blocks: tuple = (2, 2, 2, 2),
                 groups: int = 8, activation: str = "swish"):
        super().__init__()
        if len(input_shape) != 3:
            raise ConfigError(f"input_shape: the ResNet takes (C, H, W) images, got {input_shape}")
        blocks = tuple(int(b) for b in blocks)
        if not blocks or min(blocks) < 1 or int(width) < 1 or int(groups) < 1:
            raise ConfigError(f"resnet18: width, groups and every entry of blocks must be ≥ 1, got "
                              f"width={width}, groups={groups}, blocks={blocks}")
        widths = [int(width) * 2 ** i for i in range(len(blocks))]
        self.stem = nn.Sequential(nn.Conv2d(input_shape[0], widths[0], 3, padding=1, bias=False),
                                  _norm(widths[0], groups), get_activation(activation))
        layers, c_in = [], widths[0]
        for i, (c, k) in enumerate(zip(widths, blocks)):
            for j in range(k):
                stride = 2 if (i > 0 and j == 0) else 1
                layers.append(BasicBlock(c_in, c, stride, groups, activation))
                c_in = c
        self.stages = nn.Sequential(*layers)
        self.head = nn.Linear(c_in, n_outputs)

    def forward(self, x: Tensor) -> Tensor:
        h = self.stages(self.stem(x))
        return self.head(h.mean(dim=(2, 3)))
