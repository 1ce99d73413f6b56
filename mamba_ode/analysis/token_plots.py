"""Figures of per-token outcomes: token norms coloured by label, and one summary across layers."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from ..dynamics.tokens import TokenSolution
from ..regimes.labels import Label
from ._figure import REGIME_COLORS, axes_for, get, records_of

__all__ = ["deciding_tokens", "plot_token_trajectories", "plot_layer_summary"]


def deciding_tokens(labels: Sequence[str], t_blowup: Sequence[float | None], max_tokens: int = 12) -> list[int]:
    """The tokens worth drawing: those blowing up (earliest first), some of each other decided label, then a
    sample of the rest — at most ``max_tokens``, in index order.

    Arguments:
        labels: per-token labels.
        t_blowup: per-token blow-up time (None or NaN where none).
        max_tokens: most tokens returned.

    Returns:
        Sorted token indices.
    """
    L = len(labels)
    tb = [x if x is not None and math.isfinite(x) else math.inf for x in t_blowup]
    chosen = sorted((l for l in range(L) if math.isfinite(tb[l])), key=lambda l: tb[l])[: max(1, max_tokens // 2)]
    for lab in (Label.CONVERGENT, Label.DIVERGENT, Label.BOUNDED, Label.UNDETERMINED):
        chosen += [l for l in range(L) if labels[l] == lab and l not in chosen][:2]
    rest = [l for l in range(L) if l not in chosen]
    if rest and len(chosen) < max_tokens:
        step = max(1, len(rest) // (max_tokens - len(chosen)))
        chosen += rest[::step][: max_tokens - len(chosen)]
    return sorted(set(chosen[:max_tokens]))


def plot_token_trajectories(solution: TokenSolution, labels: Sequence[str] | None = None, *,
                            tokens: Sequence[int] | None = None, max_tokens: int = 12, ax: Axes | None = None,
                            title: str | None = None) -> Figure:
    """Token norms ``‖u_l(t)‖`` at the solver's steps, coloured by label, each blow-up time marked.

    Arguments:
        solution: a `mamba_ode.dynamics.tokens.TokenSolution` (``ts`` (T,), ``norms`` (T, L)).
        labels: per-token labels for the colours and legend (default: how each token's integration ended).
        tokens: token indices to draw (default: `deciding_tokens`).
        max_tokens: most tokens drawn by default.
        ax: axes to draw into (default: a new figure).
        title: axes title.

    Returns:
        The figure.

    Raises:
        ValueError: for a token index outside [0, L) or labels of the wrong length.
    """
    L = solution.n_tokens
    labs = [str(x) for x in (labels if labels is not None else solution.ends)]
    if len(labs) != L:
        raise ValueError(f"argument 'labels' has {len(labs)} entries for {L} tokens")
    tbs = [float(x) for x in solution.t_blowup.tolist()]
    tokens = list(tokens) if tokens is not None else deciding_tokens(labs, tbs, max_tokens)
    for tok in tokens:
        if isinstance(tok, bool) or not isinstance(tok, int) or not 0 <= tok < L:
            raise ValueError(f"argument 'tokens' holds {tok!r}, outside [0, {L})")
    ts, norms = solution.ts.double().cpu(), solution.norms.double().cpu()
    positive = ts[ts > 0]
    logx = positive.numel() > 1 and float(positive.max() / positive.min()) > 100
    own = ax is None
    fig, ax = axes_for(ax, (7.5, 4.2))
    drawn = 0
    marked = False  # a blow-up time was marked (dotted line)
    for tok in tokens:
        keep = torch.isfinite(norms[:, tok]) & (norms[:, tok] > 0)
        if logx:
            keep &= ts > 0
        if not keep.any():
            continue
        color = REGIME_COLORS.get(labs[tok], "#4a5568")
        ax.plot(ts[keep].numpy(), norms[keep, tok].numpy(), color=color, lw=1.2, label=f"token {tok}: {labs[tok]}")
        drawn += 1
        if math.isfinite(tbs[tok]) and (tbs[tok] > 0 or not logx):
            ax.axvline(tbs[tok], color=color, ls=":", lw=0.8)
            marked = True
    if drawn == 0:
        raise ValueError("no token has a positive norm at a positive time: nothing to draw on these axes")
    if logx:
        ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("t")
    ax.set_ylabel("‖u_l(t)‖")
    ax.set_title(title if title is not None else "token norms (dotted: blow-up times)", fontsize=10)
    handles = ax.get_legend_handles_labels()[0]
    if marked:  # one entry for the dotted blow-up markers, in each token's colour
        handles.append(Line2D([], [], color="k", ls=":", lw=0.8, label="blow-up time t* (dotted)"))
    if own:  # beside the axes, never over the curves
        fig.legend(handles=handles, fontsize=7, loc="outside right upper")
    else:
        ax.legend(handles=handles, fontsize=7, ncols=2 if len(handles) > 6 else 1, loc="best")
    return fig


def plot_layer_summary(layers: Sequence[Any], *, ax: Axes | None = None, title: str | None = None) -> Figure:
    """Per layer, the fraction of tokens per label (stacked bars) and the tokens' blow-up times (dots, right axis).

    Arguments:
        layers: per analysed layer a dict (or object) with ``layer``, ``labels`` (per-token labels) and
            ``t_blowup`` (per-token blow-up times, None/NaN where none) — e.g. built from an
            `mamba_ode.Analysis`.
        ax: axes to draw into.
        title: axes title.

    Returns:
        The figure.

    Raises:
        ValueError: for no layers.
    """
    records = records_of(layers, "layers")
    names = [lab for lab in (Label.FINITE, Label.DIVERGENT, Label.BOUNDED, Label.CONVERGENT, Label.UNDETERMINED)]
    own = ax is None
    fig, ax = axes_for(ax, (min(max(6.0, 0.3 * len(records) + 3), 14.0), 4.4))
    xs = [int(get(r, "layer", i)) for i, r in enumerate(records)]
    bottom = [0.0] * len(records)
    for lab in names:
        frac = []
        for r in records:
            labs = [str(x) for x in get(r, "labels", [])]
            frac.append(labs.count(str(lab)) / max(len(labs), 1))
        ax.bar(xs, frac, bottom=bottom, color=REGIME_COLORS[lab], label=str(lab), width=0.8)
        bottom = [b + f for b, f in zip(bottom, frac)]
    ax.set_ylim(0, 1)
    ax.set_xlabel("layer")
    ax.set_ylabel("fraction of tokens")
    if len(xs) <= 32:  # one tick per layer
        ax.set_xticks(xs, [str(x) for x in xs], fontsize=7 if len(xs) > 24 else 9)
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    tb_x, tb_y = [], []
    for x, r in zip(xs, records):
        for v in get(r, "t_blowup", []) or []:
            if v is not None and math.isfinite(v) and v > 0:
                tb_x.append(x)
                tb_y.append(v)
    handles = ax.get_legend_handles_labels()[0]
    if tb_y:
        ax2 = ax.twinx()
        ax2.scatter(tb_x, tb_y, s=8, color="k", marker="x", label="blow-up time t* of a token (right axis)")
        ax2.set_yscale("log")
        ax2.set_ylabel("t* of blowing-up tokens")
        handles += ax2.get_legend_handles_labels()[0]
    if own:  # above the axes: the bars fill them to 1
        fig.legend(handles=handles, fontsize=7, loc="outside upper center", ncols=3, frameon=False)
    else:
        ax.legend(handles=handles, fontsize=7, loc="upper left", ncols=2)
    ax.set_title(title if title is not None else "token labels per layer", fontsize=10)
    return fig
