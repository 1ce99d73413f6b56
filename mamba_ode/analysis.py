"""End-to-end analysis of one model on one prompt — what ``mamba-ode analyze`` computes.

:func:`analyze` chains the toolkit's pieces in the order of the data flow and keeps every
intermediate result in an :class:`Analysis`:

1. the prompt through the discrete network (:class:`mamba_ode.MambaLM`);
2. the regime table from the parameters (:func:`mamba_ode.regime_table`);
3. per analysed layer k, the idealised field ``du/dt = S6_θ(u)`` (:class:`mamba_ode.S6Field`)
   started from the prompt's real token states at layer k (:meth:`MambaLM.token_states`),
   integrated in log time (:func:`mamba_ode.solve`) and labelled per token
   (:func:`mamba_ode.classify_trajectory`);
4. the depth-time field of the whole network, Euler with step 1 (the network itself) against
   the adaptive solution (:func:`mamba_ode.compare_discrete`);
5. the hidden attention P of the first analysed layer (:func:`mamba_ode.hidden_attention`).

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

from .model import MambaLM

__all__ = ["LayerDynamics", "Analysis", "analyze", "DEFAULT_PROMPT", "agreement"]

DEFAULT_PROMPT = "To be, or not to be, that is the question."
_MAX_ATTENTION_TOKENS = 64


@dataclass
class LayerParams:
    """One layer's verdict from its parameters, the same for Mamba-1 and Mamba-2.

    Attributes:
        layer: index k.
        n_pos, n_neg, n_zero: eigenvalue counts of Sym(M) (Mamba-2: summed over the G groups'
            ``Sym(M_g)``, each Dm×Dm on the mixer input).
        label: ``positive semi-definite``, ``negative semi-definite``, ``indefinite`` or ``zero``
            (Mamba-2: the groups' common label, or ``indefinite`` when they differ in sign).
        eig_max, eig_min: extreme eigenvalues.
        eigenvalues: the ≤ 2N (per group) eigenvalues of the reduced problems; the rest are zero.
        fractions: Mamba-1: fraction of the E channels per 1-D regime of their reduction
            (convergent / static / divergent); Mamba-2: fraction of the H heads per sign of their
            group's quadratic form (positive / negative / indefinite / zero).
        heads: Mamba-2 only: one dict per head (the rows of :func:`mamba_ode.head_regime_table`).
    """

    layer: int
    n_pos: int
    n_neg: int
    n_zero: int
    label: str
    eig_max: float
    eig_min: float
    eigenvalues: list[float]
    fractions: dict[str, float]
    heads: list[dict] = field(default_factory=list)


def _layer_params(model: Any, table: Any) -> dict[int, LayerParams]:
    """Per-layer parameter verdicts from a regime table (Mamba-1 rows per layer, Mamba-2 rows per head)."""
    out: dict[int, LayerParams] = {}
    if not getattr(model, "is_mamba2", False):
        for r in table:
            out[r.layer] = LayerParams(r.layer, r.n_pos, r.n_neg, r.n_zero, r.label, r.eig_max, r.eig_min,
                                       list(r.eigenvalues), {"convergent": r.frac_convergent,
                                                             "static": r.frac_static, "divergent": r.frac_divergent})
        return out
    names = {"+": "positive", "-": "negative", "±": "indefinite", "0": "zero"}
    for k in range(len(model.layers)):
        rows = [r for r in table if r.layer == k]
        groups = {r.group: r for r in rows}  # heads of one group share its spectrum
        ev = [v for g in sorted(groups) for v in groups[g].eigenvalues]
        labels = {r.label for r in groups.values()}
        label = labels.pop() if len(labels) == 1 else "indefinite"
        fracs = {name: sum(r.sign == sg for r in rows) / len(rows) for sg, name in names.items()}
        out[k] = LayerParams(k, sum(r.n_pos for r in groups.values()), sum(r.n_neg for r in groups.values()),
                             sum(r.n_zero for r in groups.values()), label, max(r.eig_max for r in rows),
                             min(r.eig_min for r in rows), ev, fracs, [r.to_dict() for r in rows])
    return out


@dataclass
class LayerDynamics:
    """One layer's verdicts.

    Attributes:
        layer: index k.
        record: the layer's :class:`LayerParams`.
        solution: the :class:`mamba_ode.solve.Solution` of ``du/dt = S6_θ(u)`` from the prompt's
            token states, ys (T, 1, L, E).
        classification: :func:`mamba_ode.classify_trajectory` of that solution.
        token_labels: per token, its trajectory label (length L).
        quadratic_form: ``u_1ᵀ M u_1`` at t = 0 (Mamba-2: with the first group's ``M_0``).
    """

    layer: int
    record: LayerParams
    solution: Any
    classification: Any
    token_labels: list[str]
    quadratic_form: float

    @property
    def trajectory_regime(self) -> str:
        """The layer's verdict from its trajectories.

        One diverging token makes the layer divergent (``divergent-finite-time`` when a token blows
        up, else ``divergent``): once a token is unbounded the sequence is stopped, and the tokens
        after it, which depend on it, are left ``undetermined``. Otherwise ``convergent`` when every
        determined token converges, ``bounded`` when every determined token stays bounded, and
        ``undetermined`` when no token could be labelled.
        """
        labels = set(self.token_labels)
        for lab in ("divergent-finite-time", "divergent"):
            if lab in labels:
                return lab
        determined = labels - {"undetermined"}
        if not determined:
            return "undetermined"
        if determined == {"convergent"}:
            return "convergent"
        return "bounded"


def agreement(parameter_label: str, trajectory_regime: str) -> str:
    """How the parameter verdict and the trajectory verdict of one layer relate.

    A positive semi-definite Sym(M) predicts divergence and a negative semi-definite one
    convergence (SPEC §6, the paper's 2-D picture); an indefinite Sym(M) — the rule for real
    layers, where rank(M) ≤ N ≪ E — predicts nothing by itself.

    Arguments:
        parameter_label: the spectrum label of the layer.
        trajectory_regime: the layer's verdict from trajectories (:attr:`LayerDynamics.trajectory_regime`).

    Returns:
        ``"agree"``, ``"disagree"``, ``"no prediction (indefinite)"`` or ``"undetermined"``.
    """
    if trajectory_regime == "undetermined":
        return "undetermined"
    grows = trajectory_regime.startswith("divergent")
    if parameter_label.startswith("positive"):
        return "agree" if grows else "disagree"
    if parameter_label.startswith("negative"):
        return "agree" if trajectory_regime == "convergent" else "disagree"
    return "no prediction (indefinite)"


@dataclass
class Analysis:
    """Everything :func:`analyze` computed; :meth:`summary` gives the JSON-ready digest.

    Attributes:
        model_name: how the model was named (shipped name, path or Hub id).
        model: the :class:`MambaLM` or :class:`mamba_ode.Mamba2LM`.
        prompt: the prompt text (None when ids were given).
        input_ids: (1, L) ids.
        table: the regime table (all layers).
        spectra: per layer, ``{"layer": k, "eigenvalues": [...]}`` — the ≤ 2N eigenvalues of Sym(M)
            from the reduced problem (the rest are exactly zero).
        layer_params: per layer (all K), the :class:`LayerParams` verdict.
        layers: per analysed layer, a :class:`LayerDynamics`.
        comparison: discrete vs continuous depth-time trajectories.
        hidden_attention: (1, L', L', E) P of the first analysed layer at the first L' ≤ 64 tokens
            (Mamba-2: (1, L', L', H), one matrix per head).
        attention_channel: the channel (Mamba-2: head) drawn, the one with the largest |P|.
        settings: t_max, rtol, atol, method, dtype, device.
        timings: seconds per stage.
    """

    model_name: str
    model: MambaLM
    prompt: str | None
    input_ids: Tensor
    table: Any
    spectra: list[dict]
    layer_params: list[LayerParams]
    layers: list[LayerDynamics]
    comparison: Any
    hidden_attention: Tensor
    attention_channel: int
    settings: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)

    @property
    def is_mamba2(self) -> bool:
        """True for a Mamba-2 model."""
        return bool(getattr(self.model, "is_mamba2", False))

    def summary(self) -> dict:
        """The digest written to ``summary.json`` (schema in :mod:`mamba_ode.report`)."""
        cfg = self.model.config
        ck = self.model.checkpoint
        layers = []
        for lay in self.layers:
            rec = lay.record
            sol = lay.solution
            tb = float(sol.t_blowup[0])
            layers.append({
                "layer": lay.layer,
                "spectrum": {"n_positive": int(rec.n_pos), "n_negative": int(rec.n_neg),
                             "n_zero": int(rec.n_zero), "label": str(rec.label),
                             "max": _finite(rec.eig_max), "min": _finite(rec.eig_min)},
                "parameter_regime": str(rec.label),
                "channel_fractions": {str(k): float(v) for k, v in rec.fractions.items()},
                "heads": rec.heads,
                "trajectory": {"status": sol.status[0].value, "t_final": _finite(sol.t_final[0]),
                               "t_blowup": tb if math.isfinite(tb) else None, "labels": list(lay.token_labels),
                               "counts": dict(Counter(lay.token_labels))},
                "trajectory_regime": lay.trajectory_regime,
                "token1_quadratic_form": _finite(lay.quadratic_form),
                "agreement": agreement(str(rec.label), lay.trajectory_regime),
            })
        cmp_ = self.comparison
        # NaN after a failure of either trajectory: null in JSON, and the status says why
        err = [e if math.isfinite(e) else None for e in cmp_.rel_error[:, 0].tolist()]
        finite = [e for e in err if e is not None]
        return {
            "schema_version": 1,
            "model": {"name": self.model_name, "architecture": "mamba2" if self.is_mamba2 else "mamba",
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


def _finite(x: Any) -> float:
    """A float for JSON where a number must exist: ±inf is clamped to ±max float; NaN raises (a bug)."""
    v = float(x)
    if math.isnan(v):
        raise ValueError("analysis produced NaN where a number was expected")
    return max(min(v, 1.7976931348623157e308), -1.7976931348623157e308)


def analyze(model: MambaLM, prompt: str | list[int] | Tensor = DEFAULT_PROMPT, *,
            layers: Sequence[int] | None = None, t_max: float = 1e4, rtol: float = 1e-5, atol: float = 1e-8,
            method: str = "dopri5", blowup_factor: float = 10.0, max_steps: int = 5000,
            model_name: str | None = None,
            progress: Callable[[str], None] | None = None) -> Analysis:
    """Analyse a model's token dynamics on a prompt (the computation behind ``mamba-ode analyze``).

    Arguments:
        model: a loaded :class:`MambaLM` or :class:`mamba_ode.Mamba2LM` (Mamba-2: the idealised field
            is :class:`mamba_ode.Mamba2Field` on the mixer input, and the parameter verdicts are per head).
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
        TypeError: if model is not a MambaLM or Mamba2LM.
        ValueError: for a bad prompt, layer index or t_max ≤ 0.
    """
    from .compare import compare_discrete
    from .fields import DepthField, S6Field, hidden_attention
    from .regimes import classify_trajectory, regime_table
    from .solve import solve

    is2 = bool(getattr(model, "is_mamba2", False))
    if not (isinstance(model, MambaLM) or is2):
        raise TypeError(f"argument 'model' must be a mamba_ode.MambaLM or Mamba2LM, got {type(model).__name__}")
    if not (isinstance(t_max, (int, float)) and math.isfinite(t_max) and t_max > 0):
        raise ValueError(f"argument 't_max' must be a finite number > 0, got {t_max!r}")
    K = model.config.n_layer
    if layers is None:
        layers = list(range(K))
    chosen: list[int] = []
    for k in layers:
        if not isinstance(k, int) or not -K <= k < K:
            raise ValueError(f"argument 'layers': layer index {k!r} outside [{-K}, {K}) for a {K}-layer model")
        if k % K not in chosen:
            chosen.append(k % K)
    say = progress or (lambda msg: None)
    timings: dict[str, float] = {}
    ids = model.encode(prompt)[:1]
    text = prompt if isinstance(prompt, str) else None

    t0 = time.perf_counter()
    say("regime table from parameters")
    table = regime_table(model)
    records = _layer_params(model, table)
    spectra = [{"layer": k, "eigenvalues": records[k].eigenvalues} for k in range(K)]
    timings["regime_table"] = time.perf_counter() - t0

    if is2:
        from .mamba2 import Mamba2Field

        def field_of(k: int) -> Any:
            return Mamba2Field.from_layer(model, k)

        def start_of(k: int) -> Tensor:  # the mixer input Norm_k(x^k), (1, L, Dm)
            return model.token_states(ids, k).detach().double()

        def quadratic_form(fieldk: Any, u1: Tensor) -> float:
            p = fieldk.params
            return float((p.S_C[0].to(u1.dtype) @ u1) @ (p.S_B[0].to(u1.dtype) @ u1))
    else:
        with torch.no_grad():
            out = model(ids, internals=chosen)
        s6_inputs = {k: out.internals[k].u.detach().double() for k in chosen}

        def field_of(k: int) -> Any:
            return S6Field.from_layer(model, k)

        def start_of(k: int) -> Tensor:  # the S6 input of layer k, (1, L, E)
            return s6_inputs[k]

        def quadratic_form(fieldk: Any, u1: Tensor) -> float:
            p = fieldk.params_like(u1[None, None])
            return float((p.S_C @ u1) @ (p.S_B @ u1))

    results: list[LayerDynamics] = []
    t_eval = torch.cat([torch.zeros(1), torch.logspace(-3, math.log10(t_max), 60)]).double()
    t0 = time.perf_counter()
    states = {}
    for k in chosen:
        say(f"layer {k}: integrating the idealised layer dynamics to t = {t_max:g}")
        fieldk = field_of(k)
        u0 = states[k] = start_of(k)
        sol = solve(fieldk, u0, (0.0, float(t_max)), t_eval=t_eval, method=method, rtol=rtol, atol=atol,
                    log_time=True, blowup_threshold=blowup_factor * float(u0.abs().max()), max_steps=max_steps)
        cls = classify_trajectory(sol)
        labels = _token_labels(cls, u0.shape[1])
        results.append(LayerDynamics(k, records[k], sol, cls, labels, quadratic_form(fieldk, u0[0, 0])))
    timings["trajectories"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    say("discrete network vs depth-time ODE")
    depth = DepthField(model)
    x0 = depth.initial_state(ids).detach()
    comparison = compare_discrete(depth, x0, (0.0, float(K)), h=1.0, rtol=rtol, atol=atol, method=method)
    timings["comparison"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    k0 = chosen[0]
    u_att = states[k0][:, :_MAX_ATTENTION_TOKENS]
    fk = field_of(k0)
    if is2:
        _, delta, Bm, Cm = fk.selective(u_att)
        P = fk.params.token_mixing_matrix(delta, Bm, Cm).permute(0, 2, 3, 1)  # (1, L, L, H)
    else:
        P = hidden_attention(fk.params_like(u_att), u_att)
    channel = int(P.abs().amax(dim=(0, 1, 2)).argmax())
    timings["hidden_attention"] = time.perf_counter() - t0

    settings = {"layers": chosen, "t_max": float(t_max), "rtol": rtol, "atol": atol, "method": method,
                "blowup_factor": float(blowup_factor), "max_steps": int(max_steps),
                "dtype": "float64", "device": str(ids.device)}
    name = model_name or (str(model.checkpoint.source) if model.checkpoint else "in-memory model")
    return Analysis(name, model, text, ids, table, spectra, [records[k] for k in range(K)], results, comparison, P,
                    channel, settings, timings)


def _token_labels(classification: Any, L: int) -> list[str]:
    """Per-token labels of sequence 0 from a classify_trajectory result."""
    out = [str(lab) for lab in classification.labels[0]]
    if len(out) != L:
        raise ValueError(f"classification has {len(out)} labels for {L} tokens")
    return out
