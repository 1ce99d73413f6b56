# %% [markdown]
# # A pretrained model end to end
#
# Load the embedded model (a small byte-level Mamba trained on Shakespeare, shipped inside the
# package), classify its layers from their parameters, integrate the idealised dynamics of each
# layer from the prompt's real token states, and compare the discrete network with its
# continuous-time limit. Every step works the same on `state-spaces/mamba-130m-hf` when it is in
# your Hugging Face cache: `mo.load("state-spaces/mamba-130m-hf")`.

# %%
import tempfile

import matplotlib.pyplot as plt
import torch

import mamba_ode as mo
from mamba_ode import plots
from mamba_ode.analysis import agreement

model = mo.load()  # the embedded default, "tiny-shakespeare"
print(model.config)
prompt = "To be, or not to be, that is the question."
ids = model.encode(prompt)
print(ids.shape, repr(model.tokenizer.decode(ids[0].tolist())))

# %% [markdown]
# ## 1. Regimes from the parameters
#
# For each layer: the non-zero spectrum of $\mathrm{Sym}(M)$, $M = S_C^\top S_B$, computed from the
# low-rank factors, and the per-channel one-dimensional reductions $(\mu_d, s_d, b_d, a_d)$.

# %%
table = mo.regime_table(model)
print(table)
fig, axes = plt.subplots(1, 2, figsize=(12, 4), layout="constrained")
plots.plot_spectrum(table, ax=axes[0])  # each record carries the ≤ 2N eigenvalues of its reduced problem
plots.plot_regime_map(table, ax=axes[1]);

# %% [markdown]
# ## 2. Hidden attention
#
# The idealised S6 layer mixes tokens through $y_l = \sum_{j \le l} P_{lj} u_j$. Here is $P$ for
# layer 0 at the prompt's tokens, for the channel with the largest entries.

# %%
u0 = model.token_states(prompt, 0).double()        # (1, L, E): the S6 input of layer 0
field = mo.S6Field.from_layer(model, 0)
P = field.hidden_attention(u0)                      # (1, L, L, E)
channel = int(P.abs().amax(dim=(0, 1, 2)).argmax())
plots.plot_hidden_attention(P, channel=channel);
# the scan and the explicit matrix agree
print("scan vs matrix form:", float((field(0.0, u0) - field.matrix_form()(0.0, u0)).abs().max()))

# %% [markdown]
# ## 3. Token trajectories of each layer's idealised dynamics
#
# $du/dt = S6_\theta(u)$ with the layer's parameters shared across depth, from the real tokens,
# integrated in log time by `mo.integrate_tokens`: every token is followed to its own event. Token
# $l$'s field depends only on tokens $\le l$, so when a token blows up (its own $t^*$, read where its
# norm has grown $10^8$-fold) the tokens before it keep going; the tokens after it depend on it and
# are left undetermined with that reason (unless they were driven to the same singularity). Labels
# and $t^*$ do not depend on the horizon: output times are only for drawing.
# `mo.analyze` does this for every layer (plus everything else in this notebook) and keeps each result.

# %%
analysis = mo.analyze(model, prompt, t_max=1e3)
n_cols = 2  # two panels per row: each stays readable at the width of a page
n_rows = -(-model.config.n_layer // n_cols)
fig, axes = plt.subplots(n_rows, n_cols, figsize=(10, 4 * n_rows), layout="constrained", squeeze=False)
for ax in axes.flat[model.config.n_layer:]:
    ax.set_visible(False)
for lay, ax in zip(analysis.layers, axes.flat):
    plots.plot_token_trajectories(lay.solution, lay.token_labels, ax=ax,
                                  title=f"layer {lay.layer}: mostly {lay.trajectory_regime}")
    counts = {k: v for k, v in lay.classification.counts().items() if v}
    print(f"layer {lay.layer}: {lay.label:>24}  u0ᵀMu0 = {lay.quadratic_form:+.3f}  labels {counts}")
first = analysis.layers[0]
for v in first.classification.tokens[:4]:
    print(f"token {v.index}: {v.label} — {v.reason}")

# %% [markdown]
# Each token also gets a prediction from the parameters: a *theorem* where the theory decides it
# (one channel, an isotropic layer, token 0 when Δ is the same in every channel, a definite layer's
# token 0), otherwise an *indicator* (the sign of $u_0^\top M u_0$, or the initial direction
# $\langle u_l, f_l\rangle$). How often each kind agrees with the integrated labels, per layer:

# %%
for lay in analysis.layers:
    print(f"layer {lay.layer}: {agreement(lay.agreement)}")
print(first.predictions[1].reason)

# %% [markdown]
# ## 4. The discrete network is Euler with step 1
#
# The depth-time field $dx/dt = \mathrm{Mixer}_{\lfloor t\rfloor}(\mathrm{Norm}_{\lfloor t\rfloor}(x))$:
# Euler with $h = 1$ reproduces the pretrained residual stream; the adaptive solution of the same
# field is the continuous limit.

# %%
depth = mo.DepthField(model)
x0 = depth.initial_state(ids)
cmp_ = mo.compare_discrete(depth, x0, (0.0, float(model.config.n_layer)), h=1.0)
with torch.no_grad():
    out = model(ids, output_hidden_states=True)
print("Euler h=1 vs the network's hidden states:",
      max(float((cmp_.discrete[k] - out.hidden_states[k]).abs().max()) for k in range(model.config.n_layer + 1)))
print("relative distance network vs ODE per depth:", [f"{e:.3f}" for e in cmp_.rel_error[:, 0].tolist()])
plots.plot_comparison(cmp_);

# %% [markdown]
# ## 5. The report
#
# `mamba-ode analyze` writes the same analysis as a self-contained HTML page, a `summary.json`
# and the figures.

# %%
from mamba_ode import write_report

with tempfile.TemporaryDirectory() as d:
    page = write_report(analysis, d)
    print(page.name, page.stat().st_size // 1024, "kB")
for rec in analysis.summary()["layers"]:
    print(rec["layer"], rec["parameter_regime"], "|", rec["trajectory_regime"], "|", rec["agreement"])

# %% [markdown]
# ## 6. Mamba-2
#
# Mamba-2 has one scalar decay per head, so the scalar-A token-mixing matrix is exact per head
# The same calls work on a Mamba-2 checkpoint (transformers or mamba-ssm layout); the
# parameter verdicts are per head, with the input–output matrix $M_g = S_C^{g\top} S_B^g$ of each
# group defined on the mixer input (convolution and SiLU set aside). Here a small randomly
# initialised Mamba-2 model, saved and loaded back like any checkpoint:

# %%
cfg2 = mo.Mamba2Config(d_model=32, n_layer=2, vocab_size=256, d_state=8, headdim=16, ngroups=2)
torch.manual_seed(0)
with tempfile.TemporaryDirectory() as d:
    mo.Mamba2LM(cfg2).save_pretrained(d)
    model2 = mo.load(d)
print(mo.regime_table(model2))
analysis2 = mo.analyze(model2, list(range(60, 80)), t_max=1e3, model_name="random Mamba-2")
for rec in analysis2.summary()["layers"]:
    print(rec["layer"], rec["parameter_regime"], rec["channel_fractions"], "|", rec["trajectory_regime"])
plots.plot_hidden_attention(analysis2.hidden_attention, channel=analysis2.attention_channel,
                            title=f"Mamba-2 layer 0, head {analysis2.attention_channel}");
