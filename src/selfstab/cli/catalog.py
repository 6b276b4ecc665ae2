"""``selfstab models`` and ``selfstab datasets``: what exists, with sizes."""

from __future__ import annotations

import dataclasses


def run_options(spec) -> dict:
    """The options ``selfstab run`` gives the model ``spec`` (a registry entry) under the default config.

    The config's ``model.width`` sets the model's ``spec.width_option`` or, when the config leaves it
    unset, the model keeps its own default; the other ``model.*`` keys and ``model.options`` entries count
    only where they are set and the model has them.
    """
    from ..config import ModelConfig

    cfg, options = ModelConfig(), spec.options
    out = {}
    if spec.width_option in options:
        out[spec.width_option] = cfg.width if cfg.width is not None else options[spec.width_option]
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if f.name in ("name", "width", "options") or value is None or f.name not in options:
            continue
        out[f.name] = value
    extra = getattr(cfg, "options", None)   # a table of constructor options
    if isinstance(extra, dict):
        out.update({k: v for k, v in extra.items() if k in options})
    return out


def _models(args) -> int:
    from ..problem.models import MODELS, describe_models

    for row in describe_models():
        print(f"{row['name']:<12} {row['description']}")
        opts = ", ".join(f"{k}={v!r}" for k, v in row["options"].items())
        print(f"{'':<12} options (defaults): {opts}")
        used = run_options(MODELS[row["name"]])
        if used:
            print(f"{'':<12} selfstab run uses: {', '.join(f'{k}={v!r}' for k, v in used.items())} "
                  f"(the config's model.* keys, e.g. --model.width N)")
        for label, count in row["parameters"].items():
            print(f"{'':<12} {count:>10,} parameters on {label} (default options)")
    return 0


def _datasets(args) -> int:
    from ..problem.data import describe_datasets

    for row in describe_datasets():
        print(f"{row['name']:<15} {row['description']}")
        for key in ("n", "input_shape", "classes", "source"):
            if key in row:
                print(f"{'':<15} {key}: {row[key]}")
    return 0


def register(sub) -> None:
    sub.add_parser("models", description="List the registered models, their options with defaults, the width "
                                         "selfstab run gives them, and parameter counts.") \
        .set_defaults(func=_models)
    sub.add_parser("datasets", description="List the registered datasets, their sizes and sources.") \
        .set_defaults(func=_datasets)
