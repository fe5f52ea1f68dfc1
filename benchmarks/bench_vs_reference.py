"""Time one FedPM K = 1 round against a plain per-sample NumPy implementation of the same round.

    python benchmarks/bench_vs_reference.py [--quick] [--backend numpy|cupy] [--out FILE.json]

The reference is written the way the public FedNL code builds Hessians: a Python loop over
clients and, inside each client, a loop over its samples accumulating s (1 - s) a a^T and
-y (1 - s) a, then ``np.linalg.solve`` per client for the local Newton step and a loop over
clients for the preconditioned mixing (eta = 1, delta = 0):

    H_i = (1/n_i) sum_j s_ij (1 - s_ij) a_ij a_ij^T + lam I,    s_ij = sigmoid(y_ij a_ij^T theta)
    g_i = -(1/n_i) sum_j y_ij (1 - s_ij) a_ij + lam theta
    theta_i = theta - eta H_i^{-1} g_i
    theta+ = (sum_i w_i H_i)^{-1} sum_i w_i H_i theta_i

Check: on every problem the reference round over the first --check-clients clients (a partial
participation round: weights renormalised over them; 0 = all clients, a full round) must equal
``make_method("fedpm").round`` on the same participants to 1e-10 relative (asserted).

Timing: fedtheory's round is the median of --repeat timings after two warm-ups (as in
bench_round.py), on --backend. The reference always runs on NumPy; its per-sample loops are
slow, so its client phase (Hessian, gradient, local solve) is timed on --ref-clients clients
and scaled linearly by N / --ref-clients, and its server phase (the loop over N clients forming
sum w_i H_i and sum w_i H_i theta_i, then one solve) is timed on N clients' worth of matrices
(the subset's, repeated). reference s/round = scaled client phase + server phase.

Problems: the a9a FedNL split and the w8a-shaped problem of bench_round.py.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys

import numpy as np

from bench_round import _median_time, a9a, machine, w8a_shaped
from fedtheory import make_method
from fedtheory._backend import to_numpy
from fedtheory.methods import round_context
from fedtheory.problem import FederatedProblem

CHECK_RTOL = 1e-10


# ---- the reference: per-client, per-sample loops --------------------------------------------
def reference_client(
    X: np.ndarray, y: np.ndarray, theta: np.ndarray, lam: float, eta: float
) -> tuple[np.ndarray, np.ndarray]:
    """One client's Hessian H_i and local Newton iterate theta_i, sample by sample."""
    n, d = X.shape
    H = np.zeros((d, d))
    g = np.zeros(d)
    for j in range(n):
        a = X[j]
        s = 1.0 / (1.0 + np.exp(-y[j] * (a @ theta)))
        H += s * (1.0 - s) * np.outer(a, a)
        g += -y[j] * (1.0 - s) * a
    H = H / n + lam * np.eye(d)
    g = g / n + lam * theta
    return H, theta - eta * np.linalg.solve(H, g)


def reference_server(Hs: list[np.ndarray], thetas: list[np.ndarray], w: np.ndarray) -> np.ndarray:
    """theta+ = (sum_i w_i H_i)^{-1} sum_i w_i H_i theta_i, client by client."""
    d = Hs[0].shape[0]
    P = np.zeros((d, d))
    rhs = np.zeros(d)
    for w_i, H_i, t_i in zip(w, Hs, thetas, strict=True):
        P += w_i * H_i
        rhs += w_i * (H_i @ t_i)
    return np.linalg.solve(P, rhs)


def reference_round(
    Xs: list[np.ndarray],
    ys: list[np.ndarray],
    w: np.ndarray,
    theta: np.ndarray,
    lam: float,
    eta: float = 1.0,
) -> np.ndarray:
    out = [reference_client(X, y, theta, lam, eta) for X, y in zip(Xs, ys, strict=True)]
    return reference_server([h for h, _ in out], [t for _, t in out], w)


def client_data(problem: FederatedProblem, clients: range) -> tuple[list, list]:
    """Client i's real rows (X_i, y_i) on the host, padding dropped."""
    A, y = to_numpy(problem.A), to_numpy(problem.y)
    n = problem.sizes
    return [A[i, : n[i]] for i in clients], [y[i, : n[i]] for i in clients]


# ---- fedtheory's round ----------------------------------------------------------------------
def library_round(problem: FederatedProblem, theta: np.ndarray, clients: np.ndarray | None):
    """A closure running one FedPM K = 1 round on ``clients`` (None = all) of ``problem``."""
    xp = problem.xp
    method = make_method("fedpm", {"K": 1, "eta": 1.0})
    state, _ = method.start(problem, xp.asarray(theta))
    ctx = round_context(problem, clients)
    return lambda: method.round(ctx, state)[0].theta


# ---- one problem ----------------------------------------------------------------------------
def bench_problem(name: str, host: FederatedProblem, args: argparse.Namespace) -> dict:
    if host.objective != "logistic":
        raise SystemExit(f"the reference is written for logistic problems, got {host.objective}")
    problem = host.to("cupy") if args.backend == "cupy" else host
    N, d = host.N, host.d
    theta = np.random.default_rng(1).normal(size=d) * 0.1

    # correctness: reference == fedtheory on the same participants
    m = N if args.check_clients in (0, None) else min(args.check_clients, N)
    sub = None if m == N else np.arange(m)
    Xs, ys = client_data(host, range(m))
    w = to_numpy(host.weights)[:m]
    ref_theta = reference_round(Xs, ys, w / w.sum(), theta, host.lam)
    lib_theta = to_numpy(library_round(problem, theta, sub)())
    rel_err = float(np.linalg.norm(ref_theta - lib_theta) / np.linalg.norm(lib_theta))
    assert rel_err <= CHECK_RTOL, (
        f"{name}: reference and fedtheory FedPM rounds differ: relative error {rel_err:.3e} "
        f"> {CHECK_RTOL:g} on {m} of {N} clients"
    )

    # fedtheory: the full round, on the chosen backend
    t_lib = _median_time(library_round(problem, theta, None), problem.xp, args.repeat)

    # reference: client phase on a subset, scaled by N / subset; server phase on N clients
    k = min(args.ref_clients, N)
    Xk, yk = client_data(host, range(k))
    outs: list = []

    def clients_phase() -> None:
        outs[:] = [
            reference_client(X, y, theta, host.lam, 1.0) for X, y in zip(Xk, yk, strict=True)
        ]

    t_clients_sub = _median_time(clients_phase, np, args.ref_repeat)
    Hs = [outs[i % k][0] for i in range(N)]
    thetas = [outs[i % k][1] for i in range(N)]
    w_all = to_numpy(host.weights)
    t_server = _median_time(lambda: reference_server(Hs, thetas, w_all), np, args.ref_repeat)
    t_ref = t_clients_sub * N / k + t_server
    return {
        "problem": name,
        "N": N,
        "n_max": int(host.A.shape[1]),
        "d": d,
        "n": host.n,
        "check_clients": m,
        "check_rel_err": rel_err,
        "fedtheory_s_per_round": t_lib,
        "fedtheory_backend": args.backend,
        "reference_clients_timed": k,
        "reference_client_phase_s_measured": t_clients_sub,
        "reference_client_phase_s_scaled": t_clients_sub * N / k,
        "reference_server_phase_s": t_server,
        "reference_s_per_round_extrapolated": t_ref,
        "speedup": t_ref / t_lib,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--quick",
        action="store_true",
        help="fewer repeats, reference timed on 2 clients, check on 4 clients",
    )
    ap.add_argument(
        "--backend",
        choices=("numpy", "cupy"),
        default="numpy",
        help="backend of fedtheory's round (the reference is always NumPy)",
    )
    ap.add_argument("--problems", default="a9a,w8a")
    ap.add_argument("--repeat", type=int, default=None, help="fedtheory timings (default 20)")
    ap.add_argument("--ref-repeat", type=int, default=None, help="reference timings (default 3)")
    ap.add_argument(
        "--ref-clients",
        type=int,
        default=None,
        help="clients the reference client phase is timed on (default 8)",
    )
    ap.add_argument(
        "--check-clients",
        type=int,
        default=None,
        help="participants of the equality check, 0 = all (default 0)",
    )
    ap.add_argument("--out", help="write the figures to this JSON file")
    args = ap.parse_args()
    for key, full, quick in (
        ("repeat", 20, 3),
        ("ref_repeat", 3, 1),
        ("ref_clients", 8, 2),
        ("check_clients", 0, 4),
    ):
        if getattr(args, key) is None:
            setattr(args, key, quick if args.quick else full)

    info = machine(args.backend)
    command = "python " + shlex.join(sys.argv)
    print(f"# {command}")
    print("# machine: " + ", ".join(f"{k} {v}" for k, v in info.items()))
    print(
        f"# reference (NumPy, per-sample loops): client phase timed on {args.ref_clients} "
        f"clients and scaled linearly by N/{args.ref_clients}; server phase timed on N "
        f"clients. fedtheory: median of {args.repeat} full rounds on {args.backend}."
    )
    builders = {"a9a": a9a, "w8a": w8a_shaped}
    rows = []
    for name in args.problems.split(","):
        host = builders[name]()
        row = bench_problem(name, host, args)
        rows.append(row)
        if len(rows) == 1:
            print(
                f"{'problem':<8}{'N x n x d':>14}{'check on':>9}{'rel err':>10}"
                f"{'ref s/rnd':>11}{'(meas. on)':>11}{'fedth s/rnd':>12}{'speedup':>9}"
            )
        shape = f"{row['N']}x{row['n_max']}x{row['d']}"
        print(
            f"{name:<8}{shape:>14}{row['check_clients']:>9d}{row['check_rel_err']:>10.1e}"
            f"{row['reference_s_per_round_extrapolated']:>11.3e}"
            f"{str(row['reference_clients_timed']) + ' cl.':>11}"
            f"{row['fedtheory_s_per_round']:>12.3e}{row['speedup']:>9.1f}"
        )
    print(
        f"# ref s/rnd is extrapolated (client phase x N/{args.ref_clients} + server phase); "
        f"speedup = ref s/rnd / fedtheory s/rnd; check: FedPM round equal to {CHECK_RTOL:g} "
        f"relative (asserted)"
    )
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(
                {
                    "benchmark": "bench_vs_reference",
                    "command": command,
                    "machine": info,
                    "args": vars(args),
                    "rows": rows,
                },
                fh,
                indent=2,
            )
        print(f"# wrote {args.out}")


if __name__ == "__main__":
    main()
