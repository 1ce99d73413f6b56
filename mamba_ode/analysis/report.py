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
from .budget import ATTENTION_TOKENS
from .output import check_report_dir, staged_dir
from .summary import COMPARISON_MEANING, INDEXING, comparison_sentence, validate_summary

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
        "regime_map": lambda: plots.plot_regime_map(analysis.layer_records(), unit="heads" if mamba2 else "channels"),
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
.note{font-size:.85em;color:#4a5568}dl.glossary{font-size:.85em;color:#4a5568;margin:.4em 0}
dl.glossary dt{font-weight:600;float:left;clear:left;margin-right:.5em}dl.glossary dt::after{content:':'}
dl.glossary dd{margin:0 0 .2em 0}
code{background:#f7fafc;padding:0 .2em}details{margin:.4em 0}
"""


def _fmt(x: float | None) -> str:
    return "—" if x is None or not math.isfinite(x) else f"{x:.4g}"


def _prompt_html(p: dict) -> str:
    """The prompt as its decoded tokens (``index:text``), or as its ids when there is no tokenizer."""
    pieces = p.get("tokens")
    if pieces:
        what = "index:decoded token"
        shown = " ".join(f"<code title='token {i}'>{i}:{html.escape(repr(t)[1:-1])}</code>" for i, t in
                         enumerate(pieces[:200]))
    else:
        what = "index:token id; the model has no tokenizer to decode them"
        shown = html.escape(", ".join(f"{i}:{t}" for i, t in enumerate(p["ids"][:200])))
    more = f" … ({p['n_tokens'] - 200} more)" if p["n_tokens"] > 200 else ""
    return f"<p>Prompt ({p['n_tokens']} tokens, {what}): {shown}{more}</p>"


def _glossary(entries: list[tuple[str, str]]) -> str:
    """What each column (or number) means, one sentence each."""
    items = "".join(f"<dt>{html.escape(h)}</dt><dd>{html.escape(text)}</dd>" for h, text in entries)
    return f"<dl class='glossary'>{items}</dl>"


def _layers_glossary(mamba2: bool) -> str:
    spectrum = ("How many eigenvalues of the symmetric part of each group's M_g = S_Cᵀ S_B (a d_model × d_model "
                "matrix) are positive, negative and zero, summed over the G groups; at most 2N per group are "
                "non-zero." if mamba2 else
                "How many eigenvalues of the symmetric part of M = S_Cᵀ S_B (an E × E matrix) are positive, "
                "negative and zero; at most 2N are non-zero.")
    return _glossary([
        ("layer", "The layer's index k."),
        ("eig +/−/0 of Sym(M)", spectrum),
        ("from parameters", "The definiteness of Sym(M) read from those counts" + (" (the groups' common one, "
         "indefinite when they differ)" if mamba2 else "") + ": a semi-definite layer pushes the norms of its "
         "tokens one way, an indefinite one leaves the outcome to the tokens."),
        ("u₀ᵀMu₀", "The quadratic form of token 0's state as it enters the layer" + (" (with group 0's M_0)"
         if mamba2 else "") + ": a positive value means token 0's norm starts to grow, a negative one that it "
         "starts to shrink."),
        ("finite-time", "How many tokens blow up at a finite time t* of the layer's idealised field."),
        ("divergent", "How many tokens grow without bound but do not blow up before the horizon."),
        ("bounded", "How many tokens neither grow nor decay (their norm levels off)."),
        ("convergent", "How many tokens decay towards 0."),
        ("undetermined", "How many tokens could not be decided: a token before them blew up first, the steps "
                         "stalled, the horizon came too early, or a token before them was still undetermined "
                         "there (the table of every token gives the reason)."),
        ("first t*", "The earliest blow-up time of any token of the layer, in the field's time t (— when none "
                     "blows up)."),
        ("integrated to", "The last time any token of the layer reached: the horizon t_max, or less when every "
                          "token ended at its own event before it."),
        ("predictions vs trajectories", "How many predictions from the parameters — theorems (proved) and "
                                        "indicators (heuristics) — agree with the labels the integration found."),
    ])


_TOKENS_GLOSSARY = [
    ("token", "The token's index in the prompt."),
    ("text", "Its decoded text (its id when the model has no tokenizer)."),
    ("label", "The outcome of its own trajectory under the layer's idealised field."),
    ("t*", "Its own blow-up time (— when it does not blow up)."),
    ("predicted (kind)", "What the parameters predict for it, and whether that is a theorem (proved) or an "
                         "indicator (a heuristic); none when nothing is predicted."),
    ("reason", "Why it got its label, with the numbers that decided it."),
]

_TIMINGS_GLOSSARY = [
    ("stage", "A step of the analysis, in the order they ran."),
    ("seconds", "The wall-clock time the step took on this machine."),
]


def _layers_table(summary: dict) -> str:
    rows = []
    for rec in summary["layers"]:
        sp, c = rec["spectrum"], rec["trajectory"]["counts"]
        rows.append([rec["layer"], f"{sp['n_positive']}/{sp['n_negative']}/{sp['n_zero']}", rec["parameter_regime"],
                     f"{rec['token0_quadratic_form']:+.3g}", c.get("divergent-finite-time", 0), c.get("divergent", 0),
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


def _header_html(m: dict) -> str:
    """The title and the model's sizes, each size named in one sentence."""
    sizes = ("d_model is the width of the residual stream, E the inner width (H heads of E/H channels), N the "
             "state size, H the number of heads (each with one decay rate) and G the number of groups sharing B "
             "and C." if m["n_heads"] else
             "d_model is the width of the residual stream, E the number of channels of each layer's selective "
             "scan, N the state size per channel and R the rank of the step-size projection.")
    return (f"<h1>Token dynamics of <code>{html.escape(str(m['name']))}</code></h1>\n"
            f"<p>{html.escape(str(m['architecture']))}: {m['n_layer']} layers, d_model {m['d_model']}, "
            f"E = {m['d_inner']}, N = {m['d_state']}, "
            + (f"H = {m['n_heads']} heads, G = {m['n_groups']} groups" if m["n_heads"] else f"R = {m['dt_rank']}")
            + f" ({html.escape(str(m['layout']))} layout). {html.escape(sizes)}</p>")


def _captions(mamba2: bool) -> dict[str, str]:
    """The captions that depend on the architecture: Mamba-1 counts channels, Mamba-2 heads and groups."""
    if mamba2:
        spectrum = ("Non-zero eigenvalues of each group's Sym(M_g) per layer, the G groups of a layer in one column "
                    "(orange positive, blue non-positive; symmetric-log axis, linear within 10⁻³ of the largest "
                    "magnitude).")
        regime_map = ("Per layer, the fraction of its H heads by the sign of their group's quadratic form "
                      "u ↦ uᵀM_g u: positive, negative, indefinite or zero.")
    else:
        spectrum = ("Non-zero eigenvalues of Sym(M), M = S_Cᵀ S_B, per layer (orange positive, blue non-positive; "
                    "symmetric-log axis, linear within 10⁻³ of the largest magnitude).")
        regime_map = ("Per layer, the fraction of its E channels in each regime of the paper's one-dimensional "
                      "theorems, applied to each channel's one-dimensional reduction (μ_d, s_d, b_d, a_d).")
    attention = (f"The token-mixing ('hidden attention') matrix P of the first analysed layer at the prompt's first "
                 f"tokens (at most {ATTENTION_TOKENS}), for the {'head' if mamba2 else 'channel'} with the largest "
                 "|P|: entry (l, j) is how much token j's input reaches token l's output, |P| divided by its row's "
                 "largest value.")
    return {"spectrum": spectrum, "regime_map": regime_map, "hidden_attention": attention}


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
    captions = _captions(mamba2)

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
        _header_html(m),
        f"<p class='note'>{html.escape(INDEXING)}</p>",
        _prompt_html(summary["prompt"]),
        f"<p>Every token of each analysed layer was followed under the layer's idealised field until its own "
        f"event (a blow-up, growth without bound, or a token before it ending) or the horizon t = "
        f"{st['t_max']:g} (relative tolerance {st['rtol']:g} of the adaptive steps, {st['dtype']}); the column "
        "'integrated to' gives where each layer's integration actually ended.</p>",
        "<h2>Regimes per layer</h2>", _layers_table(summary), _layers_glossary(mamba2),
        fig("layer_summary", "Fraction of tokens per label in each analysed layer (bars, left axis), and the "
                             "blow-up time t* of each token that blows up (crosses, right axis)."),
        fig("spectrum", captions["spectrum"]), fig("regime_map", captions["regime_map"]),
        "<h2>Token trajectories</h2>", *layer_figs,
        "<p class='note'>One figure per layer is drawn for reports of at most 8 layers; the layer summary "
        "above covers every layer.</p>" if not any(layer_figs) else "",
        _glossary(_TOKENS_GLOSSARY) if summary["layers"] else "",
        _tokens_details(summary),
        "<h2>Token mixing</h2>",
        fig("hidden_attention", captions["hidden_attention"]),
        "<h2>Discrete network vs continuous limit</h2>",
        f"<p>The pretrained network is explicit Euler with step h = {cmp_['h']:g} for the depth-time field "
        f"dx/dt = Mixer_k(Norm_k(x)); {html.escape(comparison_sentence(cmp_))}</p>",
        f"<p class='note'>{html.escape(COMPARISON_MEANING)}</p>",
        fig("comparison", "Residual-stream norm of the last token: the network (Euler) vs the adaptive solution of "
                          "its depth-time field; dotted: the relative error over all tokens (right axis)."),
        "<h2>The one-dimensional theory</h2>",
        fig("regime_diagram", "The paper's one-dimensional theory (one channel): the regime of token 0 over "
                              "(μ, s_Δ) by the parameter criteria, with blow-up-time contours T*. A reference "
                              "picture, the same for every model."),
    ]
    if summary["notes"]:
        parts += ["<h2>Notes</h2>", "<ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in summary["notes"]) + "</ul>"]
    timings = [[k, f"{v:.2f}"] for k, v in summary["timings"].items()]
    parts += ["<h2>Timings</h2>", _table(["stage", "seconds"], timings), _glossary(_TIMINGS_GLOSSARY),
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
