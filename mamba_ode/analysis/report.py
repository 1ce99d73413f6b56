"""The analysis report: figures (PNG; SVG/PDF on request), ``summary.json`` (schema in
`mamba_ode.analysis.summary`) and a self-contained ``report.html``.

This module only assembles: the numbers come from an `mamba_ode.Analysis`, the pictures from
`mamba_ode.plots`. The HTML embeds every figure as a base64 PNG, so the file can be mailed or
opened offline. A figure that cannot be drawn (no data, a log axis with no positive value, …) becomes
a short note in the report and in ``summary.json``; the rest of the report is still written.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure

from .._version import __version__
from . import plots
from .analyze import Analysis
from .output import check_report_dir, staged_dir
from .summary import comparison_sentence, validate_summary

__all__ = ["FIGURE_NAMES", "MAX_LAYER_FIGURES", "make_figures", "write_report", "render_html"]

#: Figures every report has; one trajectory figure per analysed layer is added for at most
#: `MAX_LAYER_FIGURES` layers (the layer summary covers the rest).
FIGURE_NAMES = ("spectrum", "regime_map", "layer_summary", "hidden_attention", "comparison", "regime_diagram")
MAX_LAYER_FIGURES = 8


def _layer_records(analysis: Analysis) -> list[dict[str, Any]]:
    return [{"layer": lay.layer, "labels": [str(x) for x in lay.token_labels],
             "t_blowup": [v.t_blowup for v in lay.classification.tokens]} for lay in analysis.layers]


def _figure_makers(analysis: Analysis) -> dict[str, Callable[[], Figure]]:
    mamba2 = analysis.architecture == "mamba2"
    makers: dict[str, Callable[[], Figure]] = {
        "spectrum": lambda: plots.plot_spectrum(analysis.spectra),
        "regime_map": lambda: plots.plot_regime_map(
            analysis.layer_records(), title="per-head sign of the group's quadratic form" if mamba2 else None),
        "layer_summary": lambda: plots.plot_layer_summary(_layer_records(analysis)),
        "hidden_attention": lambda: plots.plot_hidden_attention(
            analysis.hidden_attention, channel=analysis.attention_channel,
            title=f"token mixing, layer {analysis.layers[0].layer}, {'head' if mamba2 else 'channel'} "
                  f"{analysis.attention_channel}"),
        "comparison": lambda: plots.plot_comparison(analysis.comparison),
        "regime_diagram": lambda: plots.plot_regime_diagram(torch.linspace(-2, 2, 41, dtype=torch.float64),
                                                            torch.linspace(-3, 3, 41, dtype=torch.float64)),
    }
    if len(analysis.layers) <= MAX_LAYER_FIGURES:
        for lay in analysis.layers:
            def draw(lay: Any = lay) -> Figure:
                return plots.plot_token_trajectories(lay.solution, lay.token_labels,
                                                     title=f"layer {lay.layer}: mostly {lay.trajectory_regime}")
            makers[f"trajectories_layer{lay.layer}"] = draw
    return makers


def make_figures(analysis: Analysis) -> tuple[dict[str, Figure], list[str]]:
    """The report's matplotlib figures, by name, and a note for each figure that could not be drawn.

    Arguments:
        analysis: an `mamba_ode.Analysis`.

    Returns:
        ``({name: Figure}, notes)`` with names from `FIGURE_NAMES` and ``trajectories_layer{k}`` per
        analysed layer (at most `MAX_LAYER_FIGURES` layers).
    """
    figs: dict[str, Figure] = {}
    notes: list[str] = []
    for name, make in _figure_makers(analysis).items():
        before = set(plt.get_fignums())
        try:
            figs[name] = make()
        except (ValueError, TypeError, RuntimeError, OverflowError) as exc:
            for num in set(plt.get_fignums()) - before:  # a half-drawn figure
                plt.close(num)
            notes.append(f"figure {name!r} could not be drawn: {exc}")
    return figs, notes


def _png_bytes(fig: Figure) -> bytes:
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
td:last-child{text-align:left}
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #edf2f7}figcaption{font-size:.85em;color:#4a5568}
.note{font-size:.85em;color:#4a5568}code{background:#f7fafc;padding:0 .2em}details{margin:.4em 0}
"""


def _fmt(x: float | None) -> str:
    return "—" if x is None or not math.isfinite(x) else f"{x:.4g}"


def _prompt_html(p: dict) -> str:
    pieces = p.get("tokens")
    if pieces:
        shown = " ".join(f"<code title='token {i}'>{i}:{html.escape(repr(t)[1:-1])}</code>" for i, t in
                         enumerate(pieces[:200]))
    else:
        shown = "ids " + html.escape(", ".join(f"{i}:{t}" for i, t in enumerate(p["ids"][:200])))
    more = f" … ({p['n_tokens'] - 200} more)" if p["n_tokens"] > 200 else ""
    return f"<p>Prompt ({p['n_tokens']} tokens, index:token, counted from 0): {shown}{more}</p>"


def _layers_table(summary: dict) -> str:
    rows = []
    for rec in summary["layers"]:
        sp, c = rec["spectrum"], rec["trajectory"]["counts"]
        rows.append([rec["layer"], f"{sp['n_positive']}/{sp['n_negative']}/{sp['n_zero']}", rec["parameter_regime"],
                     f"{rec['token1_quadratic_form']:+.3g}", c.get("divergent-finite-time", 0), c.get("divergent", 0),
                     c.get("bounded", 0), c.get("convergent", 0), c.get("undetermined", 0),
                     _fmt(rec["trajectory"]["first_blowup"]), _fmt(rec["integration_end"]), rec["agreement"]])
    return _table(["layer", "eig +/−/0 of Sym(M)", "from parameters", "u₀ᵀMu₀", "finite-time", "divergent", "bounded",
                   "convergent", "undetermined", "first t*", "integrated to", "predictions vs trajectories"], rows)


def _tokens_details(summary: dict) -> str:
    pieces = summary["prompt"].get("tokens") or [str(i) for i in summary["prompt"]["ids"]]
    out = []
    for rec in summary["layers"]:
        rows = [[t["index"], pieces[t["index"]] if t["index"] < len(pieces) else "", t["label"],
                 _fmt(t["t_blowup"]), f"{t['predicted'] or '—'} ({t['prediction_kind'] or 'none'})", t["reason"]]
                for t in rec["tokens"]]
        out.append(f"<details><summary>Layer {rec['layer']}: every token</summary>"
                   + _table(["token", "text", "label", "t*", "predicted (kind)", "reason"], rows) + "</details>")
    return "\n".join(out)


def render_html(summary: dict, figures_png: dict[str, bytes]) -> str:
    """The self-contained HTML page for a summary and its PNG figures.

    Arguments:
        summary: a schema-valid summary (see `mamba_ode.analysis.summary.validate_summary`).
        figures_png: ``{name: PNG bytes}``.

    Returns:
        The HTML document as a string.
    """
    m, st, cmp_ = summary["model"], summary["settings"], summary["comparison"]
    mamba2 = m["architecture"] == "mamba2"

    def fig(name: str, caption: str) -> str:
        if name not in figures_png:
            return ""
        data = base64.b64encode(figures_png[name]).decode("ascii")
        return (f'<figure><img alt="{html.escape(name)}" src="data:image/png;base64,{data}">'
                f"<figcaption>{html.escape(caption)}</figcaption></figure>")

    layer_figs = [fig(f"trajectories_layer{rec['layer']}", f"Layer {rec['layer']}: token norms under its idealised "
                      "field, coloured by label (dotted lines: each token's blow-up time); the tokens that decide "
                      "the layer and a sample of the rest.") for rec in summary["layers"]]
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>mamba-ode report: {html.escape(str(m['name']))}</title><style>{_CSS}</style></head><body>",
        f"<h1>Token dynamics of <code>{html.escape(str(m['name']))}</code></h1>",
        f"<p>{html.escape(str(m['architecture']))}: {m['n_layer']} layers, d_model {m['d_model']}, E = {m['d_inner']}, "
        f"N = {m['d_state']}, "
        + (f"H = {m['n_heads']} heads, G = {m['n_groups']} groups" if m["n_heads"] else f"R = {m['dt_rank']}")
        + f" ({html.escape(str(m['layout']))} layout).</p>",
        _prompt_html(summary["prompt"]),
        f"<p>Every token of each analysed layer was followed under the layer's idealised field until its own "
        f"event (a blow-up, growth without bound, or a token before it ending) or the horizon t = "
        f"{st['t_max']:g} (rtol {st['rtol']:g}, {st['dtype']}); the column 'integrated to' gives where each "
        "layer's integration actually ended.</p>",
        "<h2>Regimes per layer</h2>", _layers_table(summary),
        "<p class='note'>From parameters: the sign structure of the non-zero spectrum of Sym(M), M = S_Cᵀ S_B "
        "(from the low-rank factors). Token counts: each token's label from its own trajectory — "
        "divergent-finite-time with its own blow-up time t*; undetermined when a token before it blew up or "
        "could not be followed (its reason names which). Predictions: per token, a theorem where the theory "
        "decides it (e.g. token 0 when Δ is the same in every channel) or an indicator (the sign of "
        "u₀ᵀMu₀, or the initial direction), with how often each agrees with the trajectories.</p>",
        fig("layer_summary", "Fraction of tokens per label in each analysed layer, and the blow-up times t*."),
        fig("spectrum", "Non-zero eigenvalues of Sym(M) per layer (orange positive, blue non-positive)."),
        fig("regime_map", "Per head: the sign of its group's quadratic form (fraction of the heads per sign)."
            if mamba2 else "Per-channel one-dimensional reductions (μ_d, s_d, b_d, a_d), classified by the "
            "paper's one-dimensional theorems (fraction of the channels per regime)."),
        "<h2>Token trajectories</h2>", *layer_figs,
        "<p class='note'>One figure per layer is drawn for reports of at most 8 layers; the layer summary "
        "above covers every layer.</p>" if not any(layer_figs) else "",
        _tokens_details(summary),
        "<h2>Token mixing</h2>",
        fig("hidden_attention", "The token-mixing ('hidden attention') matrix of the first analysed layer at the "
                                "prompt's tokens, one channel (head), |P| scaled per row; axes index tokens from 0."),
        "<h2>Discrete network vs continuous limit</h2>",
        f"<p>The pretrained network is explicit Euler with step h = {cmp_['h']:g} for the depth-time field "
        f"dx/dt = Mixer_k(Norm_k(x)); {html.escape(comparison_sentence(cmp_))}</p>",
        fig("comparison", "Residual-stream norm of the last token: discrete network (Euler) vs adaptive ODE "
                          "solution; dotted: relative error over all tokens (right axis)."),
        "<h2>The one-dimensional theory</h2>",
        fig("regime_diagram", "Regime of token 0 over (μ, s_Δ) by the parameter criteria, with blow-up-time "
                              "contours."),
    ]
    if summary["notes"]:
        parts += ["<h2>Notes</h2>", "<ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in summary["notes"]) + "</ul>"]
    timings = [[k, f"{v:.2f}"] for k, v in summary["timings"].items()]
    parts += ["<h2>Timings</h2>", _table(["stage", "seconds"], timings),
              "<p class='note'>Generated by <code>mamba-ode analyze</code>; machine-readable results in "
              "<code>summary.json</code>.</p></body></html>"]
    return "\n".join(p for p in parts if p)


def write_report(analysis: Analysis, out_dir: str | os.PathLike, *, formats: tuple[str, ...] = ("png",)) -> Path:
    """Write the figures, ``summary.json`` and ``report.html`` of an analysis.

    The report is written into a temporary directory beside ``out_dir`` and moved into place at the end
    (`mamba_ode.analysis.output.staged_dir`): a failure leaves the previous report or nothing. An
    existing ``out_dir`` must be empty or a report written by mamba-ode (it holds the marker file
    ``.mamba-ode-report``); it is then replaced.

    Arguments:
        analysis: an `mamba_ode.Analysis`.
        out_dir: output directory (created if needed).
        formats: figure file formats to write beside the HTML, from ("png", "svg", "pdf"); PNG is always
            embedded in the page. Vector formats double the figure time: ask for them when needed.

    Returns:
        The path of ``report.html``.

    Raises:
        ValueError: for an unknown figure format, or (`ReportDirError`) an
            ``out_dir`` that is a file, not writable, or a non-empty directory that is not a report.
        OSError: when the file system refuses a write.
    """
    bad = [f for f in formats if f not in ("png", "svg", "pdf")]
    if bad:
        raise ValueError(f"argument 'formats': unknown figure format {bad[0]!r} (png, svg, pdf)")
    final = check_report_dir(out_dir)
    figs, notes = make_figures(analysis)
    with staged_dir(final, version=_version()) as out:
        (out / "figures").mkdir()
        pngs, paths = _write_figures(figs, notes, out, formats)
        summary = analysis.summary()
        summary["figures"], summary["notes"] = paths, notes
        validate_summary(summary)
        (out / "summary.json").write_text(json.dumps(summary, indent=2, allow_nan=False) + "\n")
        (out / "report.html").write_text(render_html(summary, pngs), encoding="utf-8")
    return final / "report.html"


def _version() -> str:
    return __version__


def _write_figures(figs: dict[str, Figure], notes: list[str], out: Path,
                   formats: tuple[str, ...]) -> tuple[dict[str, bytes], dict[str, list[str]]]:
    """Render each figure (PNG bytes for the page, files in ``formats``); a failure becomes a note."""
    pngs: dict[str, bytes] = {}
    paths: dict[str, list[str]] = {}
    for name, f in figs.items():
        try:
            pngs[name] = _png_bytes(f)
            paths[name] = []
            for ext in formats:
                rel = f"figures/{name}.{ext}"
                if ext == "png":
                    (out / rel).write_bytes(pngs[name])
                else:
                    f.savefig(out / rel, format=ext)
                paths[name].append(rel)
        except (ValueError, RuntimeError, OverflowError) as exc:  # rendering can fail too (e.g. a log axis)
            pngs.pop(name, None)
            paths.pop(name, None)
            notes.append(f"figure {name!r} could not be rendered: {exc}")
        finally:
            plt.close(f)
    return pngs, paths
