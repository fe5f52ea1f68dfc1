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
# # The second-order family on the FedNL split of a9a
#
# Every second-order method of the suite on one problem, on the two axes of the FedNL papers:
# $f(\theta^t) - f^\star$ against rounds and against uplink bits per node (32-bit floats,
# client to server only; [docs/algorithms.md](../docs/algorithms.md#bits)). Then the
# drift-floor law of simple mixing (claim C13): the measured SOPM ($K = 1$) floor against the
# predicted $-\sum_i w_i H_i(\theta^\star)^{-1} g_i(\theta^\star)$, one point per
# heterogeneity level.
#
# Methods: Newton, FedPM ($K = 1$, the global Newton step, C1), SOPM ($K = 1$, simple mixing),
# FedNL (identity, rank-1 and top-$K$ with $K = 8d$ compressors, option 1; top-$8d$ also with
# option 2), FedNL-PP ($S = N/4$ clients per round), FedNL-LS (line search), FedNL-CR (cubic
# regularisation, $M = L_H$), GIANT, DANE, Newton-Star (the Hessian at $\theta^\star$, an
# oracle baseline), FedPM with the FOOF preconditioner, and GD ($\eta = 1/L$) as the
# first-order reference. All start at $\theta^0 = 0$.
#
# **Run time** on 2 cores: small ~8 s, medium ~22 s, full ~24 s (wall clock, measured with
# `FEDTHEORY_SIZE=<size> OMP_NUM_THREADS=1 nice -n 10 jupyter execute --inplace` on a copy of this
# notebook, on the project's 2-core development VM (Intel Xeon, nproc 2) on 2026-12-01, load 3.11
# / 2.35 / 1.85 (small / medium / full); every run is listed in
# `benchmarks/results/notebook_times.txt`). `FEDTHEORY_SIZE=small|medium|full` picks the size
# (default full; see `notebooks/README.md`).

# %%
# %matplotlib inline
import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

import fedtheory as ft
from fedtheory import plot
from fedtheory.claims import heterogeneous_problem, load_check, sopm_limit
from fedtheory.notebook_sizes import by_size, notebook_size
from fedtheory.suite import load_problem

SIZE = notebook_size()  # FEDTHEORY_SIZE=small|medium|full (FEDTHEORY_SMALL=1: small; CI)
# small: the first 20 clients, 25 rounds, one seed; medium: all 80 clients and 60 rounds, one
# seed of the C13 sweep; full: three seeds
ROUNDS = by_size(small=25, medium=60, full=60)
print(f"notebook size: {SIZE}")
EPS = 1e-8  # the target of the reach table

if SIZE == "small":  # the first 20 clients of the FedNL split: 20 x 407 rows in file order
    problem = load_problem({
        "name": "a9a_fednl_20", "description": "a9a, FedNL split, first 20 clients",
        "data": {"source": "a9a", "rows": 20 * 407, "intercept": False},
        "partition": {"kind": "contiguous", "clients": 20},
        "objective": {"kind": "logistic", "lam": 1e-3}})
else:
    problem = load_problem("a9a_fednl")
ref = problem.reference
N, d = len(problem.weights), len(ref.theta_star)
print(problem)
print(f"N = {N}, d = {d}, mu = {ref.mu:.3g}, L = {ref.L:.3g}, L_H <= {ref.L_H:.3g}")

# %% [markdown]
# ## The runs
#
# One dict of legend label to (method, parameters, participation). FedNL-PP is the only one
# with partial participation: $S = N/4$ clients per round, drawn by the run's seeded
# generator. Like every count column, its `bits` is the average over all $N$ nodes (the
# participants' total divided by $N$), whereas the FedNL-PP reference code counts one
# participating node per round: multiply by $N/S = 4$ to compare with it.

# %%
family = {
    "Newton": ("newton", {}, None),
    "FedPM (K=1)": ("fedpm", {"K": 1}, None),
    "SOPM (K=1)": ("sopm", {"K": 1}, None),
    "FedNL identity": ("fednl", {"compressor": "identity"}, None),
    "FedNL rank-1": ("fednl", {"compressor": "rankR", "R": 1}, None),
    "FedNL top-8d": ("fednl", {"compressor": "topK", "Kc": 8 * d}, None),
    "FedNL top-8d, option 2": ("fednl", {"compressor": "topK", "Kc": 8 * d, "option": 2},
                               None),
    "FedNL-PP (S=N/4)": ("fednl_pp", {}, N // 4),
    "FedNL-LS": ("fednl_ls", {}, None),
    "FedNL-CR": ("fednl_cr", {}, None),
    "GIANT": ("giant", {}, None),
    "DANE": ("dane", {}, None),
    "Newton-Star": ("newton_star", {}, None),
    "FedPM + FOOF": ("fedpm", {"K": 1, "preconditioner": "foof"}, None),
    "GD (eta=1/L)": ("gd", {"eta": 1 / ref.L}, None),
}
traces = {label: ft.run(problem, ft.make_method(name, params), rounds=ROUNDS,
                        participation=S, drift_metrics=False)
          for label, (name, params, S) in family.items()}

# %% [markdown]
# ## f - f* against rounds
#
# Newton and FedPM ($K = 1$) coincide (C1) and are the fastest per round; FedNL with the
# identity compressor and FedNL-LS (whose unit step is always accepted here) follow a few
# rounds later (the golden-ratio order of C9), GIANT, DANE and top-$8d$ close behind; rank-1,
# option 2 and FedNL-PP (a quarter of the Hessians refreshed per round) take longer.
# GIANT and DANE reach $f^\star$ (their fixed point is $\theta^\star$, C15); SOPM stops at
# its drift floor (about $2 \cdot 10^{-4}$ at full size). Three curves are still far from
# $10^{-8}$ when the run ends: FOOF converges only linearly (C16), GD crawls at
# $L / \mu \approx 760$, and FedNL-CR with $M = L_H$ takes short steps: its cubic term,
# with the bound $L_H$ rather than the local constant, dominates the small curvature
# $\mu = \lambda = 10^{-3}$. Every method has its own colour, marker and line style, the
# same in every notebook; the four FedNL compressor variants share FedNL's pink and differ in
# marker and line style, FedPM + FOOF shares FedPM's blue. Values at or below the dotted
# float floor $10^3 \varepsilon \max(1, |f^\star|)$ (exact zeros, negative values and the
# tiny positive ones that rounding leaves) are all drawn on it, marked with a triangle:
# below the floor the computed $f - f^\star$ is rounding, not convergence.

# %%
fig, ax = plot.error_vs_round(traces, column="subopt",
                              title=f"a9a, FedNL split (N = {N}, d = {d}): f - f* per round")
fig

# %% [markdown]
# ## f - f* against bits per node
#
# The same runs against cumulative uplink bits per node. Methods that send a full Hessian
# (Newton, FedPM, FedNL identity) pay $32\,d(d+1)/2$ bits per round; FedNL's compressors
# and GIANT / DANE (vectors only) are far cheaper per round. FedNL's first round includes
# the initial Hessian (`init="hessian"`), as in the FedNL papers. On this problem the
# vector-only methods win on bits: GIANT and DANE reach $10^{-8}$ with under $10^5$ bits per
# node, some 20 times fewer than Newton, then Newton-Star (which needs $H(\theta^\star)$, an
# oracle baseline), rank-1 and top-$8d$ FedNL; the full-Hessian methods are last.

# %%
fig, ax = plot.error_vs_round(traces, column="subopt", x="bits", logx=True,
                              title="f - f* against uplink bits per node")
fig

# %% [markdown]
# ## Rounds and bits to f - f* <= 1e-8
#
# NaN: not reached within the run.

# %%
table = plot.reach_table(traces, EPS, column="subopt", x=("round", "bits"))
table = table.rename(columns={"round_to_eps": "rounds to 1e-8", "bits_to_eps": "bits to 1e-8"})
with pd.option_context("display.float_format", "{:.4g}".format, "display.width", 120):
    print(table.sort_values("bits to 1e-8").to_string(index=False))

# %% [markdown]
# ## The drift-floor law (C13)
#
# At the limit $\tilde\theta$ of SOPM with $K = 1$, to first order in the heterogeneity,
#
# $$\tilde\theta - \theta^\star \approx -\sum_i w_i H_i(\theta^\star)^{-1} g_i(\theta^\star):$$
#
# preconditioner drift applied to gradient heterogeneity. The a9a FedNL split is nearly
# homogeneous, so the levels come from a Dirichlet label-skew sweep on phishing (10 clients,
# $\lambda = 10^{-2}$, as in C13's sweep): each $\alpha$ (and seed) gives one point, measured
# floor $\|\tilde\theta - \theta^\star\|$ against the law's prediction. The predictor is C13's
# own `drift_floor_law`; the limit is `fedtheory.claims.sopm_limit`.

# %%
c13 = load_check("C13")
seeds = by_size(small=(0,), medium=(0,), full=(0, 1, 2))
rows = []
for seed in seeds:
    for alpha in c13.ALPHAS:
        het = heterogeneous_problem("phishing", clients=10, alpha=alpha, seed=seed, lam=1e-2)
        lim, eta = sopm_limit(het, K=1)
        measured = lim.theta - np.asarray(het.reference.theta_star)
        predicted = c13.drift_floor_law(het)
        floor = float(np.linalg.norm(measured))
        rows.append({"alpha": alpha, "seed": seed, "converged": lim.converged, "eta": eta,
                     "floor": floor, "predicted": float(np.linalg.norm(predicted)),
                     "rel_floor": floor / float(np.linalg.norm(het.reference.theta_star)),
                     "rel_error": float(np.linalg.norm(measured - predicted)) / floor})
law = pd.DataFrame(rows)
with pd.option_context("display.float_format", "{:.4g}".format, "display.width", 120):
    print(law.to_string(index=False))

# %% [markdown]
# Left: measured against predicted floor norms (the dashed line is equality). Right: the
# law's vector relative error $\|\text{measured} - \text{predicted}\| / \|\text{measured}\|$
# against the relative floor; C13 asks for at most 0.1 (dotted) and an error that shrinks in
# proportion to the floor (the remainder is second order).

# %%
fig = Figure(figsize=(10.5, 4.2), layout="constrained")
left, right = fig.subplots(1, 2)
viridis = colormaps["viridis"]  # colour follows alpha (dark = smallest), as in fedtheory.plot
for i, alpha in enumerate(c13.ALPHAS):
    sel = law[law["alpha"] == alpha]
    style = {"color": viridis(0.8 * i / max(1, len(c13.ALPHAS) - 1)),
             "marker": plot.MARKERS[i], "ls": "none", "label": f"alpha = {alpha:g}"}
    left.loglog(sel["predicted"], sel["floor"], **style)
    right.loglog(sel["rel_floor"], sel["rel_error"], **style)
lo, hi = law[["floor", "predicted"]].min().min(), law[["floor", "predicted"]].max().max()
left.loglog([lo, hi], [lo, hi], "k--", lw=1, label="measured = predicted")
left.set(xlabel=r"predicted $\|\sum_i w_i H_i(\theta^\star)^{-1} g_i(\theta^\star)\|$",
         ylabel=r"measured floor $\|\tilde\theta - \theta^\star\|$",
         title="SOPM (K = 1) floor, phishing Dirichlet sweep")
right.axhline(c13.MAX_REL_ERROR, color="k", ls=":", lw=1, label="C13 threshold 0.1")
right.set(xlabel=r"relative floor $\|\tilde\theta - \theta^\star\| / \|\theta^\star\|$",
          ylabel="relative error of the law", title="error of the first-order law")
for a in (left, right):  # label 1, 2, 5 of every decade: these axes span one or two decades
    for axis in (a.xaxis, a.yaxis):
        axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        axis.set_minor_formatter(NullFormatter())
    a.grid(alpha=0.3)
    a.legend(fontsize="small")
fig

# %% [markdown]
# The points lie on the diagonal: the law predicts the floor to a few per cent on every
# level, and its error falls with the floor (to well below 1 % at $\alpha = 10$, the nearly
# i.i.d. split). Next: `07_rates_beyond_float64` follows FedPM and FedNL far below the float
# floor that ends every curve above.
