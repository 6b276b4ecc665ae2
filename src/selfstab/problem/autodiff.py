"""The one reverse-mode primitive that :class:`~selfstab.problem.objective.Objective` and
:class:`~selfstab.problem.point.Point` share.

It lives in its own module so that ``objective.py`` (which builds points) and
``point.py`` (which differentiates an objective's terms) each import it
without importing one another.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["grad_or_zero"]


def grad_or_zero(outputs: Tensor, inputs: Tensor, grad_outputs: Tensor | None = None, create_graph: bool = False,
                 retain_graph: bool | None = None) -> Tensor:
    """``torch.autograd.grad`` with a zero result where the output does not depend on the input.

    ``outputs`` is a scalar (then the result is ``∇ outputs``) or a tensor with
    ``grad_outputs`` of its shape (the vector–Jacobian product); the result has
    the shape and dtype of ``inputs``.
    """
    if not outputs.requires_grad:
        return torch.zeros_like(inputs)
    (g,) = torch.autograd.grad(outputs, inputs, grad_outputs=grad_outputs, create_graph=create_graph,
                               retain_graph=retain_graph, allow_unused=True, materialize_grads=True)
    return g
