"""The central flow and the k-constrained trajectory on toy models where they are known exactly (docs/theory.md §10)."""

import math
import warnings

import pytest
import torch
from torch import nn

from references import dense_sharpness
from selfstab import Objective, gd_to_edge
from selfstab.processes.block import rotate_pairs
from selfstab.processes.central import central_flow_step, sdcp_terms
from selfstab.processes.constrained import linearized_projection_step, project
from selfstab.processes.geometry import geometry_at
from selfstab.processes.kconstrained import k_constrained_step, k_geometry, k_project, k_projection_step
from selfstab.spectrum import EigenTracker
from selfstab.theory.toy import toy_loss, toy_objective

F64 = torch.float64
LR = 0.1


# -- (a) Appendix B's toy model -----------------------------------------------------------------
@pytest.mark.parametrize("substeps", [None, 1, 4])
def test_toy_model_central_flow_is_exact(substeps):
    alpha, beta = 0.3, 2.0
    obj = toy_objective(alpha, beta, LR)
    theta = torch.tensor([0.0, 0.0, 0.5], dtype=F64)
    tracker = EigenTracker(1)
    for t in range(1, 11):
        step = central_flow_step(obj, theta, LR, tracker, substeps=substeps)
        assert step.k_crit == 1 and step.x_rank == 1
        assert abs(float(step.X[0, 0]) - 2 * alpha / beta) < 1e-8          # X = δ² = 2α/β
        loss = float(toy_loss(theta, alpha, beta, LR))
        assert abs(step.predicted_loss(LR) - (loss + 2 * alpha / beta / LR)) < 1e-8
        assert step.sdcp_residual <= 1e-8
        theta = step.theta_next
        assert abs(float(theta[0])) < 1e-8 and abs(float(theta[1])) < 1e-8   # x = y = 0
        assert abs(float(theta[2]) - (0.5 + LR * t)) < 1e-8                  # z(t) = z₀ + ηt


def test_toy_model_below_the_edge_is_gradient_flow_until_pinned():
    alpha, beta = 0.3, 2.0
    obj = toy_objective(alpha, beta, LR)
    y0 = -0.2                      # S = 2/η + √β y₀ below the edge; y rises at ηα/√β per step
    theta = torch.tensor([0.0, y0, 0.0], dtype=F64)
    rate = LR * alpha / math.sqrt(beta)
    tracker = EigenTracker(1)
    ks = []
    for t in range(1, 16):
        step = central_flow_step(obj, theta, LR, tracker, substeps=4, threshold=0.9)
        ks.append(step.x_rank)
        theta = step.theta_next
        assert abs(float(theta[1]) - min(0.0, y0 + rate * t)) < 1e-10   # Euler is exact here; clipped at the edge
    assert ks[0] == 0 and ks[-1] == 1


# -- (b), (c) two toy models in rotated coordinates ---------------------------------------------------
def _two_toys(a1, b1, a2, b2, *, spectators=14, seed=0):
    """L = toy(φ₁..₃; a1, b1) + toy(φ₄..₆; a2, b2) + ½Σ c_j φ_j² (spectators well below the edge), φ = Qᵀθ."""
    g = torch.Generator().manual_seed(seed)
    d = 6 + spectators
    Q = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=F64))[0]
    c = torch.linspace(0.1, 1.5, spectators, dtype=F64) / LR

    def f(theta):
        phi = Q.T @ theta
        return (toy_loss(phi[0:3], a1, b1, LR) + toy_loss(phi[3:6], a2, b2, LR)
                + 0.5 * (c * phi[6:] ** 2).sum())

    return Objective.from_function(f, torch.zeros(d, dtype=F64)), Q


def _coords(Q, theta):
    return Q.T @ theta


@pytest.mark.parametrize("case", ["distinct", "degenerate"])
def test_two_rotated_toys_central_flow(case):
    a1, b1 = 0.3, 2.0
    a2, b2 = (0.5, 0.8) if case == "distinct" else (0.6, 4.0)     # δ₂² = 1.25 or δ₂² = δ₁² = 0.3
    obj, Q = _two_toys(a1, b1, a2, b2)
    d1, d2 = 2 * a1 / b1, 2 * a2 / b2
    theta = torch.zeros(obj.dim, dtype=F64)
    tracker = EigenTracker(2, method="lobpcg", tol=1e-10)
    hvps, ks, sizes = [], [], []
    for t in range(1, 41):
        before = obj.counts["hvp"]
        step = central_flow_step(obj, theta, LR, tracker, substeps=2)
        hvps.append(obj.counts["hvp"] - before)
        ks.append(step.k_crit)
        sizes.append(tracker.last.values.numel())          # the pairs converged (guards are not)
        w = torch.linalg.eigvalsh(step.X)
        assert torch.allclose(w, torch.tensor(sorted([d1, d2]), dtype=F64), atol=1e-8)
        assert torch.allclose(step.values[:2], torch.full((2,), 2 / LR, dtype=F64), rtol=1e-8, atol=0)
        sig_w, sig_v = step.sigma                      # Σ = U X Uᵀ lives in span(Q e_x1, Q e_x2)
        span = Q[:, [0, 3]]
        assert float((sig_v - (sig_v @ span) @ span.T).norm()) < 1e-7
        theta = step.theta_next
        phi = _coords(Q, theta)
        assert float(phi[[0, 1, 3, 4]].abs().max()) < 1e-8                 # x_i = y_i = 0
        assert float((phi[[2, 5]] - LR * t).abs().max()) < 1e-8             # z_i(t) = ηt
        assert float(phi[6:].abs().max()) < 1e-8                            # spectators stay put
    assert set(ks) == {2} and set(sizes) == {2}                             # k is stable
    assert max(hvps[3:]) <= 30                                              # warm solves do not stall


def test_two_rotated_toys_eigenvalues_join_one_by_one():
    obj, Q = _two_toys(0.3, 2.0, 0.5, 0.8)
    theta = Q @ torch.cat([torch.tensor([0.0, -0.1, 0.0, 0.0, -0.4, 0.0], dtype=F64), torch.zeros(obj.dim - 6, dtype=F64)])
    tracker = EigenTracker(1, method="lobpcg", tol=1e-10)
    ranks = []
    for _ in range(25):
        step = central_flow_step(obj, theta, LR, tracker, substeps=2, threshold=0.9)
        ranks.append(step.x_rank)
        theta = step.theta_next
        phi = _coords(Q, theta)
        assert float(phi[[1, 4]].max()) < 1e-10       # never past the edge: y_i ≤ 0
    assert ranks[0] == 0 and 1 in ranks and ranks[-1] == 2
    assert ranks == sorted(ranks)


@pytest.mark.parametrize("case", ["distinct", "degenerate"])
def test_two_rotated_toys_k_constrained_is_exact(case):
    a2, b2 = (0.5, 0.8) if case == "distinct" else (0.6, 4.0)
    obj, Q = _two_toys(0.3, 2.0, a2, b2)
    tracker = EigenTracker(2, method="lobpcg", tol=1e-10)
    geom = k_geometry(obj, torch.zeros(obj.dim, dtype=F64), tracker, LR)
    assert geom.k == 2
    for t in range(1, 11):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            proj = k_constrained_step(obj, geom, LR, tracker, tol=1e-10)
        assert proj.converged and proj.active == 2 and proj.steps <= 3
        geom = proj.geometry
        phi = _coords(Q, geom.theta)
        assert float(phi[[0, 1, 3, 4]].abs().max()) < 1e-10
        assert float((phi[[2, 5]] - LR * t).abs().max()) < 1e-10
        assert float(phi[6:].abs().max()) < 1e-10


def test_sdcp_terms_and_rotated_pairs_on_the_toys():
    obj, Q = _two_toys(0.3, 2.0, 0.5, 0.8)
    point = obj.at(torch.zeros(obj.dim, dtype=F64))
    U = Q[:, [0, 3]].T.contiguous()
    pairs = point.d3_pairs(U)
    A, B = sdcp_terms(torch.full((2,), 2 / LR, dtype=F64), pairs, point.grad, LR, 0.25)
    # Ḣ₀ = −η diag(√β_i · (−α_i/√β_i)) = η diag(α_i); G = diag(β_i)
    assert torch.allclose(torch.as_tensor(A), -0.25 * LR * torch.diag(torch.tensor([0.3, 0.5], dtype=F64)),
                          atol=1e-12)
    assert torch.allclose(torch.as_tensor(B), 0.25 * LR / 2 * torch.diag(torch.tensor([2.0, 0.0, 0.8], dtype=F64)),
                          atol=1e-12)
    # pair vectors of a rotated basis of the same span: rotated exactly
    c, s = math.cos(0.7), math.sin(0.7)
    V = torch.tensor([[c, s], [-s, c]], dtype=F64) @ U
    assert torch.allclose(rotate_pairs(pairs, U, V), point.d3_pairs(V), atol=1e-12)


def test_pairs_reused_across_substeps_change_little():
    obj, Q = _two_toys(0.3, 2.0, 0.5, 0.8)
    theta = torch.zeros(obj.dim, dtype=F64)
    fresh = central_flow_step(obj, theta, LR, EigenTracker(2, method="lobpcg", tol=1e-10), substeps=4, chord=False)
    reused = central_flow_step(obj, theta, LR, EigenTracker(2, method="lobpcg", tol=1e-10), substeps=4,
                               pairs_every=4, chord=False)
    assert fresh.pair_refreshes == 4 and reused.pair_refreshes == 1
    assert float((fresh.theta_next - reused.theta_next).norm()) < 1e-10      # the toy's ∇³L is constant


# -- k = 1: the k-constrained projection is today's projection ------------------------------------------
@pytest.fixture(scope="module")
def tiny_mlp_at_the_edge():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Linear(6, 2))
    obj = Objective.from_module(model, torch.randn(40, 3), torch.randn(40, 2), "mse")
    s0 = float(EigenTracker(1).refresh(obj.at(obj.theta0)).values[0])
    lr = 0.9 * 1.9 / s0
    edge = gd_to_edge(obj, lr)
    assert edge.reached
    return obj.to(F64), lr, edge.theta0.double()


def test_k1_projection_step_is_the_single_eigenvalue_step(tiny_mlp_at_the_edge):
    obj, lr, theta0 = tiny_mlp_at_the_edge
    phi = theta0 - lr * obj.grad(theta0)
    for coupled in (True, False):
        geom = geometry_at(obj, phi, EigenTracker(1))
        kg = k_geometry(obj, phi, EigenTracker(1), lr)
        assert kg.k == 1
        one = linearized_projection_step(geom, lr, coupled=coupled)
        many, _ = k_projection_step(kg, lr, coupled=coupled)
        assert float((one - many).norm()) <= 1e-12 * float((one - phi).norm())


def test_k1_projection_is_todays_projection(tiny_mlp_at_the_edge):
    obj, lr, theta0 = tiny_mlp_at_the_edge
    phi = theta0 - lr * obj.grad(theta0)
    a = project(obj, phi, lr, [EigenTracker(1)], tol=1e-12)
    b = k_project(obj, phi, lr, EigenTracker(1), tol=1e-12)
    assert a.converged and b.converged and a.steps == b.steps and b.active == 1
    assert float((a.geometry.theta - b.geometry.theta).norm()) <= 1e-12 * float((a.geometry.theta - phi).norm())
    assert abs(a.residual_grad - b.residual_grad) <= 1e-12 and abs(a.residual_sharpness - b.residual_sharpness) <= 1e-12


# -- the processes in lockstep ---------------------------------------------------------------------------
def _lockstep(obj, lr):
    from selfstab.processes.central import CentralFlow
    from selfstab.processes.constrained import Constrained
    from selfstab.processes.gd import GD
    from selfstab.processes.kconstrained import KConstrained
    from selfstab.processes.lockstep import Lockstep

    return Lockstep(obj, lr, [GD(), Constrained(), CentralFlow(), KConstrained()], stop_rules=[])


def test_processes_on_the_toy_model_record_the_exact_values_and_resume_bit_for_bit():
    import copy

    alpha, beta = 0.3, 2.0
    obj = toy_objective(alpha, beta, LR, x0=0.05)
    ls = _lockstep(obj, LR).start(obj.theta0)
    for t in range(8):
        rec = ls.step()
        c, k = rec["central"], rec["kconstrained"]
        assert c["k_crit"] == 1 and k["k_crit"] == 1 and k["active"] == 1 and c["sdcp_residual"] <= 1e-8
        if t >= 6:   # θ₀ = (x₀, 0, 0) is off the manifold: the first steps pull the flow onto it (the chord's
            # block model is first order and the pairs are reused every other step, so the flow's x shrinks
            # ~700-fold at each fresh step: 1e-7 at t = 3, 2e-10 at t = 5); then the exact values
            assert abs(c["x_eig_1"] - 2 * alpha / beta) < 1e-8 and abs(c["sigma_1"] - c["x_eig_1"]) == 0
            assert abs(c["lambda_1"] - 2 / LR) < 1e-8 and abs(k["lambda_1"] - 2 / LR) < 1e-8
            assert abs(c["loss"] - (-LR * t)) < 1e-8 and abs(k["loss"] - (-LR * t)) < 1e-8   # L = −z = −ηt
            assert abs(c["predicted_loss"] - (c["loss"] + 2 * alpha / beta / LR)) < 1e-8
            # GD's x_t oscillates about the flow: its displacement along Σ's eigenvector is x_t
            assert abs(c["gd_disp_sq_1"] - rec["gd"]["x"] ** 2) < 1e-10
            assert abs(c["dist_gd"] - k["dist_gd"]) < 1e-8
    state = copy.deepcopy(ls.state_dict())
    after = [ls.step() for _ in range(3)]
    again = _lockstep(toy_objective(alpha, beta, LR, x0=0.05), LR)
    again.load_state_dict(state)
    for a, b in zip(after, [again.step() for _ in range(3)]):
        assert a["central"] == b["central"] and a["kconstrained"] == b["kconstrained"]


def test_block_grows_to_cover_every_eigenvalue_above_the_threshold_then_a_guard():
    from selfstab.processes.block import refresh_block
    from selfstab.processes.central import substep_count

    g = torch.Generator().manual_seed(5)
    d = 80
    Q = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=F64))[0]
    c = torch.cat([torch.tensor([2.05, 2.0, 1.99, 1.93, 1.85, 1.5], dtype=F64), torch.linspace(0.0, 1.2, d - 6, dtype=F64)]) / LR
    H = Q @ torch.diag(c) @ Q.T
    obj = Objective.from_function(lambda th: 0.5 * th @ H @ th, torch.zeros(d, dtype=F64))
    tracker = EigenTracker(1, tol=1e-10)
    eig = refresh_block(tracker, obj.at(torch.zeros(d, dtype=F64)), LR, 0.9)
    top = torch.sort(c, descending=True).values
    assert eig.extra["wanted"] == 5 and eig.converged          # five above 0.9·2/η, converged
    assert torch.allclose(eig.values[:5], top[:5], rtol=1e-9)
    # then the first guard: a Ritz value (a lower bound on λ₆ = 1.5/η), close to it for its residual
    assert eig.values.shape[0] == 6 and float(eig.values[5]) <= float(top[5]) * (1 + 1e-12)
    assert float(top[5] - eig.values[5]) <= float(top[5]) * max(float(eig.residuals[5]), 1e-12)
    # substeps from the stiffness: the largest eigenvalue outside the three critical ones is 1.93/η
    assert substep_count(eig.values, 3, LR) == math.ceil(1.93 / 0.5)


def test_k1_projection_with_a_chord_is_todays_chord_projection(tiny_mlp_at_the_edge):
    obj, lr, theta0 = tiny_mlp_at_the_edge
    phi = theta0 - lr * obj.grad(theta0)
    grad_s = geometry_at(obj, theta0, EigenTracker(1)).grad_sharpness
    a = project(obj, phi, lr, [EigenTracker(1)], tol=1e-12, chord=grad_s)
    b = k_project(obj, phi, lr, EigenTracker(1), tol=1e-12, chord=k_geometry(obj, theta0, EigenTracker(1), lr))
    assert a.converged and b.converged and a.steps == b.steps
    assert float((a.geometry.theta - b.geometry.theta).norm()) <= 1e-12 * float((a.geometry.theta - phi).norm())


# -- chord mode: one eigen-solve per GD step, the block's first-order model in between -----------------
def test_chord_pairs_reused_across_steps_on_the_toys():
    from selfstab.processes.block import PairCache

    obj, Q = _two_toys(0.3, 2.0, 0.5, 0.8)
    runs = {}
    for every in (1, 3):
        theta, tracker, cache, steps = torch.zeros(obj.dim, dtype=F64), EigenTracker(2, method="lobpcg", tol=1e-10), PairCache(), []
        for _ in range(6):
            step = central_flow_step(obj, theta, LR, tracker, substeps=2, pairs_every=every, cache=cache)
            steps.append(step)
            theta = step.theta_next
        runs[every] = (theta, steps)
    assert [s.pair_refreshes for s in runs[1][1]] == [1] * 6
    assert [s.pair_refreshes for s in runs[3][1]] == [1, 0, 0, 1, 0, 0]
    # the toy's Hessian is affine in θ: the carried block model is exact and reuse changes nothing
    assert max(s.chord_error for s in runs[3][1] if not s.pair_refreshes) < 1e-10
    assert float((runs[1][0] - runs[3][0]).norm()) < 1e-10
    phi = _coords(Q, runs[3][0])
    assert float((phi[[2, 5]] - LR * 6).abs().max()) < 1e-8


def _flow(obj, theta, lr, steps, **options):
    from selfstab.processes.block import PairCache

    tracker, cache, out = EigenTracker(1, tol=1e-10), PairCache(), []
    for _ in range(steps):
        step = central_flow_step(obj, theta, lr, tracker, cache=cache, **options)
        out.append(step)
        theta = step.theta_next
    return theta, out


def test_chord_matches_the_authors_scheme_on_a_small_network(tiny_mlp_at_the_edge):
    obj, lr, theta0 = tiny_mlp_at_the_edge
    ref_theta, ref = _flow(obj, theta0, lr, 15, chord=False, substeps=4)
    for every in (1, 2):
        theta, steps = _flow(obj, theta0, lr, 15, substeps=4, pairs_every=every)
        assert max(s.x_rank for s in steps) >= 1                       # GD oscillates: X ≠ 0 somewhere
        for a, b in zip(steps, ref):
            assert abs(a.predicted_loss(lr) / b.predicted_loss(lr) - 1) < 1e-3     # measured ≤ 6.7e-4
            if b.x_rank:   # pinned at 2/η: the chord's first-order block model leaves λ₁ within 7e-5 of it here
                assert abs(float(a.values[0]) * lr / 2 - 1) < 2e-4 and abs(float(b.values[0]) * lr / 2 - 1) < 1e-5
        assert float((theta - ref_theta).norm()) < 1e-2 * float((ref_theta - theta0).norm())


def test_chord_tol_decides_whether_pairs_are_reused(tiny_mlp_at_the_edge):
    obj, lr, theta0 = tiny_mlp_at_the_edge
    _, loose = _flow(obj, theta0, lr, 8, pairs_every=8, chord_tol=1.0)
    _, strict = _flow(obj, theta0, lr, 8, pairs_every=8, chord_tol=1e-15)
    crit = [s for s in loose if s.k_crit]
    assert len(crit) >= 4
    assert sum(s.pair_refreshes for s in loose) < len(crit)          # reused while the subspace holds
    assert sum(s.pair_refreshes for s in strict) == len([s for s in strict if s.k_crit])   # refused every time
    checked = [s.chord_error for s in strict + loose if not math.isnan(s.chord_error)]
    assert checked and all(e >= 0 for e in checked)


def test_gd_beside_the_several_eigenvalue_processes_alone():
    """``gd,central,kconstrained`` without the single-eigenvalue θ†: GD records its own loss and sharpness (no
    displacement from θ†), each several-eigenvalue process its own cost, and the three add up to the step's."""
    from selfstab.processes.lockstep import default_processes, track

    alpha, beta = 0.3, 2.0
    obj = toy_objective(alpha, beta, LR, x0=0.05)
    procs = default_processes(["gd", "central", "kconstrained"])
    res = track(obj, obj.theta0, LR, 4, processes=procs, allow_off_edge=True)
    gd, ls = res.records["gd"], res.lockstep
    assert not {"x", "y", "dist_constrained"} & set(gd[0]) and len(gd) == 4
    for row in gd:
        assert math.isfinite(row["sharpness"]) and math.isfinite(row["loss"])
    theta = obj.theta0.clone()
    for _ in range(3):   # GD's θ_3, independently
        theta = theta - LR * obj.grad(theta)
    assert abs(gd[3]["sharpness"] - dense_sharpness(lambda th: toy_loss(th, alpha, beta, LR), theta)) < 1e-8
    spent = sum(c["hvps"] for c in res.records["cost"])
    own = sum(r["cost_hvps"] for r in res.records["central"]) + sum(r["cost_hvps"] for r in res.records["kconstrained"])
    assert min(r["cost_hvps"] for r in res.records["kconstrained"]) > 0
    assert spent == own + ls.get("gd").tracker.hvps


def test_gd_sharpness_starts_plain_beside_the_several_eigenvalue_processes(tiny_mlp_at_the_edge):
    """``sharpness_start="auto"``: GD's tracker keeps its warm momentum and guard rule in the single-eigenvalue
    lockstep and starts plain beside the central flow or θ†_k; either way its sharpness along GD is the top
    eigenvalue of a dense ``torch.func`` Hessian."""
    from selfstab.errors import ConfigError
    from selfstab.processes.lockstep import Lockstep, default_processes, track

    obj, lr, _ = tiny_mlp_at_the_edge

    def gd_in(names, **options):
        return Lockstep(obj, lr, default_processes(names, **options)).get("gd")

    for names, options, plain in ((["gd"], {}, False), (["gd", "constrained"], {}, False),
                                  (["gd", "central"], {}, True), (["gd", "kconstrained"], {}, True),
                                  (["gd", "central"], {"sharpness_start": "warm"}, False),
                                  (["gd"], {"sharpness_start": "plain"}, True)):
        tr = gd_in(names, **options).tracker
        assert (tr.momentum, tr.guard_after) == ((False, None) if plain else (True, 6)), (names, options)
    with pytest.raises(ConfigError, match="sharpness_start"):
        default_processes(["gd"], sharpness_start="cold")

    g = torch.Generator().manual_seed(1)
    X, Y = torch.randn(40, 3, generator=g, dtype=F64), torch.randn(40, 4, generator=g, dtype=F64)

    def loss(theta):                  # a 3-8-4 tanh network, written out for torch.func
        W1, b1, W2, b2 = theta[:24].reshape(8, 3), theta[24:32], theta[32:64].reshape(4, 8), theta[64:]
        return 0.5 * ((torch.tanh(X @ W1.T + b1) @ W2.T + b2 - Y) ** 2).sum(1).mean()

    theta0 = torch.randn(68, generator=g, dtype=F64) / 2
    lr = 2.05 / dense_sharpness(loss, theta0)
    fobj = Objective.from_function(loss, theta0)
    for start in ("plain", "warm"):
        procs = default_processes(["gd"], sharpness_start=start, sharpness_tol=1e-9)
        procs[0].tracker.method = "lobpcg"          # d = 68 would be solved densely otherwise
        res = track(fobj, theta0, lr, 6, processes=procs, allow_off_edge=True)
        theta = theta0.clone()
        for row in res.records["gd"]:
            assert abs(row["sharpness"] - dense_sharpness(loss, theta)) <= 1e-9 * row["sharpness"]
            theta = theta - lr * torch.func.grad(loss)(theta)
        assert res.lockstep.get("gd").tracker.hvps > 6 * 2      # iterative solves, not a dense one in disguise


def test_lobpcg_without_momentum_finds_the_same_cluster_top():
    """``lobpcg(momentum=False)`` from a warm subspace whose rows are members of a near-degenerate top cluster:
    the same top eigenpair as ``torch.linalg.eigh`` and as the solve with momentum."""
    from selfstab.spectrum.block_solver import lobpcg

    g = torch.Generator().manual_seed(3)
    Q, _ = torch.linalg.qr(torch.randn(300, 300, generator=g, dtype=F64))
    w = torch.cat([torch.tensor([10.0, 9.98, 9.95, 9.9], dtype=F64), torch.linspace(8.0, 0.1, 296, dtype=F64)])
    A = (Q * w) @ Q.T
    start = Q[:, [2, 1, 3]].T + 1e-2 * torch.randn(3, 300, generator=g, dtype=F64)   # other members on top
    for momentum in (True, False):
        r = lobpcg(lambda V: V @ A, start, 1, tol=1e-10, momentum=momentum)
        assert r.converged and abs(float(r.values[0]) - 10.0) < 1e-12
        assert abs(float(r.vectors[0] @ Q[:, 0])) > 1 - 1e-12
