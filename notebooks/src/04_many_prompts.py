# %% [markdown]
# # Many prompts, activation caches and patching
#
# One prompt shows one set of trajectories; a claim about a layer needs many. This notebook
#
# 1. reads activations by name with `run_with_cache` (the residual stream, each mixer's u, Δ, B, C,
#    y, and the SSM state after chosen tokens);
# 2. runs `mamba_ode.analyze_many` on 50 prompts of the embedded model and plots, per layer, the
#    share of tokens per label, the blow-up times t* and how often the parameter-side predictions
#    agree with the trajectories — with bootstrap intervals over prompts;
# 3. patches one layer's step sizes Δ during the forward pass and shows how the labels of the later
#    layers change;
# 4. saves an analysis and loads it back.
#
# Token indices count from 0 throughout.

# %%
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import torch

import mamba_ode as mo
from mamba_ode.analysis.many_report import many_figures

model = mo.load()  # the embedded tiny-shakespeare model (4 layers, byte tokens)
K = model.config.n_layer

# %% [markdown]
# ## 1. Activations by name
#
# Every model has the same named points per layer: `layers.{k}.resid_pre`, `layers.{k}.mixer_in`,
# `layers.{k}.mixer.{conv,u,B,C,delta,z,y}`, `layers.{k}.mixer_out`, `layers.{k}.resid_post`.
# Names may be glob patterns. `states_at` adds the SSM state $h_q$ after chosen tokens q.

# %%
ids = model.encode("To be, or not to be")
out, cache = model.run_with_cache(ids, ["layers.1.mixer.*", "layers.*.resid_post"], states_at=[0, -1])
for name in ("layers.1.mixer.u", "layers.1.mixer.delta", "layers.1.mixer.B", "layers.1.mixer.state",
             "layers.3.resid_post"):
    print(f"{name:<24} {tuple(cache[name].shape)}")
# the last residual state is what the final norm and the head read
print("last residual state = x^K:", torch.equal(cache[f"layers.{K - 1}.resid_post"],
                                               model(ids, output_hidden_states=True).hidden_states[-1]))

# %% [markdown]
# ## 2. Fifty prompts
#
# Windows of 8 bytes from a passage the model was trained on. Each token of each layer is followed
# to its own event (as `mamba_ode.analyze` does) to t = 100; the regime table is computed once.

# %%
passage = ("To be, or not to be, that is the question: Whether 'tis nobler in the mind to suffer "
           "The slings and arrows of outrageous fortune, Or to take arms against a sea of troubles "
           "And by opposing end them. To die-to sleep, No more; and by a sleep to say we end "
           "The heart-ache and the thousand natural shocks That flesh is heir to")
prompts = [passage[i:i + 8] for i in range(0, len(passage) - 8, len(passage) // 50)][:50]
print(len(prompts), "prompts, e.g.", prompts[:4])
many = mo.analyze_many(model, prompts, t_max=100.0, n_boot=500)
print(f"{many.timings['prompts']:.1f} s")
for st in many.stats:
    fr = {lab: f"{iv.value:.2f} [{iv.low:.2f}, {iv.high:.2f}]" for lab, iv in st.label_fractions.items()
          if iv.value}
    print(f"layer {st.layer}: {st.n_tokens} tokens  {fr}  median t* {st.t_blowup_quantiles['q50']}")

# %%
figs = many_figures(many)
for fig in figs.values():
    fig.set_size_inches(8, 3.6)
plt.show()

# %% [markdown]
# ## 3. Patching Δ
#
# A hook may return a replacement for the activation it sees. Here layer 1's step sizes are
# multiplied by 5 during the forward pass: the tokens that layers 2 and 3 receive change, and so do
# their trajectories. (Each layer's own field is built from its weights, so the patch acts on the
# later layers' starting tokens.)

# %%
subset = prompts[:12]
before = mo.analyze_many(model, subset, layers=[2, 3], t_max=100.0, n_boot=200)
with model.hooks({"layers.1.mixer.delta": lambda delta, name: 5.0 * delta}):
    after = mo.analyze_many(model, subset, layers=[2, 3], t_max=100.0, n_boot=200)
for b, a in zip(before.stats, after.stats):
    fb = {k: round(v.value or 0, 2) for k, v in b.label_fractions.items() if v.value}
    fa = {k: round(v.value or 0, 2) for k, v in a.label_fractions.items() if v.value}
    print(f"layer {b.layer}: before {fb}\n         after  {fa}")
changed = sum(tb["label"] != ta["label"] for rb, ra in zip(before.results, after.results)
              for lb, la in zip(rb.layers, ra.layers) for tb, ta in zip(lb["tokens"], la["tokens"]))
print(f"{changed} of {2 * sum(len(r.ids) for r in before.results)} token labels changed")

# %% [markdown]
# ## 4. Save and reload
#
# `Analysis.save` keeps trajectories, per-token results and the summary; `mamba_ode.load_analysis`
# gives the same object back (the command `mamba-ode report DIR` renders its report).

# %%
single = mo.analyze(model, "To be, or not", layers=[0, 1], t_max=100.0)
with tempfile.TemporaryDirectory() as tmp:
    single.save(Path(tmp) / "saved")
    again = mo.load_analysis(Path(tmp) / "saved")
print("same summary after the round trip:", again.summary() == single.summary())
