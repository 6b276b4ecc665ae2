"""``selfstab models`` and ``selfstab datasets``: what exists, with sizes."""

from __future__ import annotations

from ..problem.data import describe_datasets
from ..problem.models import describe_models


def _models(args) -> int:
    for row in describe_models():
        print(f"{row['name']:<12} {row['description']}")
        opts = ", ".join(f"{k}={v!r}" for k, v in row["options"].items())
        print(f"{'':<12} options: {opts}")
        for label, count in row["parameters"].items():
            print(f"{'':<12} {count:>10,} parameters on {label}")
    return 0


def _datasets(args) -> int:
    for row in describe_datasets():
        print(f"{row['name']:<15} {row['description']}")
        for key in ("n", "input_shape", "classes", "source"):
            if key in row:
                print(f"{'':<15} {key}: {row[key]}")
    return 0


def register(sub) -> None:
    sub.add_parser("models", help="list the models with their options and parameter counts",
                   description="List the registered models, their options and parameter counts.") \
        .set_defaults(func=_models)
    sub.add_parser("datasets", help="list the datasets with sizes and where their files go",
                   description="List the registered datasets, their sizes and sources.") \
        .set_defaults(func=_datasets)
