# %% [markdown]
# # One-dimensional theory: the three regimes of S6 token dynamics
#
# With one channel (E = 1) the idealised S6 dynamics of the paper read
#
# $$\dot u_l = \mu\,u_l \sum_{j\le l} u_j^2\,\Delta(u_j)\,e^{-a\sum_{k=j+1}^{l}\Delta(u_k)},
# \qquad \Delta(u)=\mathrm{softplus}(s_\Delta u + b_\Delta),$$
#
# with $\mu = S_C^\top S_B$. The paper proves that the tokens either all converge to zero or all
# diverge, and that the parameters decide which. This notebook checks the three behaviours
# numerically with `mamba_ode`: $O(1/\sqrt t)$ convergence with the exact constant, finite-time
# blow-up at the time given by a quadrature, and logarithmic divergence.
#
# The formulas number tokens from 1 as the paper does ($u_1$ is the first token); the package's
# records, reports and array indices count from 0 (`u[..., 0, :]` is $u_1$).

# %%
import math

import matplotlib.pyplot as plt
import torch
from scipy.integrate import quad

import mamba_ode as mo
from mamba_ode import plots

torch.set_default_dtype(torch.float64)
u0 = torch.tensor([[[0.7], [-0.4], [0.9], [0.5]]])  # one sequence, L = 4 tokens, E = 1

# %% [markdown]
# ## 1. Convergence: μ < 0
#
# Every token keeps its sign and decays like $t^{-1/2}$; token 1 satisfies
# $u_1\sqrt t \to \mathrm{sign}(u_1(0))/\sqrt{2|\mu|\ln 2}$.

# %%
field = mo.OneDimField(mu=-1.0, s_delta=0.8, a=1.0)
t_eval = torch.logspace(-2, 6, 200)
sol = mo.solve(field, u0, (0.0, 1e6), t_eval=t_eval, log_time=True, rtol=1e-9, atol=1e-12)
print(sol)
print("u_1(1e6)·sqrt(1e6) =", float(sol.ys[-1, 0, 0, 0]) * 1e3, " theory:", 1 / math.sqrt(2 * math.log(2)))
plots.plot_trajectories(sol, title="μ = -1: every token decays like t^(-1/2)");

# %% [markdown]
# ## 2. Fast divergence: μ > 0 and s·u₁(0) > 0
#
# Token 1 blows up in finite time at $T^* = \int_{|u_1(0)|}^\infty \frac{dr}{\mu r^3\,\mathrm{softplus}(s r)}$.
# The solver reports the blow-up as a status with an estimated time — not as a crash.

# %%
mu, s, x0 = 1.0, 1.0, 0.5
T_star = quad(lambda r: 1 / (mu * r**3 * math.log1p(math.exp(s * r))), x0, math.inf)[0]
field = mo.OneDimField(mu=mu, s_delta=s, a=1.0)
sol = mo.solve(field, torch.tensor([[[x0], [0.3]]]), (0.0, 10.0))
print(sol.status[0], sol.messages[0])
print(f"blow-up time: solver {float(sol.t_blowup[0]):.7f}, quadrature {T_star:.7f}")
crit = mo.criteria_1d(mu, s, 1.0, [x0, 0.3])
print(crit)

# %% [markdown]
# ## 3. Slow divergence: μ > 0 and s·u₁(0) < 0
#
# No blow-up; for large $u$, $|s|u_1 - 3\ln u_1 \approx \ln(\mu|s|t)$: the growth is
# logarithmic in t. Log-time integration reaches $t = 10^{12}$ in a few hundred steps.

# %%
field = mo.OneDimField(mu=1.0, s_delta=-1.0, a=1.0)
t_eval = torch.logspace(0, 12, 100)
sol = mo.solve(field, torch.tensor([[[0.7], [0.2]]]), (0.0, 1e12), t_eval=t_eval, log_time=True,
               rtol=1e-9, atol=1e-12)
u1 = sol.ys[:, 0, 0, 0]
residual = u1 - 3 * torch.log(u1) - torch.log(t_eval)
print(sol.stats)
print("residual of the asymptote at t = 1e9, 1e12:", float(residual[74]), float(residual[-1]))
fig, ax = plt.subplots()
ax.semilogx(t_eval, u1, label="u_1(t)")
ax.semilogx(t_eval, torch.log(t_eval), "--", label="ln t")
ax.set_xlabel("t")
ax.legend();

# %% [markdown]
# ## 4. Classification from trajectories, checked against the criteria
#
# `classify_trajectory` labels each token from its own trajectory (fitted decay exponent, blow-up
# time, growth against ln t). `criteria_1d` predicts the label from the parameters.

# %%
print(mo.classify_trajectory(sol))

# %% [markdown]
# ## 5. Phase portrait and regime diagram
#
# Two tokens: the flow in the $(u_1, u_2)$ plane, then the regime of token 1 over $(\mu, s_\Delta)$
# with contours of the blow-up time.

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 4.5), layout="constrained")
plots.plot_phase_portrait(mo.OneDimField(mu=-1.0, s_delta=0.8), lim=1.5, ax=axes[0], title="μ = -1")
plots.plot_phase_portrait(mo.OneDimField(mu=1.0, s_delta=0.8), lim=1.5, ax=axes[1], title="μ = +1")
plots.plot_regime_diagram(torch.linspace(-2, 2, 41), torch.linspace(-3, 3, 41), u0=0.5);
