"""Loss conventions (docs/theory.md §1).

Each loss is a function ``(outputs, targets) -> per-example losses`` (shape
``(n,)``), so that a chunked objective can sum per-chunk contributions and
divide by the total count once: the full-batch mean is then exact whatever the
chunking.

- ``mse``:      ``‖f(x) − y‖²`` summed over outputs, **no ½** (the paper's).
- ``half_mse``: the same times ½ (Cohen et al.); sharpness halves.
- ``ce``:       softmax cross-entropy on integer class indices.
- ``logistic``: ``log(1 + exp(−y f))`` with ``y = ±1`` and one output.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from ..errors import ConfigError

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def mse(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (out - y).pow(2).reshape(out.shape[0], -1).sum(dim=1)


def half_mse(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return 0.5 * mse(out, y)


def ce(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(out, y, reduction="none")


def logistic(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    # softplus(−y f) = log(1 + exp(−y f)), computed without overflow.
    return F.softplus(-y * out.reshape(-1))


LOSSES: dict[str, LossFn] = {"mse": mse, "half_mse": half_mse, "ce": ce, "logistic": logistic}


def get_loss(name: str) -> LossFn:
    try:
        return LOSSES[name]
    except KeyError:
        raise ConfigError(f"loss: unknown loss {name!r}; choose one of {', '.join(LOSSES)}") from None


def check_targets(name: str, out: torch.Tensor, y: torch.Tensor) -> None:
    """Refuse targets that do not fit the loss convention, with a one-line reason.

    ``out`` is the model's output on the first few examples (a probe), ``y``
    all the targets; messages give the shapes of the user's whole data set
    (``n`` examples), never the probe's.
    """
    get_loss(name)
    out_shape = (y.shape[0], *out.shape[1:]) if y.dim() else tuple(out.shape)   # the output on all the data
    if name in ("mse", "half_mse"):
        if not y.is_floating_point():
            raise ConfigError(
                f"targets: loss {name!r} needs float targets shaped like the output {tuple(out.shape[1:])} "
                f"(one-hot for classes, ±1 for a binary task), got integer class indices; "
                f"use loss 'ce', or one-hot encode the targets"
            )
        if y.shape[1:] != out.shape[1:] and not (out.shape[1:] == (1,) and y.dim() == 1):
            raise ConfigError(
                f"targets: shape {tuple(y.shape[1:])} per example does not match the model output "
                f"{tuple(out.shape[1:])} for loss {name!r}"
            )
    elif name == "ce":
        if y.is_floating_point() or y.dim() != 1:
            raise ConfigError(
                f"targets: loss 'ce' needs integer class indices of shape (n,), got {y.dtype} of shape "
                f"{tuple(y.shape)}; use loss 'mse' for one-hot targets"
            )
        if out.dim() != 2:
            raise ConfigError(f"targets: loss 'ce' needs model outputs of shape (n, classes), got {out_shape}")
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= out.shape[1]):
            raise ConfigError(f"targets: class indices must lie in [0, {out.shape[1]}) for 'ce'")
    elif name == "logistic":
        if out.reshape(out.shape[0], -1).shape[1] != 1:   # per-example shapes: the same for the probe and the data
            raise ConfigError(f"model: loss 'logistic' needs one output per example, got {tuple(out.shape[1:])}")
        if not y.is_floating_point() or not bool(((y == 1) | (y == -1)).all()):
            raise ConfigError("targets: loss 'logistic' needs float targets equal to +1 or -1")


def prepare_targets(name: str, y: torch.Tensor) -> torch.Tensor:
    """Bring targets to the shape the per-example loss expects (``(n,)`` → ``(n, 1)`` for mse on one output)."""
    if name in ("mse", "half_mse") and y.dim() == 1 and y.is_floating_point():
        return y.reshape(-1, 1)
    return y
