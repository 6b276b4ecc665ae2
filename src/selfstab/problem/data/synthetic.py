"""Seeded synthetic data sets, small and fast, one per model family (option ``kind``).

- ``teacher`` (regression): Gaussian inputs ``x ~ N(0, I_dim)``, targets from a
  random one-hidden-layer teacher ``a(x W₁ + b₁) W₂`` (``W₁ ~ N(0, 1/dim)``,
  ``b₁, W₂ ~ N(0, 1/width)``, activation ``tanh`` by default) plus optional
  Gaussian noise; ``outputs`` targets per example.
- ``mixture`` (classification): ``classes`` Gaussian blobs ``N(μ_c, I)`` with
  random means of norm ``separation``, balanced; binary when ``classes = 2``.
- ``images``: i.i.d. N(0, 1) images ``(channels, size, size)`` labelled by the
  argmax of a random linear teacher; for the CNN and the ResNet.
- ``tokens``: sequences of ``min_len``–``max_len`` tokens drawn uniformly from
  ids ``2 … vocab−1`` (0 is padding, 1 unused like SST-2's ``<unk>``), padded
  to ``max_len`` with a mask; label 1 when the mean token id exceeds the middle
  id ``(vocab+1)/2``; for the transformer.

All draws come from ``numpy.random.default_rng(seed)``; ``n_test`` more
examples from the same draw form the test split (default 0: none).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ...errors import ConfigError
from ..models.activations import get_activation

DEFAULTS = {"kind": "mixture", "n_test": 0, "dim": 10, "outputs": 1, "teacher_width": 32, "activation": "tanh",
            "noise": 0.0, "classes": 3, "separation": 3.0, "channels": 1, "size": 8, "vocab": 12, "min_len": 3,
            "max_len": 8}
KIND_OPTIONS = {
    "teacher": ("n_test", "dim", "outputs", "teacher_width", "activation", "noise"),
    "mixture": ("n_test", "dim", "classes", "separation"),
    "images": ("n_test", "channels", "size", "classes"),
    "tokens": ("n_test", "vocab", "min_len", "max_len"),
}


def _teacher(rng, m, o):
    x = rng.standard_normal((m, o["dim"]))
    w1 = rng.standard_normal((o["dim"], o["teacher_width"])) / np.sqrt(o["dim"])
    b1 = rng.standard_normal(o["teacher_width"]) / np.sqrt(o["teacher_width"])
    w2 = rng.standard_normal((o["teacher_width"], o["outputs"])) / np.sqrt(o["teacher_width"])
    hidden = get_activation(o["activation"])(torch.from_numpy(x @ w1 + b1)).numpy()
    y = hidden @ w2 + o["noise"] * rng.standard_normal((m, o["outputs"]))
    y = torch.from_numpy(y[:, 0] if o["outputs"] == 1 else y).to(torch.float32)
    return torch.from_numpy(x).to(torch.float32), y, "regression", (), (o["dim"],), {}


def _check_classes(o):
    if int(o["classes"]) < 2:
        raise ConfigError(f"classes: need at least 2, got {o['classes']}")
    k = int(o["classes"])
    return k, ("binary" if k == 2 else "multiclass"), tuple(str(c) for c in range(k))


def _mixture(rng, m, o):
    k, task, names = _check_classes(o)
    means = rng.standard_normal((k, o["dim"]))
    means *= o["separation"] / np.linalg.norm(means, axis=1, keepdims=True)
    y = rng.permutation(np.arange(m) % k)
    x = means[y] + rng.standard_normal((m, o["dim"]))
    return torch.from_numpy(x).to(torch.float32), torch.from_numpy(y), task, names, (o["dim"],), {"means": means}


def _images(rng, m, o):
    k, task, names = _check_classes(o)
    shape = (int(o["channels"]), int(o["size"]), int(o["size"]))
    x = rng.standard_normal((m,) + shape)
    w = rng.standard_normal((k, int(np.prod(shape))))
    y = np.argmax(x.reshape(m, -1) @ w.T, axis=1).astype(np.int64)
    return torch.from_numpy(x).to(torch.float32), torch.from_numpy(y), task, names, shape, {}


def _tokens(rng, m, o):
    vocab, lo, hi = int(o["vocab"]), int(o["min_len"]), int(o["max_len"])
    if vocab < 3 or lo < 1 or hi < lo:
        raise ConfigError(f"synthetic tokens: need vocab ≥ 3 and 1 ≤ min_len ≤ max_len, got vocab={vocab}, "
                          f"min_len={lo}, max_len={hi}")
    lengths = rng.integers(lo, hi + 1, size=m)
    mask = np.arange(hi)[None, :] < lengths[:, None]
    tokens = np.where(mask, rng.integers(2, vocab, size=(m, hi)), 0)
    y = ((tokens * mask).sum(1) / lengths > (vocab + 1) / 2).astype(np.int64)
    inputs = (torch.from_numpy(tokens).to(torch.int64), torch.from_numpy(mask))
    meta = {"vocab_size": vocab, "max_len": hi, "pad_id": 0}
    return inputs, torch.from_numpy(y), "binary", ("0", "1"), (hi,), meta


_KINDS = {"teacher": _teacher, "mixture": _mixture, "images": _images, "tokens": _tokens}


def load(n: int = 512, seed: int = 0, data_root: Path | None = None, **options) -> dict:
    """``n`` training (and ``n_test`` test) examples of the chosen ``kind``; see the module docstring."""
    kind = options.pop("kind", DEFAULTS["kind"])
    if kind not in _KINDS:
        raise ConfigError(f"kind: unknown synthetic kind {kind!r}; choose one of {', '.join(_KINDS)}")
    for key in options:
        if key not in KIND_OPTIONS[kind]:
            raise ConfigError(f"dataset option {key!r}: not used by synthetic kind {kind!r}; its options: "
                              f"{', '.join(KIND_OPTIONS[kind])}")
    o = {**DEFAULTS, **options}
    n_test = int(o["n_test"])
    inputs, labels, task, classes, shape, meta = _KINDS[kind](np.random.default_rng(seed), n + n_test, o)

    def split(a, s):
        return tuple(t[s] for t in a) if isinstance(a, tuple) else a[s]

    return {"inputs": split(inputs, slice(0, n)), "labels": labels[:n], "task": task, "classes": classes,
            "input_shape": shape, "test_inputs": split(inputs, slice(n, None)) if n_test else None,
            "test_labels": labels[n:] if n_test else None, "meta": {"kind": kind, **meta}}
