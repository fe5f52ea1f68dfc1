"""C7: FedPAC's server trajectory is heavy-ball momentum with coefficient beta, and beta leaves
the K = 1 fixed point unchanged (Liu et al. 2026; docs/algorithms.md "FedPAC", identity (a)).

Every client's local step is theta_i^{k+1} = theta_i^k - eta [(1 - beta) d_i^k + beta gG], so
Delta = -eta (1 - beta) sum w~_i sum_k d_i^k - K eta beta gG, and gG = -Delta^{r-1} / (K eta):

    theta^{r+1} - theta^r = -eta (1 - beta) sum w~_i sum_k d_i^k + beta (theta^r - theta^{r-1}).

For K = 1, at a fixed point Delta = 0 and gG = 0, so the fixed-point equation
sum w_i d_i = 0 (with the fixed point's Theta) does not involve beta.

Protocol (docs/claims.md):

- identity: FedPAC with beta in {0, 0.3, 0.8}, K in {1, 3}, rho = 0.5, constant eta = 0.7,
  under full participation and under partial participation (S = N / 2, participants drawn
  from a seeded generator), 8 rounds from theta^0 = 0 on ``fedprox_synthetic_1_1`` (quick) and
  also ``a9a_fednl`` (full). The directions d_i^k are recomputed here, independently of the
  method's code, from the recursion of docs/algorithms.md and the server state (theta, Theta, gG)
  the method holds at the start of each round; the residual of each round is
  ||step - heavy_ball|| / (||step|| + beta ||theta^r - theta^{r-1}||), and its maximum over all
  rounds must be <= 1e-10;
- fixed points: FedPAC with K = 1, eta = 1, rho = 0.5, full participation, iterated to its
  limit (:func:`fedtheory.claims.limit_point`, steps below 1e-13 relative) for each beta on
  ``fedprox_synthetic_1_1`` (quick) and ``breast_cancer_dirichlet`` (full); the limits must
  agree with beta = 0's to 1e-8 relative (max(1, ||limit||)).

rho = 0.5 (not the method's default 0.9) only shortens the run to the fixed point; the
identity and the fixed-point statement hold for every rho.
"""

from __future__ import annotations

import time

import numpy as np

from fedtheory.claims import (
    ClaimRecord,
    MethodFactory,
    assert_claim,
    limit_point,
    record,
)
from fedtheory.linalg import add_diag, spd_solve
from fedtheory.methods import make_method
from fedtheory.methods.base import round_context
from fedtheory.suite import load_problem

CLAIM_ID = "C7"
STATEMENT = ("FedPAC's server trajectory is heavy-ball momentum with coefficient beta; beta "
             "leaves the K = 1 fixed point unchanged")
SOURCE = "Liu et al. 2026 (arXiv 2602.19271), FedPAC; docs/algorithms.md identity (a)"
BETAS = (0.0, 0.3, 0.8)
IDENTITY_TOL = 1e-10
FIXED_POINT_TOL = 1e-8
ROUNDS = 8
ETA = 0.7
RHO = 0.5


def fedpac_factory(**params) -> object:
    return make_method("fedpac", params)


def direction_sums(problem, state, clients, *, K: int, eta: float, beta: float, rho: float,
                   delta: float = 0.0) -> np.ndarray:
    """sum_k d_i^k of every participant, from the recursion of docs/algorithms.md (one client at
    a time, written out as the spec writes it; "update_then_use", align = True)."""
    ids = range(problem.N) if clients is None else clients
    out = []
    for i in ids:
        x, Th = state.theta, state.Theta
        total = np.zeros(problem.d)
        for _ in range(K):
            o = problem.oracle(x, [i], grad=True, hess=True)
            Th = rho * Th + (1 - rho) * o.H[0]
            d = spd_solve(add_diag(Th, delta), o.g[0])
            total = total + d
            x = x - eta * ((1 - beta) * d + beta * state.gG)
        out.append(total)
    return np.asarray(out)


def identity_residuals(problem, factory: MethodFactory, *, K: int, beta: float,
                       partial: bool) -> list[float]:
    method = factory(K=K, eta=ETA, beta=beta, rho=RHO)
    rng = np.random.default_rng(1)
    state = method.init(problem, np.zeros(problem.d))
    prev_theta = state.theta
    residuals = []
    for _ in range(ROUNDS):
        clients = (np.sort(rng.choice(problem.N, size=problem.N // 2, replace=False))
                   if partial else None)
        ctx = round_context(problem, clients, rng=rng)
        new, _ = method.round(ctx, state)
        sums = direction_sums(problem, state, clients, K=K, eta=ETA, beta=beta, rho=RHO)
        step = new.theta - state.theta
        momentum = state.theta - prev_theta
        heavy_ball = -ETA * (1 - beta) * (ctx.weights @ sums) + beta * momentum
        scale = np.linalg.norm(step) + beta * np.linalg.norm(momentum)
        residuals.append(float(np.linalg.norm(step - heavy_ball) / scale))
        prev_theta, state = state.theta, new
    return residuals


def check(quick: bool = True, method_factory: MethodFactory = fedpac_factory) -> ClaimRecord:
    started = time.perf_counter()
    id_problems = ["fedprox_synthetic_1_1"] + ([] if quick else ["a9a_fednl"])
    identity = []
    for name in id_problems:
        problem = load_problem(name)
        for beta in BETAS:
            for K in (1, 3):
                for partial in (False, True):
                    res = identity_residuals(problem, method_factory, K=K, beta=beta,
                                             partial=partial)
                    identity.append({"problem": name, "beta": beta, "K": K,
                                     "participation": "partial" if partial else "full",
                                     "max_residual": max(res)})
    fp_problem = load_problem("fedprox_synthetic_1_1" if quick else "breast_cancer_dirichlet")
    limits = {beta: limit_point(fp_problem, method_factory(K=1, eta=1.0, beta=beta, rho=RHO),
                                max_rounds=3000) for beta in BETAS}
    base = limits[BETAS[0]].theta
    scale = max(1.0, float(np.linalg.norm(base)))
    fixed = [{"beta": beta, "rounds": lim.rounds, "converged": lim.converged,
              "rel_gap_to_beta0": float(np.linalg.norm(lim.theta - base)) / scale,
              "dist_to_theta_star": float(np.linalg.norm(lim.theta
                                                         - fp_problem.reference.theta_star))}
             for beta, lim in limits.items()]
    max_res = max(r["max_residual"] for r in identity)
    max_gap = max(f["rel_gap_to_beta0"] for f in fixed)
    converged = all(f["converged"] for f in fixed)
    passed = max_res <= IDENTITY_TOL and max_gap <= FIXED_POINT_TOL and converged
    return record(CLAIM_ID, STATEMENT, SOURCE, started,
                  measured=f"identity {max_res:.1e}, fixed-point gap {max_gap:.1e}",
                  predicted=f"0 (<= {IDENTITY_TOL:g}), 0 (<= {FIXED_POINT_TOL:g})",
                  passed=passed,
                  details={"identity_problems": id_problems, "fixed_point_problem":
                           fp_problem.name, "eta": ETA, "rho": RHO,
                           "all_limits_converged": converged, "identity": identity,
                           "fixed_points": fixed})


def test_claim():
    assert_claim(check)
