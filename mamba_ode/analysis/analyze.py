"""End-to-end analysis of one model on one prompt — what ``mamba-ode analyze`` computes.

:func:`analyze` chains the toolkit's pieces in the order of the data flow and keeps every
intermediate result in an :class:`Analysis`:

1. the regime table from the parameters (:func:`mamba_ode.regime_table`: one verdict per layer,
   or per head for Mamba-2);
2. the prompt through the discrete network, up to the tokens each analysed layer's idealised field
   starts from (``model.field_starts``);
3. per analysed layer k, the idealised field (:func:`mamba_ode.layer_field`) integrated in log time
   (:func:`mamba_ode.solve`) and labelled per token (:func:`mamba_ode.classify_trajectory`);
4. the depth-time field of the whole network, Euler with step 1 (the network itself) against
   the adaptive solution (:func:`mamba_ode.compare_discrete`);
5. the token-mixing ("hidden attention") matrix of the first analysed layer.

The model is used only through the interface every LM shares (``layer_params``, ``field_starts``,
the parameters' ``quadratic_form`` and ``mixing_matrix``): nothing here depends on the generation.
No new numerics live here. Shape letters as in :mod:`mamba_ode.shapes`.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ..dynamics.compare import DiscreteComparison, compare_discrete
from ..dynamics.fields import DepthField, layer_field
from ..dynamics.solvers import Solution, solve
from ..nn.lm import MambaLMBase
from ..regimes.classify import TrajectoryClassification, classify_trajectory
from ..regimes.labels import Definiteness, Label
from ..regimes.table import RegimeTable, Verdict, layer_fractions, layer_spectrum, regime_table

__all__ = ["LayerDynamics", "Analysis", "analyze", "DEFAULT_PROMPT", "agreement"]

DEFAULT_PROMPT = "To be, or not to be, that is the question."
_MAX_ATTENTION_TOKENS = 64


@dataclass
class LayerDynamics:
    """One analysed layer: its verdicts from parameters and its integrated trajectories.

    Attributes:
        layer: index k.
        verdicts: the layer's :class:`Verdict` records (one for Mamba-1, one per head for Mamba-2).
        solution: the :class:`mamba_ode.Solution` of the layer's idealised field from the prompt's
            token states, ys (T, 1, L, width).
        classification: :func:`mamba_ode.classify_trajectory` of that solution.
        token_labels: per token, its trajectory label (length L).
        quadratic_form: ``u_1ᵀ M u_1`` at t = 0 (Mamba-2: with the first group's ``M_0``).
    """

    layer: int
    verdicts: list[Verdict]
    solution: Solution
    classification: TrajectoryClassification
    token_labels: list[Label]
    quadratic_form: float

    @property
    def spectrum(self) -> dict[str, Any]:
        """The layer's spectrum of Sym(M) (see :func:`mamba_ode.regimes.table.layer_spectrum`)."""
        return layer_spectrum(self.verdicts)

    @property
    def label(self) -> Definiteness:
        """The definiteness of the layer's Sym(M) (Mamba-2: the groups' common one, else indefinite)."""
        return self.spectrum["label"]

    @property
    def trajectory_regime(self) -> Label:
        """The layer's verdict from its trajectories.

        One diverging token makes the layer divergent (``divergent-finite-time`` when a token blows
        up, else ``divergent``): once a token is unbounded the sequence is stopped, and the tokens
        after it, which depend on it, are left ``undetermined``. Otherwise ``convergent`` when every
        determined token converges, ``bounded`` when every determined token stays bounded, and
        ``undetermined`` when no token could be labelled.
        """
        labels = set(self.token_labels)
        for lab in (Label.FINITE, Label.DIVERGENT):
            if lab in labels:
                return lab
        determined = labels - {Label.UNDETERMINED}
        if not determined:
            return Label.UNDETERMINED
        if determined == {Label.CONVERGENT}:
            return Label.CONVERGENT
        return Label.BOUNDED


def agreement(parameter_label: str, trajectory_regime: str) -> str:
    """How the parameter verdict and the trajectory verdict of one layer relate.

    A positive semi-definite Sym(M) predicts divergence and a negative semi-definite one
    convergence (the paper's 2-D picture); an indefinite Sym(M) — the rule for real layers, where
    rank(M) ≤ N ≪ E — predicts nothing by itself.

    Arguments:
        parameter_label: the spectrum label of the layer.
        trajectory_regime: the layer's verdict from trajectories (:attr:`LayerDynamics.trajectory_regime`).

    Returns:
        ``"agree"``, ``"disagree"``, ``"no prediction (indefinite)"`` or ``"undetermined"``.
    """
    if trajectory_regime == Label.UNDETERMINED:
        return "undetermined"
    grows = str(trajectory_regime).startswith("divergent")
    if str(parameter_label).startswith("positive"):
        return "agree" if grows else "disagree"
    if str(parameter_label).startswith("negative"):
        return "agree" if trajectory_regime == Label.CONVERGENT else "disagree"
    return "no prediction (indefinite)"


def _finite(x: Any) -> float:
    """A float for JSON where a number must exist: ±inf is clamped to ±max float; NaN raises (a bug)."""
    v = float(x)
    if math.isnan(v):
        raise ValueError("analysis produced NaN where a number was expected")
    return max(min(v, 1.7976931348623157e308), -1.7976931348623157e308)


@dataclass
class Analysis:
    """Everything :func:`analyze` computed; :meth:`summary` gives the JSON-ready digest.

    Attributes:
        model_name: how the model was named (shipped name, path or Hub id).
        model: the model (either generation).
        prompt: the prompt text (None when ids were given).
        input_ids: (1, L) ids.
        table: the regime table (all layers): one :class:`Verdict` per layer, or per layer and head.
        spectra: per layer, ``{"layer": k, "eigenvalues": [...]}`` — the ≤ 2N eigenvalues (per group) of
            Sym(M) from the reduced problem (the rest are exactly zero).
        layers: per analysed layer, a :class:`LayerDynamics`.
        comparison: discrete vs continuous depth-time trajectories.
        hidden_attention: (1, L', L', C) the token-mixing matrix of the first analysed layer at the first
            L' ≤ 64 tokens; C = E channels (Mamba-1) or H heads (Mamba-2).
        attention_channel: the channel (Mamba-2: head) drawn, the one with the largest |P|.
        settings: t_max, rtol, atol, method, dtype, device.
        timings: seconds per stage.
    """

    model_name: str
    model: MambaLMBase
    prompt: str | None
    input_ids: Tensor
    table: RegimeTable
    spectra: list[dict]
    layers: list[LayerDynamics]
    comparison: DiscreteComparison
    hidden_attention: Tensor
    attention_channel: int
    settings: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)

    @property
    def architecture(self) -> str:
        """``"mamba"`` or ``"mamba2"``."""
        return self.model.architecture

    def layer_records(self) -> list[dict[str, Any]]:
        """Per layer (all K), ``{"layer", "channel_fractions"}`` for the regime map."""
        return [{"layer": k, "channel_fractions": layer_fractions(self.table.layer(k))}
                for k in range(self.model.config.n_layer)]

    def summary(self) -> dict:
        """The digest written to ``summary.json`` (schema in :mod:`mamba_ode.analysis.report`)."""
        cfg = self.model.config
        ck = self.model.checkpoint
        layers = [_layer_summary(lay) for lay in self.layers]
        cmp_ = self.comparison
        # NaN after a failure of either trajectory: null in JSON, and the status says why
        err = [e if math.isfinite(e) else None for e in cmp_.rel_error[:, 0].tolist()]
        finite = [e for e in err if e is not None]
        return {
            "schema_version": 1,
            "model": {"name": self.model_name, "architecture": self.architecture,
                      "source": str(ck.source) if ck else None,
                      "layout": ck.layout if ck else "in-memory", "d_model": cfg.d_model, "n_layer": cfg.n_layer,
                      "d_inner": cfg.d_inner, "d_state": cfg.d_state, "dt_rank": getattr(cfg, "dt_rank", None),
                      "n_heads": getattr(cfg, "n_heads", None), "n_groups": getattr(cfg, "ngroups", 1)},
            "prompt": {"text": self.prompt, "n_tokens": int(self.input_ids.shape[-1])},
            "settings": dict(self.settings),
            "layers": layers,
            "comparison": {"h": float(cmp_.h), "times": [float(t) for t in cmp_.ts.tolist()],
                           "relative_error": err, "max_relative_error": max(finite) if finite else None,
                           "status": cmp_.ode_solution.status[0].value, "message": cmp_.ode_solution.messages[0]},
            "figures": {},
            "timings": {k: round(float(v), 4) for k, v in self.timings.items()},
        }


def _layer_summary(lay: LayerDynamics) -> dict[str, Any]:
    spec = lay.spectrum
    sol = lay.solution
    tb = float(sol.t_blowup[0])
    return {
        "layer": lay.layer,
        "spectrum": {"n_positive": int(spec["n_pos"]), "n_negative": int(spec["n_neg"]),
                     "n_zero": int(spec["n_zero"]), "label": str(spec["label"]),
                     "max": _finite(spec["eig_max"]), "min": _finite(spec["eig_min"])},
        "parameter_regime": str(spec["label"]),
        "channel_fractions": {str(k): float(v) for k, v in layer_fractions(lay.verdicts).items()},
        "heads": [v.to_dict() for v in lay.verdicts if v.head is not None],
        "trajectory": {"status": sol.status[0].value, "t_final": _finite(sol.t_final[0]),
                       "t_blowup": tb if math.isfinite(tb) else None, "labels": [str(x) for x in lay.token_labels],
                       "counts": {str(k): v for k, v in Counter(lay.token_labels).items()}},
        "trajectory_regime": str(lay.trajectory_regime),
        "token1_quadratic_form": _finite(lay.quadratic_form),
        "agreement": agreement(str(spec["label"]), lay.trajectory_regime),
    }


def _chosen_layers(layers: Sequence[int] | None, K: int) -> list[int]:
    if layers is None:
        return list(range(K))
    chosen: list[int] = []
    for k in layers:
        if isinstance(k, bool) or not isinstance(k, int) or not -K <= k < K:
            raise ValueError(f"argument 'layers': layer index {k!r} outside [{-K}, {K}) for a {K}-layer model")
        if k % K not in chosen:
            chosen.append(k % K)
    return chosen


# long function: over 80 lines with its docstring, which documents every argument
def analyze(model: MambaLMBase, prompt: str | list[int] | Tensor = DEFAULT_PROMPT, *,
            layers: Sequence[int] | None = None, t_max: float = 1e4, rtol: float = 1e-5, atol: float = 1e-8,
            method: str = "dopri5", blowup_factor: float = 10.0, max_steps: int = 5000,
            model_name: str | None = None,
            progress: Callable[[str], None] | None = None) -> Analysis:
    """Analyse a model's token dynamics on a prompt (the computation behind ``mamba-ode analyze``).

    Arguments:
        model: a loaded model of either generation (Mamba-2: the idealised field is
            :class:`mamba_ode.Mamba2Field` on the mixer input, and the parameter verdicts are per head).
        prompt: text (needs ``model.tokenizer``), a list of ids or an id tensor (L,) / (1, L).
        layers: layer indices to integrate (default: all; negative indices count from the end).
        t_max: end time of the idealised S6 trajectories (integrated in log time).
        rtol, atol: solver tolerances.
        method: torchdiffeq method name.
        blowup_factor: a layer's trajectory is stopped as divergent once max|u| exceeds this multiple
            of its initial max|u| (growing tokens make the field stiff: an explicit solver would
            otherwise spend thousands of steps per layer).
        max_steps: step budget per layer; a trajectory that exhausts it is labelled undetermined.
        model_name: name recorded in the summary (default: the checkpoint source).
        progress: called with a short message before each stage (the CLI prints it).

    Returns:
        :class:`Analysis`.

    Raises:
        TypeError: if model is not a mamba_ode model.
        ValueError: for a bad prompt, layer index or t_max ≤ 0.
    """
    if not isinstance(model, MambaLMBase):
        raise TypeError(f"argument 'model' must be a mamba_ode.MambaLM or Mamba2LM, got {type(model).__name__}")
    if not (isinstance(t_max, (int, float)) and math.isfinite(t_max) and t_max > 0):
        raise ValueError(f"argument 't_max' must be a finite number > 0, got {t_max!r}")
    K = model.config.n_layer
    chosen = _chosen_layers(layers, K)
    say = progress or (lambda msg: None)
    timings: dict[str, float] = {}
    ids = model.encode(prompt)[:1]
    text = prompt if isinstance(prompt, str) else None

    t0 = time.perf_counter()
    say("regime table from parameters")
    table = regime_table(model)
    spectra = [{"layer": k, "eigenvalues": layer_spectrum(table.layer(k))["eigenvalues"]} for k in range(K)]
    timings["regime_table"] = time.perf_counter() - t0

    results: list[LayerDynamics] = []
    t_eval = torch.cat([torch.zeros(1), torch.logspace(-3, math.log10(t_max), 60)]).double()
    t0 = time.perf_counter()
    states = {k: u.detach().double() for k, u in model.field_starts(ids, chosen).items()}
    for k in chosen:
        say(f"layer {k}: integrating the idealised layer dynamics to t = {t_max:g}")
        fieldk = layer_field(model, k)
        u0 = states[k]
        sol = solve(fieldk, u0, (0.0, float(t_max)), t_eval=t_eval, method=method, rtol=rtol, atol=atol,
                    log_time=True, blowup_threshold=blowup_factor * float(u0.abs().max()), max_steps=max_steps)
        cls = classify_trajectory(sol)
        with torch.no_grad():
            q = float(model.layer_params(k).quadratic_form(u0[0, 0])[0])
        results.append(LayerDynamics(k, table.layer(k), sol, cls, list(cls.labels[0]), q))
    timings["trajectories"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    say("discrete network vs depth-time ODE")
    depth = DepthField(model)
    x0 = depth.initial_state(ids).detach()
    comparison = compare_discrete(depth, x0, (0.0, float(K)), h=1.0, rtol=rtol, atol=atol, method=method)
    timings["comparison"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    k0 = chosen[0]
    with torch.no_grad():
        P = model.layer_params(k0).mixing_matrix(states[k0][:, :_MAX_ATTENTION_TOKENS])  # (1, L', L', C)
    channel = int(P.abs().amax(dim=(0, 1, 2)).argmax())
    timings["hidden_attention"] = time.perf_counter() - t0

    settings = {"layers": chosen, "t_max": float(t_max), "rtol": rtol, "atol": atol, "method": method,
                "blowup_factor": float(blowup_factor), "max_steps": int(max_steps),
                "dtype": "float64", "device": str(ids.device)}
    name = model_name or (str(model.checkpoint.source) if model.checkpoint else "in-memory model")
    return Analysis(name, model, text, ids, table, spectra, results, comparison, P, channel, settings, timings)
