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
# # Rates beyond float64: FedPM, FedNL, Newton and damped FedPM down to 1e-150
#
# In float64 a quadratic sequence reaches the rounding floor ($\approx 10^{-13}$) three or
# four rounds after it enters its asymptotic regime, so an order of convergence is fitted on
# three or four points ([03_rates](03_rates.ipynb); claims C2 and C9). Here the same round
# maps run in **arb ball arithmetic** (python-flint, `fedtheory.precision`): every number is a
# midpoint with a rigorous radius, the floor is $2^{-\text{bits}}$, and each
# $e_t = \|\theta^t - \theta^\star\|$ is printed with a radius that provably bounds its error
# ([docs/algorithms.md](../docs/algorithms.md); claim C18 of
# [docs/claims.md](../docs/claims.md#c18)).
#
# The successive orders
#
# $$q_t = \frac{\log(e_{t+1}/e_t)}{\log(e_t/e_{t-1})}$$
#
# tend to the Q-order: 2 for Newton and FedPM with $K = 1$ (which is the Newton step, C1), the
# golden ratio $\varphi = (1 + \sqrt 5)/2 = 1.618$ for FedNL with the identity compressor (it
# steps with the previous round's Hessian: $e_{t+1} \le c\, e_t e_{t-1}$), and 1 for damped
# FedPM, $e_{t+1} \approx (1 - \eta)\, e_t$.
#
# **Run time** on 2 cores: small ~5 s, medium ~9 s, full ~9 s (wall clock, measured with
# `FEDTHEORY_SIZE=<size> OMP_NUM_THREADS=1 nice -n 10 jupyter execute --inplace` on a copy of this
# notebook, on the project's 2-core development VM (Intel Xeon, nproc 2) on 2026-12-01, load 3.01
# / 2.17 / 1.91 (small / medium / full); every run is listed in
# `benchmarks/results/notebook_times.txt`). `FEDTHEORY_SIZE=small|medium|full` picks the size
# (default full; see `notebooks/README.md`).
# Full and medium: 576 bits, errors to $10^{-158}$; small: 256 bits, errors to $10^{-70}$.
# Most of it is damped FedPM's 170 (small: 70) linear rounds.

# %%
# %matplotlib inline
import math
import time

import numpy as np
from matplotlib.figure import Figure

from fedtheory import plot
from fedtheory.notebook_sizes import by_size, notebook_size
from fedtheory.precision import (
    precise_linear_rate,
    precise_q_order,
    resolved_stop,
    run_precise,
    successive_orders,
    to_precise,
)
from fedtheory.suite import load_problem

SIZE = notebook_size()  # FEDTHEORY_SIZE=small|medium|full (FEDTHEORY_SMALL=1: small; CI)
BITS = by_size(small=256, medium=576, full=576)  # medium = full: the notebook takes seconds
print(f"notebook size: {SIZE}")
GOLDEN = (1 + math.sqrt(5)) / 2
started = time.perf_counter()

# %% [markdown]
# ## The problem
#
# FedProx Synthetic(1, 1) made binary: 10 heterogeneous clients with power-law sizes (244 rows
# in all), $d = 20$, $\lambda = 10^{-2}$: the small problem of claim C18. `to_precise` reads
# the float64 problem into arb (the data are exact dyadic numbers; the weights $1/n_i$ and
# $n_i/n$ are taken as exact rationals) and computes $\theta^\star$ by Newton at
# `BITS + guard` bits, with a rigorous radius from $\lambda$-strong convexity:
# $\|\tilde\theta - \theta^\star\| \le \|\nabla f(\tilde\theta)\| / \lambda$.

# %%
problem = load_problem({
    "name": "fedprox_synthetic_1_1_d20",
    "data": {"source": "fedprox_synthetic", "alpha": 1.0, "beta": 1.0, "clients": 10,
             "d": 20, "sizes": "powerlaw", "mean_size": 50, "seed": 0},
    "objective": {"kind": "logistic", "lam": 1e-2}})
pp = to_precise(problem, BITS)
ref = pp.reference
print(problem)
print(f"theta* at {ref.prec} bits, ||theta*|| = {float(ref.norm.mid()):.6f}, "
      f"rigorous radius {float(ref.radius.log_base(10).mid()):.1f} (log10), "
      f"{ref.newton_iters} Newton steps from the float64 theta*")

# %% [markdown]
# ## Four runs, each to the precision's floor
#
# `stop_at_floor=True` ends a run after the first round whose $e_t$ is not resolved (its
# radius exceeds $10^{-3} e_t$). Damped FedPM uses $\eta = 0.9$: ratio $1 - \eta = 0.1$, one
# decade per round.

# %%
runs = {
    "FedPM (K=1, eta=1)": ("fedpm", {"K": 1, "eta": 1.0}, 40),
    "Newton (eta=1)": ("newton", {"eta": 1.0}, 40),
    "FedNL (identity)": ("fednl", {"compressor": "identity"}, 60),
    "damped FedPM (eta=0.9)": ("fedpm", {"K": 1, "eta": 0.9}, 200),
}
traces = {}
for label, (name, params, rounds) in runs.items():
    traces[label] = run_precise(pp, name, params, rounds, BITS, stop_at_floor=True)
    tr = traces[label]
    print(f"{label:>24}: {len(tr) - 1:3d} rounds, status {tr.status}, "
          f"{tr.rows[-1]['seconds']:.2f} s of round maps")

# %% [markdown]
# The first rounds of FedPM with their radii (`*` marks an unresolved value). The radius of
# the last rounds, about $10^{6}$ times $2^{-\text{bits}}$, comes from the solves: the ball
# of $P^{-1} r$ is widened by the condition numbers of the client and global Hessians.
# $f - f^\star$ is resolved much further than $e_t$: it is enclosed through its Taylor form
# at $\theta^\star$, with the Hessian evaluated on a ball holding the segment.

# %%
print(traces["FedPM (K=1, eta=1)"].table())

# %% [markdown]
# ## Errors and their radii, in log10
#
# Below $10^{-308}$ a float64 would underflow, so the trace gives $\log_{10}$ of each midpoint
# computed in arb (`trace.log10()`). Filled markers: resolved; open: unresolved (the floor).
# The dashed grey line is float64's floor $10^3\,\varepsilon \max(1, \|\theta^\star\|)$;
# damped FedPM goes on past the right edge, one decade per round, to the same floor.

# %%
fig = Figure(figsize=(8, 4.6), layout="constrained")
ax = fig.add_subplot()
for k, (label, tr) in enumerate(traces.items()):
    x, ok = tr.log10(), tr.resolved()
    color = plot.OKABE_ITO[k]
    t = np.arange(x.size)
    ax.plot(t, x, "-", color=color, lw=1)
    ax.plot(t[ok], x[ok], "o", color=color, ms=4, label=label)
    ax.plot(t[~ok], x[~ok], "o", color=color, mfc="none", ms=6)
    ax.plot(t, tr.log10(radius=True), ":", color=color, lw=1)
ax.axhline(math.log10(1e3 * np.finfo(float).eps * max(1.0, float(ref.norm.mid()))),
           color="0.5", ls="--", lw=1, label="float64 floor")
ax.plot([], [], ":", color="0.3", label="rigorous radius of $e_t$")
ax.set(xlabel="round $t$", ylabel=r"$\log_{10} e_t$", xlim=(-0.5, 45),
       title=f"arb at {BITS} bits: $e_t = \\|\\theta^t - \\theta^\\star\\|$ with radii")
ax.grid(alpha=0.3)
ax.legend(fontsize="small", loc="center right")  # lower left hid the last FedPM / Newton rounds
fig

# %% [markdown]
# ## Successive orders $q_t$
#
# Over the resolved rounds. FedPM and Newton settle on 2 (FedPM with $K = 1$ is the Newton
# step, so their curves coincide), FedNL climbs to $\varphi$ from below (the stale-Hessian
# recursion $\log e_{t+1} = \log c + \log e_t + \log e_{t-1}$ has a second mode
# $(-1/\varphi)^t$ that dies out), damped FedPM sits at 1.

# %%
fig = Figure(figsize=(8, 4.6), layout="constrained")
ax = fig.add_subplot()
for k, (label, tr) in enumerate(traces.items()):
    x = tr.log10()[: resolved_stop(tr)]
    q = successive_orders(x)
    ax.plot(np.arange(q.size), q, "os^v"[k] + "-", color=plot.OKABE_ITO[k], ms=4, lw=1,
            label=label)
for value, style, name in ((2.0, "--", "2"), (GOLDEN, ":", r"$\varphi$"), (1.0, "-.", "1")):
    ax.axhline(value, color="k", ls=style, lw=0.8)
    ax.text(44.5, value + 0.03, name, ha="right", fontsize=9)
ax.set(xlabel="round $t$", ylabel=r"$q_t = \log(e_{t+1}/e_t) / \log(e_t/e_{t-1})$",
       ylim=(0.5, 2.5), xlim=(-0.5, 45), title="successive orders of convergence")
ax.grid(alpha=0.3)
ax.legend(fontsize="small", loc="lower right")
fig

# %% [markdown]
# ## Fitted orders over the asymptotic window
#
# `precise_q_order` is the suite's Q-order fit (`fedtheory.rates.q_order`: OLS of
# $\log e_{t+1}$ on $\log e_t$ over `asymptotic_window`, 95 % t-interval) on the resolved
# prefix, in log-space; `precise_linear_rate` the linear ratio. In float64 the same fits
# have three to five pairs.

# %%
for label, tr in traces.items():
    if label.startswith("damped"):
        fit = precise_linear_rate(tr)
        print(f"{label:>24}: ratio {fit.q:.6f} [{fit.ci[0]:.6f}, {fit.ci[1]:.6f}] "
              f"(predicted 1 - eta = 0.1), {fit.n_points} points")
    else:
        fit = precise_q_order(tr)
        print(f"{label:>24}: order {fit.p:.5f} [{fit.ci[0]:.5f}, {fit.ci[1]:.5f}], "
              f"{fit.n_points} pairs, rounds {fit.window[0]}..{fit.window[1] - 1}")
print(f"golden ratio {GOLDEN:.5f}; notebook ran in {time.perf_counter() - started:.1f} s")
