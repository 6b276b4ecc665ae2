"""The paper's small CNN (Appendix D.1: Cohen et al.'s 3-layer CNN, width 32, swish).

``conv(width, 3×3, same) → act → avgpool 2 → conv(width, 3×3, same) → act →
avgpool 2 → flatten → linear``.  Images are ``(C, H, W)`` with ``H, W ≥ 4``
(two poolings of 2 leave at least 1×1); ``(C, L)`` or ``(L,)`` inputs use the
same network with 1-D convolutions and pooling (MNIST-1D), ``L ≥ 4``.
Average rather than max pooling keeps the loss smooth in θ.
"""

from __future__ import annotations

from torch import Tensor, nn

from ...errors import ConfigError
from .activations import get_activation


class CNN(nn.Module):
    def __init__(self, input_shape: tuple, n_outputs: int, *, width: int = 32, activation: str = "swish"):
        super().__init__()
        shape = tuple(input_shape)
        if len(shape) == 1:  # (L,): a single-channel signal
            shape = (1,) + shape
        if len(shape) not in (2, 3):
            raise ConfigError(f"input_shape: the CNN takes (C, H, W) images or (C, L) / (L,) signals, got {input_shape}")
        if min(shape[1:]) < 4:
            raise ConfigError(f"input_shape: the CNN pools twice by 2, so spatial sizes must be ≥ 4, got {input_shape}")
        self.shape = shape
        w = int(width)
        conv, pool = (nn.Conv1d, nn.AvgPool1d) if len(shape) == 2 else (nn.Conv2d, nn.AvgPool2d)
        spatial = 1
        for s in shape[1:]:
            spatial *= s // 2 // 2
        self.net = nn.Sequential(
            conv(shape[0], w, 3, padding=1), get_activation(activation), pool(2),
            conv(w, w, 3, padding=1), get_activation(activation), pool(2),
            nn.Flatten(), nn.Linear(w * spatial, n_outputs),
        )

    def forward(self, x: Tensor) -> Tensor:
        # (n, L) signals get their channel axis back; images pass unchanged.
        return self.net(x.reshape((x.shape[0],) + self.shape))
