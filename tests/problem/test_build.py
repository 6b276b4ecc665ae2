"""problem/build.py: a config becomes data, model and objective; model options reach the constructor."""

import pytest
import torch

from selfstab import ConfigError
from selfstab.config import RunConfig, load_config
from selfstab.problem.build import build_problem, evaluator, model_options, resolve_device
from selfstab.problem.data import load_dataset
from selfstab.problem.models import build_model, count_parameters


def _cfg(*overrides):
    return load_config(RunConfig, None, list(overrides))


def test_transformer_heads_layers_and_width_from_the_command_line():
    cfg = _cfg("--model", "transformer", "--model.width", "16", "--model.options.heads", "4",
               "--model.options.layers", "3", "--data", "synthetic", "--data.kind", "tokens", "--data.n", "16")
    pb = build_problem(cfg)
    vocab = pb.dataset.meta["vocab_size"]
    assert model_options(cfg, pb.dataset) == {"hidden": 16, "heads": 4, "layers": 3, "vocab_size": vocab}
    blocks = [m for m in pb.model.modules() if type(m).__name__ == "SelfAttention"]
    assert len(blocks) == 3 and all(b.heads == 4 for b in blocks)
    ref = build_model("transformer", pb.dataset.input_shape, pb.dataset.n_outputs, hidden=16, heads=4, layers=3,
                      vocab_size=vocab)
    assert pb.objective.dim == count_parameters(ref)


def test_resnet_width_options():
    cfg = _cfg("--model", "resnet18", "--model.width", "4", "--model.options.blocks", "[1, 1, 1, 1]",
               "--model.options.groups", "2", "--data", "synthetic", "--data.kind", "images", "--data.n", "8")
    pb = build_problem(cfg)
    ref = build_model("resnet18", pb.dataset.input_shape, pb.dataset.n_outputs, width=4, blocks=(1, 1, 1, 1), groups=2)
    assert pb.objective.dim == count_parameters(ref)
    default_blocks = build_model("resnet18", pb.dataset.input_shape, pb.dataset.n_outputs, width=4, groups=2)
    assert count_parameters(default_blocks) > count_parameters(ref)   # the option changed the network


def test_unknown_option_lists_the_valid_ones():
    ds = load_dataset("digits", loss="mse", n=10)
    with pytest.raises(ConfigError) as info:
        model_options(_cfg("--model.options.heads", "2"), ds)
    msg = str(info.value)
    assert msg.startswith("model.options.heads: not an option of 'mlp'") and "width" in msg and "\n" not in msg
    with pytest.raises(ConfigError, match="set it with model.width"):
        model_options(_cfg("--model.options.width", "3"), ds)


def test_build_problem_matches_a_hand_built_objective_and_evaluator():
    cfg = _cfg("--data.n", "50", "--model.width", "8", "--train.dtype", "float64")
    pb = build_problem(cfg)
    ds = load_dataset("digits", loss="mse", n=50, seed=0)
    model = build_model("mlp", ds.input_shape, ds.n_outputs, seed=0, width=8)
    theta = torch.cat([p.detach().reshape(-1) for p in model.parameters()]).double()
    assert torch.equal(pb.objective.theta0, theta)
    out = model.double()(ds.inputs.double()).detach()
    assert float(pb.objective.loss(theta)) == pytest.approx(float(((out - ds.targets.double()) ** 2).sum(1).mean()),
                                                          rel=1e-12)
    acc = evaluator(pb)(theta)["train_accuracy"]
    assert acc == pytest.approx(float((out.argmax(1) == ds.labels).double().mean()))


def test_devices():
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ConfigError, match="unknown device"):
        resolve_device("tpu:0")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA device"):
            resolve_device("cuda")
