"""The value rules of the ``track`` settings, shared by the config schema and the Python API.

:meth:`selfstab.config.TrackConfig.validate` (``selfstab run --track.proj_tol -1``) and
:func:`selfstab.track`'s keyword options (``track(..., proj_tol=-1)``) both ask
:func:`track_problems`, so a rule is written once.  Light on purpose: no torch, and no import of
the config (the processes, a stage, may not read the run's config).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

__all__ = ["at_least", "positive", "track_problems"]


def positive(values: Mapping[str, Any], *names: str) -> Iterator[tuple[str, str]]:
    """``(name, problem)`` for each of ``names`` in ``values`` that is not > 0."""
    for name in names:
        if name in values and not values[name] > 0:
            yield name, f"must be > 0, got {values[name]!r}"


def at_least(values: Mapping[str, Any], low: int, *names: str) -> Iterator[tuple[str, str]]:
    """``(name, problem)`` for each of ``names`` in ``values`` below ``low``."""
    for name in names:
        if name in values and values[name] < low:
            yield name, f"must be ≥ {low}, got {values[name]!r}"


def track_problems(values: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """``(name, problem)`` for each ``track`` setting in ``values`` (by its config key, which is also the
    process option's keyword) whose value is of the right type but still wrong; keys absent from
    ``values`` are not checked."""
    yield from at_least(values, 0, "steps")
    yield from at_least(values, 1, "proj_max_iter", "diagnostics_every", "k_eigs", "checkpoint_every", "power_iters")
    yield from at_least(values, 0, "proj_min_iter")
    yield from positive(values, "proj_tol", "flow_rtol", "flow_atol", "eig_tol", "sharpness_tol",
                        "critical_threshold", "sdcp_tol", "central_stiffness", "kproj_tol", "central_chord_tol",
                        "central_eig_tol")
    yield from at_least(values, 1, "central_min_substeps", "central_max_substeps", "central_pairs_every",
                        "kproj_max_iter")
    get = values.get
    if "stop_lambda2" in values and get("stop_lambda2") is not None and not get("stop_lambda2") >= 0:
        yield "stop_lambda2", f"must be ≥ 0 (0: no λ₂ rule), got {get('stop_lambda2')!r}"
    if get("central_substeps") is not None and get("central_substeps") < 1:
        yield "central_substeps", f"must be ≥ 1 (or none: adaptive), got {get('central_substeps')!r}"
    if get("block_max_k") is not None and get("block_max_k") < 1:
        yield "block_max_k", f"must be ≥ 1 (or none: no cap), got {get('block_max_k')!r}"
    threshold, critical = get("track_threshold"), get("critical_threshold")
    if threshold is not None and critical is not None and not 0 < threshold <= critical:
        yield "track_threshold", f"must be in (0, critical_threshold = {critical}] (or none), got {threshold!r}"
    if "active_rtol" in values and not 0 <= get("active_rtol") < 1:
        yield "active_rtol", f"must be in [0, 1), got {get('active_rtol')!r}"
