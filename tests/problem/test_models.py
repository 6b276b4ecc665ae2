"""The models (docs/theory.md §1; the paper's §6 experiments) against independent references, on tiny float64
instances.

For every model: ``Objective.hvp`` against a dense Hessian from
``torch.func.hessian``, ``Objective.d3`` against a 4-point finite difference
of ``hvp``, and the top eigenvalue of the dense Hessian against the top Ritz
value of a Krylov space built from ``Objective.hvp`` alone (references: tests/references.py).
"""

import pytest
import torch
from torch import nn

from references import dense_hessian, fd_d3, fd_hvp, module_function, rel
from selfstab.errors import ConfigError
from selfstab.problem import Objective
from selfstab.problem.data import load_dataset
from selfstab.problem.losses import LOSSES, prepare_targets
from selfstab.problem.models import ACTIVATIONS, MODELS, build_model, count_parameters, describe_models
from selfstab.problem.layers import PlainLayerNorm

F64 = torch.float64
# torch.func.hessian's forward mode loads decompositions through torch.jit.script, which warns in torch 2.13.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")


def _one_hot(y, k):
    return nn.functional.one_hot(y, k).to(F64)


# name → (model options, data builder → (input_shape, n_outputs, inputs, targets, loss))
def _mixture():
    d = load_dataset("synthetic", kind="mixture", n=12, dim=6, classes=3)
    return d.input_shape, 3, d.inputs, _one_hot(d.labels, 3), "mse"


def _images():
    d = load_dataset("synthetic", kind="images", n=6, channels=2, size=5, classes=3)
    return d.input_shape, 3, d.inputs, d.labels, "ce"


def _signals():
    d = load_dataset("synthetic", kind="teacher", n=8, dim=12)
    return (12,), 1, d.inputs, d.labels.to(F64), "half_mse"


def _cifar_like():
    d = load_dataset("synthetic", kind="images", n=4, channels=3, size=4, classes=3)
    return d.input_shape, 3, d.inputs, _one_hot(d.labels, 3), "mse"


def _tokens():
    d = load_dataset("synthetic", kind="tokens", loss="logistic", n=6, vocab=7, min_len=2, max_len=5)
    return d.input_shape, 1, d.inputs, d.targets.to(F64), "logistic"


TINY = {
    "mlp": ("mlp", {"width": 8}, _mixture),
    "cnn": ("cnn", {"width": 3}, _images),
    "cnn-1d": ("cnn", {"width": 3}, _signals),
    "resnet18": ("resnet18", {"width": 2, "blocks": (1, 1)}, _cifar_like),
    "transformer": ("transformer", {"vocab_size": 7, "hidden": 4, "heads": 2, "ff": 8}, _tokens),
}


class Tiny:
    """A tiny objective plus an independent dense Hessian of the same loss."""

    def __init__(self, key):
        name, opts, data = TINY[key]
        shape, k, inputs, targets, loss = data()
        model = build_model(name, shape, k, seed=1, **opts)
        self.obj = Objective.from_module(model, inputs, targets, loss, dtype="float64")
        self.xs = tuple(x.to(F64) if x.is_floating_point() else x for x in (inputs if isinstance(inputs, tuple) else (inputs,)))
        self.y, self.loss = prepare_targets(loss, targets), LOSSES[loss]
        # Move off the initialization so that nothing special (zero biases, unit norms) hides an error.
        self.theta = self.obj.theta0 + 0.05 * torch.randn(self.obj.dim, generator=torch.Generator().manual_seed(0), dtype=F64)

    def dense_hessian(self):
        assert self.obj.info["param_names"] == [k for k, _ in self.obj.model.named_parameters()]   # same θ layout
        f = module_function(self.obj.model, self.xs, lambda out: self.loss(out, self.y).mean())
        return dense_hessian(f, self.theta)


@pytest.fixture(scope="module", params=list(TINY))
def tiny(request):
    t = Tiny(request.param)
    t.H = t.dense_hessian()
    return t


def test_hvp_matches_dense_hessian(tiny):
    assert tiny.obj.dim < 700  # tiny enough for a dense Hessian
    torch.testing.assert_close(tiny.H, tiny.H.T, rtol=0, atol=1e-10 * tiny.H.abs().max())
    vs = torch.randn(3, tiny.obj.dim, generator=torch.Generator().manual_seed(2), dtype=F64)
    assert rel(tiny.obj.hvp(tiny.theta, vs), vs @ tiny.H) < 1e-6


def test_d3_matches_finite_differences_of_hvp(tiny):
    obj, theta = tiny.obj, tiny.theta
    g = torch.Generator().manual_seed(3)
    u, v = (torch.randn(obj.dim, generator=g, dtype=F64) for _ in range(2))
    u, v = u / u.norm(), v / v.norm()
    fd = fd_d3(obj.hvp, theta, u, v, 1e-3)
    assert rel(obj.d3(theta, u, v), fd) < 1e-6


def _top_ritz_value(obj, theta, steps=20):
    """Largest Rayleigh quotient over the Krylov space {q, Hq, H²q, …} (power iteration, kept orthonormal)."""
    point = obj.at(theta)
    q = torch.randn(obj.dim, generator=torch.Generator().manual_seed(4), dtype=F64)
    basis, images = [q / q.norm()], []
    for _ in range(min(steps, obj.dim)):
        images.append(point.hvp(basis[-1]))
        w = images[-1].clone()
        for _ in range(2):  # twice-is-enough Gram–Schmidt
            for b in basis:
                w -= (b @ w) * b
        if w.norm() < 1e-12 * images[-1].norm():
            break
        basis.append(w / w.norm())
    Q, HQ = torch.stack(basis[: len(images)], dim=1), torch.stack(images, dim=1)
    T = Q.T @ HQ
    return torch.linalg.eigvalsh((T + T.T) / 2).max()


def test_top_eigenvalue_matches_krylov_rayleigh_quotient(tiny):
    lam = torch.linalg.eigvalsh(tiny.H).max()
    ritz = _top_ritz_value(tiny.obj, tiny.theta)
    assert ritz <= lam * (1 + 1e-10)
    assert abs(ritz - lam) / lam < 1e-6


def test_full_depth_resnet_derivatives_by_finite_differences():
    """ResNet-18's real topology ([2, 2, 2, 2], GroupNorm) at width 2: HVP and d3 against finite differences."""
    # 16×16 images: on 8×8 the last stage is 1×1, its GroupNorm groups hold 2 numbers at width 2, and the
    # curvature is so large that a 1e-3 finite-difference step is off by 2e-4 (1e-4 recovers 2e-8).
    d = load_dataset("synthetic", kind="images", n=2, channels=3, size=16, classes=2)
    model = build_model("resnet18", d.input_shape, 1, seed=0, width=2)
    obj = Objective.from_module(model, d.inputs, d.targets, "mse", dtype="float64")
    g = torch.Generator().manual_seed(5)
    u, v = (torch.randn(obj.dim, generator=g, dtype=F64) for _ in range(2))
    u, v = u / u.norm(), v / v.norm()
    theta = obj.theta0
    assert rel(obj.hvp(theta, u), fd_hvp(obj.grad, theta, u, 1e-3)) < 1e-6
    assert rel(obj.d3(theta, u, v), fd_d3(obj.hvp, theta, u, v, 1e-3)) < 1e-6


@pytest.mark.parametrize("activation", list(ACTIVATIONS))
def test_every_activation_has_exact_third_derivatives(activation):
    d = load_dataset("synthetic", kind="mixture", n=8, dim=4, classes=3)
    model = build_model("mlp", d.input_shape, 3, width=6, activation=activation)
    obj = Objective.from_module(model, d.inputs, d.targets, "mse", dtype="float64")
    g = torch.Generator().manual_seed(6)
    u, v = (torch.randn(obj.dim, generator=g, dtype=F64) for _ in range(2))
    u, v = u / u.norm(), v / v.norm()
    theta = obj.theta0
    # A small step, so that no kink of relu (in L'') or elu (in L''') is crossed.
    assert rel(obj.hvp(theta, u), fd_hvp(obj.grad, theta, u, 1e-4)) < 1e-6
    assert rel(obj.d3(theta, u, v), fd_d3(obj.hvp, theta, u, v, 1e-4)) < 1e-6


def _layer_norm_model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 5), nn.LayerNorm(5), nn.Tanh(), nn.Linear(5, 2))
    return model, torch.randn(6, 3), torch.randn(6, 2)


def test_user_layer_norm_gets_exact_third_derivatives():
    """A user's nn.LayerNorm is computed with plain ops inside the Objective: d3 matches finite differences."""
    model, x, y = _layer_norm_model()
    obj = Objective.from_module(model, x, y, "mse", dtype="float64")
    assert isinstance(obj.model[1], PlainLayerNorm)
    with torch.no_grad():  # same function as the fused layer, same θ layout
        ref = model.double()(x.double())
        assert torch.allclose(obj.outputs(obj.theta0, x), ref, atol=1e-12)
    theta = obj.theta0 + 0.1 * torch.randn(obj.dim, dtype=F64)  # LayerNorm's unit gain and zero shift perturbed
    u, v = torch.randn(obj.dim, dtype=F64), torch.randn(obj.dim, dtype=F64)
    assert rel(obj.d3(theta, u, v), fd_d3(obj.hvp, theta, u, v, 1e-3)) < 1e-6


@pytest.mark.xfail(reason="torch's fused layer_norm gave third derivatives 12% off finite differences (torch 2.13)",
                   strict=False)
def test_fused_layer_norm_third_derivatives():
    """Why PlainLayerNorm exists: the fused kernel, called directly, is checked here and expected to fail."""
    torch.manual_seed(0)
    x = torch.randn(6, 5, dtype=F64)
    obj = Objective.from_function(lambda t: torch.nn.functional.layer_norm(x * t[:5], (5,), t[5:10], t[10:]).pow(3).sum(),
                                  torch.randn(15, dtype=F64))
    theta = obj.theta0
    u, v = torch.randn(obj.dim, dtype=F64), torch.randn(obj.dim, dtype=F64)
    assert rel(obj.d3(theta, u, v), fd_d3(obj.hvp, theta, u, v, 1e-3)) < 1e-6


@pytest.mark.parametrize("name", list(MODELS))
def test_seeded_initialization_is_reproducible(name):
    opts = {"vocab_size": 9} if name == "transformer" else {}
    shape = (6,) if name == "transformer" else (1, 8, 8)
    state = torch.get_rng_state()
    a, b, c = (build_model(name, shape, 3, seed=s, **opts) for s in (0, 0, 1))
    assert torch.equal(torch.get_rng_state(), state)  # the global generator is left alone
    pa, pb, pc = (torch.cat([p.detach().reshape(-1) for p in m.parameters()]) for m in (a, b, c))
    assert torch.equal(pa, pb)
    assert not torch.equal(pa, pc)


def test_unknown_model_or_option_is_a_config_error():
    with pytest.raises(ConfigError, match=r"model: unknown model 'vgg'.*mlp, cnn, resnet18, transformer"):
        build_model("vgg", (1, 8, 8), 10)
    with pytest.raises(ConfigError, match=r"'widht'.*width, depth, activation, bias"):
        build_model("mlp", (1, 8, 8), 10, widht=3)
    with pytest.raises(ConfigError, match=r"activation: unknown activation 'sine'.*swish"):
        build_model("mlp", (1, 8, 8), 10, activation="sine")
    with pytest.raises(ConfigError, match="vocab_size"):
        build_model("transformer", (6,), 1)
    with pytest.raises(ConfigError, match="≥ 4"):
        build_model("cnn", (1, 3, 3), 10)


@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 5, 7), (2, 4, 4), (40,), (1, 40), (2, 9)])
def test_cnn_takes_any_image_or_signal_shape(shape):
    model = build_model("cnn", shape, 4, width=2)
    assert model(torch.randn((3,) + shape)).shape == (3, 4)


def test_resnet_is_resnet18_with_groupnorm_on_digits():
    model = build_model("resnet18", (1, 8, 8), 10)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 1 + 16 + 3  # stem, 8 blocks × 2, 3 projection shortcuts
    assert sorted({m.out_channels for m in convs}) == [16, 32, 64, 128]
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    assert all(m.num_channels % m.num_groups == 0 for m in model.modules() if isinstance(m, nn.GroupNorm))
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 10)


def test_transformer_ignores_padding():
    model = build_model("transformer", (7,), 2, vocab_size=10, hidden=8).double()
    tokens = torch.tensor([[3, 4, 5, 0, 0], [6, 2, 0, 0, 0]])
    mask = tokens != 0
    out = model(tokens, mask)
    longer = torch.cat([tokens.masked_fill(~mask, 9), torch.full((2, 2), 7)], dim=1)  # other pad ids, more pads
    torch.testing.assert_close(model(longer, torch.cat([mask, torch.zeros(2, 2, dtype=torch.bool)], 1)), out)


def test_describe_models_counts_parameters():
    rows = {r["name"]: r for r in describe_models()}
    assert set(rows) == set(MODELS)
    mlp = rows["mlp"]["parameters"]["cifar10 3x32x32, 10 outputs"]
    assert mlp == (3072 * 200 + 200) + (200 * 200 + 200) + (200 * 10 + 10)
    cnn = rows["cnn"]["parameters"]["cifar10 3x32x32, 10 outputs"]
    assert cnn == (3 * 32 * 9 + 32) + (32 * 32 * 9 + 32) + (32 * 8 * 8 * 10 + 10)
    assert rows["mlp"]["options"] == {"width": 200, "depth": 3, "activation": "swish", "bias": True}
    assert all(r["description"] and all(c > 0 for c in r["parameters"].values()) for r in rows.values())


@pytest.mark.parametrize("model_name, data_name, options", [
    ("mlp", "digits", {}), ("cnn", "digits", {}), ("resnet18", "digits", {}),
    ("cnn", "mnist1d", {"n_test": 10}), ("transformer", "synthetic", {"kind": "tokens"}),
])
def test_models_run_on_their_datasets(model_name, data_name, options):
    d = load_dataset(data_name, n=20, **options)
    extra = {"vocab_size": d.meta["vocab_size"]} if model_name == "transformer" else {}
    model = build_model(model_name, d.input_shape, d.n_outputs, **extra)
    obj = Objective.from_module(model, d.inputs, d.targets, d.loss, dtype="float64")
    assert obj.dim == count_parameters(model)
    point = obj.at(obj.theta0)
    assert torch.isfinite(point.loss) and point.grad.norm() > 0
    assert torch.isfinite(point.hvp(point.grad)).all()
