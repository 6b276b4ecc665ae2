"""``selfstab sweep``: one run per learning rate (or seed), sequentially or in parallel processes.

Each run is an ordinary run directory under ``--out`` (``lr0.2``, ``lr0.1-seed1`` …),
so each can be resumed, plotted and reported on its own; ``selfstab plot``
combines them (Figures 4 and 6).  Parallel runs are separate processes
(``--jobs``), each with its share of the CPU threads, so that ``--jobs 2``
uses a 2-core machine fully without oversubscribing it.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import textwrap
from pathlib import Path

from ..config import RunConfig, load_config
from ..errors import ConfigError, SelfstabError
from . import keys

# --help's description: plain text (no reST), one paragraph per item, wrapped to the terminal when shown
DESCRIPTION = (
    "One run per learning rate (or seed), sequentially or in parallel processes.",
    "Each run is an ordinary run directory under --out (lr0.2, lr0.1-seed1, ...), so each can be resumed, "
    "plotted and reported on its own; the combined Figures 4 and 6 go to --out/figures (selfstab plot redraws "
    "them). Parallel runs are separate processes (--jobs), each with its share of the CPU threads, so --jobs 2 "
    "uses a 2-core machine fully without oversubscribing it. Config overrides (--key value) apply to every run.",
)


def _one(cfg_dict: dict, train_only: bool, threads: int | None) -> tuple[str, str]:
    import torch

    from ..config import from_dict
    from ..experiment import execute
    from ..records import RunDir
    if threads:
        torch.set_num_threads(threads)
    cfg = from_dict(RunConfig, cfg_dict)
    try:
        run = RunDir.open(cfg.out) if Path(cfg.out, "config.toml").exists() else RunDir.create(cfg.out, cfg)
        execute(run, train_only=train_only)
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
    from ..config import to_dict
    items = [(to_dict(c), args.train_only or c.train.schedule == "inverse_sharpness") for c in configs]
    if args.jobs == 1:
        results = [_one(c, t, None) for c, t in items]
    else:
        from concurrent.futures import ProcessPoolExecutor, as_completed
        threads = max(1, (os.cpu_count() or 1) // args.jobs)
        with ProcessPoolExecutor(max_workers=args.jobs) as pool:
            futures = [pool.submit(_one, c, t, threads) for c, t in items]
            results = [f.result() for f in as_completed(futures)]
    for path, status in sorted(results):
        print(f"{path}: {status}")
    from ..figures.registry import draw_figures
    runs = [p for p, s in sorted(results) if not s.startswith("error")]
    paths = draw_figures(runs, ("4", "6"), Path(base.out) / "figures", strict=False)
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
    p.set_defaults(func=_sweep, overrides=[])   # config overrides for every run: whatever is left
