"""The run's schema: every setting of ``selfstab run``, with its default and a one-line comment.

:class:`RunConfig` is a tree of dataclasses read from TOML and the command
line by :mod:`selfstab.typedconfig` (re-exported here: :func:`load_config`,
:func:`from_dict`, :func:`to_toml`, :func:`diff_configs`, …); each section's
``validate`` names the field and the fix for a value of the right type that
is still wrong.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Optional

from .rules import track_problems
from .tomlio import dumps_toml, to_dict
from .typedconfig import diff_configs, from_dict, load_config, parse_overrides, section_type, to_toml

__all__ = [
    "DataConfig", "ModelConfig", "RunConfig", "TRACK_READERS", "TRACK_RUN_KEYS", "TrackConfig", "TrainConfig",
    "diff_configs", "dumps_toml", "from_dict", "load_config", "parse_overrides", "section_type", "to_dict", "to_toml",
]


# ----------------------------------------------------------------------------- the run's schema


@dataclass
class ModelConfig:
    name: str = "mlp"  # registry name of the model (`selfstab models` lists them)
    width: int = 64  # hidden units (MLP), channels (CNN), base width (ResNet), hidden size (transformer);
    #                  the paper: MLP 200, CNN 32, ResNet 16, transformer 64
    depth: Optional[int] = None  # MLP: number of linear layers, the output layer included; None: the model's default (3)
    activation: Optional[str] = None  # swish (x·sigmoid(x), the paper's), relu, tanh, gelu, …; None: the model's default
    # any other constructor option of the model, e.g. heads/layers (transformer) or blocks/groups (resnet18)
    options: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> Iterator[tuple[str, str]]:
        yield from _at_least(self, 1, "width")
        if self.depth is not None:
            yield from _at_least(self, 1, "depth")


@dataclass
class DataConfig:
    name: str = "digits"  # registry name of the dataset (`selfstab datasets` lists them)
    n: Optional[int] = None  # use the first n training examples; None: all of them
    data_root: Optional[str] = None  # folder holding downloaded datasets; None: the dataset's default
    binary: bool = False  # two classes with ±1 targets and one output (e.g. cats vs dogs)
    n_test: Optional[int] = None  # held-out examples for test accuracy; None: the dataset's default
    kind: Optional[str] = None  # synthetic only: teacher, mixture, images or tokens; None: mixture

    def validate(self) -> Iterator[tuple[str, str]]:
        if self.n is not None:
            yield from _at_least(self, 1, "n")


@dataclass
class TrainConfig:
    """Full-batch GD from initialization to the edge of stability (docs/theory.md §3)."""

    lr: Optional[float] = None  # deprecated: the learning rate is the run-level `lr` (read from here with a warning)
    dtype: Literal["float32", "float64"] = "float32"  # dtype before θ₀ (docs/theory.md §3); from θ₀ on all is float64
    max_steps: int = 20000  # give up when S has not reached 2/η after this many steps
    chunk_size: Optional[int] = None  # examples per chunk of the full-batch sums; None: all at once
    schedule: Literal["constant", "inverse_sharpness"] = "constant"  # η_t = lr, or η_t = 1/S(θ_t) (Figure 6)
    stop_at_edge: bool = True  # stop at the edge (then track); False: GD for max_steps steps (Figure 6)
    eig_tol: float = 1e-6  # relative tolerance of the top-eigenvalue solver
    # Most steps between sharpness checks while S < 1/η, while 1/η ≤ S < 1.5/η, and beyond (never more
    # than half the extrapolated steps to 2/η); when S first reaches 2/η the run replays from the last
    # check one step at a time.
    every: list[int] = field(default_factory=lambda: [50, 25, 10])
    checkpoint_every: int = 100  # steps between training checkpoints (taken at the next sharpness check)

    def validate(self) -> Iterator[tuple[str, str]]:
        yield from _positive(self, "eig_tol")
        yield from _at_least(self, 0, "max_steps")
        yield from _at_least(self, 1, "checkpoint_every")
        if self.chunk_size is not None:
            yield from _at_least(self, 1, "chunk_size")
        if len(self.every) != 3 or min(self.every, default=0) < 1:
            yield "every", f"must be 3 positive step counts, got {self.every!r}"


@dataclass
class TrackConfig:
    """The processes tracked in lockstep from θ₀ (docs/theory.md §4–§7)."""

    steps: int = 800  # GD steps to track from θ₀ (time t restarts at 0 there); the default job shows two cycles
    proj_tol: float = 1e-9  # stop projecting onto M when η|S − 2/η| and |u·∇L|/‖∇L‖ are below this
    proj_max_iter: int = 10  # most linearized projection steps per projection (the paper uses 3)
    proj_coupled: bool = True  # Newton step of the coupled 2×2 linearization (False: the decoupled step, docs/theory.md §4)
    proj_chord: bool = True  # linearized steps reuse ∇S(θ†_t) (no third derivative per step); false: fresh ∇S at each φ
    proj_predict: bool = True  # first linearized step from S, u·∇L predicted at θ†−η∇L (no eigen-solve); false: the paper
    proj_min_iter: int = 0  # fewest linearized projection steps (3, with proj_max_iter 3 and proj_predict false: the paper)
    eig_tol: float = 1e-7  # relative residual ‖Hu − λu‖/|λ| of the eigen-solves along θ† (projection, predictions)
    sharpness_tol: float = 1e-5  # same for GD's and the flow's recorded sharpness (eigenvalue error ≤ tol²·λ²/gap)
    sharpness_start: Literal["auto", "warm", "plain"] = "auto"  # GD's sharpness solves: warm momentum + guard, or plain; auto: plain with central/kconstrained
    processes: Optional[list[str]] = None  # the processes to track (`selfstab.processes.PROCESSES`); None: the default set
    flow: bool = True  # track gradient flow too
    power_iters: int = 8  # tensor power iterations for the ρ₃, ρ₄ estimates (Appendix E)
    flow_rtol: float = 1e-8  # relative tolerance of the gradient-flow ODE solver
    flow_atol: float = 1e-10  # absolute tolerance of the gradient-flow ODE solver
    flow_method: Literal["RK23", "RK45"] = "RK23"  # scipy explicit Runge–Kutta solver for the flow (processes/flow.py)
    generalized: bool = True  # generalized predicted dynamics (Appendix F) instead of eq. (6)'s x-update
    even_part: bool = False  # with generalized: use the even part of F_t
    diagnostics_every: int = 25  # steps between Appendix E diagnostics (they cost tensor power iterations)
    k_eigs: int = 2  # top eigenvalues tracked along θ† (λ₂ decides when to stop)
    stop_lambda2: float = 1.9  # the λ₂ rule acts once λ₂(θ†) ≥ stop_lambda2/η (§8.2); 0: no λ₂ rule
    lambda2_rule: Literal["auto", "stop", "flag", "central"] = "auto"  # at λ₂ ≥ stop_lambda2/η: stop, flag outside_assumptions, or flag and add the central flow; auto: central for the default set, flag with central/kconstrained named, stop otherwise
    critical_threshold: float = 0.975  # central/kconstrained: eigenvalues ≥ this·2/η are critical (enter the SDCP)
    track_threshold: Optional[float] = None  # central/kconstrained: block covers λ ≥ this·2/η + a guard; none: critical
    block_max_k: Optional[int] = None  # central/kconstrained: most eigenpairs in the tracked block; none: no cap
    sdcp_tol: float = 1e-8  # central/kconstrained: KKT residual tolerance of each SDCP solve
    sdcp_on_fail: Literal["raise", "warn"] = "warn"  # central/kconstrained: an SDCP solve above sdcp_tol warns or raises
    central_substeps: Optional[int] = None  # central: Euler substeps per GD step; none: adaptive
    central_min_substeps: int = 2  # central: fewest adaptive substeps
    central_max_substeps: int = 32  # central: most adaptive substeps
    central_stiffness: float = 0.5  # central: adaptive substeps keep η·λ·dt ≤ this off the critical set
    central_eig_tol: float = 1e-5  # central: relative residual of the block's eigen-solves (eigenvalues to ~its square)
    central_chord: bool = True  # central: one eigen-solve per GD step, substeps on the block's first-order model
    central_chord_tol: float = 1e-3  # central: reused pairs' block model must match the next solve to this·2/η
    central_pairs_every: int = 2  # central: fresh pair vectors ∇³L(u_i, u_j) every this many eigen-solves
    central_exact_drift: bool = True  # central: with reused pairs, D(X) from one fresh third-derivative product
    kproj_tol: float = 1e-9  # kconstrained: stop projecting onto M_k when both residuals are below this
    kproj_max_iter: int = 10  # kconstrained: most linearized steps per projection onto M_k
    kproj_coupled: bool = True  # kconstrained: the linearized step includes the coupling term C (docs/theory.md §10)
    kproj_perp: bool = True  # kconstrained: use the pair vectors' parts orthogonal to the critical span
    kproj_turning: Literal["auto", "on", "off"] = "auto"  # kconstrained: Newton term for the active u_i turning; auto: once a step after the first shrinks u_i·∇L < 10×
    kproj_chord: bool = True  # kconstrained: linearized steps reuse the pair vectors at θ†_k,t; false: fresh
    active_rtol: float = 1e-3  # kconstrained: impose u_i·∇L = 0 for λ_i ≥ (1 − active_rtol)·2/η (and λ₁)
    checkpoint_every: int = 100  # steps between checkpoints (records are flushed with each)

    def validate(self) -> Iterator[tuple[str, str]]:
        # the rules live in selfstab.rules: track()'s keyword options of the same names obey them too
        yield from track_problems(vars(self))


# Which process reads each track key: its constructor takes a keyword of that name, whose default is the
# key's default (tests/test_config.py pins both to `selfstab.processes.PROCESSES`, so the two copies cannot
# drift).  A key no process reads is the run's (TRACK_RUN_KEYS).  `selfstab run --help` lists the track keys
# grouped by these.  Written out here, not read from the constructors, so that the config stays torch-free.
TRACK_READERS: dict[str, tuple[str, ...]] = {
    "gd": ("sharpness_tol", "sharpness_start"),
    "constrained": ("eig_tol", "proj_tol", "proj_max_iter", "proj_min_iter", "proj_coupled", "proj_chord",
                    "proj_predict"),
    "predicted": ("even_part",),
    "generalized": ("even_part",),
    "flow": ("sharpness_tol", "flow_rtol", "flow_atol", "flow_method"),
    "central": ("central_eig_tol", "critical_threshold", "track_threshold", "central_substeps",
                "central_min_substeps", "central_max_substeps", "central_stiffness", "central_chord",
                "central_chord_tol", "central_pairs_every", "central_exact_drift", "sdcp_tol", "block_max_k",
                "sdcp_on_fail"),
    "kconstrained": ("eig_tol", "kproj_tol", "kproj_max_iter", "critical_threshold", "track_threshold",
                     "block_max_k", "kproj_coupled", "kproj_perp", "kproj_turning", "kproj_chord", "active_rtol",
                     "sdcp_tol", "sdcp_on_fail"),
    "diagnostics": ("diagnostics_every", "k_eigs", "power_iters", "sharpness_tol"),
}
# The track keys of the run itself: how long, which processes, the λ₂ rule, checkpoints.
TRACK_RUN_KEYS = ("steps", "processes", "flow", "generalized", "stop_lambda2", "lambda2_rule", "checkpoint_every")


@dataclass
class RunConfig:
    """Everything a run needs; `config.toml` of a run directory is this, resolved."""

    lr: float = 0.2  # η, the learning rate of both phases; the edge of stability is S = 2/η
    seed: int = 0  # seeds torch and numpy (initialization, data subsets)
    device: str = "auto"  # "auto" (cuda if available, else cpu), "cpu", "cuda", "cuda:1", …
    out: str = "runs/default"  # the run directory
    quiet: bool = False  # no progress bars
    tensorboard: bool = False  # also log every record to RUN/tensorboard (needs the tensorboard package)
    flush_seconds: float = 15.0  # seconds between writes of records.h5 and the status while running
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: Literal["mse", "half_mse", "ce", "logistic"] = "mse"  # docs/theory.md §1; mse has no ½
    train: TrainConfig = field(default_factory=TrainConfig)
    track: TrackConfig = field(default_factory=TrackConfig)

    @property
    def edge(self) -> float:
        """``2/η``, the edge of stability."""
        return 2.0 / self.lr

    def validate(self) -> Iterator[tuple[str, str]]:
        yield from _positive(self, "lr", "flush_seconds")
        if not math.isfinite(self.lr):
            yield "lr", f"must be finite, got {self.lr!r}"

    @staticmethod
    def migrate(data: dict) -> dict:
        """Read an old config: ``train.lr`` (before η moved to the run level) becomes ``lr``, with a warning."""
        train = data.get("train")
        if isinstance(train, Mapping) and train.get("lr") is not None:
            warnings.warn("config: train.lr is deprecated; the learning rate is the run-level key lr "
                          "(--lr, or lr = … at the top of the TOML file)", DeprecationWarning, stacklevel=2)
            data = {**data, "lr": train["lr"], "train": {k: v for k, v in train.items() if k != "lr"}}
        return data


def _positive(obj: Any, *names: str) -> Iterator[tuple[str, str]]:
    for name in names:
        value = getattr(obj, name)
        if not value > 0:
            yield name, f"must be > 0, got {value!r}"


def _at_least(obj: Any, low: int, *names: str) -> Iterator[tuple[str, str]]:
    for name in names:
        value = getattr(obj, name)
        if value < low:
            yield name, f"must be ≥ {low}, got {value!r}"


# What may change on a run that exists (dotted keys, or sections whose keys all count): tracking a trained run
# may set any track.* key; a resume only these, track.steps only upwards (an extension).  The one owner of the
# rule: selfstab.experiment's resume/track_trained apply it, the CLI's help lists it.
TRACK_KEYS = ("track", "quiet", "flush_seconds")
RESUME_KEYS = ("quiet", "flush_seconds", "track.steps")


def changed_keys(old: Any, new: Any, allowed: tuple[str, ...]) -> list[str]:
    """The dotted keys on which configs ``old`` and ``new`` differ that ``allowed`` does not cover."""
    return [k for k in diff_configs(old, new) if not any(k == a or k.startswith(a + ".") for a in allowed)]

