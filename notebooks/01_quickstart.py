# ---
# jupyter:
#   jupytext:
#     notebook_metadata_filter: kernelspec,-jupytext.text_representation.jupytext_version
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Quickstart: FedPM, simple mixing and Newton on the FedNL split of a9a
#
# $N$ clients hold local objectives $f_i$; the server minimises $f = \sum_i w_i f_i$. In one
# round of **FedPM** (preconditioned mixing, Ishii et al. 2025, arXiv 2511.09100) every client
# takes $K$ local Newton steps from the server's $\theta$,
# $\theta_i^{k+1} = \theta_i^k - \eta\, P_i^{-1} g_i(\theta_i^k)$ with
# $P_i = H_i(\theta_i^k)$, and uploads its iterate $\theta_i^K$ with its preconditioner; the
# server mixes the iterates *through* the preconditioners:
#
# $$\theta^{+} = \Big(\sum_i w_i P_i\Big)^{-1} \sum_i w_i P_i\, \theta_i^K .$$
#
# For $K = 1$ the client preconditioners cancel and the round is exactly the damped global
# Newton step (the paper's "ideal global second-order update", eq. 6-8; claim C1 of
# [docs/claims.md](../docs/claims.md#c1)):
#
# $$\theta^{+} = \theta - \eta \Big(\sum_i w_i H_i(\theta)\Big)^{-1} \sum_i w_i g_i(\theta) .$$
#
# **SOPM** (simple mixing, the LocalNewton family) takes the same local steps but averages,
# $\theta^{+} = \sum_i w_i \theta_i^K$; under heterogeneous clients its fixed point is not
# $\theta^\star$ (claim C4). This notebook builds the problem, runs the three methods and plots
# $\|\theta^t - \theta^\star\|$.
#
# **Run time** on 2 cores: small ~6 s, medium ~4 s, full ~4 s (wall clock, measured with
# `FEDTHEORY_SIZE=<size> OMP_NUM_THREADS=1 nice -n 10 jupyter execute --inplace` on a copy of this
# notebook, on the project's 2-core development VM (Intel Xeon, nproc 2) on 2026-12-01, load 2.73
# / 2.93 / 1.99 (small / medium / full); every run is listed in
# `benchmarks/results/notebook_times.txt`). `FEDTHEORY_SIZE=small|medium|full` picks the size
# (default full; see `notebooks/README.md`).

# %%
# %matplotlib inline
import numpy as np

import fedtheory as ft
from fedtheory import data, partitions, plot
from fedtheory.notebook_sizes import by_size, notebook_size

SIZE = notebook_size()  # FEDTHEORY_SIZE=small|medium|full (FEDTHEORY_SMALL=1: small; CI)
ROUNDS = by_size(small=10, medium=12, full=12)
print(f"notebook size: {SIZE}")

# %% [markdown]
# ## The problem
#
# L2-regularised logistic regression ($\lambda = 10^{-3}$) on the first 32,560 rows of a9a,
# cut in file order into 80 clients of 407 rows: the split of the FedNL paper. The suite ships
# it as a TOML file, so `load_problem("a9a_fednl")` is the same problem in one line; here it is
# built from its parts. `problem.reference` is $\theta^\star$ by centralised Newton, with
# $\mu = \lambda_{\min}(H(\theta^\star))$ and the bound $L_H$ on the Hessian's Lipschitz
# constant.

# %%
ds = data.load_a9a(rows=32560)
parts = partitions.contiguous(ds.n, n_clients=80)
problem = ft.FederatedProblem.from_dataset(ds.X, ds.y, parts, objective="logistic", lam=1e-3,
                                           name="a9a_fednl")
ref = problem.reference
print(problem)
print(f"||theta*|| = {np.linalg.norm(ref.theta_star):.4f}, mu = {ref.mu:.3g}, "
      f"L = {ref.L:.3g}, L_H <= {ref.L_H:.3g}")

# %% [markdown]
# ## Three methods, one round map each
#
# A method is a frozen dataclass of its hyperparameters; `ft.run` owns the rounds, the
# participation and the metrics, and returns a `Trace` (one row per round, row 0 the start
# $\theta^0 = 0$).

# %%
methods = {
    "FedPM (K = 1, eta = 1)": ft.make_method("fedpm", {"K": 1, "eta": 1.0}),
    "SOPM (K = 1, eta = 1)": ft.make_method("sopm", {"K": 1, "eta": 1.0}),
    "Newton (eta = 1)": ft.make_method("newton", {"eta": 1.0}),
}
traces = {name: ft.run(problem, m, rounds=ROUNDS, drift_metrics=False)
          for name, m in methods.items()}
dist = {name: tr["dist_to_opt"] for name, tr in traces.items()}
print("round  " + "  ".join(f"{name:>24}" for name in dist))
for t in range(ROUNDS + 1):
    print(f"{t:>5}  " + "  ".join(f"{d[t]:>24.3e}" for d in dist.values()))

# %% [markdown]
# FedPM and Newton produce the same iterates (their columns agree to the float floor) and
# collapse quadratically; simple mixing stops at its drift floor.

# %%
fedpm, newton = dist["FedPM (K = 1, eta = 1)"], dist["Newton (eta = 1)"]
sopm = dist["SOPM (K = 1, eta = 1)"]
print(f"largest |e_FedPM - e_Newton| over the rounds: {np.max(np.abs(fedpm - newton)):.1e}")
print(f"SOPM after {ROUNDS} rounds: ||theta - theta*|| = {sopm[-1]:.4f} "
      f"(last step changed it by {abs(sopm[-1] - sopm[-2]):.1e})")

# %%
fig, ax = plot.error_vs_round(traces, title="a9a, FedNL split (N = 80, d = 123)")
fig

# %% [markdown]
# Next: `02_fedpm_convex_experiment` compares FedPM with FedNL, FedPAC and first-order methods
# per round and per uplink float; `03_rates` fits the orders of convergence.
