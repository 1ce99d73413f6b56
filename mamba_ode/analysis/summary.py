"""The ``summary.json`` schema of the analysis report, its check, and the sentences shared by report and CLI.

``summary.json`` schema (version 3) — every key is always present:

.. code-block:: text

    schema_version   int, 3
    token_indexing   "0-based": every token (and layer) index in the file, the report and the figures counts
                     from 0; token 0 is the first token of the prompt
    model            {name, architecture ("mamba" or "mamba2"), source, layout, d_model, n_layer, d_inner,
                      d_state, dt_rank (null for Mamba-2), n_heads (null for Mamba-1), n_groups}
    prompt           {text (str or null when ids were given), n_tokens, ids: [int],
                      tokens: [the decoded piece of each token] or null without a tokenizer}
    settings         {layers, t_max, rtol, atol, method, max_steps, max_tokens, blowup_factor, backend,
                      workers (layers integrated side by side; absent in older summaries), dtype (of the
                      integrated trajectories: always "float64"), model_dtype (of the weights and the
                      discrete network, e.g. "float32"; absent in older summaries), device}
    layers           list, one per analysed layer, each:
        layer                  int, layer index k
        spectrum               {n_positive, n_negative, n_zero, label, max, min}
        parameter_regime       str, the label from the parameters (spectrum of Sym(M); Mamba-2: of the
                               groups' Sym(M_g), "indefinite" when the groups differ in sign)
        channel_fractions      Mamba-1: {1-D regime label: fraction of the E channels};
                               Mamba-2: {sign of the head's group form: fraction of the H heads}
        heads                  Mamba-2: one record per head (group, sign, a, dt_bias, ...); [] for Mamba-1
        integration_end        float, the last time any token of the layer reached (≤ t_max)
        trajectory             {labels: [per token], counts: {label: n}, first_blowup (earliest t*, null if
                                none), integration_end, methods: [[stepper, t_from, t_to]] ("dopri5", or
                                "ros34pw2" on stiff stretches), stats: {nfev, n_accepted, n_rejected,
                                n_events, n_stalls, n_vjp}}
        tokens                 list, one per token: {index, label, t_blowup (its own blow-up time, null if
                                none), predicted (label or null), prediction_kind ("theorem", "indicator" or
                                null), reason (why this label), prediction_reason, predicted_t_blowup (null
                                if none), decay_exponent (convergent tokens, else null), growth_slope
                                (divergent tokens at the horizon, else null), end (how its integration
                                ended: horizon, blow-up, growth, depends, failed), t_end}
        trajectory_regime      str, the most frequent decided token label ("undetermined" if none)
        token0_quadratic_form  float, u_0ᵀ M u_0 at t = 0 (its sign sets token 0's initial direction;
                               Mamba-2: with the first group's M_0)
        prediction_agreement   {theorem: {n, agree, disagree, undetermined, rate (null if nothing
                                compared), disagreements: [token indices]}, indicator: {same}}
        agreement              str, one line summarising prediction_agreement
    comparison       {h, times, relative_error (per integer time; null after a failed trajectory),
                      max_relative_error (null when none is finite), status and message of the ODE solve}
    figures          {name: [relative file paths]}
    notes            [str], figures that could not be drawn and why
    timings          {stage: seconds}
"""

from __future__ import annotations

from typing import Any

__all__ = ["SCHEMA_VERSION", "INDEXING", "COMPARISON_MEANING", "validate_summary", "comparison_sentence"]

#: Version 3: ``token1_quadratic_form`` became ``token0_quadratic_form`` (indices count from 0 everywhere).
SCHEMA_VERSION = 3

#: The index convention, stated once in the report.
INDEXING = ("Indices count from 0 everywhere in this report, its figures and summary.json: token 0 is the first "
            "token of the prompt and layer 0 the first layer.")

#: How to read the number of the discrete-vs-continuous comparison.
COMPARISON_MEANING = (
    "The relative error at depth t is ‖x_network(t) − x_ODE(t)‖ / ‖x_ODE(t)‖, the norms taken over the whole "
    "residual stream of the prompt (every token, every coordinate) at the integer depths t = 0, 1, …, K where the "
    "network has an output, and the number quoted is its largest value: 0 means the network follows its "
    "continuous limit exactly, 0.05 a 5 % deviation, and values near 1 or above that the difference is as "
    "large as the state itself.")

_SUMMARY_KEYS: dict[str, type | tuple[type, ...]] = {
    "schema_version": int, "token_indexing": str, "model": dict, "prompt": dict, "settings": dict, "layers": list,
    "comparison": dict, "figures": dict, "notes": list, "timings": dict}
_LAYER_KEYS: dict[str, type | tuple[type, ...]] = {
    "layer": int, "spectrum": dict, "parameter_regime": str, "channel_fractions": dict, "trajectory": dict,
    "tokens": list, "trajectory_regime": str, "token0_quadratic_form": float, "agreement": str, "heads": list,
    "integration_end": float, "prediction_agreement": dict}
_TOKEN_KEYS: dict[str, type | tuple[type, ...]] = {
    "index": int, "label": str, "t_blowup": (float, type(None)), "predicted": (str, type(None)),
    "prediction_kind": (str, type(None)), "reason": str}


def _check(obj: dict, keys: dict[str, type | tuple[type, ...]], where: str) -> None:
    for key, typ in keys.items():
        if key not in obj:
            raise ValueError(f"summary: {where} misses key {key!r}")
        if not isinstance(obj[key], typ):
            raise ValueError(f"summary: {where}.{key} has type {type(obj[key]).__name__}")


def validate_summary(summary: dict[str, Any]) -> None:
    """Check a summary dict against the documented schema (version 3).

    Arguments:
        summary: the content of ``summary.json``.

    Raises:
        ValueError: naming the first missing or mistyped key.
    """
    if not isinstance(summary, dict):
        raise ValueError(f"summary must be a dict, got {type(summary).__name__}")
    _check(summary, _SUMMARY_KEYS, "the summary")
    if summary["schema_version"] != SCHEMA_VERSION:
        raise ValueError(f"summary: schema_version {summary['schema_version']} is not {SCHEMA_VERSION}")
    for i, rec in enumerate(summary["layers"]):
        _check(rec, _LAYER_KEYS, f"layers[{i}]")
        if "labels" not in rec["trajectory"] or "counts" not in rec["trajectory"]:
            raise ValueError(f"summary: layers[{i}].trajectory needs 'labels' and 'counts'")
        if len(rec["tokens"]) != summary["prompt"]["n_tokens"]:
            raise ValueError(f"summary: layers[{i}].tokens has {len(rec['tokens'])} entries for "
                             f"{summary['prompt']['n_tokens']} tokens")
        for j, tok in enumerate(rec["tokens"]):
            _check(tok, _TOKEN_KEYS, f"layers[{i}].tokens[{j}]")
            if tok["index"] != j:
                raise ValueError(f"summary: layers[{i}].tokens[{j}].index is {tok['index']}")


def comparison_sentence(cmp_: dict[str, Any]) -> str:
    """One sentence on the discrete-vs-continuous comparison of a summary, interpreted for the reader.

    Arguments:
        cmp_: the ``comparison`` record of a summary (``max_relative_error``, ``status``, ``message``).

    Returns:
        The sentence, ending with a full stop (`COMPARISON_MEANING` says how to read its number).
    """
    err = cmp_["max_relative_error"]
    if err is None:
        text = "no finite comparison was possible"
    else:
        meaning = ("the network is close to its continuous-time limit" if err < 0.05 else
                   "the network is far from its continuous-time limit: one Euler step per layer is a coarse "
                   "discretisation of this field")
        text = (f"the adaptive solution of the same field differs from it by a relative error of at most {err:.3g} "
                f"(over the whole residual stream, at the integer depths): {meaning}")
    if cmp_["status"] != "success":
        text += f"; the ODE solve ended with {cmp_['status']}: {cmp_['message']}"
    return text + "."
