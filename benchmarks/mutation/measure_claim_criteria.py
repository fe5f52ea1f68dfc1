"""The measurements behind the proposals for the claim criteria that cannot fail (issue 17,
item 8, last paragraph; tests/test_claim_criteria_can_fail.py documents each defect).

For each criterion it prints what the current check measures, what a wrong method (or a wrong
bound, or no noise) gets, and the figure of the sharper criterion proposed in its place:

- C2: e_{t+1} / ((L_H / (2 mu)) e_t^2) on the window (the current bound's slack) and the
  relative error of the second-order prediction e_{t+1} = (1/2) H*^{-1} D^3 f(theta*)[e_t, e_t]
  for FedPM (K = 1, eta = 1) and for a wrong method (the Newton step shifted by ||g|| I);
- C4: the logistic residual at the limit against the stopping tolerance, and the distance of
  the limit to theta* against the first-order drift floor -sum w_i H_i(theta*)^{-1} g_i(theta*);
- C5: the bound's tightness and the first-order law's relative error on C5's 12 instances;
- C8 (b): the slope with the oracle noise, without it (sigma = 0), and of the noise excess;
- C12: the package's FedPM round (K = 1, 2, 3) against the exact rational result on a 2-client
  ridge problem, and simple mixing against the same.

Usage: ``python benchmarks/mutation/measure_claim_criteria.py [C2 C4 C5 C8 C12]`` (one BLAS
thread; C8 takes about a minute on a busy 2-core machine, the others seconds).
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass

import numpy as np

from fedtheory import FederatedProblem, iterate, make_method
from fedtheory.claims import heterogeneous_problem, load_check, single_threaded_blas, sopm_limit
from fedtheory.linalg import add_diag, spd_solve, sym_floats
from fedtheory.methods import round_context
from fedtheory.methods.base import RoundInfo, ServerState
from fedtheory.methods.fedpm import FedPM
from fedtheory.objectives import ClientCSR
from fedtheory.rates import q_order
from fedtheory.suite import load_problem

C2_PROBLEMS = ("a9a_fednl", "fedprox_synthetic_1_1", "breast_cancer_dirichlet")


@dataclass(frozen=True)
class GradientShiftedNewton(FedPM):
    """A wrong FedPM (K = 1): Newton with its Hessian shifted by c ||g|| I (still quadratic)."""

    c: float = 1.0

    def round(self, ctx, state):
        o = ctx.eval(state.theta, grad=True, hess=True)
        g = ctx.mix(o.g)
        H = add_diag(ctx.mix(o.H), self.c * float(np.linalg.norm(g)))
        d, m = ctx.problem.d, ctx.m
        return ServerState(state.theta - self.eta * spd_solve(H, g)), RoundInfo(
            m * (d + sym_floats(d)), m * d, m, m
        )


def _rows(problem):
    """Every row a_j, label y_j and weight w_i / n_i of its client, as flat arrays."""
    sizes = problem.sizes
    owner = np.repeat(np.arange(problem.N), sizes)
    y = np.concatenate([np.asarray(problem.y)[i, : sizes[i]] for i in range(problem.N)])
    if isinstance(problem.A, ClientCSR):
        X = problem.A.X.toarray()
    else:
        X = np.concatenate([np.asarray(problem.A)[i, : sizes[i]] for i in range(problem.N)])
    return X, y, np.asarray(problem.weights)[owner] / sizes[owner]


def c2_second_order(problem, method, rounds: int = 40):
    """Per pair of the asymptotic window: (e_t, e_{t+1}, e_{t+1} / (C e_t^2), relative error
    of the second-order prediction, ||e_{t+1}|| / ||prediction||)."""
    ref = problem.reference
    ts = ref.theta_star
    X, y, c = _rows(problem)
    s = 1.0 / (1.0 + np.exp(-y * (X @ ts)))
    third = s * (1 - s) * (1 - 2 * s)  # d^3/dz^3 log(1 + exp(-z)) at z = y a^T theta*
    Hs = problem.global_oracle(ts, hess=True).H
    thetas = [np.zeros(problem.d)] + [
        st.state.theta for st in iterate(problem, method, rounds=rounds)
    ]
    e = [t - ts for t in thetas]
    en = np.array([np.linalg.norm(v) for v in e])
    fit = q_order(en, scale=float(np.linalg.norm(ts)))
    C = ref.L_H / (2 * ref.mu)
    out = []
    for t in range(fit.window[0], fit.window[1] - 1):
        u = X @ e[t]
        pred = 0.5 * np.linalg.solve(Hs, X.T @ (c * third * y * u * u))
        out.append(
            (
                en[t],
                en[t + 1],
                en[t + 1] / (C * en[t] ** 2),
                np.linalg.norm(e[t + 1] - pred) / en[t + 1],
                en[t + 1] / np.linalg.norm(pred),
            )
        )
    return fit.p, out


def c2() -> None:
    print("C2: bound ratio e_(t+1)/(C e_t^2) and the second-order prediction's relative error")
    for name in C2_PROBLEMS:
        problem = load_problem(name)
        for label, method in (
            ("FedPM", make_method("fedpm", {"K": 1, "eta": 1.0})),
            ("shifted", GradientShiftedNewton(K=1, eta=1.0, c=1.0)),
        ):
            p, rows = c2_second_order(problem, method)
            ratio = [r[2] for r in rows]
            err = [r[3] for r in rows]
            const = [r[4] for r in rows]
            print(
                f"  {name:24s} {label:8s} order {p:.2f}  bound ratio {min(ratio):.1e}.."
                f"{max(ratio):.1e}  2nd-order rel err {min(err):.2g}..{max(err):.2g}  "
                f"e_(t+1)/||pred|| {min(const):.3g}..{max(const):.3g}"
            )


def c4() -> None:
    print("C4 (logistic): residual vs stopping tolerance; gap vs the first-order floor")
    rec = load_check("C4").check(quick=True)
    for r in rec.details["logistic"]:
        print(
            f"  {r['problem']:24s} rel residual {r['rel_residual']:.1e} (criterion 1e-10, "
            f"stop 1e-13)  rel dist {r['rel_dist']:.3f} (criterion > 1e-3)"
        )
    for name in ("breast_cancer_dirichlet", "fedprox_synthetic_1_1", "a9a_fednl"):
        problem = load_problem(name)
        lim, _ = sopm_limit(problem)
        ts = problem.reference.theta_star
        o = problem.oracle(ts, grad=True, hess=True)
        pred = -np.asarray(problem.weights @ spd_solve(o.H, o.g))
        meas = lim.theta - ts
        print(
            f"  {name:24s} ||limit - theta*|| / ||first-order floor|| "
            f"{np.linalg.norm(meas) / np.linalg.norm(pred):.3f}, vector rel err "
            f"{np.linalg.norm(meas - pred) / np.linalg.norm(meas):.3f}"
        )


def c5() -> None:
    print("C5: tightness (bound / floor) and the first-order law on the 12 instances")
    module = load_check("C5")
    for ds, rows, alpha, seed in module.instances(True):
        problem = heterogeneous_problem(ds, rows=rows, clients=10, alpha=alpha, seed=seed)
        lim, _ = sopm_limit(problem)
        terms = module.bound_terms(problem, lim.theta)
        ts = problem.reference.theta_star
        o = problem.oracle(ts, grad=True, hess=True)
        pred = -np.asarray(problem.weights @ spd_solve(o.H, o.g))
        meas = lim.theta - ts
        rel_floor = np.linalg.norm(meas) / np.linalg.norm(ts)
        law = np.linalg.norm(meas - pred) / np.linalg.norm(meas)
        print(
            f"  {problem.name:34s} tightness {terms['tightness']:.2e}  floor/||theta*|| "
            f"{rel_floor:.3f}  law rel err {law:.3f}  (err / floor {law / rel_floor:.2f})"
        )


def c8() -> None:
    print("C8 (b): slope with noise, without noise, and of the noise excess (common seeds)")
    module = load_check("C8")
    problem = heterogeneous_problem(
        "phishing", clients=module.N, alpha=None, seed=0, lam=module.LAM
    )
    rounds, seeds = 100, range(2)
    runs = {}
    for sigma in (module.SIGMA, 0.0):
        old, module.SIGMA = module.SIGMA, sigma
        try:
            runs[sigma] = [
                module.mean_sq_grad(
                    problem,
                    module.fedpac_factory(
                        K=module.K, eta=module.C * math.sqrt(S / (module.K * rounds))
                    ),
                    S,
                    rounds,
                    seeds,
                    start=1,
                )
                for S in module.S_VALUES
            ]
        finally:
            module.SIGMA = old
    S = list(module.S_VALUES)
    noisy, clean = runs[module.SIGMA], runs[0.0]
    excess = [a - b for a, b in zip(noisy, clean, strict=True)]
    for label, ys in (
        (f"sigma = {module.SIGMA:g}", noisy),
        ("sigma = 0", clean),
        ("excess", excess),
    ):
        f = module.fit(S, ys, "b")
        print(
            f"  {label:12s} slope {f['slope']:.3f}  CI [{f['ci'][0]:.3f}, {f['ci'][1]:.3f}]"
            f"  passes -0.5 +- 0.1: {f['passed']}"
        )
    print(
        "  noise share of the mean ||grad f||^2 per S: "
        + ", ".join(f"{e / n:.2f}" for e, n in zip(excess, noisy, strict=True))
    )


def c12() -> None:
    import sympy as sp

    print("C12: the package's round maps against the exact rational result (2-client ridge)")
    A = [np.array([[1.0, 2.0], [3.0, -1.0], [0.0, 1.0]]), np.array([[2.0, 1.0], [-1.0, 1.0]])]
    b = [np.array([1.0, 0.0, 2.0]), np.array([-1.0, 3.0])]
    problem = FederatedProblem.from_clients(A, b, objective="ridge", lam=0.5, storage="dense")
    R = sp.Rational
    w = [R(3, 5), R(2, 5)]
    H = [
        sp.Matrix(a.astype(int).tolist()).T * sp.Matrix(a.astype(int).tolist()) / a.shape[0]
        + R(1, 2) * sp.eye(2)
        for a in A
    ]
    c = [
        sp.Matrix(a.astype(int).tolist()).T * sp.Matrix(v.astype(int).tolist()) / a.shape[0]
        for a, v in zip(A, b, strict=True)
    ]
    theta = np.array([1.0, -2.0])
    for K in (1, 2, 3):
        loc = []
        for Hi, ci in zip(H, c, strict=True):
            x = sp.Matrix([1, -2])
            for _ in range(K):
                x = x - R(1, 2) * Hi.inv() * (Hi * x - ci)
            loc.append(x)
        P = w[0] * H[0] + w[1] * H[1]
        exact = P.inv() * (w[0] * H[0] * loc[0] + w[1] * H[1] * loc[1])
        want = np.array(exact.evalf(30), dtype=float).ravel()
        errs = []
        for name in ("fedpm", "sopm"):
            m = make_method(name, {"K": K, "eta": 0.5})
            st, _ = m.round(round_context(problem), m.start(problem, theta)[0])
            errs.append(np.linalg.norm(st.theta - want) / np.linalg.norm(want))
        print(f"  K = {K}: FedPM rel err {errs[0]:.1e}; simple mixing rel err {errs[1]:.2g}")


PARTS = {"C2": c2, "C4": c4, "C5": c5, "C8": c8, "C12": c12}

if __name__ == "__main__":
    with single_threaded_blas():
        for key in sys.argv[1:] or PARTS:
            PARTS[key.upper()]()
