"""``selfstab sweep``: one run per learning rate (or seed), sequentially or in parallel processes.

Each run is an ordinary run directory under ``--out`` (``lr0.2``, ``lr0.1-seed1`` …),
so each can be resumed, plotted and reported on its own; ``selfstab plot``
combines them (Figures 4 and 6).  Parallel runs are separate processes
(``--jobs``), each with its share of the CPU threads, so that ``--jobs 2``
uses a 2-core machine fully without oversubscribing it.

A folder that already holds runs is checked before anything runs, as ``selfstab
run`` does: a run of another config is refused (naming the first key that
differs) unless ``--overwrite``; runs of the same config are continued with
``--resume``, and ``--resume`` with a larger ``--track.steps`` extends them as
``selfstab resume RUN --track.steps N`` does (the same rule: only up, not a run
that stopped early).  While the runs go, the parent prints one line per run whenever
its recorded progress moves (it reads each run's files every few seconds);
``--quiet`` silences those lines.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import textwrap
import threading
from pathlib import Path

from ..config import RESUME_KEYS, RunConfig, load_config
from ..errors import ConfigError, SelfstabError
from . import keys

# --help's description: plain text (no reST), one paragraph per item, wrapped to the terminal when shown
DESCRIPTION = (
    "One run per learning rate (or seed), sequentially or in parallel processes.",
    "Each run is an ordinary run directory under --out (lr0.2, lr0.1-seed1, ...), so each can be resumed, "
    "plotted and reported on its own; the combined Figures 4 and 6 go to --out/figures (selfstab plot redraws "
    "them). Parallel runs are separate processes (--jobs), each with its share of the CPU threads, so --jobs 2 "
    "uses a 2-core machine fully without oversubscribing it. Config overrides (--key value) apply to every run.",
    "A folder that already holds runs of another config is refused (pass --overwrite to replace them); runs of "
    "the same config are continued with --resume (with a larger --track.steps: extended, as resume does). One "
    "progress line per run is printed as it goes (--quiet: none).",
)

POLL_SECONDS = 5.0   # how often the parent reads the runs' files for the progress lines
IGNORED = ("out", "quiet", "flush_seconds")   # config keys a run of the sweep may differ in: not its results


def _one(cfg_dict: dict, train_only: bool, threads: int | None, mode: str = "new") -> tuple[str, str]:
    """Run one config: ``mode`` "new" (an empty or absent folder), "overwrite", "resume" or "extend" (resume
    with more tracked steps)."""
    import torch

    from ..config import from_dict
    from ..experiment import execute, extend, start
    from ..records import RunDir
    if threads:
        torch.set_num_threads(threads)
    cfg = from_dict(RunConfig, cfg_dict)
    try:
        if mode in ("resume", "extend"):
            run = RunDir.open(cfg.out)
            if mode == "extend":   # more tracked steps: as `selfstab resume RUN --track.steps N` does
                extend(run, from_dict(RunConfig, run.config), cfg)
            run = execute(run, train_only=train_only)
        else:
            run = start(cfg, overwrite=mode == "overwrite", train_only=train_only)
        return cfg.out, run.summary.get("stop_reason", "done")
    except SelfstabError as exc:   # one failing learning rate (e.g. divergent) does not stop the sweep
        return cfg.out, f"error: {exc}"


def sweep_configs(base: RunConfig, lrs: list[float], seeds: list[int], schedules: list[str]) -> list[RunConfig]:
    out = []
    for schedule in schedules:
        # η_t = 1/S(θ_t) does not depend on lr (it sets the first step too): one run per seed
        for lr in (lrs if schedule == "constant" else lrs[:1]):
            for seed in seeds:
                name = ("inverse_sharpness" if schedule == "inverse_sharpness" else f"lr{lr:g}") + \
                       (f"-seed{seed}" if len(seeds) > 1 else "")
                train = dataclasses.replace(base.train, schedule=schedule)
                out.append(dataclasses.replace(base, lr=lr, seed=seed, train=train, out=str(Path(base.out) / name),
                                               quiet=True))
    return out


# ----------------------------------------------------------------------------- an existing folder


def _summary(path: Path) -> dict:
    try:
        return json.loads((path / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def finished(path: str | os.PathLike, train_only: bool) -> bool:
    """Whether the run in ``path`` has nothing left to do for this sweep (its summary says so)."""
    s = _summary(Path(path))
    status = s.get("status")
    if status is not None and status != "finished":   # running, or "stopped: …" / "failed: …"
        return False
    if status is None and s.get("stop_reason") is None and not (train_only and s.get("onset_step") is not None):
        return False   # a run from before statuses: the tracking phase (or a trained-only run) wrote its end
    # trained to the edge by a --train-only sweep, and this sweep also tracks
    return train_only or not (s.get("reached_edge") and s.get("tracked_steps") is None)


def _stored_config(path: Path) -> dict:
    import tomllib

    from ..config import from_dict, to_dict
    try:
        data = tomllib.loads((path / "config.toml").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"--out: {path / 'config.toml'} cannot be read ({exc}); pass --overwrite to replace "
                          f"it or choose another --out") from None
    try:   # resolved the same way as the planned config, so that defaults and old spellings compare equal
        return to_dict(from_dict(RunConfig, data))
    except SelfstabError:
        return data


def _value(config: dict, key: str):
    for part in key.split("."):
        config = config.get(part) if isinstance(config, dict) else None
    return config


def _shown(value) -> str:
    return "unset" if value is None else repr(value)


def plan(configs: list[RunConfig], train_only: list[bool], overwrite: bool, resume: bool) -> list[str]:
    """How each planned run starts ("new", "overwrite", "resume" or "done"), checked before anything runs.

    A folder holding a run of another config (by :func:`~selfstab.config.diff_configs`, the keys of
    :data:`IGNORED` aside) is an error unless ``overwrite``; runs of the same config are an error unless
    ``resume`` (continue them; finished ones are kept as they are) or ``overwrite`` (start over).
    """
    from ..config import diff_configs, to_dict
    from ..experiment import check_extension
    from ..records import load_run

    if overwrite and resume:
        raise ConfigError("--overwrite, --resume: pass --overwrite (start the runs over) or --resume (continue them), not both")
    modes, existing, unfinished = [], [], []
    for cfg, t_only in zip(configs, train_only):
        path = Path(cfg.out)
        if path.exists() and not path.is_dir():
            raise ConfigError(f"--out: {path} exists and is not a folder; choose another --out")
        if not path.exists() or not any(path.iterdir()):
            modes.append("new")
            continue
        if not (path / "config.toml").is_file():
            raise ConfigError(f"--out: {path} exists and is not a selfstab run directory; refusing to write "
                              f"into it (choose another --out)")
        if overwrite:
            modes.append("overwrite")
            continue
        stored, planned = _stored_config(path), to_dict(cfg)
        changed = diff_configs(stored, planned, ignore=IGNORED)
        extension = resume and changed and all(keys.accepts(k, RESUME_KEYS) for k in changed)
        if extension:   # a larger track.steps extends the run, under resume's rule (only up, not stopped early)
            check_extension(load_run(path), _value(stored, "track.steps"), cfg.track.steps)
        elif changed:
            key = changed[0]
            old, new = _value(stored, key), _value(planned, key)
            more = f" and {len(changed) - 1} more key{'s' if len(changed) > 2 else ''}" if len(changed) > 1 else ""
            hint = ("--resume continues only runs of the same config; pass --overwrite to replace them"
                    if resume else "pass --overwrite to replace the sweep's runs")
            raise ConfigError(f"--out: {path} holds a run of another config ({key} is {_shown(old)} there, "
                              f"{_shown(new)} now{more}); {hint}, or choose another --out")
        if load_run(path).running:
            raise ConfigError(f"--out: {path} is being written right now (pid {_summary(path).get('pid')}); "
                              f"wait for it to finish or stop it, then pass --resume")
        existing.append(path.name)
        done = finished(path, t_only) and not extension
        if not done:
            unfinished.append(path.name)
        modes.append("done" if done else "extend" if extension else "resume")
    if existing and not (resume or overwrite):
        what = (f"{len(unfinished)} of them unfinished: {', '.join(unfinished[:3])}"
                f"{', …' if len(unfinished) > 3 else ''}" if unfinished else "all finished")
        raise ConfigError(f"--out: {Path(configs[0].out).parent} already holds {len(existing)} "
                          f"run{'s' if len(existing) > 1 else ''} of this sweep "
                          f"({what}); pass --resume to continue them, or --overwrite to start over")
    return modes


# ----------------------------------------------------------------------------- progress lines


def progress_text(path: str | os.PathLike, cfg: RunConfig) -> str | None:
    """What the run in ``path`` has recorded so far, as "train step 120/5000" or "track step 300/800"
    (None: nothing on disk yet).  Reads only the last step of each table."""
    records = Path(path) / "records.h5"
    if not records.is_file():
        return None
    import h5py
    import numpy as np

    try:
        with h5py.File(records, "r") as h5:
            last = {name: int(h5[name]["step"][-1]) for name in ("gd", "train")
                    if name in h5 and "step" in h5[name] and len(h5[name]["step"])}
            sharp = h5["train/sharpness"][-200:] if "train/sharpness" in h5 else np.empty(0)
    except (OSError, KeyError, ValueError):   # replaced or torn while we looked: next time
        return None
    if "gd" in last:
        return f"track step {last['gd'] + 1}/{cfg.track.steps}"
    if "train" not in last:
        return None
    if not cfg.train.stop_at_edge or cfg.train.schedule != "constant":
        return f"train step {last['train']}/{cfg.train.max_steps}"
    sharp = sharp[np.isfinite(sharp)]
    where = f", S = {sharp[-1]:.4g} of 2/η = {cfg.edge:.4g}" if len(sharp) else ""
    return f"train step {last['train']} (to the edge{where})"


class _Progress:
    """A thread that prints ``name: progress`` whenever a run's recorded progress moves."""

    def __init__(self, configs: list[RunConfig], quiet: bool, every: float):
        self.configs, self.quiet, self.every = configs, quiet, every
        self.shown: dict[str, str | None] = {c.out: None for c in configs}
        self.ended: set[str] = set()
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="sweep-progress")

    def say(self, text: str) -> None:
        if not self.quiet:
            print(text, flush=True)

    def poll(self) -> None:
        for cfg in self.configs:
            with self.lock:   # so that no progress line follows the line saying how the run ended
                if cfg.out in self.ended:
                    continue
                text = progress_text(cfg.out, cfg)
                if text is not None and text != self.shown[cfg.out]:
                    self.shown[cfg.out] = text
                    self.say(f"{Path(cfg.out).name}: {text}")

    def end(self, path: str, status: str) -> None:
        with self.lock:
            self.ended.add(path)
            self.say(f"{Path(path).name}: {status}")

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            self.poll()

    def __enter__(self):
        if not self.quiet:
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()


def _sweep(args) -> int:
    base = load_config(RunConfig, args.config, args.overrides)
    lrs = args.lrs or [base.lr]
    seeds = args.seeds or [base.seed]
    if any(not lr > 0 for lr in lrs):
        raise ConfigError(f"--lrs: learning rates must be positive, got {lrs}")
    if args.jobs < 1:
        raise ConfigError(f"--jobs: must be ≥ 1, got {args.jobs}")
    schedules = ["constant"] + (["inverse_sharpness"] if args.inverse_sharpness else [])
    configs = sweep_configs(base, lrs, seeds, schedules)
    train_only = [args.train_only or c.train.schedule == "inverse_sharpness" for c in configs]
    modes = plan(configs, train_only, args.overwrite, args.resume)
    from ..config import to_dict
    items = [(c, to_dict(c), t, m) for c, t, m in zip(configs, train_only, modes)]
    todo = [it for it in items if it[3] != "done"]
    results = [(c.out, "already finished") for c, _, _, m in items if m == "done"]
    with _Progress([c for c, *_ in todo], base.quiet, POLL_SECONDS) as progress:
        for c, _, _, m in items:
            if m == "done":
                progress.say(f"{Path(c.out).name}: already finished (kept)")
        if args.jobs == 1:
            for c, d, t, m in todo:
                results.append(_one(d, t, None, m))
                progress.end(*results[-1])
        elif todo:
            from concurrent.futures import ProcessPoolExecutor, as_completed
            threads = max(1, (os.cpu_count() or 1) // args.jobs)
            with ProcessPoolExecutor(max_workers=args.jobs) as pool:
                futures = [pool.submit(_one, d, t, threads, m) for _, d, t, m in todo]
                for f in as_completed(futures):
                    results.append(f.result())
                    progress.end(*results[-1])
    for path, status in sorted(results):
        print(f"{path}: {status}")
    from ..figures.registry import draw_figures
    runs = [p for p, s in sorted(results) if not s.startswith("error")]
    paths = draw_figures(runs, ("4", "6"), Path(base.out) / "figures", strict=False) if runs else []
    if paths:
        print(f"combined figures: {', '.join(p.name for p in paths if p.suffix == '.png')} in "
              f"{Path(base.out) / 'figures'}")
    return 1 if any(s.startswith("error") for _, s in results) else 0


def register(sub) -> None:
    width = max(60, min(120, shutil.get_terminal_size().columns - 2))
    p = sub.add_parser("sweep", description="\n\n".join(textwrap.fill(par, width) for par in DESCRIPTION),
                       epilog=keys.epilog(), allow_abbrev=False,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lrs", type=float, nargs="+", help="learning rates (default: the config's)")
    p.add_argument("--seeds", type=int, nargs="+", help="seeds (default: the config's seed)")
    p.add_argument("--jobs", type=int, default=1, help="parallel processes (default 1)")
    p.add_argument("--inverse-sharpness", action="store_true",
                   help="also train with η_t = 1/S(θ_t) (Figure 6; training only)")
    p.add_argument("--train-only", action="store_true", help="train to the edge only (no tracking)")
    p.add_argument("--config", metavar="FILE", help="a TOML config file")
    p.add_argument("--overwrite", action="store_true", help="replace the runs already in --out")
    p.add_argument("--resume", action="store_true",
                   help="continue the runs already in --out (their config must be the one given)")
    p.set_defaults(func=_sweep, overrides=[])   # config overrides for every run: whatever is left
