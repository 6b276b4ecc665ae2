"""Shared pieces of the benchmarks: thread setting, timing, machine info, the two problems, the cached edge.

Every benchmark runs with ``torch.set_num_threads(1)`` (the machine is shared;
ratios measured within one run are what to trust, absolute times move with the
load).
"""

from __future__ import annotations

import hashlib
import os
import platform
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

THREADS = 1
torch.set_num_threads(THREADS)

HERE = Path(__file__).resolve().parent
CACHE = HERE / ".cache"

DEFAULT_LR = 0.2          # the default job's η (selfstab.config.TrainConfig.lr)


# ----------------------------------------------------------------------------- machine

def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict:
    try:
        date = subprocess.run(["date", "-u"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        date = time.strftime("%a %b %d %H:%M:%S UTC %Y", time.gmtime())
    try:
        load = os.getloadavg()
    except OSError:
        load = (float("nan"),) * 3
    import numpy
    import scipy
    return {"date": date, "git": git_state(), "cpu": cpu_model(), "cores": os.cpu_count(), "torch": torch.__version__,
            "numpy": numpy.__version__, "scipy": scipy.__version__, "python": platform.python_version(),
            "threads": torch.get_num_threads(), "load": load}


def git_state() -> str:
    """``HEAD`` of the repository and whether ``src/`` differs from it (the library is what is measured)."""
    root = HERE.parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "src"], cwd=root, capture_output=True,
                               text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return f"{head}" + (" with uncommitted changes in src/" if dirty else " (src/ clean)")


def machine_lines(info: dict, command: str) -> list[str]:
    return [
        f"- date: `{info['date']}`",
        f"- selfstab: commit {info.get('git', 'not recorded')}",
        f"- machine: {info['cpu']}, {info['cores']} cores; load average at start "
        f"{info['load'][0]:.2f} (other jobs share the machine)",
        f"- software: torch {info['torch']}, numpy {info['numpy']}, scipy {info['scipy']}, Python {info['python']}",
        f"- threads: `torch.set_num_threads({info['threads']})` in every benchmark",
        f"- command: `{command}`",
    ]


# ----------------------------------------------------------------------------- problems

@dataclass
class Problem:
    name: str
    objective: object            # selfstab.problem.Objective
    model: torch.nn.Module
    inputs: torch.Tensor
    targets: torch.Tensor        # as given to Objective.from_module


def paper_mlp(dtype: str, n: int = 5000, seed: int = 0) -> Problem:
    """The paper's MLP shape 3072→200→200→10 (swish) on ``n`` standard-normal inputs with random one-hot targets."""
    from selfstab.problem.models import build_model
    from selfstab.problem.objective import Objective
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 3, 32, 32, generator=g)
    labels = torch.randint(0, 10, (n,), generator=g)
    Y = torch.nn.functional.one_hot(labels, 10).float()
    model = build_model("mlp", (3, 32, 32), 10, seed=seed, width=200, depth=3, activation="swish")
    obj = Objective.from_module(model, X, Y, "mse", dtype=dtype)
    return Problem(f"paper MLP 3072-200-200-10, {n} random inputs", obj, model, X, Y)


def default_job(dtype: str = "float64") -> Problem:
    """The default job's problem (``selfstab run`` with no options): MLP width 64, depth 3, swish, digits, mse."""
    from selfstab.config import RunConfig
    from selfstab.experiment import build_problem
    cfg = RunConfig()
    cfg.device = "cpu"
    pb = build_problem(cfg, dtype=dtype)
    ds = pb.dataset
    return Problem(f"default job: MLP width {cfg.model.width} on {cfg.data.name} ({ds.n} examples)",
                   pb.objective, pb.model, ds.inputs, ds.targets)


# ----------------------------------------------------------------------------- the edge of the default job

def default_edge(log: Callable[[str], None] = print) -> dict:
    """θ₀ of the default job as ``selfstab run`` finds it (GD in ``train.dtype`` — float32 — to the edge at
    η = 0.2), its eigenvectors, and the float64 problem; cached in ``benchmarks/.cache/``.

    The cache key hashes the initial parameters, the data and the training settings, so a change of model,
    data set or training precision recomputes it.
    """
    from selfstab.config import RunConfig
    from selfstab.spectrum import EigenTracker
    from selfstab.spectrum.eigen import default_tol
    from selfstab.train import gd_to_edge
    cfg = RunConfig()
    pb = default_job("float64")
    train_obj = default_job(cfg.train.dtype).objective
    h = hashlib.sha256()
    for t in (pb.objective.theta0, pb.inputs.double(), pb.targets.double()):
        h.update(t.detach().cpu().numpy().tobytes())
    h.update(repr((DEFAULT_LR, cfg.train.dtype, cfg.train.eig_tol, cfg.train.every)).encode())
    key = h.hexdigest()[:16]
    path = CACHE / f"edge_default_{key}.pt"
    if path.exists():
        state = torch.load(path)
        log(f"edge: cached θ₀ from {path.relative_to(HERE.parent)} (step {state['step']})")
        return {**state, "problem": pb, "cached": True}
    log(f"edge: running GD from initialization to the edge (default job, η = 0.2, {cfg.train.dtype}); "
        "cached afterwards ...")
    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tracker = EigenTracker(1, tol=max(cfg.train.eig_tol, default_tol(train_obj.dtype)), on_fail="warn")
        edge = gd_to_edge(train_obj, DEFAULT_LR, max_steps=cfg.train.max_steps, every=cfg.train.every,
                          tracker=tracker)
    seconds = time.perf_counter() - t
    if not edge.reached:
        raise RuntimeError("the default job did not reach the edge of stability")
    state = {"theta0": edge.theta0.detach().double().cpu(), "warm": edge.eig.vectors.detach().double().cpu(),
             "step": edge.step, "sharpness": edge.sharpness, "seconds": seconds, "key": key,
             "dtype": cfg.train.dtype}
    CACHE.mkdir(exist_ok=True)
    torch.save(state, path)
    log(f"edge: reached at step {edge.step} (midpoint S = {edge.sharpness:.6g}) in {seconds:.1f} s")
    return {**state, "problem": pb, "cached": False}


# ----------------------------------------------------------------------------- formatting

def table(header: list[str], rows: list[list]) -> str:
    def fmt(x):
        if isinstance(x, float):
            return f"{x:.3g}" if abs(x) < 1e4 else f"{x:.0f}"
        return str(x)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(fmt(x) for x in r) + " |" for r in rows]
    return "\n".join(lines)


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)
