"""The report of a many-prompt analysis: per-layer statistics as figures, a table, ``stats.json``.

Written like the single-prompt report (`mamba_ode.analysis.report`): into a staging directory beside
the target, moved into place whole (`mamba_ode.analysis.output.staged_dir`).
"""

from __future__ import annotations

import base64
import html
import json
import os
from pathlib import Path

import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from .._version import __version__
from ..regimes.labels import Label
from ._figure import REGIME_COLORS, axes_for
from .many import TOKEN_LABELS, Interval, ManyAnalysis
from .output import check_report_dir, staged_dir
from .report import _CSS, _png_bytes, _table

__all__ = ["write_many_report", "many_figures"]


def _errorbar(ax, xs: list[float], ivs: list[Interval], **kw) -> None:
    x: list[float] = []
    y: list[float] = []
    lo: list[float] = []
    hi: list[float] = []
    for xi, iv in zip(xs, ivs):
        if iv.value is None:
            continue
        x.append(xi)
        y.append(iv.value)
        lo.append(iv.value - (iv.low if iv.low is not None else iv.value))
        hi.append((iv.high if iv.high is not None else iv.value) - iv.value)
    if x:
        ax.errorbar(x, y, yerr=[lo, hi], capsize=3, marker="o", **kw)


def many_figures(many: ManyAnalysis) -> dict[str, Figure]:
    """The three figures of the report.

    Arguments:
        many: a `ManyAnalysis`.

    Returns:
        ``{"labels": ..., "t_blowup": ..., "agreement": ...}`` matplotlib figures (the caller closes them).
    """
    layers = [s.layer for s in many.stats]
    conf = round(100 * many.settings.get("confidence", 0.95))
    figs: dict[str, Figure] = {}

    fig, ax = axes_for(None, (8, 4.2))
    offsets = {str(lab): (i - 2) * 0.08 for i, lab in enumerate(TOKEN_LABELS)}
    for lab in [str(x) for x in TOKEN_LABELS]:
        ivs = [s.label_fractions[lab] for s in many.stats]
        if any(iv.value for iv in ivs):
            _errorbar(ax, [k + offsets[lab] for k in layers], ivs, label=lab, color=REGIME_COLORS.get(lab), lw=1.2)
    ax.set_xlabel("layer")
    ax.set_ylabel("fraction of tokens")
    ax.set_ylim(-0.03, 1.03)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(f"Token labels per layer ({conf} % intervals over prompts)")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    figs["labels"] = fig

    fig, ax = axes_for(None, (8, 4.2))
    rows = [(s.layer, s.t_blowup_quantiles) for s in many.stats if s.t_blowup_quantiles.get("q50") is not None]
    if rows:
        x = [r[0] for r in rows]
        med = [float(r[1]["q50"]) for r in rows]  # type: ignore[arg-type]
        lo = [m - float(r[1]["q10"]) for m, r in zip(med, rows)]  # type: ignore[arg-type]
        hi = [float(r[1]["q90"]) - m for m, r in zip(med, rows)]  # type: ignore[arg-type]
        ax.errorbar(x, med, yerr=[lo, hi], fmt="o", capsize=3, color=REGIME_COLORS[Label.FINITE],
                    label="median t*, bars from the 10th to the 90th percentile")
        ax.set_yscale("log")
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no token blew up in finite time", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("layer")
    ax.set_ylabel("blow-up time t*")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title("Blow-up times of divergent-finite-time tokens")
    figs["t_blowup"] = fig

    fig, ax = axes_for(None, (8, 4.2))
    for i, (kind, colour) in enumerate((("theorem", "#2c5282"), ("indicator", "#b7791f"))):
        ivs = [s.agreement[kind] for s in many.stats]
        _errorbar(ax, [k + (i - 0.5) * 0.1 for k in layers], ivs, label=kind, color=colour, lw=1.2)
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel("layer")
    ax.set_ylabel("agreement rate")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(f"Parameter-side predictions that agree with the trajectories ({conf} % intervals)")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no prediction could be compared with a decided label", ha="center", va="center",
                transform=ax.transAxes)
    figs["agreement"] = fig
    return figs


def _iv(iv: Interval) -> str:
    if iv.value is None:
        return "—"
    if iv.low is None or iv.high is None:
        return f"{iv.value:.3f}"
    return f"{iv.value:.3f} [{iv.low:.3f}, {iv.high:.3f}]"


_CAPTIONS = {
    "labels": "Fraction of tokens with each label, per layer, pooled over prompts; bars: bootstrap interval "
              "from resampling prompts (tokens of one prompt are not independent).",
    "t_blowup": "Blow-up times t* of the tokens that diverge in finite time: median and 10th–90th percentiles "
                "over all such tokens of all prompts.",
    "agreement": "Share of parameter-side predictions (theorem: proven for this case; indicator: a heuristic "
                 "sign) that agree with the token's integrated label, among those both sides decide.",
}


def render_many_html(many: ManyAnalysis, pngs: dict[str, bytes]) -> str:
    """The HTML page (figures embedded as PNG).

    Arguments:
        many: a `ManyAnalysis`.
        pngs: figure name → PNG bytes.

    Returns:
        The page as a string.
    """
    s = many.settings
    conf = round(100 * s.get("confidence", 0.95))
    labels = [str(x) for x in TOKEN_LABELS]
    rows = []
    for st in many.stats:
        q = st.t_blowup_quantiles
        rows.append([st.layer, st.n_prompts, st.n_tokens] + [_iv(st.label_fractions[lab]) for lab in labels]
                    + ["—" if q.get("q50") is None else f"{q['q50']:.4g}", _iv(st.agreement["theorem"]),
                       _iv(st.agreement["indicator"])])
    table = _table(["layer", "prompts", "tokens"] + labels + ["median t*", "theorem agrees", "indicator agrees"], rows)
    figs = "".join(
        f"<figure><img alt='{name}' src='data:image/png;base64,{base64.b64encode(png).decode()}'>"
        f"<figcaption>{html.escape(_CAPTIONS[name])}</figcaption></figure>" for name, png in pngs.items())
    prompt_rows = []
    for r in many.results:
        text = r.prompt if r.prompt is not None else " ".join(map(str, r.ids[:40]))
        counts = "; ".join(f"layer {rec['layer']}: " + ", ".join(
            f"{sum(t['label'] == lab for t in rec['tokens'])} {lab}" for lab in labels
            if any(t["label"] == lab for t in rec["tokens"])) for rec in r.layers)
        prompt_rows.append([r.index, len(r.ids), text[:80], counts])
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>mamba-ode: {html.escape(many.model_name)}, "
            f"{len(many.results)} prompts</title><style>{_CSS}</style></head><body>"
            f"<h1>Token dynamics over {len(many.results)} prompts</h1>"
            f"<p>Model <code>{html.escape(many.model_name)}</code> ({html.escape(many.architecture)}); layers "
            f"{html.escape(str(s.get('layers')))}; horizon t = {s.get('t_max'):g}; executor {s.get('executor')}. "
            f"Token and prompt indices count from 0.</p>"
            f"<h2>Per layer</h2><p class='note'>Each cell: the share over all tokens of all prompts, then its "
            f"{conf} % bootstrap interval over prompts in brackets. ‘theorem/indicator agrees’: among the tokens "
            "whose prediction and integrated label are both decided, the share that match.</p>"
            f"{table}<h2>Figures</h2>{figs}<h2>Prompts</h2>"
            f"{_table(['prompt', 'tokens', 'text (or ids)', 'labels per layer'], prompt_rows)}</body></html>")


def write_many_report(many: ManyAnalysis, out_dir: str | os.PathLike) -> Path:
    """Write ``report.html``, ``stats.json`` and the figures of a many-prompt analysis.

    Arguments:
        many: a `ManyAnalysis`.
        out_dir: the report directory (new, empty, or an earlier report of mamba-ode, which is replaced).

    Returns:
        The path of ``report.html``.

    Raises:
        ValueError: (`ReportDirError`) for an ``out_dir`` that is a file, not writable, or a non-empty
            directory that is not a report.
        OSError: when the file system refuses a write.
    """
    final = check_report_dir(out_dir)
    figs = many_figures(many)
    with staged_dir(final, version=__version__) as out:
        (out / "figures").mkdir()
        pngs = {}
        for name, fig in figs.items():
            try:
                pngs[name] = _png_bytes(fig)
                (out / "figures" / f"{name}.png").write_bytes(pngs[name])
            finally:
                plt.close(fig)
        (out / "stats.json").write_text(json.dumps(many.summary(), indent=1, allow_nan=False) + "\n",
                                        encoding="utf-8")
        (out / "report.html").write_text(render_many_html(many, pngs), encoding="utf-8")
    return final / "report.html"
