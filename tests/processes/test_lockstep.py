"""The lockstep loop (processes/lockstep.py): the order in which one step records, advances and publishes the
processes and asks the stop rules; the cost table against the objective's counts; the registry's stepping order;
and a checkpoint (``state_dict`` → the checkpoint encoding → ``load_state_dict``) that resumes bit for bit."""

import copy
import math

import numpy as np
import pytest
import torch

from selfstab.errors import ConfigError
from selfstab.processes import Lockstep, Process, default_processes, track
from selfstab.processes.base import StopRule
from selfstab.records.checkpoint import decode_state, encode_state
from selfstab.theory import toy_objective

F64 = torch.float64
ALPHA, BETA, LR, X0 = 1.3, 0.7, 0.01, 0.1   # the toy model of docs/theory.md §8, at the edge


class Probe(Process):
    """Logs every call of the protocol as ``(event, name, t)``; spends ``grads`` gradients and ``hvps`` HVPs
    when it advances; records nothing at the steps in ``silent``."""

    default = False

    def __init__(self, name, log, grads=0, hvps=0, silent=()):
        self.name, self.log, self.grads, self.hvps, self.silent = name, log, grads, hvps, silent
        self.moves = 0

    def start(self, ctx):
        self.log.append(("start", self.name, ctx.t))

    def publish(self, ctx):
        self.log.append(("publish", self.name, ctx.t))

    def record(self, ctx):
        self.log.append(("record", self.name, ctx.t))
        return None if ctx.t in self.silent else {"moves": float(self.moves)}

    def advance(self, ctx):
        self.log.append(("advance", self.name, ctx.t))
        for _ in range(self.grads):
            ctx.objective.grad(ctx.theta)
        point = ctx.objective.at(ctx.theta)
        for _ in range(self.hvps):
            point.hvp(ctx.theta)
        self.moves += 1
        return {"advanced": 1.0}

    def state_dict(self):
        return {"moves": self.moves}

    def load_state_dict(self, state):
        self.moves = state["moves"]


class StopAt(StopRule):
    """Logs its check and stops the run once the context shows time ``at``."""

    def __init__(self, log, at):
        self.log, self.at = log, at

    def check(self, ctx, records):
        self.log.append(("check", "rule", ctx.t))
        return f"probe stop at {ctx.t}" if ctx.t >= self.at else None


def _toy():
    return toy_objective(ALPHA, BETA, LR, X0)


def test_a_step_records_all_then_advances_all_then_publishes_then_asks_the_rules():
    log = []
    obj = _toy()
    a, b = Probe("a", log, grads=2, hvps=1), Probe("b", log, hvps=3, silent={0})
    ls = Lockstep(obj, LR, [a, b], stop_rules=[StopAt(log, 2)])
    assert a.objective is ls.objective and ls.ctx.lr == LR and ls.objective.dtype == F64   # setup binds
    ls.start(obj.theta0)
    assert log == [("start", "a", 0), ("publish", "a", 0), ("start", "b", 0), ("publish", "b", 0)]
    log.clear()
    counts = dict(ls.objective.counts)
    rec = ls.step()
    assert log == [("record", "a", 0), ("record", "b", 0), ("advance", "a", 0), ("advance", "b", 0),
                   ("publish", "a", 1), ("publish", "b", 1), ("check", "rule", 1)]
    # b recorded nothing at t = 0: its row holds only what advancing added
    assert rec["a"] == {"moves": 0.0, "advanced": 1.0} and rec["b"] == {"advanced": 1.0}
    # the cost table is what the objective counted during the step: 1 + 3 HVPs; 2 gradients of a, and one
    # gradient graph for each point whose HVPs were taken (problem/point.py: the graph is counted as a gradient)
    assert (rec["cost"]["hvps"], rec["cost"]["grads"], rec["cost"]["d3"]) == (4, 2 + 2, 0)
    assert {k: ls.objective.counts[k] - counts.get(k, 0) for k in ("hvp", "grad")} == {"hvp": 4, "grad": 4}
    assert rec["cost"]["seconds"] >= 0 and ls.t == 1 and ls.stop_reason is None
    rec = ls.step()
    assert rec["b"] == {"moves": 1.0, "advanced": 1.0} and ls.stop_reason == "probe stop at 2"


def test_track_stops_at_the_first_rule_and_records_every_step_before():
    log = []
    obj = _toy()
    res = track(obj, obj.theta0, LR, 10, processes=[Probe("a", log)], stop_rules=[StopAt(log, 3)])
    assert res.steps == 3 and res.stop_reason == "probe stop at 3"
    assert [r["step"] for r in res.records["a"]] == [0, 1, 2] and len(res.records["cost"]) == 3
    res = track(obj, obj.theta0, LR, 2, processes=[Probe("a", [])], stop_rules=[])
    assert res.steps == 2 and res.stop_reason.startswith("steps")


def test_processes_step_in_the_registry_order_whatever_order_they_are_named_in():
    names = [p.name for p in default_processes(["diagnostics", "predicted", "gd", "constrained"])]
    assert names == ["gd", "constrained", "predicted", "diagnostics"]
    assert [p.name for p in default_processes()] == ["gd", "constrained", "predicted", "generalized", "flow",
                                                     "diagnostics"]
    with pytest.raises(ConfigError, match="two processes share a name"):
        Lockstep(_toy(), LR, [Probe("a", []), Probe("a", [])])


def _strip(rows):
    """Rows without wall-clock seconds, NaN as a string so that equal rows compare equal."""
    return [{k: ("nan" if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items() if k != "seconds"}
            for r in rows]


def _equal_states(a, b, where="state"):
    """Nested dicts/lists of tensors and numbers: equal bit for bit (NaN equal to NaN)."""
    assert type(a) is type(b), where
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _equal_states(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _equal_states(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(torch.nan_to_num(a), torch.nan_to_num(b)), where
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and np.array_equal(a, b, equal_nan=a.dtype.kind == "f"), where
    elif isinstance(a, float) and math.isnan(a):
        assert math.isnan(b), where
    else:
        assert a == b, where


def test_checkpoint_round_trip_resumes_bit_for_bit():
    """Every default process on the toy model: 3 steps, a checkpoint through the encoding runs write, then 4
    more steps from the checkpoint on a fresh objective give the rows, states and counts of 4 more steps
    of the original lockstep, exactly."""
    obj = _toy()
    ls = Lockstep(obj, LR).start(obj.theta0)
    for _ in range(3):
        ls.step()
    state = ls.state_dict()
    saved = decode_state(encode_state(copy.deepcopy(state)))
    _equal_states(saved, state)
    assert saved["t"] == 3 and set(saved["processes"]) == {p.name for p in ls.processes}
    after = [ls.step() for _ in range(4)]

    fresh = _toy()
    again = Lockstep.from_state(fresh, LR, saved)
    assert again.t == 3 and dict(again.objective.counts) == dict(saved["counts"])
    _equal_states(again.state_dict(), state)                 # restored exactly, nothing recomputed
    resumed = [again.step() for _ in range(4)]
    for name in after[0]:
        assert _strip([r[name] for r in resumed]) == _strip([r[name] for r in after]), name
    _equal_states(again.state_dict(), ls.state_dict())
    assert dict(fresh.counts) == dict(obj.counts)


def test_a_checkpoint_without_a_process_is_refused():
    obj = _toy()
    ls = Lockstep(obj, LR, [Probe("a", [])], stop_rules=[]).start(obj.theta0)
    ls.step()
    with pytest.raises(ConfigError, match="no state for the process"):
        Lockstep.from_state(_toy(), LR, ls.state_dict(), [Probe("a", []), Probe("b", [])], stop_rules=[])
    back = Lockstep.from_state(_toy(), LR, ls.state_dict(), [Probe("a", [])], stop_rules=[])
    assert back.get("a").moves == 1 and back.t == 1
