"""Results computed in Python (``gd_to_edge``, ``track``) saved as a run directory.

:func:`save_results` writes the layout a command-line run writes (module
``rundir``): ``config.toml``, ``records.h5`` with a ``train`` table for the
edge search and one table per tracked process (``cost`` without its
wall-clock ``seconds``, which go to ``timing``, as in a run), and
``summary.json`` with the same headline keys.  ``load_run``, ``selfstab
plot`` and ``selfstab report`` then read it like any other run.
``EdgeResult.save`` and ``TrackResult.save`` call it.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from ..errors import ConfigError
from ..tomlio import to_dict
from .rundir import RunDir


PYTHON_HEADER = ("saved from Python (selfstab save) without a config: only lr and out are known; the model and "
                 "data are the user's own, which the command line cannot rebuild")


def _config(config: Any, lr: float, path: str | os.PathLike) -> dict:
    if config is None:
        data: dict = {}
    elif isinstance(config, dict) or dataclasses.is_dataclass(config):
        data = dict(to_dict(config))
    else:
        raise ConfigError(f"config: expected a RunConfig, a dict or None, got {type(config).__name__}")
    if data.get("lr") is not None and float(data["lr"]) != float(lr):
        raise ConfigError(f"config: its lr = {data['lr']!r} is not the results' learning rate {lr!r}; pass the "
                          f"config the results were computed with")
    return {**data, "lr": float(lr), "out": os.fspath(path)}


def save_results(path: str | os.PathLike, *, edge: Any = None, track: Any = None, lr: float | None = None,
                 config: Any = None, overwrite: bool = False) -> RunDir:
    """Write ``edge`` (an ``EdgeResult``) and/or ``track`` (a ``TrackResult``) as a run directory at ``path``.

    ``lr``: taken from ``edge`` or the tracked lockstep when not given.  ``config``: the run's config (a
    dataclass or a dict), if known; ``config.toml`` gets ``lr`` and ``out`` in any case.  An existing run
    at ``path`` is an error unless ``overwrite``.  With ``edge`` and a ``config`` but no ``track``, the
    edge ``θ₀`` is checkpointed too, so ``selfstab track PATH`` can track from it.
    """
    if edge is None and track is None:
        raise ConfigError("save: nothing to save; pass edge= (gd_to_edge's result) and/or track= (track's)")
    if lr is None:
        lr = edge.lr if edge is not None else getattr(getattr(track, "lockstep", None), "lr", None)
    if lr is None:
        raise ConfigError("save: the learning rate is unknown; pass lr=")
    try:
        run = RunDir.create(path, _config(config, lr, path), overwrite=overwrite)
    except ConfigError as err:   # the same check as the command line's, in the Python API's words
        if "already holds a run" not in str(err):
            raise
        raise ConfigError(f"save: {path} already holds a run; pass overwrite=True or choose another path") from None
    if config is None:
        run.update_config(_config(None, lr, path), header=PYTHON_HEADER)
    # the command line continues a run only from a config that rebuilds its model (summary "rebuildable")
    summary: dict[str, Any] = {"lr": float(lr), "source": "python", "rebuildable": config is not None}
    if edge is not None:
        rec = run.recorder("train")
        for r in edge.records:
            rec.append(r["step"], **{k: v for k, v in r.items() if k != "step"})
        summary.update(parameters=int(edge.theta0.numel()), reached_edge=bool(edge.reached),
                       onset_step=int(edge.step), onset_sharpness=edge.sharpness,
                       onset_loss=edge.records[-1]["loss"] if edge.records else None,
                       train_grads=edge.counts.get("grad", 0), train_hvps=edge.counts.get("hvp", 0))
    if track is not None:
        for name, rows in track.records.items():
            for r in rows:
                fields = {k: v for k, v in r.items() if k != "step"}
                if name == "cost" and "seconds" in fields:
                    run.recorder("timing").append(r["step"], seconds=fields.pop("seconds"))
                run.recorder(name).append(r["step"], **fields)
        summary.update(stop_reason=track.stop_reason, tracked_steps=int(track.steps))
        if edge is None and getattr(track, "lockstep", None) is not None:
            summary["parameters"] = int(track.lockstep.objective.dim)
    elif edge is not None and not edge.reached:
        summary["stop_reason"] = "the sharpness did not reach 2/η within max_steps"
    run.flush()
    if edge is not None and track is None and config is not None and edge.reached:
        run.save_checkpoint(edge.step, {"phase": "edge", "theta0": edge.theta0.detach().cpu(),
                                        "onset_step": int(edge.step), "reached": True,
                                        "warm": None if edge.eig is None else edge.eig.vectors.detach().cpu()})
    run.write_summary({**summary, "status": "finished"})
    return run
