"""Record trajectories of the public FedNL reference code as a test fixture.

    git clone https://github.com/Rustem-Islamov/FedNL-Public /tmp/FedNL-Public   # commit ac72ee9
    python benchmarks/make_fednl_reference_fixtures.py --reference /tmp/FedNL-Public \
        [--out tests/data/fednl_reference.npz]

The reference code (Safaryan et al. 2022, ``methods.py``: FedNL, FedNL_PP, FedNL_LS, FedNL_CR)
is imported from ``--reference`` and run, unmodified, for ``ROUNDS`` = 20 rounds per
configuration, from x^0 = x_opt + 0.1 (1, ..., 1) (as in its example notebook), lam = 1e-2, on
one of two small problems (``DATA``): the first 400 rows of a9a in file order over 8 contiguous
clients (FedNL-CR: the same rows as one client), and the first 560 rows of breast cancer
(standardised, intercept column) over 8 clients. Nothing of it is copied into fedtheory: this
script only reads what it returns, and prints how far fedtheory's replay is from it.
tests/test_fednl_family.py replays every configuration with fedtheory's methods (without the
reference code) and compares.

What is recorded, per configuration (``<key>__<field>`` in the .npz):

- ``theta`` (ROUNDS + 1, d): the iterates x^0..x^T. The reference methods return only
  ||x^k - x_opt||; x_opt is handed to them as an ndarray subclass whose ``__rsub__`` records
  the left operand of every ``x - x_opt``, i.e. every iterate (init duplicates dropped);
- ``f`` (ROUNDS + 1,): the reference's function values; ``x_opt``: its solution;
- ``round_bits`` (ROUNDS,): the reference's bits per node added by each round, and ``init_bits``;
- ``schedule`` (ROUNDS, tau), FedNL-PP only: the participants of each round, read by wrapping
  ``np.random.shuffle`` (the reference keeps the first tau of its shuffled node list);
- ``meta``: one JSON string: each configuration's problem, the reference's call and the
  fedtheory method and parameters that must reproduce it, the reference commit, and the
  FedNL-CR subproblem comparison below.

The configurations cover option 1 and 2 (with the reference's spectral l^k), rank-R with the
step rule ``upd_rule=1`` (alpha = 1 - sqrt(1 - delta), delta per call), top-K, both
initialisations, FedNL-PP, FedNL-LS with backtracking, and FedNL-CR with M = 0 on one client:
the only setting where the reference's FedNL-CR is the method (it updates only the last
client's H_i, and for M > 0 its subproblem solver does not return the cubic model's minimiser;
the script prints how far its M = L_H step is from the minimiser).

Top-K runs on breast cancer, whose continuous features give no ties. On a9a (one-hot features)
structurally equal Hessian entries tie exactly, and the reference code, which adds lam to the
diagonal before taking differences, splits some diagonal/off-diagonal ties by its own rounding;
fedtheory's rounding splits others, so the two pick different (equally valid) top-K sets from
round 3 on. That configuration is recorded with ``exact = False`` and the test checks only that
the trajectories stay within 1e-3 and reach the same solution.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from fedtheory.data import load_a9a, load_breast_cancer

ROUNDS, TAU, LAM = 20, 3, 1e-2
ROOT = Path(__file__).resolve().parents[1]
START = 0.1  # x^0 = x_opt + START (1, ..., 1), as in the reference's example notebook
#: dataset -> (rows, clients): a9a's first 400 rows (one-hot features: many exact ties in the
#: Hessians) and breast cancer's first 560 (standardised, intercept column: no ties), 8 clients.
DATA = {"a9a": (400, 8), "breast_cancer": (560, 8)}

# key -> (dataset, reference class, its method() keywords, fedtheory method and params, clients,
#         exact): exact = False where the reference's own rounding decides top-K ties (below)
CONFIGS = {
    "fednl_opt2_rank4_rule1_zero": (
        "a9a",
        "FedNL",
        dict(
            hes_comp_name="LowRank",
            hes_comp_param=4,
            init="zero",
            init_cost=False,
            option=2,
            upd_rule=1,
        ),
        "fednl",
        dict(option=2, compressor="rankR", R=4, alpha="rule1", l_norm="spectral", init="zero"),
        8,
        True,
    ),
    "fednl_pp_rank4_rule1": (
        "a9a",
        "FedNL_PP",
        dict(
            tau=TAU,
            hes_comp_name="LowRank",
            hes_comp_param=4,
            init="nonzero",
            init_cost=True,
            upd_rule=1,
        ),
        "fednl_pp",
        dict(compressor="rankR", R=4, alpha="rule1", init="hessian"),
        8,
        True,
    ),
    "fednl_cr_m0_one_client": (
        "a9a",
        "FedNL_CR",
        dict(hes_comp_name="LowRank", hes_comp_param=2, init="nonzero", init_cost=True, upd_rule=1),
        "fednl_cr",
        dict(M=0.0, compressor="rankR", R=2, alpha="rule1", init="hessian"),
        1,
        True,
    ),
    "fednl_opt2_topk_spectral": (
        "breast_cancer",
        "FedNL",
        dict(
            hes_comp_name="TopK",
            hes_comp_param=62,
            init="nonzero",
            init_cost=True,
            option=2,
            upd_rule=2,
        ),
        "fednl",
        dict(option=2, compressor="topK", Kc=62, alpha="one", l_norm="spectral", init="hessian"),
        8,
        True,
    ),
    "fednl_opt1_topk_rule1": (
        "breast_cancer",
        "FedNL",
        dict(
            hes_comp_name="TopK",
            hes_comp_param=62,
            init="nonzero",
            init_cost=True,
            option=1,
            upd_rule=1,
        ),
        "fednl",
        dict(option=1, compressor="topK", Kc=62, alpha="rule1", init="hessian"),
        8,
        True,
    ),
    "fednl_pp_topk_zero": (
        "breast_cancer",
        "FedNL_PP",
        dict(
            tau=TAU,
            hes_comp_name="TopK",
            hes_comp_param=124,
            init="zero",
            init_cost=False,
            upd_rule=2,
        ),
        "fednl_pp",
        dict(compressor="topK", Kc=124, alpha="one", init="zero"),
        8,
        True,
    ),
    "fednl_ls_topk_rule1_zero": (
        "breast_cancer",
        "FedNL_LS",
        dict(
            hes_comp_name="TopK",
            hes_comp_param=62,
            init="zero",
            init_cost=False,
            upd_rule=1,
            gamma=0.5,
            c=0.5,
        ),
        "fednl_ls",
        dict(compressor="topK", Kc=62, alpha="rule1", init="zero", gamma=0.5, c=0.5),
        8,
        True,
    ),
    "fednl_opt2_topk_spectral_a9a": (
        "a9a",
        "FedNL",
        dict(
            hes_comp_name="TopK",
            hes_comp_param=492,
            init="nonzero",
            init_cost=True,
            option=2,
            upd_rule=2,
        ),
        "fednl",
        dict(option=2, compressor="topK", Kc=492, alpha="one", l_norm="spectral", init="hessian"),
        8,
        False,
    ),
}


class Recorder(np.ndarray):
    """x_opt that records the left operand of every ``x - x_opt`` (the reference's iterates)."""

    def __array_finalize__(self, obj) -> None:
        self.seen = getattr(obj, "seen", None)

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        plain = [np.asarray(x) if isinstance(x, Recorder) else x for x in inputs]
        return getattr(ufunc, method)(*plain, **kwargs)  # results are plain arrays

    def __rsub__(self, other):
        self.seen.append(np.array(other, dtype=np.float64))
        return np.asarray(other) - np.asarray(self)


def fixture_data(dataset: str) -> tuple[np.ndarray, np.ndarray]:
    """The rows the reference runs on, dense, with labels +-1 (tests rebuild the same)."""
    rows = DATA[dataset][0]
    if dataset == "a9a":
        ds = load_a9a(rows=rows)
        return np.asarray(ds.X.toarray()), np.asarray(ds.y)
    ds = load_breast_cancer(standardize=True, intercept=True)
    return np.asarray(ds.X[:rows]), np.asarray(ds.y[:rows])


def reference_optimum(ref, A, b, n, m) -> np.ndarray:
    oracle = ref.LogReg(A=A, b=b, reg_coef=LAM, n=n, m=m)
    ref.Standard_Newton(oracle).find_optimum(x0=np.zeros(A.shape[1]), n_steps=20, verbose=False)
    return np.asarray(oracle.get_optimum())


def run_reference(ref, key: str) -> dict:
    dataset, cls_name, kw, name, params, n, exact = CONFIGS[key]
    A, b = fixture_data(dataset)
    m = A.shape[0] // n
    d = A.shape[1]
    x_opt = reference_optimum(ref, A, b, n, m)
    oracle = ref.LogReg(A=A, b=b, reg_coef=LAM, n=n, m=m)
    rec = x_opt.copy().view(Recorder)
    rec.seen = []
    oracle.set_optimum(rec)
    method = getattr(ref, cls_name)(oracle)
    if cls_name == "FedNL_CR":
        method.get_M = lambda: 0.0  # M = 0: the reference's solver is exact there
    schedule: list[list[int]] = []
    shuffle = np.random.shuffle

    def recording_shuffle(x):
        shuffle(x)
        schedule.append(sorted(int(i) for i in x[: kw["tau"]]))

    np.random.seed(0)  # noqa: NPY002  (the reference draws from NumPy's global generator)
    if cls_name == "FedNL_PP":
        np.random.shuffle = recording_shuffle
    try:
        fv, bits, _ = method.method(
            x=x_opt + START, max_iter=ROUNDS - 1, tol=-1.0, verbose=False, **kw
        )
    finally:
        np.random.shuffle = shuffle
    dup = (n if cls_name == "FedNL_CR" else 1) if kw.get("init_cost") else 0
    keep = [0, *range(1 + dup, len(rec.seen))]
    theta = np.array([rec.seen[k] for k in keep])
    fv = np.asarray(fv, dtype=np.float64)[keep]
    bits = np.asarray(bits, dtype=np.float64)
    assert theta.shape == (ROUNDS + 1, d) and len(bits) == ROUNDS + 1 + dup, (
        key,
        theta.shape,
        bits.shape,
    )
    out = {
        "theta": theta,
        "f": fv,
        "round_bits": np.diff(bits[dup:]),
        "init_bits": np.array(float(bits[dup]) if dup else 0.0),
        "x_opt": x_opt,
    }
    if schedule:
        out["schedule"] = np.array(schedule[:ROUNDS], dtype=np.int64)
    out["meta"] = {
        "dataset": dataset,
        "rows": int(A.shape[0]),
        "clients": n,
        "lam": LAM,
        "reference_class": cls_name,
        "reference_kwargs": kw,
        "method": name,
        "params": params,
        "exact": exact,
    }
    return out


def replay(arrays: dict, key: str, meta: dict) -> np.ndarray:
    """fedtheory's iterates on the same problem, start and participants (for the printout;
    tests/test_fednl_family.py does the same)."""
    from fedtheory.methods import make_method, round_context
    from fedtheory.partitions import contiguous
    from fedtheory.problem import FederatedProblem

    X, y = fixture_data(meta["dataset"])
    problem = FederatedProblem.from_dataset(
        X, y, contiguous(len(y), meta["clients"]), objective="logistic", lam=meta["lam"]
    )
    theta = arrays[f"{key}__theta"]
    schedule = arrays.get(f"{key}__schedule")
    method = make_method(meta["method"], meta["params"])
    state, _ = method.start(problem, theta[0].copy())
    out = [theta[0]]
    for t in range(1, len(theta)):
        clients = None if schedule is None else schedule[t - 1]
        state, _ = method.round(round_context(problem, clients), state)
        out.append(np.asarray(state.theta))
    return np.array(out)


def cr_subproblem_gap(ref) -> dict:
    """How far the reference's FedNL-CR step with its own M is from the cubic model's
    minimiser, at x = 0 on the one-client a9a problem with l^k = 0.05 (first-order residual
    ||g + A s + (M/2)||s|| s|| and model values)."""
    from fedtheory.methods.fednl_family import cubic_step

    A, b = fixture_data("a9a")
    d = A.shape[1]
    oracle = ref.LogReg(A=A, b=b, reg_coef=LAM, n=1, m=A.shape[0])
    cr = ref.FedNL_CR(oracle)
    M = cr.get_M()
    g = oracle.full_gradient(np.zeros(d))
    H = oracle.full_Hessian(np.zeros(d)) + (LAM + 0.05) * np.eye(d)

    def model(s):
        return float(g @ s + 0.5 * s @ H @ s + M / 6 * np.linalg.norm(s) ** 3)

    def residual(s):
        return float(np.linalg.norm(g + H @ s + 0.5 * M * np.linalg.norm(s) * s))

    s_ref, s_ours = cr.subproblem_solver(g, H, M), cubic_step(H, g, M)
    return {
        "M": M,
        "model_reference": model(s_ref),
        "model_fedtheory": model(s_ours),
        "residual_reference": residual(s_ref),
        "residual_fedtheory": residual(s_ours),
        "relative_step_difference": float(np.linalg.norm(s_ref - s_ours) / np.linalg.norm(s_ours)),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reference", required=True, help="a checkout of Rustem-Islamov/FedNL-Public")
    ap.add_argument("--out", default=str(ROOT / "tests" / "data" / "fednl_reference.npz"))
    args = ap.parse_args()
    sys.path.insert(0, str(Path(args.reference).resolve()))
    import methods as ref_methods  # the reference code
    import oracles as ref_oracles

    class Ref:  # one namespace for the reference's classes
        LogReg = ref_oracles.LogReg
        Standard_Newton = ref_methods.Standard_Newton
        FedNL = ref_methods.FedNL
        FedNL_PP = ref_methods.FedNL_PP
        FedNL_LS = ref_methods.FedNL_LS
        FedNL_CR = ref_methods.FedNL_CR

    try:
        commit = subprocess.run(
            ["git", "-C", args.reference, "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    arrays: dict[str, np.ndarray] = {}
    configs = {}
    print(
        f"{'configuration':<30}{'data':>14}  ||x^k - x*|| from -> to   max ||x_ft - x_ref||"
        f" (max relative to ||x_ref - x*||)"
    )
    for key in CONFIGS:
        out = run_reference(Ref, key)
        configs[key] = out.pop("meta")
        for field, value in out.items():
            arrays[f"{key}__{field}"] = value
        dist = np.linalg.norm(out["theta"] - out["x_opt"], axis=1)
        err = np.linalg.norm(replay(arrays, key, configs[key]) - out["theta"], axis=1)
        print(
            f"{key:<30}{configs[key]['dataset']:>14}  {dist[0]:.1e} -> {dist[-1]:.1e}"
            f"          {err.max():.1e} ({np.max(err / np.maximum(dist, 1e-300)):.1e})"
        )
    gap = cr_subproblem_gap(Ref)
    print(
        "FedNL-CR subproblem (a9a, one client, x = 0, M = L_H, l = 0.05): "
        + ", ".join(f"{k} {v:.3e}" for k, v in gap.items())
    )
    meta = {
        "reference": "github.com/Rustem-Islamov/FedNL-Public",
        "commit": commit,
        "rounds": ROUNDS,
        "tau": TAU,
        "start": START,
        "partition": "contiguous",
        "configs": configs,
        "cr_subproblem_gap": gap,
        "command": "python benchmarks/make_fednl_reference_fixtures.py --reference DIR",
    }
    arrays["meta"] = np.array(json.dumps(meta))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **arrays)
    print(f"wrote {args.out} ({Path(args.out).stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
