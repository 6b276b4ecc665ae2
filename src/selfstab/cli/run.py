"""``selfstab train | track | run | resume``: a run directory from a config and overrides.

Every command takes ``--config FILE`` (TOML) and overrides of any config key
(``--lr 0.02``, ``--model.width 200``, ``--train.dtype=float64``); the
resolved config, every default written out, is the run's ``config.toml``.

``selfstab resume RUN --track.steps N`` extends a run to more tracked steps
(only increases; the extensions are listed in ``config.toml`` and the
summary's ``extensions``); ``selfstab track RUN --out NEW`` tracks a trained
run into a new folder with other ``track`` settings, leaving ``RUN`` as it is.

Several ranks (data parallelism, docs/theory.md §11): ``torchrun --nproc-per-node N
-m selfstab run …`` runs any of these commands on N ranks (rank 0 writes and
prints); ``--nproc N`` is the shortcut on one machine, which starts
``python -m torch.distributed.run --standalone --nproc-per-node N -m selfstab
<the same arguments>`` and returns its exit status.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

from ..config import RESUME_KEYS, TRACK_KEYS, RunConfig, load_config
from ..errors import ConfigError, NotWritableError
from ..wording import plural
from . import keys

def _parser(sub, name: str, run_arg: bool = False, allowed: tuple[str, ...] | None = None,
            title: str | None = None) -> argparse.ArgumentParser:
    p = sub.add_parser(name, epilog=keys.epilog(allowed, title), allow_abbrev=False,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    if run_arg:
        p.add_argument("run", help="the run directory")
    else:
        p.add_argument("--config", metavar="FILE", help="a TOML config file (overrides apply on top)")
        p.add_argument("--overwrite", action="store_true", help="replace an existing run in --out")
    p.add_argument("--nproc", type=int, default=None, metavar="N",
                   help="run on N data-parallel ranks of this machine (starts torchrun; see README)")
    p.set_defaults(overrides=[])   # config overrides: whatever is left, --key value or --key=value
    return p


def _without_nproc(argv: list[str]) -> list[str]:
    """``argv`` less ``--nproc N`` / ``--nproc=N``."""
    out, skip = [], False
    for tok in argv:
        if skip:
            skip = False
        elif tok == "--nproc":
            skip = True
        elif not tok.startswith("--nproc="):
            out.append(tok)
    return out


def _launch(args) -> int:
    """``--nproc N``: the same command under ``torchrun`` on N ranks of this machine; its exit status."""
    n = args.nproc
    if n < 1:
        raise ConfigError(f"--nproc: must be at least 1, got {n}")
    if "WORLD_SIZE" in os.environ:
        raise ConfigError(f"--nproc: already running under torchrun (WORLD_SIZE={os.environ['WORLD_SIZE']}); "
                          f"drop --nproc and set the ranks with torchrun --nproc-per-node")
    argv = getattr(args, "argv", None)
    if argv is None:
        raise ConfigError("--nproc: only from the command line (selfstab … --nproc N); from Python launch torchrun")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(n),
           "-m", "selfstab", *_without_nproc(argv)]
    proc = subprocess.Popen(cmd)
    while True:
        try:
            code = proc.wait()
            break
        except KeyboardInterrupt:   # torchrun got the Ctrl-C too and stops its ranks; wait for it
            continue
    return code if code >= 0 else 128 - code


def _ranked(func):
    """A command that runs under torchrun as under one process: ``--nproc`` relaunches it; the process
    group is closed when it ends well."""
    def command(args) -> int:
        if args.nproc is not None:
            return _launch(args)
        code = func(args)
        from .. import distributed
        distributed.shutdown()
        return code
    return command


def _main_rank() -> bool:
    from .. import distributed
    return distributed.is_main()


def _report(run) -> None:
    s = run.summary
    out = sys.stdout
    if s.get("reached_edge"):
        seconds = f", {s['seconds_train']:.1f} s" if s.get("seconds_train") is not None else ""
        print(f"edge of stability reached at step {s['onset_step']}: midpoint sharpness {s['onset_sharpness']:.6g} "
              f"≥ 2/η = {2 / s['lr']:.6g} (loss {s['onset_loss']:.4g}{seconds})", file=out)
    if "tracked_steps" in s:
        seconds = f" ({s['seconds_track']:.1f} s)" if s.get("seconds_track") is not None else ""
        print(f"tracked {plural(s['tracked_steps'], 'step')} from the edge{seconds}; stopped: {s['stop_reason']}",
              file=out)
    elif s.get("stop_reason"):
        print(f"stopped: {s['stop_reason']}", file=out)
    for part in s.get("theory", ()):   # which theory held over which tracked steps
        print(f"  steps {part['from']}–{part['to']}: {part['what']}", file=out)
    print(f"run directory: {run.path}  (selfstab.load_run('{run.path}'))", file=out)


def _figures(run) -> None:
    from ..experiment import run_figures
    paths, notes = run_figures(run)
    if paths:
        print(f"figures: {', '.join(p.name for p in paths if p.suffix == '.png')} in {run.path / 'figures'}")
    for line in notes:
        print(line)


def _new_run(args, train_only: bool) -> int:
    from ..experiment import start

    cfg = load_config(RunConfig, args.config, args.overrides)
    run = start(cfg, overwrite=args.overwrite, train_only=train_only)
    if _main_rank():
        _report(run)
        _figures(run)
    return 0


def _track(args) -> int:
    """``selfstab track RUN [--out NEW]``: :func:`selfstab.experiment.track_trained`, then the report and figures."""
    from ..experiment import track_trained
    from ..records.writable import not_writable

    try:
        run = track_trained(args.run, args.overrides, out=args.out, overwrite=args.overwrite)
    except NotWritableError as exc:   # RunDir's fix names the config key `out`, which `track` does not read
        if args.out is None or exc.path is None or not isinstance(exc.__context__, OSError):
            raise
        raise not_writable(exc.path, exc.__context__, "choose a writable folder with --out NEW") from None
    if _main_rank():
        _report(run)
        _figures(run)
    return 0


def _resume(args) -> int:
    """``selfstab resume RUN [--track.steps N]``: :func:`selfstab.experiment.resume`, then report and figures."""
    from ..experiment import resume

    run = resume(args.run, args.overrides)
    if _main_rank():
        _report(run)
        _figures(run)
    return 0


def register(sub) -> None:
    _parser(sub, "run").set_defaults(func=_ranked(lambda a: _new_run(a, train_only=False)))
    _parser(sub, "train").set_defaults(func=_ranked(lambda a: _new_run(a, train_only=True)))
    p = _parser(sub, "track", run_arg=True, allowed=TRACK_KEYS,
                title="config keys track accepts (as --key value; the run keeps the rest of its config)")
    p.add_argument("--out", default=None, metavar="NEW",
                   help="track into a new run folder NEW (RUN's training copied, RUN left unchanged)")
    p.add_argument("--overwrite", action="store_true", help="with --out: replace a run already in NEW")
    p.set_defaults(func=_ranked(_track))
    _parser(sub, "resume", run_arg=True, allowed=RESUME_KEYS,
            title="config keys resume accepts (as --key value; a resumed run keeps the rest of its config)") \
        .set_defaults(func=_ranked(_resume))
