"""The data-parallel objective (docs/theory.md §11): two gloo ranks against one process, in float64.

The ranks run in a child launcher (this file as a script, ``torch.multiprocessing.spawn``) started in its
own session, so a hang or a failure is bounded by a timeout and every process of it is killed afterwards.
"""

from __future__ import annotations

import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from selfstab import distributed
from selfstab.errors import ConfigError, SelfstabError
from selfstab.problem.models import build_model
from selfstab.problem.objective import Objective

F64 = torch.float64
N = 37                   # odd: shards of 19 and 18 examples
LAUNCH_TIMEOUT_S = 120   # the whole 2-rank launch (two torch imports on a shared 2-core machine)
COLLECTIVE_TIMEOUT_S = 30

# Configurations run on 2 ranks and compared with one process.  chunk_size 18 gives rank 0 two chunks and
# rank 1 one chunk; the float32 one is converted with .to(float64) after construction.
CONFIGS = {
    "mse_chunk5_wd": dict(loss="mse", chunk_size=5, weight_decay=0.01),
    "ce_chunk18": dict(loss="ce", chunk_size=18),
    "mse_whole_from_f32": dict(loss="mse", chunk_size=None, dtype="float32"),
    "mse_chunk7_cached": dict(loss="mse", chunk_size=7, cache_graphs=True, weight_decay=0.2),
}


def _data(loss: str, n: int = N):
    g = torch.Generator().manual_seed(7)
    x = torch.randn(n, 1, 8, 8, generator=g)
    labels = torch.randint(0, 10, (n,), generator=g)
    y = labels if loss == "ce" else torch.nn.functional.one_hot(labels, 10).float()
    return x, y


def _objective(cfg: dict, distributed_: bool, n: int = N) -> Objective:
    cfg = dict(cfg)
    dtype = cfg.pop("dtype", "float64")
    model = build_model("mlp", (1, 8, 8), 10, seed=3, width=12, depth=3, activation="swish")
    x, y = _data(cfg["loss"], n)
    obj = Objective.from_module(model, x, y, dtype=dtype, distributed=distributed_, **cfg)
    return obj.to(F64)


def _vectors(obj: Objective) -> dict:
    g = torch.Generator().manual_seed(11)
    d = obj.dim
    return {"theta": obj.theta0 + 0.1 * torch.randn(d, generator=g, dtype=F64),
            "V": torch.randn(3, d, generator=g, dtype=F64), "u": torch.randn(d, generator=g, dtype=F64),
            "w": torch.randn(d, generator=g, dtype=F64)}


def _evaluate(obj: Objective, traffic=None) -> dict:
    """Every full-batch product at one θ; with ``traffic``, the all-reduces (calls, bytes) each one made."""
    z = _vectors(obj)
    theta, V, u, w = z["theta"], z["V"], z["u"], z["w"]
    out, sent = {}, {}

    def run(name, fn):
        before = dict(traffic) if traffic is not None else {}
        out[name] = fn()
        if traffic is not None:
            sent[name] = (traffic["calls"] - before.get("calls", 0), traffic["bytes"] - before.get("bytes", 0))

    run("loss", lambda: obj.loss(theta))
    run("grad", lambda: obj.grad(theta))
    run("hvp_plain", lambda: obj.hvp(theta, V[0]))          # builds a point, then one product
    run("d3_plain", lambda: obj.d3(theta, u, V[1]))
    p = obj.at(theta)
    run("point_grad", lambda: p.grad)
    run("point_loss", lambda: p.loss)                       # already known: no collective
    run("hvp", lambda: p.hvp(V[0]))
    run("hvp_batch", lambda: p.hvp(V))
    run("d3", lambda: p.d3(u, V[1]))
    run("d4", lambda: p.d4(w))
    out = {k: v.detach().clone() for k, v in out.items()}
    return {"values": out, "sent": sent}


# ----------------------------------------------------------------------------- code run on the ranks

def _scenario_values(rank: int, world: int) -> dict:
    res = {}
    for name, cfg in CONFIGS.items():
        obj = _objective(cfg, True)
        res[name] = {**_evaluate(obj, distributed.traffic), "dim": obj.dim,
                     "info": {k: obj.info[k] for k in ("n", "world_size", "rank", "shard")},
                     "cache_graphs": obj.cache_graphs, "n_chunks": obj.n_chunks}
    errors = {}
    try:
        _objective(CONFIGS["ce_chunk18"], True, n=1)
    except ConfigError as exc:
        errors["too_few"] = str(exc)
    model = build_model("mlp", (1, 8, 8), 10, seed=3, width=12, depth=3)
    x, y = _data("mse", 5)
    try:
        Objective.from_module(model, x, y, distributed=True, global_n=N)
    except ConfigError as exc:
        errors["global_n"] = str(exc)
    a, b = distributed.shard_bounds(N, world, rank)           # a loader that reads its shard alone
    x, y = _data("mse")
    own = Objective.from_module(model, x[a:b], y[a:b], dtype=F64, distributed=True, global_n=N, chunk_size=5)
    res["global_n"] = own.grad(_vectors(own)["theta"])
    theta = _vectors(own)["theta"]
    distributed.check_same(theta)                             # identical: passes
    nan = theta.clone()
    nan[3] = float("nan")
    distributed.check_same(nan)                               # identical NaN too
    bad = theta.clone()
    if rank == 1:
        bad[100] = torch.nextafter(bad[100], torch.tensor(math.inf, dtype=F64))   # one ulp
    try:
        distributed.check_same(bad, what="theta")
    except distributed.RankMismatchError as exc:
        errors["mismatch"] = str(exc)
    res["errors"] = errors
    return res


def _scenario_timeout(rank: int, world: int) -> dict:
    """Rank 1 stays away from a collective: rank 0's wait must end after the collective timeout."""
    if rank == 1:
        time.sleep(COLLECTIVE_TIMEOUT_S_SHORT + 4)
        return {}
    t = time.perf_counter()
    try:
        distributed.all_reduce_sum(torch.ones(3, dtype=F64))
        return {"raised": None, "seconds": time.perf_counter() - t}
    except Exception as exc:  # gloo raises a RuntimeError subclass naming the timeout
        return {"raised": type(exc).__name__ + ": " + str(exc).splitlines()[0], "seconds": time.perf_counter() - t}


COLLECTIVE_TIMEOUT_S_SHORT = 2.0
SCENARIOS = {"values": (_scenario_values, COLLECTIVE_TIMEOUT_S), "timeout": (_scenario_timeout, COLLECTIVE_TIMEOUT_S_SHORT)}


def _worker(rank: int, world: int, scenario: str, out: str, port: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=port, RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    fn, timeout = SCENARIOS[scenario]
    r, w, device = distributed.init(backend="gloo", timeout=timeout)
    assert (r, w, device) == (rank, world, torch.device("cpu"))
    assert distributed.is_main() == (rank == 0)
    res = fn(r, w)
    torch.save(res, Path(out) / f"rank{rank}.pt")
    if scenario != "timeout":
        distributed.shutdown()
    else:
        os._exit(0)   # the group saw a failed collective: leave without a teardown handshake


# ----------------------------------------------------------------------------- the launcher (parent side)

def _free_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def _launch(scenario: str, out: Path, world: int = 2) -> list[dict]:
    cmd = [sys.executable, __file__, scenario, str(out), _free_port(), str(world)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)
    try:
        log, _ = proc.communicate(timeout=LAUNCH_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        log, _ = proc.communicate()
        pytest.fail(f"{world}-rank launch did not finish in {LAUNCH_TIMEOUT_S} s:\n{log[-3000:]}")
    finally:
        try:  # nothing of the launch may outlive the test (the ranks share the launcher's session)
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert proc.returncode == 0, f"{world}-rank launch failed (exit {proc.returncode}):\n{log[-3000:]}"
    return [torch.load(out / f"rank{r}.pt") for r in range(world)]


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    return _launch("values", tmp_path_factory.mktemp("dist"))


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("name", list(CONFIGS))
def test_two_ranks_equal_one_process(ranks, name):
    single = _evaluate(_objective(CONFIGS[name], False))["values"]
    for res in ranks:
        got = res[name]["values"]
        assert got.keys() == single.keys()
        for k, ref in single.items():
            assert _rel(got[k], ref) <= 1e-12, (name, k, _rel(got[k], ref))
        assert torch.allclose(got["hvp_batch"][0], got["hvp"], rtol=1e-13, atol=0)
    # every rank holds the very same numbers, so replicated code stays replicated
    for k, v in ranks[0][name]["values"].items():
        assert torch.equal(v, ranks[1][name]["values"][k]), k


def test_one_all_reduce_per_product(ranks):
    for name in CONFIGS:
        d = ranks[0][name]["dim"]
        sent = ranks[0][name]["sent"]
        assert sent["loss"] == (1, 8)
        assert sent["grad"] == (1, 8 * (d + 1))                  # [L, ∇L] in one collective
        assert sent["hvp_plain"] == (2, 8 * (d + 1) + 8 * d)      # the point's [L, ∇L], then the product
        assert sent["point_grad"] == (1, 8 * (d + 1)) and sent["point_loss"] == (0, 0)
        assert sent["hvp"] == (1, 8 * d)
        assert sent["hvp_batch"] == (1, 8 * 3 * d)               # (k, d) in one collective
        assert sent["d3"] == (1, 8 * d) and sent["d4"] == (1, 8 * d)
        assert ranks[1][name]["sent"] == sent


def test_shards_and_info(ranks):
    assert [r["mse_chunk5_wd"]["info"] for r in ranks] == [
        {"n": N, "world_size": 2, "rank": 0, "shard": (0, 19)}, {"n": N, "world_size": 2, "rank": 1, "shard": (19, 37)}]
    # rank 0 has two chunks of its 19 examples, rank 1 one of 18: both take the same (uncached) path
    assert [(r["ce_chunk18"]["n_chunks"], r["ce_chunk18"]["cache_graphs"]) for r in ranks] == [(2, False)] * 2
    assert [r["mse_chunk7_cached"]["cache_graphs"] for r in ranks] == [True, True]


def test_own_shard_with_global_n(ranks):
    ref = _objective(dict(loss="mse", chunk_size=5), False)
    theta = _vectors(ref)["theta"]
    for res in ranks:
        assert _rel(res["global_n"], ref.grad(theta)) <= 1e-12


def test_one_line_errors_on_ranks(ranks):
    for res in ranks:
        e = res["errors"]
        assert e["too_few"] == ("data: 1 examples for 2 ranks; every rank needs at least one example, so use at "
                                "most 1 ranks or more data")
        assert e["global_n"].startswith("global_n: rank ") and "load the shard from shard_bounds" in e["global_n"]
        assert e["mismatch"].startswith("theta: rank 1 holds a different theta than rank 0")
        assert all("\n" not in m for m in e.values())


def test_dead_rank_ends_a_collective_within_the_timeout(tmp_path):
    res = _launch("timeout", tmp_path)[0]
    assert res["raised"] is not None, "the all-reduce returned although rank 1 never joined"
    assert res["seconds"] < COLLECTIVE_TIMEOUT_S_SHORT + 3, res


# ----------------------------------------------------------------------------- single-process pieces

@pytest.mark.parametrize("world", [1, 2, 3, 5, 8])
def test_shard_bounds_contiguous_balanced_deterministic(world):
    for n in range(world, 60):
        bounds = [distributed.shard_bounds(n, world, r) for r in range(world)]
        assert bounds[0][0] == 0 and bounds[-1][1] == n
        assert all(b[1] == c[0] for b, c in zip(bounds, bounds[1:]))            # contiguous, in rank order
        sizes = [b - a for a, b in bounds]
        assert max(sizes) - min(sizes) <= 1 and min(sizes) >= 1
        assert sizes == sorted(sizes, reverse=True)                             # rank 0 holds a largest shard
        assert bounds == [distributed.shard_bounds(n, world, r) for r in range(world)]


def test_shard_bounds_errors():
    with pytest.raises(ConfigError, match=r"^data: 3 examples for 4 ranks; .* use at most 3 ranks"):
        distributed.shard_bounds(3, 4, 0)
    with pytest.raises(ConfigError, match=r"^rank: must be in \[0, 2\), got 2$"):
        distributed.shard_bounds(10, 2, 2)
    with pytest.raises(ConfigError, match=r"^world_size: must be at least 1"):
        distributed.shard_bounds(10, 0, 0)


def test_without_a_process_group(monkeypatch):
    assert not distributed.is_initialized()
    assert (distributed.rank(), distributed.world_size(), distributed.is_main()) == (0, 1, True)
    distributed.check_same(torch.randn(4))          # nothing to compare with: a no-op
    model = build_model("mlp", (1, 8, 8), 10, seed=3, width=12, depth=3)
    x, y = _data("mse", 6)
    with pytest.raises(ConfigError, match=r"^distributed: no process group is initialised; launch with torchrun "
                                          r"and call selfstab.distributed.init\(\) first"):
        Objective.from_module(model, x, y, distributed=True)
    with pytest.raises(ConfigError, match=r"^global_n: only meaningful with distributed=True"):
        Objective.from_module(model, x, y, global_n=12)
    for key in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(ConfigError, match=r"^distributed: RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT not set; "
                                          r"launch with `torchrun --nproc-per-node N"):
        distributed.init()
    with pytest.raises(ConfigError, match=r"^backend: unknown backend 'mpi'"):
        distributed.init(backend="mpi")
    assert issubclass(distributed.RankMismatchError, SelfstabError)


if __name__ == "__main__":   # the launcher: python test_distributed.py SCENARIO OUT PORT WORLD
    _scenario, _out, _port, _world = sys.argv[1:5]
    torch.multiprocessing.spawn(_worker, args=(int(_world), _scenario, _out, _port), nprocs=int(_world), join=True)
