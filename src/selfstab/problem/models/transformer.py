"""A small encoder-only Transformer for sentence classification (Appendix D.1: 2 layers, hidden 64, 2 heads).

Pre-LN blocks (Xiong et al. 2020): ``h ← h + Attn(LN(h))``, ``h ← h + MLP(LN(h))``,
a final LN, then the mean over real (unmasked) tokens and a linear head.
Token embeddings and learned positional embeddings are added at the input.
Inputs are ``tokens`` (LongTensor ``(n, T)``) and ``mask`` (BoolTensor
``(n, T)``, True for real tokens); padded positions are excluded as attention
keys and from the pooling, so the output does not depend on the padding.

Everything is written with plain differentiable ops (matmul, softmax,
mean/variance) so that the third derivatives the objective takes are exact:
PyTorch's fused ``layer_norm`` gives wrong third derivatives (against finite
differences of HVPs; see ``tests/problem/test_models.py`` and
benchmarks/RESULTS.md), hence :class:`~selfstab.problem.layers.PlainLayerNorm`.  Parameters
get PyTorch's default initialization; the positional embedding is drawn like
an ``nn.Embedding``, from N(0, 1).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ...errors import ConfigError
from ..layers import PlainLayerNorm
from .activations import get_activation


class SelfAttention(nn.Module):
    """Multi-head scaled dot-product self-attention; padded keys get zero weight."""

    def __init__(self, hidden: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.out = nn.Linear(hidden, hidden)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        n, t, d = x.shape
        q, k, v = self.qkv(x).view(n, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        scores = q @ k.transpose(-1, -2) / math.sqrt(d // self.heads)           # (n, heads, T, T)
        # −inf before the softmax gives exactly zero weight; every row keeps ≥ 1 real key.
        scores = scores.masked_fill(~mask[:, None, None, :], float("-inf"))
        y = torch.softmax(scores, dim=-1) @ v                                    # (n, heads, T, d/heads)
        return self.out(y.transpose(1, 2).reshape(n, t, d))


class Block(nn.Module):
    def __init__(self, hidden: int, heads: int, ff: int, activation: str):
        super().__init__()
        self.norm1, self.attn = PlainLayerNorm(hidden), SelfAttention(hidden, heads)
        self.norm2 = PlainLayerNorm(hidden)
        self.mlp = nn.Sequential(nn.Linear(hidden, ff), get_activation(activation), nn.Linear(ff, hidden))

    def forward(self, h: Tensor, mask: Tensor) -> Tensor:
        h = h + self.attn(self.norm1(h), mask)
        return h + self.mlp(self.norm2(h))


class Transformer(nn.Module):
    """``model(tokens, mask) → (n, n_outputs)``; ``input_shape = (T,)``, the padded length."""

    def __init__(self, input_shape: tuple, n_outputs: int, *, vocab_size: int | None = None,
                 max_len: int | None = None, hidden: int = 64, heads: int = 2, layers: int = 2,
                 ff: int | None = None, activation: str = "gelu"):
        super().__init__()
        if vocab_size is None or int(vocab_size) < 2:
            raise ConfigError("vocab_size: the transformer needs the vocabulary size (≥ 2); "
                              "a token dataset gives it as dataset.meta['vocab_size']")
        if len(input_shape) != 1:
            raise ConfigError(f"input_shape: the transformer takes token sequences of shape (T,), got {input_shape}")
        self.max_len = int(max_len) if max_len is not None else int(input_shape[0])
        if self.max_len < input_shape[0]:
            raise ConfigError(f"max_len: {max_len} is shorter than the sequences ({input_shape[0]} tokens)")
        if int(heads) < 1 or int(hidden) % int(heads):
            raise ConfigError(f"heads: must divide hidden={hidden}, got {heads}")
        hidden, ff = int(hidden), int(ff) if ff is not None else 4 * int(hidden)
        self.tok = nn.Embedding(int(vocab_size), hidden)
        self.pos = nn.Parameter(torch.randn(self.max_len, hidden))
        self.blocks = nn.ModuleList(Block(hidden, int(heads), ff, activation) for _ in range(int(layers)))
        self.norm = PlainLayerNorm(hidden)
        self.head = nn.Linear(hidden, n_outputs)

    def forward(self, tokens: Tensor, mask: Tensor | None = None) -> Tensor:
        mask = torch.ones_like(tokens, dtype=torch.bool) if mask is None else mask.bool()
        t = tokens.shape[1]
        if t > self.max_len:
            raise ValueError(f"sequences of {t} tokens are longer than max_len={self.max_len}")
        h = self.tok(tokens) + self.pos[:t]
        for block in self.blocks:
            h = block(h, mask)
        m = mask.to(h.dtype).unsqueeze(-1)
        pooled = (self.norm(h) * m).sum(dim=1) / m.sum(dim=1)
        return self.head(pooled)
