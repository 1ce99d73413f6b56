"""End-to-end analysis of one model on one prompt — what ``mamba-ode analyze`` computes.

`analyze` chains the toolkit's pieces in the order of the data flow and keeps every
intermediate result in an `Analysis`:

1. the regime table from the parameters (`mamba_ode.regime_table`: one verdict per layer,
   or per head for Mamba-2);
2. the prompt through the discrete network, up to the tokens each analysed layer's idealised field
   starts from (``model.field_starts``);
3. per analysed layer k, the idealised field (`mamba_ode.layer_field`) integrated in log time
   (`mamba_ode.solve`) and labelled per token (`mamba_ode.classify_trajectory`);
4. the depth-time field of the whole network, Euler with step 1 (the network itself) against
   the adaptive solution (`mamba_ode.compare_discrete`);
5. the token-mixing ("hidden attention") matrix of the first analysed layer.

The model is used only through the interface every LM shares (``layer_params``, ``field_starts``,
the parameters' ``quadratic_form`` and ``mixing_matrix``): nothing here depends on the generation.
No new numerics live here. Shape letters as in `mamba_ode.shapes`.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .._checks import layer_index
from ..dynamics.compare import DiscreteComparison, compare_discrete
from ..dynamics.fields import DepthField, layer_field
from ..dynamics.tokens import TokenSolution
from ..nn.lm import MambaLMBase
from ..nn.scan import BACKENDS, check_backend
from ..regimes.labels import Definiteness, Label
from ..regimes.predict import TokenPrediction, predict_tokens, prediction_agreement
from ..regimes.table import RegimeTable, Verdict, layer_fractions, layer_spectrum, regime_table
from ..regimes.tokens import TokenClassification, classify_tokens
from .budget import ATTENTION_TOKENS, DEFAULT_MAX_TOKENS, check_prompt_budget
from .parallel import integrate_layers, own_threads, plan_workers
from .store import SavedModel, read_saved, write_saved
from .summary import SCHEMA_VERSION

__all__ = ["LayerDynamics", "Analysis", "analyze", "load_analysis", "check_settings", "DEFAULT_PROMPT", "agreement",
           "regime_of_labels", "token_pieces"]

DEFAULT_PROMPT = "To be, or not to be, that is the question."


@dataclass
class LayerDynamics:
    """One analysed layer: its verdicts from parameters, its tokens' integrated outcomes and predictions.

    Attributes:
        layer: index k.
        verdicts: the layer's `Verdict` records (one for Mamba-1, one per head for Mamba-2).
        solution: the `TokenSolution` of the layer's idealised field from
            the prompt's token states (per-token events, norms at the solver's steps).
        classification: the per-token labels (`mamba_ode.classify_tokens`).
        predictions: per token, the parameter-side prediction (theorem or indicator).
        agreement: per kind of prediction, how often it agrees with the integrated labels.
        quadratic_form: ``u_0ᵀ M u_0`` of token 0 (the first) at t = 0 (Mamba-2: with the first group's
            ``M_0``).
    """

    layer: int
    verdicts: list[Verdict]
    solution: TokenSolution
    classification: TokenClassification
    predictions: list[TokenPrediction]
    agreement: dict[str, dict]
    quadratic_form: float

    @property
    def spectrum(self) -> dict[str, Any]:
        """The layer's spectrum of Sym(M) (see `mamba_ode.regimes.table.layer_spectrum`)."""
        return layer_spectrum(self.verdicts)

    @property
    def label(self) -> Definiteness:
        """The definiteness of the layer's Sym(M) (Mamba-2: the groups' common one, else indefinite)."""
        return self.spectrum["label"]

    @property
    def token_labels(self) -> list[Label]:
        """Per token, its integrated label."""
        return self.classification.labels

    @property
    def trajectory_regime(self) -> Label:
        """The layer's summary from its tokens: the most frequent decided label (ties towards divergence),
        ``undetermined`` when no token was decided."""
        return regime_of_labels(self.token_labels)


def regime_of_labels(labels: Sequence[Label | str]) -> Label:
    """The most frequent decided label (ties towards divergence); ``undetermined`` when none is decided.

    Arguments:
        labels: per-token trajectory labels.

    Returns:
        A `Label`.
    """
    order = [Label.FINITE, Label.DIVERGENT, Label.BOUNDED, Label.CONVERGENT]
    counts = Counter(Label(x) for x in labels if Label(x) != Label.UNDETERMINED)
    if not counts:
        return Label.UNDETERMINED
    return max(order, key=lambda lab: (counts.get(lab, 0), -order.index(lab)))


def agreement(stats: dict[str, dict]) -> str:
    """One line on how the per-token predictions of a layer relate to its integrated labels.

    Arguments:
        stats: `mamba_ode.regimes.predict.prediction_agreement` of the layer.

    Returns:
        e.g. ``"theorem 1/1 agree; indicator 30/41 agree (11 disagree)"``, or ``"no prediction"``.
    """
    parts = []
    for kind in ("theorem", "indicator"):
        st = stats.get(kind, {})
        n_cmp = st.get("agree", 0) + st.get("disagree", 0)
        if st.get("n", 0) == 0:
            continue
        text = f"{kind} {st['agree']}/{n_cmp} agree" if n_cmp else f"{kind}: {st['n']} predicted, none decided"
        if st.get("disagree"):
            text += f" ({st['disagree']} disagree)"
        parts.append(text)
    return "; ".join(parts) if parts else "no prediction"


def token_pieces(tokenizer: Any, ids: Sequence[int]) -> list[str] | None:
    """The decoded text of each token (``decode_tokens`` when the tokenizer has it), or None without a tokenizer.

    Arguments:
        tokenizer: an object with ``decode`` (and optionally ``decode_tokens``), or None.
        ids: token ids.

    Returns:
        One string per id, or None.
    """
    if tokenizer is None:
        return None
    try:
        if hasattr(tokenizer, "decode_tokens"):
            return [str(x) for x in tokenizer.decode_tokens(list(ids))]
        return [str(tokenizer.decode([int(i)])) for i in ids]
    except (ValueError, TypeError, KeyError):  # ids the tokenizer cannot decode
        return None


def _finite(x: Any) -> float:
    """A float for JSON where a number must exist: ±inf is clamped to ±max float; NaN raises (a bug)."""
    v = float(x)
    if math.isnan(v):
        raise ValueError("analysis produced NaN where a number was expected")
    return max(min(v, 1.7976931348623157e308), -1.7976931348623157e308)


@dataclass
class Analysis:
    """Everything `analyze` computed; `summary` gives the JSON-ready digest.

    Attributes:
        model_name: how the model was named (shipped name, path or Hub id).
        model: the model (either generation); after `load_analysis`, a `SavedModel` (what the summary
            and the report need) unless a model was attached.
        prompt: the prompt text (None when ids were given).
        input_ids: (1, L) ids.
        table: the regime table (all layers): one `Verdict` per layer, or per layer and head.
        spectra: per layer, ``{"layer": k, "eigenvalues": [...]}`` — the ≤ 2N eigenvalues (per group) of
            Sym(M) from the reduced problem (the rest are exactly zero).
        layers: per analysed layer, a `LayerDynamics`.
        comparison: discrete vs continuous depth-time trajectories.
        hidden_attention: (1, L', L', C) the token-mixing matrix of the first analysed layer at the first
            L' ≤ 64 tokens; C = E channels (Mamba-1) or H heads (Mamba-2).
        attention_channel: the channel (Mamba-2: head) drawn, the one with the largest |P|.
        settings: t_max, rtol, atol, method, dtype, device.
        timings: seconds per stage.
    """

    model_name: str
    model: MambaLMBase | SavedModel
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

    def save(self, directory: str | os.PathLike) -> Path:
        """Save this analysis (trajectories, per-token results, records, summary) to a directory.

        Read it back with `load_analysis`; ``mamba-ode report DIR`` renders its report. The model is
        kept as a `mamba_ode.analysis.store.SavedModel` (architecture, config, checkpoint, token pieces).

        Arguments:
            directory: new, empty, or an earlier saved analysis (replaced whole, only once complete).

        Returns:
            The directory (absolute).

        Raises:
            ValueError: for a directory that is a file, not writable, or holds something else.
            OSError: when the file system refuses a write.
        """
        model = self.model
        if isinstance(model, SavedModel):
            saved = model
        else:
            ids = [int(i) for i in self.input_ids[0].tolist()]
            pieces = token_pieces(model.tokenizer, ids)
            saved = SavedModel(model.architecture, model.config, model.checkpoint,
                               dict(zip(ids, pieces)) if pieces is not None else {})
        fields = {f.name: saved if f.name == "model" else getattr(self, f.name) for f in dataclasses.fields(self)}
        return write_saved(fields, self.summary(), directory, extra_types=(LayerDynamics,))

    def layer_records(self) -> list[dict[str, Any]]:
        """Per layer (all K), ``{"layer", "channel_fractions"}`` for the regime map."""
        return [{"layer": k, "channel_fractions": layer_fractions(self.table.layer(k))}
                for k in range(self.model.config.n_layer)]

    def summary(self) -> dict:
        """The digest written to ``summary.json`` (schema in `mamba_ode.analysis.report`)."""
        cfg = self.model.config
        ck = self.model.checkpoint
        layers = [_layer_summary(lay) for lay in self.layers]
        cmp_ = self.comparison
        # NaN after a failure of either trajectory: null in JSON, and the status says why
        err = [e if math.isfinite(e) else None for e in cmp_.rel_error[:, 0].tolist()]
        finite = [e for e in err if e is not None]
        return {
            "schema_version": SCHEMA_VERSION,
            "token_indexing": "0-based",
            "model": {"name": self.model_name, "architecture": self.architecture,
                      "source": str(ck.source) if ck else None,
                      "layout": ck.layout if ck else "in-memory", "d_model": cfg.d_model, "n_layer": cfg.n_layer,
                      "d_inner": cfg.d_inner, "d_state": cfg.d_state, "dt_rank": getattr(cfg, "dt_rank", None),
                      "n_heads": getattr(cfg, "n_heads", None), "n_groups": getattr(cfg, "ngroups", 1)},
            "prompt": {"text": self.prompt, "n_tokens": int(self.input_ids.shape[-1]),
                       "ids": [int(i) for i in self.input_ids[0].tolist()],
                       "tokens": token_pieces(self.model.tokenizer, self.input_ids[0].tolist())},
            "settings": dict(self.settings),
            "layers": layers,
            "comparison": {"h": float(cmp_.h), "times": [float(t) for t in cmp_.ts.tolist()],
                           "relative_error": err, "max_relative_error": max(finite) if finite else None,
                           "status": cmp_.ode_solution.status[0].value, "message": cmp_.ode_solution.messages[0]},
            "figures": {},
            "notes": [],
            "timings": {k: round(float(v), 4) for k, v in self.timings.items()},
        }


def _none_if_nan(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def _token_records(lay: LayerDynamics) -> list[dict[str, Any]]:
    out = []
    for v, p in zip(lay.classification.tokens, lay.predictions):
        out.append({"index": v.index, "label": str(v.label), "t_blowup": _none_if_nan(v.t_blowup),
                    "predicted": None if p.label is None else str(p.label),
                    "prediction_kind": None if p.kind is None else str(p.kind), "reason": v.reason,
                    "prediction_reason": p.reason, "predicted_t_blowup": _none_if_nan(p.t_blowup),
                    "decay_exponent": _none_if_nan(v.decay_exponent), "growth_slope": _none_if_nan(v.growth_slope),
                    "end": str(v.end), "t_end": _none_if_nan(v.t_end)})
    return out


def _layer_summary(lay: LayerDynamics) -> dict[str, Any]:
    spec = lay.spectrum
    sol = lay.solution
    tbs = [v.t_blowup for v in lay.classification.tokens if v.t_blowup is not None]
    return {
        "layer": lay.layer,
        "spectrum": {"n_positive": int(spec["n_pos"]), "n_negative": int(spec["n_neg"]),
                     "n_zero": int(spec["n_zero"]), "label": str(spec["label"]),
                     "max": _finite(spec["eig_max"]), "min": _finite(spec["eig_min"])},
        "parameter_regime": str(spec["label"]),
        "channel_fractions": {str(k): float(v) for k, v in layer_fractions(lay.verdicts).items()},
        "heads": [v.to_dict() for v in lay.verdicts if v.head is not None],
        "integration_end": _finite(sol.integration_end),
        "trajectory": {"labels": [str(x) for x in lay.token_labels], "counts": lay.classification.counts(),
                       "first_blowup": min(tbs) if tbs else None, "integration_end": _finite(sol.integration_end),
                       "methods": [[name, _finite(a), _finite(b)] for name, a, b in sol.methods],
                       "stats": {k: int(v) for k, v in sol.stats.items()}},
        "tokens": _token_records(lay),
        "trajectory_regime": str(lay.trajectory_regime),
        "token0_quadratic_form": _finite(lay.quadratic_form),
        "prediction_agreement": lay.agreement,
        "agreement": agreement(lay.agreement),
    }


def _chosen_layers(layers: Sequence[int] | None, K: int) -> list[int]:
    """The distinct layer indices in [0, K) of ``layers`` (all for None), in the order given.

    Raises:
        TypeError: if layers is neither None nor a sequence (e.g. a bare int).
        ValueError: for an empty sequence or an index that is not an int in [-K, K).
    """
    if layers is None:
        return list(range(K))
    if isinstance(layers, (str, bytes)) or not isinstance(layers, Sequence):
        hint = f" (for one layer: [{layers}])" if isinstance(layers, int) and not isinstance(layers, bool) else ""
        raise TypeError(f"argument 'layers' must be a sequence of layer indices or None, got "
                        f"{type(layers).__name__} {layers!r}{hint}")
    if not layers:
        raise ValueError("argument 'layers' is empty: give at least one layer index, or None for all layers")
    chosen: list[int] = []
    for k in layers:
        if (k := layer_index(k, K, "layers")) not in chosen:
            chosen.append(k)
    return chosen


def check_settings(*, t_max: Any, rtol: Any, atol: Any, blowup_factor: Any, backend: Any, max_steps: Any,
                   max_tokens: Any, device: torch.device | str | None = None) -> None:
    """Check the integration settings shared by `analyze` and `mamba_ode.analyze_many`.

    Arguments:
        t_max, rtol, atol, blowup_factor, backend, max_steps, max_tokens: as in `analyze`.
        device: the model's device: the backend must be able to scan there (`mamba_ode.nn.scan.check_backend`).

    Raises:
        ValueError: naming the first argument out of its range: t_max, rtol, atol not finite and > 0,
            blowup_factor not finite and > 1, an unknown backend or one that cannot run on the device
            (``"triton"`` on the CPU), max_steps or max_tokens not an int ≥ 1.
        ImportError: for backend ``"triton"`` without triton installed.
    """
    if isinstance(t_max, bool) or not (isinstance(t_max, (int, float)) and math.isfinite(t_max) and t_max > 0):
        raise ValueError(f"argument 't_max' must be a finite number > 0, got {t_max!r}")
    for name, x, low in (("rtol", rtol, 0), ("atol", atol, 0), ("blowup_factor", blowup_factor, 1)):
        if isinstance(x, bool) or not isinstance(x, (int, float)) or not (math.isfinite(x) and x > low):
            raise ValueError(f"argument {name!r} must be a finite number > {low}, got {x!r}")
    if backend not in BACKENDS:
        raise ValueError(f"argument 'backend' must be one of {BACKENDS}, got {backend!r}")
    check_backend(backend, device)
    for name, v in (("max_steps", max_steps), ("max_tokens", max_tokens)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"argument {name!r} must be a positive int, got {v!r}")


def _analyse_layer(model: MambaLMBase, k: int, u0: Tensor, table: RegimeTable, sol: TokenSolution) -> LayerDynamics:
    """Label every token of layer k's integrated dynamics (from u0 (1, L, W)), predict it, compare."""
    params = model.layer_params(k)
    with torch.no_grad():
        q = float(params.quadratic_form(u0[0, 0])[0])
    cls = classify_tokens(sol)
    preds = predict_tokens(params, u0)
    return LayerDynamics(k, table.layer(k), sol, cls, preds, prediction_agreement(preds, cls.tokens), q)


def _refuse_batch(prompt: Any) -> None:
    """ValueError for a batch of prompts (a (B, L) tensor with B > 1, or a list of id lists): one at a time."""
    if isinstance(prompt, Tensor) and prompt.dim() == 2 and prompt.shape[0] != 1:
        shape = f"of shape {tuple(prompt.shape)}"
    elif isinstance(prompt, (list, tuple)) and any(isinstance(p, (list, tuple, Tensor)) for p in prompt):
        shape = f"as a list of {len(prompt)} sequences"
    else:
        return
    raise ValueError(f"argument 'prompt' is a batch ({shape}): analyze analyses one sequence at a time; give "
                     "one sequence as ids of shape (L,) or (1, L), and loop over the batch for more, e.g. "
                     "[analyze(model, row) for row in ids]")


# long function: over 80 lines with its docstring, which documents every argument
def analyze(model: MambaLMBase, prompt: str | list[int] | Tensor = DEFAULT_PROMPT, *,
            layers: Sequence[int] | None = None, t_max: float = 1e4, rtol: float = 1e-5, atol: float = 1e-8,
            max_steps: int = 20_000, blowup_factor: float = 1e8, backend: str = "auto",
            max_tokens: int = DEFAULT_MAX_TOKENS, model_name: str | None = None,
            progress: Callable[[str], None] | None = None, workers: int | str = 1) -> Analysis:
    """Analyse a model's token dynamics on a prompt (the computation behind ``mamba-ode analyze``).

    Arguments:
        model: a loaded model of either generation (Mamba-2: the idealised field is
            `mamba_ode.Mamba2Field` on the mixer input, and the parameter verdicts are per head).
        prompt: text (needs ``model.tokenizer``), a list of ids or an id tensor (L,) / (1, L): one
            sequence (a batch is refused; loop over its rows).
        layers: layer indices to integrate (default: all; negative indices count from the end).
        t_max: horizon of the idealised layer dynamics (every token is followed to its own event or to
            t_max, see `mamba_ode.integrate_tokens`).
        rtol, atol: tolerances of the adaptive steps.
        max_steps: step budget per layer; tokens still running when it is spent end undetermined.
        blowup_factor: the norm growth at which a blow-up is resolved (see
            `mamba_ode.integrate_tokens`).
        backend: scan backend of the layer fields (see `mamba_ode.selective_scan`).
        max_tokens: the longest prompt accepted (checked, with a memory estimate against what the device
            has left, before any work: `mamba_ode.analysis.budget.check_prompt_budget`).
        model_name: name recorded in the summary (default: the checkpoint source).
        progress: called with a short message before each stage and as each layer is done (the CLI
            prints it).
        workers: worker processes that integrate layers side by side (`mamba_ode.analysis.parallel`):
            1 (the default) integrates them here one after the other; ``"auto"`` takes one per usable CPU
            for a CPU model whose layers are costly enough, as many as the memory allows (the CLI's
            default). The CPUs are shared out as torch threads: a worker with T threads gives exactly the
            results of a serial run under ``torch.set_num_threads(T)``. Workers are spawned processes: a
            script needs the ``if __name__ == "__main__":`` guard. Without workers, a CPU model whose
            layers are small runs on one torch thread for the call (restored after it:
            `mamba_ode.analysis.parallel.own_threads`).

    Returns:
        `Analysis`.

    Raises:
        TypeError: if model is not a mamba_ode model.
        ValueError: for a bad prompt (a batch of more than one sequence included), layer index, t_max,
            tolerance, blowup_factor (≤ 1), backend, max_steps or max_tokens (< 1), workers (not a
            positive int or "auto"; more than one for a model off the CPU), and for a prompt over
            max_tokens or over the memory available.
    """
    if not isinstance(model, MambaLMBase):
        raise TypeError(f"argument 'model' must be a mamba_ode.MambaLM or Mamba2LM, got {type(model).__name__}")
    check_settings(t_max=t_max, rtol=rtol, atol=atol, blowup_factor=blowup_factor, backend=backend,
                   max_steps=max_steps, max_tokens=max_tokens, device=model.device)
    K = model.config.n_layer
    chosen = _chosen_layers(layers, K)
    say = progress or (lambda msg: None)
    timings: dict[str, float] = {}
    _refuse_batch(prompt)
    ids = model.encode(prompt)
    if ids.shape[0] != 1:
        _refuse_batch(ids)
    n_workers = plan_workers(model, ids.shape[1], len(chosen), max_steps, workers)
    check_prompt_budget(model, ids.shape[1], max_tokens=max_tokens, max_steps=max_steps, workers=n_workers)
    text = prompt if isinstance(prompt, str) else None

    with own_threads(model, ids.shape[1], n_workers):  # one thread for small layers (see there)
        t0 = time.perf_counter()
        say("regime table from parameters")
        table = regime_table(model)
        spectra = [{"layer": k, "eigenvalues": layer_spectrum(table.layer(k))["eigenvalues"]} for k in range(K)]
        timings["regime_table"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        states = {k: u.detach().double() for k, u in model.field_starts(ids, chosen).items()}
        opts = {"rtol": rtol, "atol": atol, "max_steps": max_steps, "blowup_factor": blowup_factor}
        finished: list[int] = []

        def report(i: int) -> None:  # a layer is done
            finished.append(i)
            n, spent = len(finished), time.perf_counter() - t0
            left = f", about {spent / n * (len(chosen) - n):.0f} s left" if n < len(chosen) else ""
            say(f"layer {chosen[i]} integrated ({n}/{len(chosen)}){left}")

        pool = f" in {n_workers} worker processes" if n_workers > 1 else ""
        say(f"integrating the idealised dynamics of {len(chosen)} layers to t = {t_max:g}{pool}")
        sols = integrate_layers([layer_field(model, k, backend=backend) for k in chosen], [states[k] for k in chosen],
                                float(t_max), opts, n_workers, report)
        results = [_analyse_layer(model, k, states[k], table, sol) for k, sol in zip(chosen, sols)]
        timings["trajectories"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        say("discrete network vs depth-time ODE")
        depth = DepthField(model)
        x0 = depth.initial_state(ids).detach()
        comparison = compare_discrete(depth, x0, (0.0, float(K)), h=1.0, rtol=rtol, atol=atol)
        timings["comparison"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        k0 = chosen[0]
        with torch.no_grad():
            P = model.layer_params(k0).mixing_matrix(states[k0][:, :ATTENTION_TOKENS])  # (1, L', L', C)
        channel = int(P.abs().amax(dim=(0, 1, 2)).argmax())
        timings["hidden_attention"] = time.perf_counter() - t0

    settings = {"layers": chosen, "t_max": float(t_max), "rtol": rtol, "atol": atol,
                "method": "dopri5, ros34pw2 on stiff stretches", "max_steps": int(max_steps),
                "max_tokens": int(max_tokens), "blowup_factor": float(blowup_factor), "backend": backend,
                "workers": n_workers, "dtype": "float64",
                "model_dtype": str(next(model.parameters()).dtype).removeprefix("torch."), "device": str(ids.device)}
    name = model_name or (str(model.checkpoint.source) if model.checkpoint else "in-memory model")
    return Analysis(name, model, text, ids, table, spectra, results, comparison, P, channel, settings, timings)


def load_analysis(directory: str | os.PathLike, *, model: MambaLMBase | None = None) -> Analysis:
    """Read an analysis written by `Analysis.save`.

    Arguments:
        directory: the saved analysis.
        model: a loaded model to attach (optional; by default the analysis carries a
            `mamba_ode.analysis.store.SavedModel`, enough for the summary and the report).

    Returns:
        An `Analysis` equal to the saved one: the same records, labels and tensors; ``summary()`` equals
        the saved ``summary.json`` and `mamba_ode.write_report` renders it without recomputing.

    Raises:
        FileNotFoundError: if the directory or one of its files is missing.
        ValueError: for a directory that is not a saved analysis, another format version, or malformed
            content (naming the file).
        TypeError: for a ``model`` that is not a mamba_ode model.
    """
    if model is not None and not isinstance(model, MambaLMBase):
        raise TypeError(f"argument 'model' must be a mamba_ode model or None, got {type(model).__name__}")
    fields = read_saved(directory, extra_types=(LayerDynamics,))
    known = {f.name for f in dataclasses.fields(Analysis)}
    if set(fields) != known:
        raise ValueError(f"{directory}: fields {sorted(set(fields) ^ known)} differ from those of an Analysis")
    saved = fields["model"]
    if not isinstance(saved, SavedModel):
        raise ValueError(f"{directory}: the saved model record is a {type(saved).__name__}, not a SavedModel")
    if model is not None:
        if model.architecture != saved.architecture or model.config != saved.config:
            raise ValueError(f"argument 'model': a {model.architecture} model with config {model.config} is not the "
                             f"model of this analysis ({saved.architecture}, {saved.config})")
        fields["model"] = model
    return Analysis(**fields)

