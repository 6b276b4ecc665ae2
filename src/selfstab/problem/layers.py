"""Layers written in plain differentiable ops, for exact higher derivatives.

PyTorch's fused LayerNorm kernel gives wrong third derivatives: ``∇³L(u, v)``
through ``F.layer_norm`` disagrees with a finite difference of the HVP (the
size of the error is in benchmarks/RESULTS.md; tests/problem/test_models.py
keeps the check).
:class:`PlainLayerNorm` computes the same function with the mean and the
biased variance written out, and :func:`replace_layernorms` swaps it into a
user's model, keeping the parameters (and so the flat θ layout) unchanged.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class PlainLayerNorm(nn.Module):
    """``nn.LayerNorm`` over the trailing ``normalized_shape`` axes, without the fused kernel."""

    def __init__(self, normalized_shape: int | tuple[int, ...], eps: float = 1e-5, elementwise_affine: bool = True,
                 bias: bool = True):
        super().__init__()
        self.normalized_shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
        self.eps = eps
        if elementwise_affine:
            self.weight = nn.Parameter(torch.ones(self.normalized_shape))
            self.bias = nn.Parameter(torch.zeros(self.normalized_shape)) if bias else None
        else:
            self.weight = self.bias = None

    def forward(self, x: Tensor) -> Tensor:
        dims = tuple(range(-len(self.normalized_shape), 0))
        xc = x - x.mean(dim=dims, keepdim=True)
        out = xc * torch.rsqrt(xc.pow(2).mean(dim=dims, keepdim=True) + self.eps)
        if self.weight is not None:
            out = out * self.weight
        if self.bias is not None:
            out = out + self.bias
        return out


def replace_layernorms(model: nn.Module) -> int:
    """In place: every ``nn.LayerNorm`` in ``model`` becomes a :class:`PlainLayerNorm` with the same parameters.

    Returns how many were replaced.  Parameter names and order are kept, so
    the flattened θ is the same vector.
    """
    count = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.LayerNorm:
                plain = PlainLayerNorm(child.normalized_shape, child.eps, elementwise_affine=False)
                plain.weight, plain.bias = child.weight, child.bias
                setattr(parent, name, plain)
                count += 1
    return count
