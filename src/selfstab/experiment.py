"""A run, end to end: config → problem → GD to the edge → tracking → records (SPEC.md §2–4).

:func:`build_problem` turns a :class:`~selfstab.config.RunConfig` into an
:class:`~selfstab.problem.Objective`; :func:`train_phase` and
:func:`track_phase` run the two stages into a :class:`~selfstab.records.RunDir`,
checkpointing as they go; :func:`execute` runs whatever a run directory still
needs, so a fresh run and ``selfstab resume`` are the same code.

Resume semantics: the training phase is short and deterministic, so a run
killed before the edge restarts training from initialization (its records
are rewound); once the edge is found, ``θ₀`` and its eigenvectors are
checkpointed, and tracking resumes from its latest checkpoint with every
state (iterates, warm starts, the flow's step size, counters) restored, so
the records continue bit-for-bit.  Wall-clock times live in the ``timing``
table, the only one that differs between a resumed and an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from dataclasses import dataclass
from typing import Any

import torch

from .config import RunConfig, from_dict
from .errors import ConfigError
from .problem import Objective
from .problem.data import Dataset, load_dataset
from .problem.models import MODELS, build_model
from .processes import Lockstep
from .records import RunDir
from .spectrum import EigenTracker, default_tol
from .train import gd_run, gd_to_edge


@dataclass
class Problem:
    objective: Objective
    dataset: Dataset
    model: torch.nn.Module


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"device: unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device: {name!r} asked for but this torch has no CUDA device; use --device cpu")
    return dev


def model_options(cfg: RunConfig, dataset: Dataset) -> dict[str, Any]:
    """The model's constructor options from ``cfg.model`` (only those the model has; a set one it lacks is an error)."""
    spec = MODELS.get(cfg.model.name)
    if spec is None:
        raise ConfigError(f"model.name: unknown model {cfg.model.name!r}; choose one of {', '.join(MODELS)}")
    valid = spec.options
    opts: dict[str, Any] = {}
    width_key = "hidden" if "hidden" in valid and "width" not in valid else "width"
    opts[width_key] = cfg.model.width
    for key in ("depth", "activation"):
        value = getattr(cfg.model, key)
        if value is None:
            continue
        if key not in valid:
            raise ConfigError(f"model.{key}: not an option of {cfg.model.name!r}; its options: {', '.join(valid)}")
        opts[key] = value
    if "vocab_size" in valid:
        if "vocab_size" not in dataset.meta:
            raise ConfigError(f"model.name: {cfg.model.name!r} needs token data (e.g. --data.name sst2 or "
                              f"synthetic with kind=tokens), not {cfg.data.name!r}")
        opts["vocab_size"] = dataset.meta["vocab_size"]
    return opts


def build_problem(cfg: RunConfig, dtype: str | torch.dtype | None = None) -> Problem:
    """Data set, model and full-batch objective for ``cfg`` (in ``dtype``, default ``cfg.train.dtype``)."""
    data_opts = {"binary": True} if cfg.data.binary else {}
    if cfg.data.n_test is not None:
        data_opts["n_test"] = cfg.data.n_test
    if cfg.data.kind is not None:
        data_opts["kind"] = cfg.data.kind
    ds = load_dataset(cfg.data.name, loss=cfg.loss, n=cfg.data.n, seed=cfg.seed, data_root=cfg.data.data_root,
                      **data_opts)
    model = build_model(cfg.model.name, ds.input_shape, ds.n_outputs, seed=cfg.seed, **model_options(cfg, ds))
    obj = Objective.from_module(model, ds.inputs, ds.targets, cfg.loss, chunk_size=cfg.train.chunk_size,
                                dtype=dtype or cfg.train.dtype, device=resolve_device(cfg.device))
    return Problem(obj, ds, model)


def as_config(config: RunConfig | dict) -> RunConfig:
    return config if isinstance(config, RunConfig) else from_dict(RunConfig, config)


@contextlib.contextmanager
def _progress(total: int, desc: str, quiet: bool):
    """A tqdm bar (or nothing when quiet) with a ``show(step, **postfix)`` callback."""
    if quiet:
        yield lambda step, **kw: None
        return
    from tqdm.auto import tqdm
    bar = tqdm(total=total, desc=desc, unit="step", dynamic_ncols=True, mininterval=0.5)
    last = [0]

    def show(step: int, **postfix):
        bar.update(step + 1 - last[0])
        last[0] = step + 1
        bar.set_postfix({k: f"{v:.4g}" for k, v in postfix.items()}, refresh=False)

    try:
        yield show
    finally:
        bar.close()


def evaluator(problem: Problem):
    """``θ ↦ {train_accuracy, test_loss, test_accuracy}`` for classification data (empty dict otherwise)."""
    ds, obj = problem.dataset, problem.objective
    if ds.task not in ("multiclass", "binary"):
        return None
    from .problem.losses import get_loss, prepare_targets

    def accuracy(out, labels):
        pred = out.argmax(1) if out.shape[1] > 1 else (out[:, 0] > 0).long()
        return float((pred.cpu() == labels.cpu()).double().mean())

    def evaluate(theta):
        res = {"train_accuracy": accuracy(obj.outputs(theta, ds.inputs), ds.labels)}
        if ds.test_inputs is not None and ds.test_labels is not None and len(ds.test_labels):
            out = obj.outputs(theta, ds.test_inputs)
            y = prepare_targets(ds.loss, ds.test_targets).to(out.device)
            y = y.to(out.dtype) if y.is_floating_point() else y
            res["test_loss"] = float(get_loss(ds.loss)(out, y).mean())
            res["test_accuracy"] = accuracy(out, ds.test_labels)
        return res

    return evaluate


def train_phase(cfg: RunConfig, run: RunDir, problem: Problem | None = None) -> dict:
    """GD from initialization to the edge; records ``train``, checkpoints ``θ₀``, returns the edge state.

    With ``train.stop_at_edge = false`` or the ``inverse_sharpness`` schedule, GD runs ``max_steps``
    steps instead (Figure 6) and nothing is tracked.
    """
    problem = problem or build_problem(cfg)
    obj, lr = problem.objective, cfg.train.lr
    rec = run.recorder("train")
    board = _TensorBoard(cfg, run)
    start = time.perf_counter()
    # float32 HVPs cannot resolve a residual below ~1e-5: never ask for less than the dtype allows
    tracker = EigenTracker(1, tol=max(cfg.train.eig_tol, default_tol(obj.dtype)), on_fail="warn")
    fixed = not cfg.train.stop_at_edge or cfg.train.schedule != "constant"

    def on_record(r):
        rec.append(r["step"], **{k: v for k, v in r.items() if k != "step"})
        board.log(r["step"], {"train": {k: v for k, v in r.items() if k != "step" and v is not None}})

    with _progress(cfg.train.max_steps + 1, "train" if fixed else "train → edge", cfg.quiet) as show, \
            warnings.catch_warnings():
        warnings.simplefilter("ignore")   # eigen-solver shortfalls are in the records (eig_residual)

        def progress(t, r):
            s = r.get("sharpness")
            show(t, loss=r["loss"], **({"S": s} if s is not None else {}), **{"2/η": 2 / lr})

        try:
            if fixed:
                gd_run(obj, lr, cfg.train.max_steps, schedule=cfg.train.schedule, measure_every=cfg.train.every[1],
                       tracker=tracker, evaluate=evaluator(problem), on_record=on_record, progress=progress)
            else:
                edge = gd_to_edge(obj, lr, max_steps=cfg.train.max_steps, every=cfg.train.every, tracker=tracker,
                                  on_record=on_record, progress=progress, evaluate=evaluator(problem))
        finally:
            run.flush()
            board.close()
    seconds = time.perf_counter() - start
    if fixed:
        run.write_summary({"lr": lr, "parameters": obj.dim, "seconds_train": seconds, "reached_edge": False,
                           "stop_reason": f"trained {cfg.train.max_steps} steps ({cfg.train.schedule} step size)"})
        state = {"phase": "edge", "theta0": None, "onset_step": None, "reached": False, "warm": None, "fixed": True}
        run.save_checkpoint(cfg.train.max_steps, state)
        return state
    summary = {"lr": lr, "parameters": obj.dim, "reached_edge": edge.reached, "onset_step": edge.step,
               "onset_sharpness": edge.sharpness, "onset_loss": edge.history[-1]["loss"] if edge.history else None,
               "seconds_train": seconds, "train_grads": edge.counts.get("grad", 0),
               "train_hvps": edge.counts.get("hvp", 0)}
    run.write_summary(summary)
    state = {"phase": "edge", "theta0": edge.theta0.detach().cpu(), "onset_step": edge.step,
             "reached": edge.reached, "warm": None if edge.eig is None else edge.eig.vectors.detach().cpu()}
    run.save_checkpoint(edge.step, state)
    return state


class _TensorBoard:
    """Optional mirror of the records to TensorBoard (``tensorboard = true``); a no-op when off."""

    def __init__(self, cfg: RunConfig, run: RunDir):
        self.writer = None
        if cfg.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise ConfigError("tensorboard: the tensorboard package is not installed; pip install tensorboard "
                                  "or set tensorboard = false") from None
            self.writer = SummaryWriter(str(run.path / "tensorboard"))

    def log(self, step: int, records: dict[str, dict]) -> None:
        if self.writer is not None:
            for process, fields in records.items():
                for key, value in fields.items():
                    self.writer.add_scalar(f"{process}/{key}", float(value), step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def track_phase(cfg: RunConfig, run: RunDir, edge: dict, problem: Problem | None = None,
                resume_state: dict | None = None) -> Lockstep:
    """The four processes from ``θ₀`` in float64, streaming records and checkpointing every ``checkpoint_every``."""
    problem = problem or build_problem(cfg, dtype="float64")
    obj = problem.objective.to(torch.float64)
    lr, tc = cfg.train.lr, cfg.track
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # projection/eigen shortfalls are recorded per step
        if resume_state is None:
            ls = Lockstep(obj, edge["theta0"], lr, tc, warm=edge["warm"])
        else:
            ls = Lockstep.from_state(obj, lr, tc, resume_state["lockstep"])
        start = time.perf_counter()
        board = _TensorBoard(cfg, run)
        with _progress(tc.steps, "track", cfg.quiet) as show:
            if ls.t:
                show(ls.t - 1)
            while ls.t < tc.steps and ls.stop_reason is None:
                t = ls.t
                rec = ls.step()
                timing = rec.pop("cost")
                seconds = timing.pop("seconds")
                for name, fields in rec.items():
                    run.recorder(name).append(t, **fields)
                run.recorder("cost").append(t, **timing)
                run.recorder("timing").append(t, seconds=seconds)
                board.log(t, rec)
                g = rec["gd"]
                show(t, loss=g["loss"], S=g["sharpness"], **{"2/η": 2 / lr})
                if ls.t % tc.checkpoint_every == 0 or ls.stop_reason is not None or ls.t >= tc.steps:
                    run.save_checkpoint(ls.t, {"phase": "track", "edge": edge, "lockstep": ls.state_dict()})
        board.close()
    run.write_summary({"stop_reason": ls.stop_reason or f"steps: reached the step limit {tc.steps}",
                       "tracked_steps": ls.t, "seconds_track": time.perf_counter() - start})
    return ls


def execute(run: RunDir, *, train_only: bool = False) -> RunDir:
    """Run (or resume) whatever ``run`` still needs: training to the edge, then tracking."""
    cfg = as_config(run.config)
    torch.manual_seed(cfg.seed)
    latest = run.rewind_to_checkpoint()
    state = latest[1] if latest else None
    if state is None:
        edge = train_phase(cfg, run)
    elif state["phase"] == "edge":
        edge = state
    else:
        edge = state["edge"]
    if train_only or not edge["reached"]:
        if not edge["reached"] and not edge.get("fixed"):
            run.write_summary({"stop_reason": f"the sharpness did not reach 2/η within train.max_steps = "
                                              f"{cfg.train.max_steps}; raise it or the learning rate"})
        return run
    if cfg.track.steps > 0:
        track_phase(cfg, run, edge, resume_state=state if state and state["phase"] == "track" else None)
    return run

