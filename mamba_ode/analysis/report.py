"""The analysis report: figures (PNG + SVG), ``summary.json`` and a self-contained ``report.html``.

This module only assembles: the numbers come from an :class:`mamba_ode.Analysis`, the
pictures from :mod:`mamba_ode.plots`. The HTML embeds every figure as a base64 PNG, so the
file can be mailed or opened offline.

``summary.json`` schema (version 1) — every key is always present:

.. code-block:: text

    schema_version   int, 1
    model            {name, architecture ("mamba" or "mamba2"), source, layout, d_model, n_layer, d_inner,
                      d_state, dt_rank (null for Mamba-2), n_heads (null for Mamba-1), n_groups}
    prompt           {text (str or null), n_tokens}
    settings         {layers, t_max, rtol, atol, method, dtype, device}
    layers           list, one per analysed layer, each:
        layer                  int, layer index k
        spectrum               {n_positive, n_negative, n_zero, label, max, min}
        parameter_regime       str, the label from the parameters (spectrum of Sym(M); Mamba-2: of the
                               groups' Sym(M_g), "indefinite" when the groups differ in sign)
        channel_fractions      Mamba-1: {1-D regime label: fraction of the E channels};
                               Mamba-2: {sign of the head's group form: fraction of the H heads}
        heads                  Mamba-2: one record per head (group, sign, a, dt_bias, ...); [] for Mamba-1
        trajectory             {status, t_final, t_blowup (null if none), labels: [per token],
                                counts: {label: n}}
        trajectory_regime      str, the majority trajectory label
        token1_quadratic_form  float, u_1ᵀ M u_1 at t = 0 (its sign sets token 1's initial direction)
        agreement              str, how the parameter and trajectory verdicts relate
    comparison       {h, times, relative_error (per integer time; null after a failed trajectory),
                      max_relative_error (null when none is finite), status and message of the ODE solve}
    figures          {name: [relative file paths]}
    timings          {stage: seconds}
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import torch

from . import plots
from .analyze import Analysis

__all__ = ["SCHEMA_VERSION", "FIGURE_NAMES", "make_figures", "write_report", "render_html", "validate_summary",
           "comparison_sentence"]

SCHEMA_VERSION = 1

#: Figures every report has (a per-layer trajectory figure is added per analysed layer).
FIGURE_NAMES = ("spectrum", "regime_map", "hidden_attention", "comparison", "regime_diagram")

_SUMMARY_KEYS = {"schema_version": int, "model": dict, "prompt": dict, "settings": dict, "layers": list,
                 "comparison": dict, "figures": dict, "timings": dict}
_LAYER_KEYS = {"layer": int, "spectrum": dict, "parameter_regime": str, "channel_fractions": dict,
               "trajectory": dict, "trajectory_regime": str, "token1_quadratic_form": float, "agreement": str,
               "heads": list}


def validate_summary(summary: dict) -> None:
    """Check a summary dict against the documented schema.

    Arguments:
        summary: the content of ``summary.json``.

    Raises:
        ValueError: naming the first missing or mistyped key.
    """
    if not isinstance(summary, dict):
        raise ValueError(f"summary must be a dict, got {type(summary).__name__}")
    for key, typ in _SUMMARY_KEYS.items():
        if key not in summary:
            raise ValueError(f"summary: missing key {key!r}")
        if not isinstance(summary[key], typ):
            raise ValueError(f"summary: key {key!r} must be {typ.__name__}, got {type(summary[key]).__name__}")
    if summary["schema_version"] != SCHEMA_VERSION:
        raise ValueError(f"summary: schema_version {summary['schema_version']} is not {SCHEMA_VERSION}")
    for i, rec in enumerate(summary["layers"]):
        for key, typ in _LAYER_KEYS.items():
            if key not in rec:
                raise ValueError(f"summary: layers[{i}] misses key {key!r}")
            if not isinstance(rec[key], typ):
                raise ValueError(f"summary: layers[{i}].{key} must be {typ.__name__}, got {type(rec[key]).__name__}")
        if "labels" not in rec["trajectory"] or "status" not in rec["trajectory"]:
            raise ValueError(f"summary: layers[{i}].trajectory needs 'labels' and 'status'")


def make_figures(analysis: Analysis) -> dict[str, Any]:
    """The report's matplotlib figures, by name.

    Arguments:
        analysis: an :class:`mamba_ode.Analysis`.

    Returns:
        ``{name: Figure}`` with the names of :data:`FIGURE_NAMES` plus ``trajectories_layer{k}``
        per analysed layer.
    """
    figs: dict[str, Any] = {
        "spectrum": plots.plot_spectrum(analysis.spectra),
        "regime_map": plots.plot_regime_map(
            analysis.layer_records(),
            title="per-head sign of the group's quadratic form" if analysis.architecture == "mamba2" else None),
        "hidden_attention": plots.plot_hidden_attention(
            analysis.hidden_attention, channel=analysis.attention_channel,
            title=f"hidden attention P, layer {analysis.layers[0].layer}, "
                  f"{'head' if analysis.architecture == 'mamba2' else 'channel'} {analysis.attention_channel}"),
        "comparison": plots.plot_comparison(analysis.comparison),
        "regime_diagram": plots.plot_regime_diagram(torch.linspace(-2, 2, 41, dtype=torch.float64),
                                                     torch.linspace(-3, 3, 41, dtype=torch.float64)),
    }
    for lay in analysis.layers:
        figs[f"trajectories_layer{lay.layer}"] = plots.plot_trajectories(
            lay.solution, title=f"layer {lay.layer}: {lay.solution.status[0].value}")
    return figs


def _png_bytes(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return buf.getvalue()


def _table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
color:#1a202c}
h1{font-size:1.6em}h2{font-size:1.25em;border-bottom:1px solid #e2e8f0;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;font-size:.85em;margin:.6em 0}th,td{border:1px solid #e2e8f0;padding:.25em .6em;
text-align:right}th{background:#f7fafc}td:first-child,th:first-child{text-align:left}
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #edf2f7}figcaption{font-size:.85em;color:#4a5568}
.note{font-size:.85em;color:#4a5568}code{background:#f7fafc;padding:0 .2em}
"""


def comparison_sentence(cmp_: dict) -> str:
    """One sentence on the discrete-vs-continuous comparison of a summary (also used by the CLI)."""
    err = cmp_["max_relative_error"]
    text = (f"the adaptive solution of the same field differs from it by at most {err:.3g} (relative, over the "
            "residual stream at integer depths)" if err is not None else "no finite comparison was possible")
    if cmp_["status"] != "success":
        text += f"; the ODE solve ended with {cmp_['status']}: {cmp_['message']}"
    return text + "."


def render_html(summary: dict, figures_png: dict[str, bytes]) -> str:
    """The self-contained HTML page for a summary and its PNG figures.

    Arguments:
        summary: a schema-valid summary (see :func:`validate_summary`).
        figures_png: ``{name: PNG bytes}``.

    Returns:
        The HTML document as a string.
    """
    m, p, st = summary["model"], summary["prompt"], summary["settings"]

    def fig(name: str, caption: str) -> str:
        if name not in figures_png:
            return ""
        data = base64.b64encode(figures_png[name]).decode("ascii")
        return (f'<figure><img alt="{html.escape(name)}" src="data:image/png;base64,{data}">'
                f"<figcaption>{html.escape(caption)}</figcaption></figure>")

    rows = []
    for rec in summary["layers"]:
        sp, tr = rec["spectrum"], rec["trajectory"]
        counts = ", ".join(f"{k} {v}" for k, v in sorted(tr["counts"].items()))
        rows.append([rec["layer"], f"{sp['n_positive']}/{sp['n_negative']}/{sp['n_zero']}", rec["parameter_regime"],
                     f"{rec['token1_quadratic_form']:+.3g}", tr["status"], counts, rec["trajectory_regime"],
                     rec["agreement"]])
    cmp_ = summary["comparison"]
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>mamba-ode report: {html.escape(str(m['name']))}</title><style>{_CSS}</style></head><body>",
        f"<h1>Token dynamics of <code>{html.escape(str(m['name']))}</code></h1>",
        f"<p>{html.escape(str(m['architecture']))}: {m['n_layer']} layers, d_model {m['d_model']}, E = {m['d_inner']}, "
        f"N = {m['d_state']}, "
        + (f"H = {m['n_heads']} heads, G = {m['n_groups']} groups" if m["n_heads"] else f"R = {m['dt_rank']}")
        + f" ({html.escape(str(m['layout']))} layout). Prompt: "
        f"<code>{html.escape(repr(p['text']))}</code> ({p['n_tokens']} tokens). Trajectories integrated to "
        f"t = {st['t_max']:g} ({html.escape(str(st['method']))}, rtol {st['rtol']:g}, {st['dtype']}).</p>",
        "<h2>Regimes per layer</h2>",
        _table(["layer", "eig +/−/0 of Sym(M)", "from parameters", "u₁ᵀMu₁ at t=0", "solver status",
                "token labels", "from trajectories", "agreement"], rows),
        "<p class='note'>From parameters: the sign structure of the non-zero spectrum of Sym(M), M = S_Cᵀ S_B "
        "(rank ≤ 2N, computed from the low-rank factors). From trajectories: the idealised S6 dynamics of the "
        "layer, du/dt = S6_θ(u), started from the prompt's real token states (the S6 input of that layer), "
        "each token labelled from its own trajectory. A layer's trajectories are stopped once a token has grown "
        f"{st.get('blowup_factor', 10):g}-fold (growing tokens make the field stiff); 'divergent-finite-time' then "
        "means the growth extrapolates to a finite-time singularity, and the tokens after the first diverging "
        "one, which depend on it, are left undetermined. An indefinite Sym(M) makes no prediction by itself; "
        "the sign of u₁ᵀMu₁ sets whether token 1 starts growing or decaying.</p>",
        fig("spectrum", "Non-zero eigenvalues of Sym(M) per layer (orange positive, blue non-positive)."),
        fig("regime_map", "Per-channel one-dimensional reductions (μ_d, s_d, b_d, a_d), classified by the "
                          "paper's one-dimensional theorems."),
        "<h2>Token trajectories</h2>",
        *[fig(f"trajectories_layer{rec['layer']}", f"Layer {rec['layer']}: token norms under du/dt = S6_θ(u).")
          for rec in summary["layers"]],
        "<h2>Hidden attention</h2>",
        fig("hidden_attention", "The token-mixing matrix P of the first analysed layer at the prompt's tokens, "
                                "one channel, |P| scaled per row."),
        "<h2>Discrete network vs continuous limit</h2>",
        f"<p>The pretrained network is explicit Euler with step h = {cmp_['h']:g} for the depth-time field "
        f"dx/dt = Mixer_k(Norm_k(x)); {html.escape(comparison_sentence(cmp_))}</p>",
        fig("comparison", "Residual-stream norm of the last token: discrete network vs adaptive ODE solution."),
        "<h2>The one-dimensional theory</h2>",
        fig("regime_diagram", "Regime of token 1 over (μ, s_Δ) by the parameter criteria, with blow-up-time "
                              "contours."),
        "<h2>Timings</h2>",
        _table(["stage", "seconds"], [[k, f"{v:.2f}"] for k, v in summary["timings"].items()]),
        "<p class='note'>Generated by <code>mamba-ode analyze</code>; machine-readable results in "
        "<code>summary.json</code>.</p></body></html>",
    ]
    return "\n".join(parts)


def write_report(analysis: Analysis, out_dir: str | os.PathLike, *, formats: tuple[str, ...] = ("png", "svg")) -> Path:
    """Write the figures, ``summary.json`` and ``report.html`` of an analysis.

    Arguments:
        analysis: an :class:`mamba_ode.Analysis`.
        out_dir: output directory (created if needed).
        formats: figure file formats to write beside the HTML (PNG is always embedded).

    Returns:
        The path of ``report.html``.

    Raises:
        ValueError: for an unknown figure format.
        OSError: when the directory cannot be written.
    """
    bad = [f for f in formats if f not in ("png", "svg", "pdf")]
    if bad:
        raise ValueError(f"argument 'formats': unknown figure format {bad[0]!r} (png, svg, pdf)")
    out = Path(out_dir)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    figs = make_figures(analysis)
    pngs: dict[str, bytes] = {}
    paths: dict[str, list[str]] = {}
    for name, f in figs.items():
        pngs[name] = _png_bytes(f)
        paths[name] = []
        for ext in formats:
            rel = f"figures/{name}.{ext}"
            if ext == "png":
                (out / rel).write_bytes(pngs[name])
            else:
                f.savefig(out / rel, format=ext)
            paths[name].append(rel)
        plt.close(f)
    summary = analysis.summary()
    summary["figures"] = paths
    validate_summary(summary)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, allow_nan=False) + "\n")
    page = out / "report.html"
    page.write_text(render_html(summary, pngs), encoding="utf-8")
    return page
