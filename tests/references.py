"""Dense references the tests compare selfstab with: independent of the package, small problems only.

Every numerical routine of selfstab is tested against one of these (tests/README.md):

- :func:`dense_hessian`, :func:`dense_d3`: ``∇²L`` (d, d) and ``∇³L`` (d, d, d) of a plain function of the
  flat ``θ`` by ``torch.func`` — forward over reverse mode, none of the Objective's graphs;
- :func:`d3_contract`: ``∇³L(u, v)`` from the dense tensor (docs/theory.md §1);
- :func:`dense_top`, :func:`dense_sharpness`: the spectrum by ``torch.linalg.eigh``, largest first;
- :func:`central_difference`, :func:`stencil`: finite differences along a line, and :func:`fd_hvp`,
  :func:`fd_d3` built from them;
- :func:`module_function`: a module's loss as a function of the flat ``θ`` through ``functional_call``,
  written without selfstab's machinery.

Import with ``from references import ...`` (tests/conftest.py puts this folder on ``sys.path``: pytest runs
with ``--import-mode=importlib``, which does not).  Everything is float64 where the inputs are.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call, hessian, jacfwd

Function = Callable[[Tensor], Tensor]


# -- dense derivatives ---------------------------------------------------------------------------------------
def dense_hessian(f: Function, theta: Tensor) -> Tensor:
    """``∇²f(θ)`` (d, d) by ``torch.func.hessian``.

    torch.func's transforms of the fused ``layer_norm``'s double backward are wrong in torch 2.13 (~3%); use
    ``torch.autograd.functional.hessian`` for a function that calls it (test_objective.py does).
    """
    return hessian(f)(theta)


def dense_d3(f: Function, theta: Tensor) -> Tensor:
    """``∇³f(θ)`` (d, d, d): ``T[a, b, c] = ∂_c ∂_a ∂_b f``, symmetric in its three slots (jacfwd of the
    Hessian)."""
    return jacfwd(hessian(f))(theta)


def d3_contract(T: Tensor, u: Tensor, v: Tensor) -> Tensor:
    """``∇³L(u, v)`` (d,) from the dense tensor: ``Σ_jk T[i, j, k] u_j v_k``; ``∇S = d3_contract(T, u, u)``
    for the unit top eigenvector ``u`` (Lemma 2, docs/theory.md §2)."""
    return torch.einsum("ijk,j,k->i", T, u, v)


# -- dense spectrum ------------------------------------------------------------------------------------------
def dense_top(H: Tensor) -> tuple[Tensor, Tensor]:
    """Every eigenpair of the symmetric ``H`` by ``torch.linalg.eigh``, largest first: values (d,) and the
    eigenvectors as the *rows* of a (d, d) matrix (the layout of selfstab's ``Eigenpairs.vectors``); signs as
    eigh returns them."""
    w, V = torch.linalg.eigh(H)
    return w.flip(0), V.flip(1).T


def dense_sharpness(f: Function, theta: Tensor) -> float:
    """``S(θ) = λ_max(∇²f(θ))`` by eigh of the dense Hessian (Definition 1)."""
    return float(torch.linalg.eigvalsh(dense_hessian(f, theta))[-1])


# -- finite differences --------------------------------------------------------------------------------------
def central_difference(f: Callable[[float], Tensor | float], h: float):
    """``(f(h) − f(−h)) / 2h``, the derivative of ``f(s)`` at ``s = 0``: truncation ``O(h²)``, rounding
    ``O(ε/h)``; balanced near ``h ≈ 1e-5`` for smooth float64 functions of unit scale."""
    return (f(h) - f(-h)) / (2 * h)


def stencil(f: Callable[[float], Tensor | float], h: float):
    """The 4-point central difference ``(8(f(h) − f(−h)) − (f(2h) − f(−2h))) / 12h`` of ``f(s)`` at ``s = 0``:
    truncation ``O(h⁴)``, rounding ``O(ε/h)``, so ``h`` of 1e-4 … 1e-3 leaves errors near 1e-12 … 1e-9 of the
    function's scale (the tests' tolerances are 1e-7 … 1e-6).  Smaller ``h`` where a kink is near (relu in
    ``L''``) or the curvature is large."""
    return (8 * (f(h) - f(-h)) - (f(2 * h) - f(-2 * h))) / (12 * h)


def fd_hvp(grad: Function, theta: Tensor, u: Tensor, h: float) -> Tensor:
    """``∇²L(θ) u`` as the 4-point difference of ``∇L`` along ``u`` (:func:`stencil`)."""
    return stencil(lambda s: grad(theta + s * u), h)


def fd_d3(hvp: Callable[[Tensor, Tensor], Tensor], theta: Tensor, u: Tensor, v: Tensor, h: float) -> Tensor:
    """``∇³L(θ)(u, v)`` as the 4-point difference of ``θ ↦ ∇²L(θ) u`` along ``v`` (:func:`stencil`);
    ``hvp(θ, u)`` is the Objective's (or any) Hessian-vector product."""
    return stencil(lambda s: hvp(theta + s * v, u), h)


# -- models as functions of the flat θ ----------------------------------------------------------------------
def module_function(model: nn.Module, inputs: Sequence[Tensor] | Tensor,
                    loss: Callable[[Tensor], Tensor]) -> Function:
    """``θ ↦ loss(model(*inputs))`` with the parameters read from the flat ``θ`` in ``named_parameters`` order
    (the layout of ``Objective.from_module``), through ``torch.func.functional_call``."""
    names = [k for k, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    sizes = [p.numel() for _, p in model.named_parameters()]
    args = tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)

    def f(theta: Tensor) -> Tensor:
        params = {k: t.view(s) for k, t, s in zip(names, torch.split(theta, sizes), shapes)}
        return loss(functional_call(model, params, args))

    return f


def rel(a: Tensor, b: Tensor) -> float:
    """``‖a − b‖ / ‖b‖``."""
    return float((a - b).norm() / b.norm())
