"""The λ₂ rule: stop (the default job) or flag the single-eigenvalue processes and go on (central flow, θ†_k)."""

import math

import pytest
import torch

from selfstab.errors import ConfigError
from selfstab.processes import Lambda2Flag, Lambda2Threshold, Lockstep, NonFinite, default_processes, track
from selfstab.processes.base import Context, EpsilonFlag, Lambda2Central
from selfstab.processes.lockstep import default_stop_rules, lambda2_rule_kind
from selfstab import Objective
from selfstab.theory.toy import toy_loss


def test_rule_kind_follows_the_processes():
    assert lambda2_rule_kind("auto", None) == "central"   # the default set: the central flow joins
    assert lambda2_rule_kind("auto", ["gd", "constrained", "diagnostics"]) == "stop"
    assert lambda2_rule_kind("auto", ["gd", "central"]) == "flag"
    assert lambda2_rule_kind("auto", ["kconstrained"]) == "flag"
    assert lambda2_rule_kind("stop", ["central"]) == "stop"
    with pytest.raises(ConfigError, match="lambda2_rule"):
        lambda2_rule_kind("maybe")


def test_default_rules():
    rules = default_stop_rules()
    assert [type(r) for r in rules] == [NonFinite, Lambda2Central, EpsilonFlag] and rules[1].factor == 1.9
    rules = default_stop_rules(processes=["gd", "constrained"])
    assert [type(r) for r in rules] == [NonFinite, Lambda2Threshold, EpsilonFlag] and rules[1].factor == 1.9
    assert [type(r) for r in default_stop_rules(1.9, processes=["gd", "central"])] == [NonFinite, Lambda2Flag,
                                                                                        EpsilonFlag]
    assert [type(r) for r in default_stop_rules(0)] == [NonFinite, EpsilonFlag]
    assert [type(r) for r in default_stop_rules(None, "flag")] == [NonFinite, EpsilonFlag]
    with pytest.raises(ConfigError, match="stop_lambda2"):
        default_stop_rules(-1.0)


def test_flag_latches_and_marks_only_the_single_eigenvalue_tables():
    rule = Lambda2Flag(1.9)
    ctx = Context(objective=None, lr=0.5)   # 1.9/η = 3.8
    seq = [{"central": {"lambda_2": 3.0}}, {"diagnostics": {"lambda2": 3.81}}, {"central": {"lambda_2": 1.0}}]
    flags = []
    for t, extra in enumerate(seq):
        rec = {"constrained": {}, "predicted": {}, "gd": {}, **extra}
        ctx.t = t + 1                       # rules run after the step counter moved on
        assert rule.check(ctx, rec) is None
        assert "outside_assumptions" not in rec["gd"]
        assert rec["constrained"]["outside_assumptions"] == rec["predicted"]["outside_assumptions"]
        flags.append(rec["constrained"]["outside_assumptions"])
    assert flags == [0.0, 1.0, 1.0] and rule.since == 1
    again = Lambda2Flag(1.9)
    again.load_state_dict(rule.state_dict())
    assert again.since == 1
    assert math.isnan(Lambda2Threshold().check(ctx, {}) or math.nan)


def test_track_flags_instead_of_stopping():
    lr = 0.1
    c = 1.0 / lr   # a spectator direction with λ₂ = c = 1/η beside Appendix B's toy model at the edge

    def f(theta):
        return toy_loss(theta[:3], 0.3, 2.0, lr) + 0.5 * c * theta[3] ** 2

    obj = Objective.from_function(f, torch.tensor([0.05, 0.0, 0.0, 0.01], dtype=torch.float64))
    theta0 = obj.theta0
    names = ["gd", "constrained", "predicted", "central", "diagnostics"]
    opts = dict(diagnostics_every=1, allow_off_edge=True)
    # a threshold the run crosses at once: with "stop" it ends at step 0, with "flag" (auto here) it goes on
    stopped = track(obj, theta0, lr, 4, processes=names, stop_lambda2=0.9, lambda2_rule="stop", **opts)
    assert stopped.steps == 1 and stopped.stop_reason.startswith("lambda2")
    flagged = track(obj, theta0, lr, 4, processes=names, stop_lambda2=0.9, **opts)
    assert flagged.steps == 4 and flagged.stop_reason.startswith("steps")
    for name in ("constrained", "predicted"):
        assert [r["outside_assumptions"] for r in flagged.records[name]] == [1.0] * 4
    assert all("outside_assumptions" not in r for r in flagged.records["gd"] + flagged.records["central"])
    state = flagged.lockstep.state_dict()
    assert state["rules"][1] == {"since": 0}
    # a threshold never reached: the column is there, all zeros
    calm = track(obj, theta0, lr, 3, processes=names, stop_lambda2=1.1, **opts)
    assert [r["outside_assumptions"] for r in calm.records["constrained"]] == [0.0] * 3
    # the default processes with the default rule: no flag column and no rule state in the checkpoint
    plain = Lockstep(obj, lr, default_processes(["gd", "constrained", "predicted"]),
                     stop_rules=default_stop_rules(processes=["gd", "constrained", "predicted"])).start(theta0)
    assert "rules" not in plain.state_dict() and "outside_assumptions" not in plain.step()["constrained"]


def test_epsilon_flag_marks_only_the_steps_where_epsilon_is_not_small():
    """ε = η√α above 0.1 (Theorem 1's relative errors of order ε reach ten percent) flags that step's
    single-eigenvalue rows; a step within the bound gets no column at all."""
    rule = EpsilonFlag()
    ctx = Context(objective=None, lr=0.4)
    flags = []
    for t, eps in enumerate([0.03, 0.18, 0.52, 0.05]):   # the residual-LayerNorm case's ε is 0.18–0.52
        rec = {"constrained": {"epsilon": eps}, "predicted": {}, "gd": {}}
        ctx.t = t + 1
        assert rule.check(ctx, rec) is None
        assert "outside_assumptions" not in rec["gd"]
        flags.append(rec["predicted"].get("outside_assumptions"))
    assert flags == [None, 1.0, 1.0, None] and rule.first == 1 and rule.steps == 2
    again = EpsilonFlag()
    again.load_state_dict(rule.state_dict())
    assert (again.first, again.steps) == (1, 2) and EpsilonFlag().state_dict() is None
