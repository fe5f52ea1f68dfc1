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
# # Orders of convergence: FedPM (K = 1), damped FedPM and FedNL
#
# With one local step FedPM is the global Newton step (claim C1), so near $\theta^\star$ it
# inherits Newton's quadratic rate for a $\mu$-strongly convex $f$ with $L_H$-Lipschitz
# Hessian (FedPM theorem; claim C2):
#
# $$e_{t+1} \le \frac{L_H}{2\mu}\, e_t^2, \qquad e_t = \|\theta^t - \theta^\star\| .$$
#
# A step size $\eta < 1$ keeps a fraction $1 - \eta$ of the Newton correction undone, so the
# damped method is linear, $e_{t+1} \approx (1 - \eta)\, e_t$ (claim C3). FedNL with identity
# compression steps with the Hessian of the previous round, $e_{t+1} \le c\, e_t\, e_{t-1}$,
# whose order $p$ solves $p^2 = p + 1$: the golden ratio $\varphi = 1.618$ (claim C9).
#
# The fits regress $\log e_{t+1}$ on $\log e_t$ (Q-order $p$ of $e_{t+1} = C e_t^p$) or
# $\log e_t$ on $t$ (ratio $q$) over the asymptotic window that
# `fedtheory.rates.asymptotic_window` picks: it drops the pre-asymptotic phase and every
# $e_t$ below the float floor $10^3\,\varepsilon \max(1, \|\theta^\star\|)$. Problem: a9a,
# FedNL split (80 clients x 407 rows, $\lambda = 10^{-3}$), $\theta^0 = 0$.
#
# **Run time** on 2 cores: small ~6 s, medium ~7 s, full ~6 s (wall clock, measured with
# `FEDTHEORY_SIZE=<size> OMP_NUM_THREADS=1 nice -n 10 jupyter execute --inplace` on a copy of this
# notebook, on the project's 2-core development VM (Intel Xeon, nproc 2) on 2026-12-01, load 2.71
# / 2.87 / 1.77 (small / medium / full); every run is listed in
# `benchmarks/results/notebook_times.txt`). `FEDTHEORY_SIZE=small|medium|full` picks the size
# (default full; see `notebooks/README.md`).

# %%
# %matplotlib inline
import math

import numpy as np
from matplotlib.figure import Figure

import fedtheory as ft
from fedtheory import plot, rates
from fedtheory.notebook_sizes import by_size, notebook_size
from fedtheory.suite import load_problem

SIZE = notebook_size()  # FEDTHEORY_SIZE=small|medium|full (FEDTHEORY_SMALL=1: small; CI)
# damped runs last until (1 - eta)^t falls below this (medium = full: the notebook takes seconds)
DAMPED_TO = by_size(small=1e-8, medium=1e-12, full=1e-12)
print(f"notebook size: {SIZE}")

problem = load_problem("a9a_fednl")
ref = problem.reference
scale = float(np.linalg.norm(ref.theta_star))
C = ref.L_H / (2 * ref.mu)
print(f"mu = {ref.mu:.3g}, L_H <= {ref.L_H:.3g}, L_H / (2 mu) = {C:.4g}, "
      f"||theta*|| = {scale:.4g}, float floor = {rates.default_floor(scale):.2e}")

# %% [markdown]
# ## FedPM, K = 1, eta = 1: quadratic
#
# The bars mark the bound $C e_t^2$, $C = L_H / (2\mu)$, drawn at round $t+1$ from the
# measured $e_t$: the curve must pass below each bar. With $\mu = \lambda$ the constant is
# large, so the bound only bites once $e_t < 1/C$; bars above the top of the axes are not
# shown. For the same reason the theorem's guaranteed sequence from $e_0$ is vacuous here:
# $C e_0 > 1$, so $C e_0^2$ lies above the axes from round 1 on and grows, and the legend
# says so instead of drawing it. Points below the dotted float floor are drawn on it.

# %%
fedpm = ft.run(problem, ft.make_method("fedpm", {"K": 1, "eta": 1.0}), rounds=12,
               drift_metrics=False)
e = fedpm["dist_to_opt"]
fit = rates.q_order(e, scale=scale)
sup = rates.superlinearity(e, scale=scale)
w0, w1 = fit.window
ratio = e[w0 + 1:w1] / (C * e[w0:w1 - 1] ** 2)
print("FedPM:", fit)
print("      ", sup)
print(f"       e_(t+1) / (C e_t^2) over the window: max {ratio.max():.2e} "
      f"(bound holds on every round: {bool((ratio <= 1).all())})")

# %%
fig, ax = plot.error_vs_round({"FedPM (K=1, eta=1)": fedpm}, fit="order", bound="quadratic",
                              title="FedPM, K = 1, on a9a (FedNL split)")
fig

# %% [markdown]
# ## FedNL, identity compressor: order tends to the golden ratio

# %%
fednl = ft.run(problem, ft.make_method("fednl", {"compressor": "identity"}), rounds=18,
               drift_metrics=False)
e_nl = fednl["dist_to_opt"]
fit_nl = rates.q_order(e_nl, scale=scale)
print("FedNL:", fit_nl, f"\n       golden ratio {(1 + math.sqrt(5)) / 2:.3f}")
print("      ", rates.superlinearity(e_nl, scale=scale))

# %% [markdown]
# Both orders in one picture: each point is a pair $(e_t, e_{t+1})$ of the window, so a
# Q-order $p$ is a line of slope $p$ on log-log axes. The dashed lines have the predicted
# slopes 2 and $\varphi$ through the first pair of each window, the dotted line is the
# quadratic bound $C e_t^2$.

# %%
fig = Figure(figsize=(7.5, 5), layout="constrained")
ax = fig.add_subplot()
phi = (1 + math.sqrt(5)) / 2
for (name, err, f, p, method) in (("FedPM (K=1)", e, fit, 2.0, "fedpm"),
                                  ("FedNL (identity)", e_nl, fit_nl, phi, "fednl")):
    color, marker = plot.METHOD_STYLES[method]["color"], plot.METHOD_STYLES[method]["marker"]
    x, y = err[f.window[0]:f.window[1] - 1], err[f.window[0] + 1:f.window[1]]
    ax.plot(x, y, marker, color=color, ms=7, label=f"{name}: fitted p = {f.p:.2f} "
            f"[{f.ci[0]:.2f}, {f.ci[1]:.2f}]")
    grid = np.geomspace(x.min(), x.max(), 50)
    ax.plot(grid, y[0] * (grid / x[0]) ** p, "--", color=color, lw=1.3,
            label=f"slope {p:.3g} (theory)")
lo = min(err[f.window[0]:f.window[1] - 1].min() for err, f in ((e, fit), (e_nl, fit_nl)))
grid = np.geomspace(lo, 1, 50)
ax.plot(grid, C * grid**2, ":", color="0.3", lw=1.5, label=f"bound $C e_t^2$, C = {C:.3g}")
ax.set(xscale="log", yscale="log", xlabel=r"$e_t = \|\theta^t - \theta^\star\|$",
       ylabel=r"$e_{t+1}$", title="Q-order: $e_{t+1}$ against $e_t$ over each fit window")
ax.set_ylim(top=10)
ax.grid(True, alpha=0.3)
ax.legend(loc="upper left", fontsize="small")
fig

# %% [markdown]
# ## Damped FedPM, eta < 1: linear with ratio 1 - eta
#
# Damped Newton is $e_{t+1} = (1 - \eta)\, e_t + O(\eta\, e_t^2)$: the ratio tends to
# $1 - \eta$ from above as $e_t \to 0$, so the runs are long enough for the quadratic term to
# die out. The dashed lines have slope $1 - \eta$ through each run's last fitted point; the
# colour of each run follows $\eta$ (viridis, dark = smallest).

# %%
damped = {}
for eta in (0.25, 0.5, 0.75):
    rounds = math.ceil(math.log(DAMPED_TO) / math.log(1 - eta))
    damped[eta] = ft.run(problem, ft.make_method("fedpm", {"K": 1, "eta": eta}),
                         rounds=rounds, drift_metrics=False)
    f = rates.linear_rate(damped[eta]["dist_to_opt"], scale=scale)
    print(f"eta = {eta}: {f}\n            predicted 1 - eta = {1 - eta}, "
          f"|q - (1 - eta)| = {abs(f.q - (1 - eta)):.3f} (C3 asks <= 0.05)")

# %%
fig, ax = plot.error_vs_round({f"FedPM (K=1, eta={eta})": tr for eta, tr in damped.items()},
                              fit="linear", title="damped FedPM on a9a (FedNL split)")
for eta, tr in damped.items():
    err = tr["dist_to_opt"]
    w0, w1 = rates.linear_rate(err, scale=scale).window
    t = np.arange(w0, w1)
    ax.plot(t, err[w1 - 1] * (1 - eta) ** (t - (w1 - 1)), "--", color="0.2", lw=1, zorder=5)
old = ax.get_legend()  # keep fedtheory.plot's entries (the colour note, the floor) and add
handles = [*old.legend_handles, ax.get_lines()[-1]]  # one of the (1 - eta)^t lines
labels = [*(t.get_text() for t in old.get_texts()), "$(1 - \\eta)^t$"]
ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False,
          fontsize="small", title=r"ratio $q$: $e_t = q^t e_0$ (95% CI)", title_fontsize="small")
fig
