"""The default set at a larger η: the central flow joins where several eigenvalues reach the edge, the
single-eigenvalue processes are flagged and tracking goes on; a theory process that blows up is retired
(docs/theory.md §7)."""

import math

import pytest
import torch

from references import dense_hessian, dense_top
from selfstab import Objective
from selfstab.processes import Lockstep, Process, default_processes, track
from selfstab.processes.base import LOSS_BOUND, Lambda2Central, out_of_bounds
from selfstab.processes.lockstep import default_set, default_stop_rules, lambda2_at
from selfstab.theory.toy import toy_loss

LR = 0.1
NAMES = ["gd", "constrained", "predicted", "diagnostics"]


def spectator(c: float) -> Objective:
    """Appendix B's toy model at the edge beside a spectator direction of curvature ``c`` (λ₂ = c)."""
    def f(theta):
        return toy_loss(theta[:3], 0.3, 2.0, LR) + 0.5 * c * theta[3] ** 2
    return Objective.from_function(f, torch.tensor([0.05, 0.0, 0.0, 0.01], dtype=torch.float64))


def strip(rows: list[dict]) -> list[dict]:
    """Rows without wall-clock seconds, NaN as a string so that equal rows compare equal."""
    return [{k: ("nan" if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items() if k != "seconds"}
            for r in rows]


def records_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(strip(a[n]) == strip(b[n]) for n in a)


def test_lambda2_at_is_the_dense_second_eigenvalue():
    obj = spectator(7.0)
    dense, _ = dense_top(dense_hessian(lambda th: toy_loss(th[:3], 0.3, 2.0, LR) + 3.5 * th[3] ** 2, obj.theta0))
    assert lambda2_at(obj, obj.theta0) == pytest.approx(float(dense[1]), rel=1e-8)
    assert obj.counts["hvp"] == 0   # the choice is not counted as a tracked step's cost


def test_default_set_adds_the_central_flow_only_when_lambda2_is_at_the_edge():
    names, lam2 = default_set(spectator(19.5), spectator(19.5).theta0, LR)   # 19.5 ≥ 1.9/η = 19
    assert "central" in names and lam2 == pytest.approx(19.5, rel=1e-8)
    names, lam2 = default_set(spectator(5.0), spectator(5.0).theta0, LR)
    assert "central" not in names and lam2 == pytest.approx(5.0, rel=1e-8)
    assert default_set(spectator(19.5), spectator(19.5).theta0, LR, stop_lambda2=0)[0] == names


def test_the_default_set_below_the_line_is_the_plain_default_run():
    """The λ₂(θ₀) solve leaves the run untouched: the same records as the default processes named outright."""
    obj = spectator(5.0)
    auto = track(obj, obj.theta0, LR, 4, allow_off_edge=True)
    names = [p.name for p in default_processes()]
    plain = track(spectator(5.0), obj.theta0, LR, 4, processes=names, allow_off_edge=True)
    assert "central" not in auto.records and records_equal(auto.records, plain.records)
    assert all("outside_assumptions" not in r for r in auto.records["constrained"])


def test_track_at_a_larger_eta_runs_the_central_flow_from_the_start_and_goes_on():
    obj = spectator(19.5)
    res = track(obj, obj.theta0, LR, 5, allow_off_edge=True, diagnostics_every=1)
    assert res.steps == 5 and res.stop_reason.startswith("steps")
    assert [r["step"] for r in res.records["central"]] == list(range(5))
    assert [r["outside_assumptions"] for r in res.records["predicted"]] == [1.0] * 5


def lockstep_with_join(obj: Objective) -> Lockstep:
    rules = default_stop_rules(1.9, "central", NAMES)
    return Lockstep(obj, LR, default_processes(NAMES, diagnostics_every=1), stop_rules=rules).start(obj.theta0)


def test_the_central_flow_joins_where_the_rule_fires_and_resumes_bit_for_bit():
    obj = spectator(19.5)
    ls = lockstep_with_join(obj)
    whole = track(obj, None, LR, 5, lockstep=ls)
    assert whole.steps == 5 and whole.stop_reason.startswith("steps")
    assert ls.joined == {"central": 1}
    central = whole.records["central"]
    assert [r["step"] for r in central] == [1, 2, 3, 4]
    # it starts at GD's iterate θ₁, so its first distance from GD is zero, and then it separates
    assert central[0]["dist_gd"] == 0.0 and all(math.isfinite(r["predicted_loss"]) for r in central)
    assert [r["outside_assumptions"] for r in whole.records["constrained"]] == [1.0] * 5
    # the same run checkpointed at step 3 and restored with the processes the checkpoint holds
    obj2 = spectator(19.5)
    first = track(obj2, None, LR, 3, lockstep=lockstep_with_join(obj2))
    state = first.lockstep.state_dict()
    assert state["joined"] == {"central": 1}
    obj3 = spectator(19.5)
    procs = default_processes(list(state["processes"]), diagnostics_every=1)
    again = Lockstep.from_state(obj3, LR, state, procs, stop_rules=default_stop_rules(1.9, "central", NAMES))
    rest = track(obj3, None, LR, 5, lockstep=again)
    for name, rows in whole.records.items():
        tail = [r for r in rows if r["step"] >= 3]
        assert strip(rest.records[name]) == strip(tail), name
    assert again.joined == {"central": 1} and "central" in [p.name for p in again.processes]


def test_the_join_writes_nothing_before_the_rule_fires():
    rule = Lambda2Central(1.9)
    from selfstab.processes.base import Context
    ctx = Context(objective=None, lr=0.5)
    rec = {"constrained": {}, "diagnostics": {"lambda2": 1.0}}
    ctx.t = 1
    assert rule.check(ctx, rec) is None and rec["constrained"] == {} and rule.joins(ctx) == []


def test_out_of_bounds_names_the_field_and_the_bound():
    class P(Process):
        bounded_losses, bounded_sharpness = ("loss",), ("sharpness",)
    gd = {"loss": 0.3, "sharpness": 5.05}
    # the blown-up predicted dynamics of the residual-LayerNorm case at η = 0.4: loss 4e5, sharpness −893
    assert "sharpness -893" in out_of_bounds(P(), {"loss": 0.2, "sharpness": -893.0}, gd, 0.4, 0.3)
    assert "loss 4e+05 is off GD's 0.3" in out_of_bounds(P(), {"loss": 4e5, "sharpness": 5.0}, gd, 0.4, 0.3)
    assert out_of_bounds(P(), {"loss": 0.25, "sharpness": 5.1}, gd, 0.4, 0.3) is None
    assert out_of_bounds(P(), {"loss": 4e5}, {}, 0.4, 0.3) is None   # no GD row: nothing to compare with


def test_a_predicted_dynamics_that_blows_up_is_retired_and_tracking_goes_on():
    obj = spectator(5.0)
    ls = Lockstep(obj, LR, default_processes(NAMES, diagnostics_every=1),
                  stop_rules=default_stop_rules(1.9, "central", NAMES)).start(obj.theta0)
    track(obj, None, LR, 2, lockstep=ls)
    ls.get("predicted").v = ls.get("predicted").v + 1e3   # x_t of order 1e3: the Theorem 1 loss explodes
    res = track(obj, None, LR, 6, lockstep=ls)
    assert res.steps == 6 and res.stop_reason.startswith("steps")
    rows = res.records["predicted"]
    assert [r["step"] for r in rows] == [2] and rows[0]["diverged"] == 1.0
    assert rows[0]["loss"] > LOSS_BOUND * ls.loss0
    assert ls.retired["predicted"]["step"] == 2 and "by more than 10×" in ls.retired["predicted"]["why"]
    assert [r["step"] for r in res.records["gd"]] == [2, 3, 4, 5]
    assert ls.ctx.get("predicted") is None and "retired" in ls.state_dict()


def test_a_process_that_cannot_retire_still_ends_the_run():
    class Breaks(Process):
        name = "breaks"

        def record(self, ctx):
            return {"value": 1.0}

        def finite(self):
            return False

    obj = spectator(5.0)
    res = track(obj, obj.theta0, LR, 4, processes=[*default_processes(["gd"]), Breaks()], allow_off_edge=True)
    assert res.steps == 1 and res.stop_reason.startswith("diverged: the breaks process")
