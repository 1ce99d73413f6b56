"""Matplotlib figures of the toolkit's result objects.

Every function takes a result object (or a tensor where the result *is* a tensor), an optional
``ax`` to draw into, and returns the `matplotlib.figure.Figure`. Nothing here computes
dynamics: solving, classifying and comparing happen in `mamba_ode.dynamics`
and `mamba_ode.regimes`; the one exception is
`plot_phase_portrait`, which evaluates a field on a grid (that *is* the picture).

Shape letters as in
`mamba_ode.shapes`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import matplotlib
import torch
from matplotlib.axes import Axes
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import FixedLocator, MaxNLocator, NullLocator
from torch import Tensor

from ..dynamics.compare import DiscreteComparison
from ..dynamics.solvers import Solution
from ..regimes.criteria import criteria_1d
from ..regimes.labels import Label
from ..regimes.table import RegimeTable, layer_fractions
from ._figure import REGIME_COLORS, axes_for, get, records_of, require, seq_index
from .token_plots import deciding_tokens, plot_layer_summary, plot_token_trajectories

__all__ = [
    "REGIME_COLORS",
    "plot_trajectories",
    "plot_phase_portrait",
    "plot_spectrum",
    "plot_regime_map",
    "plot_hidden_attention",
    "plot_comparison",
    "plot_regime_diagram",
    "plot_token_trajectories",
    "plot_layer_summary",
    "deciding_tokens",
]

# ============================================================================ trajectories


def plot_trajectories(solution: Solution, *, seq: int = 0, tokens: Sequence[int] | None = None, ax: Axes | None = None,
                      logx: bool | None = None, logy: bool = True, title: str | None = None) -> Figure:
    """Token norms ``|u_l(t)|`` against t for one sequence of a solve result, blow-up marked.

    Arguments:
        solution: a `mamba_ode.Solution` (``ts`` (T,), ``ys`` (T, B, L, E),
            ``t_blowup`` (B,), ``status``).
        seq: which sequence b of the batch.
        tokens: token indices to draw (default: all, at most 12 evenly spaced).
        ax: axes to draw into (default: a new figure).
        logx: log time axis (default: when the time span covers more than two decades).
        logy: log norm axis.
        title: axes title (default: the trajectory's status).

    Returns:
        The figure.

    Raises:
        TypeError: if ``solution`` lacks ``ts``/``ys``/``t_blowup``.
        ValueError: for an out-of-range ``seq`` or token index.
    """
    require(solution, ("ts", "ys", "t_blowup"), "solution")
    ts = solution.ts.detach().double().cpu()
    ys = solution.ys.detach().double().cpu()
    b = seq_index(seq, ys.shape[1])
    L = ys.shape[2]
    if tokens is None:
        tokens = sorted({round(i) for i in torch.linspace(0, L - 1, min(L, 12)).tolist()})
    for tok in tokens:
        if not isinstance(tok, int) or not 0 <= tok < L:
            raise ValueError(f"argument 'tokens' holds {tok!r}, outside [0, {L})")
    norms = ys[:, b].norm(dim=-1)  # (T, L)
    fig, ax = axes_for(ax)
    positive = ts[ts > 0]
    if logx is None:
        logx = positive.numel() > 1 and float(positive.max() / positive.min()) > 100
    cmap = matplotlib.colormaps["viridis"]
    for i, tok in enumerate(tokens):
        keep = torch.isfinite(norms[:, tok])
        if logx:
            keep &= ts > 0
        ax.plot(ts[keep].numpy(), norms[keep, tok].numpy(), color=cmap(i / max(len(tokens) - 1, 1)),
                label=f"token {tok}")
    tb = float(solution.t_blowup[b])
    if math.isfinite(tb):
        ax.axvline(tb, color=REGIME_COLORS[Label.FINITE], ls="--", lw=1)
        ax.annotate(f"blow-up t≈{tb:.5g}", (tb, 0.95), xycoords=("data", "axes fraction"), ha="right",
                    va="top", color=REGIME_COLORS[Label.FINITE], fontsize=8)
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel("t")
    ax.set_ylabel("‖u_l(t)‖")
    status = getattr(solution, "status", None)
    default_title = f"sequence {b}: {status[b].value}" if isinstance(status, list) and status else f"sequence {b}"
    ax.set_title(title if title is not None else default_title)
    ax.legend(fontsize=7, ncols=2 if len(tokens) > 6 else 1)
    return fig


# ============================================================================ phase portrait


def plot_phase_portrait(field: Callable[[Any, Tensor], Tensor], *, lim: float = 2.0, n: int = 25,
                        trajectories: Solution | None = None, ax: Axes | None = None,
                        title: str | None = None) -> Figure:
    """Phase portrait of a one-dimensional system with two tokens, ``(u_0, u_1)`` (tokens 0 and 1).

    Arguments:
        field: a callable ``f(t, u)`` on (B, 2, 1) tokens, e.g. `mamba_ode.OneDimField`.
        lim: the plane ``[-lim, lim]²`` is drawn.
        n: grid points per axis for the stream plot.
        trajectories: optional solve result on (B, 2, 1) tokens, drawn on top.
        ax: axes to draw into.
        title: axes title.

    Returns:
        The figure.

    Raises:
        ValueError: for ``lim`` ≤ 0 or ``n`` < 2, or trajectories not on two one-dimensional tokens.
    """
    if not lim > 0:
        raise ValueError(f"argument 'lim' must be > 0, got {lim!r}")
    if not isinstance(n, int) or n < 2:
        raise ValueError(f"argument 'n' must be an int >= 2, got {n!r}")
    g = torch.linspace(-lim, lim, n, dtype=torch.float64)
    U1, U2 = torch.meshgrid(g, g, indexing="xy")
    u = torch.stack([U1.reshape(-1), U2.reshape(-1)], dim=-1).unsqueeze(-1)  # (n², 2, 1)
    with torch.no_grad():
        du = field(0.0, u).reshape(n, n, 2).double()
    fig, ax = axes_for(ax, (5.0, 5.0))
    speed = du.norm(dim=-1)
    ax.streamplot(U1.numpy(), U2.numpy(), du[..., 0].numpy(), du[..., 1].numpy(),
                  color=torch.log1p(speed).numpy(), cmap="Greys", density=1.0, linewidth=0.8)
    if trajectories is not None:
        require(trajectories, ("ys",), "trajectories")
        ys = trajectories.ys.detach().double().cpu()
        if ys.dim() != 4 or ys.shape[2] != 2 or ys.shape[3] != 1:
            raise ValueError(f"argument 'trajectories' must hold (T, B, 2, 1) states, got {tuple(ys.shape)}")
        for b in range(ys.shape[1]):
            path = ys[:, b, :, 0]
            path = path[torch.isfinite(path).all(dim=1) & (path.abs() <= 3 * lim).all(dim=1)]
            ax.plot(path[:, 0].numpy(), path[:, 1].numpy(), color=REGIME_COLORS[Label.FINITE], lw=1.2)
            if path.shape[0]:
                ax.plot(path[0, 0], path[0, 1], "o", color="k", ms=3)
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_xlabel("u_0 (token 0)")
    ax.set_ylabel("u_1 (token 1)")
    ax.set_aspect("equal")
    ax.set_title(title if title is not None else "phase portrait (two tokens, E = 1)")
    return fig


# ============================================================================ spectra and regime maps


def plot_spectrum(table: Any, *, ax: Axes | None = None, symlog: bool = True, title: str | None = None) -> Figure:
    """The non-zero spectrum of Sym(M) per layer: one column of dots per layer.

    The layer axis has integer ticks only; the value axis is padded so the extreme eigenvalues lie
    inside the frame, and on a symmetric-log axis its ticks are 0 and whole decades outside the linear
    band around 0 (no crowded labels near 0).

    Arguments:
        table: per layer, an object or dict with ``eigenvalues`` (and optionally ``layer``, else
            the position): the result of `mamba_ode.regime_table`, or e.g.
            ``[mamba_ode.sym_spectrum(b.ssm) for b in model.layers]`` (the ≤ 2N eigenvalues of the
            reduced problem; the others are exactly zero).
        ax: axes to draw into.
        symlog: symmetric-log value axis (eigenvalues span decades).
        title: axes title (default: a short one; the legend names the colours).

    Returns:
        The figure.

    Raises:
        ValueError: for an empty table.
        TypeError: for records without eigenvalues.
    """
    records = records_of(table, "table")
    own = ax is None
    fig, ax = axes_for(ax, (min(max(5.0, 0.3 * len(records) + 2), 14.0), 4.0))
    lo = hi = 0.0
    layers: list[int] = []
    points: dict[bool, tuple[list[float], list[float]]] = {True: ([], []), False: ([], [])}  # positive?
    for i, rec in enumerate(records):
        ev = get(rec, "eigenvalues")
        if ev is None:
            raise TypeError(f"argument 'table': record {i} has no 'eigenvalues'")
        ev = torch.as_tensor(ev, dtype=torch.float64).reshape(-1)
        layers.append(get(rec, "layer", i))
        for v in ev.tolist():
            points[v > 0][0].append(layers[-1])
            points[v > 0][1].append(v)
        if ev.numel():
            lo, hi = min(lo, float(ev.min())), max(hi, float(ev.max()))
    for positive, name, color in ((True, "positive", Label.DIVERGENT), (False, "≤ 0", Label.CONVERGENT)):
        if points[positive][0]:
            ax.scatter(*points[positive], s=10, color=REGIME_COLORS[color], alpha=0.8, label=name)
    ax.axhline(0, color="k", lw=0.6)
    for other in ax.get_shared_y_axes().get_siblings(ax):  # shared value axes: limits and ticks cover all
        if other is not ax and other.has_data() and math.isfinite(other.dataLim.y0):
            lo, hi = min(lo, float(other.dataLim.y0)), max(hi, float(other.dataLim.y1))
    vmax = max(-lo, hi)
    if symlog and vmax > 0:
        linthresh = max(vmax * 1e-3, 1e-300)
        ax.set_yscale("symlog", linthresh=linthresh)
        ax.yaxis.set_major_locator(FixedLocator(_decade_ticks(lo, hi, linthresh)))
        ax.yaxis.set_minor_locator(NullLocator())
    if vmax > 0:
        _pad_limits(ax, lo, hi)
    ax.set_xlim(min(layers) - 0.6, max(layers) + 0.6)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    ax.set_xlabel("layer")
    ax.set_ylabel("eigenvalues of Sym(M)")
    ax.set_title(title if title is not None else "non-zero eigenvalues of Sym(M) per layer", fontsize=10)
    if own:  # beside the axes, never over the dots
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0), borderaxespad=0.3)
    else:
        ax.legend(fontsize=8, loc="best")
    return fig


def _decade_ticks(lo: float, hi: float, linthresh: float) -> list[float]:
    """0 and the whole decades above ``linthresh`` (at most four per sign) that cover [lo, hi]."""
    first = math.floor(math.log10(linthresh)) + 1
    ticks = [0.0]
    for sign, edge in ((1.0, hi), (-1.0, -lo)):
        if edge <= linthresh:
            continue
        decades = [k for k in range(first, math.floor(math.log10(edge)) + 2) if 10.0 ** k <= edge * 1.0001]
        stride = max(1, math.ceil(len(decades) / 4))
        ticks += [sign * 10.0 ** k for k in decades[::-1][::stride]]
    return sorted(ticks)


def _pad_limits(ax: Axes, lo: float, hi: float, frac: float = 0.06) -> None:
    """Value limits that contain [lo, hi] with a margin of ``frac`` of the span in the axis' own scale."""
    tr = ax.yaxis.get_transform()
    a, b = (float(v) for v in tr.transform([[lo], [hi]]).reshape(-1))
    pad = frac * (b - a if b > a else 1.0)
    new = tr.inverted().transform([[a - pad], [b + pad]]).reshape(-1)
    ax.set_ylim(float(new[0]), float(new[1]))


def plot_regime_map(table: Any, *, unit: str | None = None, ax: Axes | None = None,
                    title: str | None = None) -> Figure:
    """Heat map of what fraction of each layer's units falls in each class, one row per layer.

    Mamba-1: the fractions of channels whose 1-D reduction is convergent / static / divergent;
    Mamba-2: the fractions of heads whose group's quadratic form is positive / negative / indefinite.
    The colour bar and the default title name the unit counted.

    Arguments:
        table: the result of `mamba_ode.regime_table`, or a list of dicts with ``layer`` and
            ``channel_fractions`` (class → fraction of the layer's units).
        unit: what the fractions count, ``"channels"`` (Mamba-1) or ``"heads"`` (Mamba-2); default:
            ``"heads"`` for a regime table of Mamba-2 heads, else ``"channels"``.
        ax: axes to draw into.
        title: axes title (default: per-channel 1-D regimes, or per-head signs).

    Returns:
        The figure.

    Raises:
        ValueError: for an empty table or a unit other than ``"channels"`` / ``"heads"``.
        TypeError: for records without channel fractions.
    """
    if unit is None:
        unit = "heads" if isinstance(table, RegimeTable) and any(r.head is not None for r in table) else "channels"
    if unit not in ("channels", "heads"):
        raise ValueError(f"argument 'unit' must be 'channels' or 'heads', got {unit!r}")
    if isinstance(table, RegimeTable):  # verdicts: one row per layer (Mamba-2: fractions of heads)
        table = [{"layer": k, "channel_fractions": layer_fractions(table.layer(k))}
                 for k in sorted({r.layer for r in table})]
    records = records_of(table, "table")
    fracs = []
    for i, rec in enumerate(records):
        f = get(rec, "channel_fractions")
        if f is None:
            raise TypeError(f"argument 'table': record {i} has no 'channel_fractions'")
        fracs.append(dict(f))
    labels = [k for k in REGIME_COLORS if any(k in f for f in fracs)]
    labels += sorted({k for f in fracs for k in f} - set(labels))
    data = torch.tensor([[f.get(k, 0.0) for k in labels] for f in fracs], dtype=torch.float64)
    fig, ax = axes_for(ax, (1.2 * len(labels) + 3, 0.3 * len(records) + 1.8))
    im = ax.imshow(data.numpy(), aspect="auto", cmap="magma", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
    ax.set_yticks(range(len(records)), [str(get(r, "layer", i)) for i, r in enumerate(records)])
    ax.set_ylabel("layer")
    for i in range(data.shape[0]):
        for j in range(data.shape[1]):
            v = float(data[i, j])
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7, color="w" if v < 0.6 else "k")
    fig.colorbar(im, ax=ax, label=f"fraction of the layer's {unit}")
    default = ("per-head sign of the group's quadratic form" if unit == "heads" else
               "per-channel one-dimensional regimes")
    ax.set_title(title if title is not None else default, fontsize=10)
    return fig


# ============================================================================ hidden attention


def plot_hidden_attention(P: Tensor, *, channel: int = 0, seq: int = 0, scale: str = "row", ax: Axes | None = None,
                          title: str | None = None) -> Figure:
    """The hidden-attention matrix ``P[:, :, channel]`` of one sequence (lower triangular).

    Arguments:
        P: (B, L, L, E) from `mamba_ode.hidden_attention` (or (L, L, E) for one sequence).
        channel: channel d in [0, E).
        seq: sequence b in [0, B).
        scale: ``"row"`` — |P| divided by each row's maximum; ``"minmax"`` — |P| min-max scaled
            over the matrix; ``"signed"`` — P itself on a diverging colour map.
        ax: axes to draw into.
        title: axes title.

    Returns:
        The figure.

    Raises:
        TypeError: if P is not a tensor.
        ValueError: for a wrong shape, index or scale.
    """
    if not isinstance(P, Tensor):
        raise TypeError(f"argument 'P' must be a torch.Tensor, got {type(P).__name__}")
    if P.dim() == 3:
        P = P.unsqueeze(0)
    if P.dim() != 4 or P.shape[1] != P.shape[2]:
        raise ValueError(f"argument 'P' must have shape (B, L, L, E), got {tuple(P.shape)}")
    b = seq_index(seq, P.shape[0])
    E = P.shape[3]
    if not isinstance(channel, int) or not -E <= channel < E:
        raise ValueError(f"argument 'channel' must be an int in [{-E}, {E}), got {channel!r}")
    if scale not in ("row", "minmax", "signed"):
        raise ValueError(f"argument 'scale' must be 'row', 'minmax' or 'signed', got {scale!r}")
    m = P[b, :, :, channel].detach().double().cpu()
    L = m.shape[0]
    mask = torch.triu(torch.ones(L, L, dtype=torch.bool), diagonal=1)
    if scale == "signed":
        vmax = float(m.abs().max()) or 1.0
        img, cmap, vmin = m, "RdBu_r", -vmax
    else:
        a = m.abs()
        if scale == "row":
            img = a / a.amax(dim=1, keepdim=True).clamp_min(torch.finfo(torch.float64).tiny)
        else:
            lo, hi = float(a[~mask].min()), float(a[~mask].max())
            img = (a - lo) / (hi - lo if hi > lo else 1.0)
        cmap, vmin, vmax = "viridis", 0.0, 1.0
    img = img.masked_fill(mask, float("nan"))
    fig, ax = axes_for(ax, (5.0, 4.2))
    im = ax.imshow(img.numpy(), cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
    fig.colorbar(im, ax=ax, label={"row": "|P| / row max", "minmax": "|P| (min-max)", "signed": "P"}[scale])
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    ax.set_xlabel("source token j")
    ax.set_ylabel("target token l")
    ax.set_title(title if title is not None else f"hidden attention, channel {channel % E}")
    return fig


# ============================================================================ discrete vs continuous


def plot_comparison(comparison: DiscreteComparison, *, seq: int = 0, token: int = -1, ax: Axes | None = None,
                    title: str | None = None) -> Figure:
    """Discrete (Euler) and continuous (adaptive) trajectories of one token, overlaid.

    Arguments:
        comparison: a `mamba_ode.compare.DiscreteComparison` (``ts`` (T,), ``discrete`` and
            ``continuous`` (T, B, L, ·), ``rel_error`` (T, B)).
        seq: sequence b.
        token: token index l (default: the last token).
        ax: axes to draw into.
        title: axes title.

    Returns:
        The figure.

    Raises:
        TypeError: for an object without those attributes.
        ValueError: for out-of-range indices.
    """
    require(comparison, ("ts", "discrete", "continuous"), "comparison")
    ts = comparison.ts.detach().double().cpu()
    disc = comparison.discrete.detach().double().cpu()
    cont = comparison.continuous.detach().double().cpu()
    b = seq_index(seq, disc.shape[1])
    L = disc.shape[2]
    if not isinstance(token, int) or not -L <= token < L:
        raise ValueError(f"argument 'token' must be an int in [{-L}, {L}), got {token!r}")
    nd = disc[:, b, token].norm(dim=-1)
    nc = cont[:, b, token].norm(dim=-1)
    own = ax is None
    fig, ax = axes_for(ax, (6.5, 4.4))
    ax.plot(ts.numpy(), nc.numpy(), "-", color=REGIME_COLORS[Label.CONVERGENT], label="continuous (adaptive ODE)")
    ax.plot(ts.numpy(), nd.numpy(), "o--", ms=4, color=REGIME_COLORS[Label.DIVERGENT],
            label="discrete (the network, Euler)")
    err = getattr(comparison, "rel_error", None)
    axes = [ax]
    if err is not None:
        err = torch.as_tensor(err).detach().double().cpu()
        err = err[:, b] if err.dim() == 2 else err
        ax2 = ax.twinx()
        ax2.plot(ts.numpy(), err.numpy(), ":", color="k", lw=1, label="relative error, all tokens (right axis)")
        ax2.set_ylabel("relative error (all tokens)")
        axes.append(ax2)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    ax.set_xlabel("t (depth, in layers)")
    ax.set_ylabel(f"‖x(t)‖ of token {token % L}")
    ax.set_title(title if title is not None else "discrete network vs continuous limit", fontsize=10)
    handles = [h for a in axes for h in a.get_legend_handles_labels()[0]]  # one legend for both axes
    if own:  # above the axes, outside the data (the constrained layout makes room)
        fig.legend(handles=handles, fontsize=8, loc="outside upper center", ncols=2, frameon=False)
    else:
        axes[-1].legend(handles=handles, fontsize=8, loc="best")
    return fig


# ============================================================================ regime diagram


def plot_regime_diagram(mu: Tensor | Sequence[float], s_delta: Tensor | Sequence[float], *, u0: float = 0.5,
                        a: float = 1.0, b_delta: float = 0.0, ax: Axes | None = None,
                        title: str | None = None) -> Figure:
    """The 1-D regime of token 0 (the first token) over a (μ, s_Δ) grid, coloured by `mamba_ode.criteria_1d`.

    Finite blow-up times are drawn as contours (log₁₀ T*).

    Arguments:
        mu: (Gμ,) grid of μ values.
        s_delta: (Gs,) grid of s_Δ values.
        u0: initial value of token 0.
        a: decay rate.
        b_delta: Δ bias.
        ax: axes to draw into.
        title: axes title.

    Returns:
        The figure.

    Raises:
        ValueError: for empty grids or u0 = 0.
    """
    mu = torch.as_tensor(mu, dtype=torch.float64).reshape(-1)
    s_delta = torch.as_tensor(s_delta, dtype=torch.float64).reshape(-1)
    if mu.numel() == 0 or s_delta.numel() == 0:
        raise ValueError("arguments 'mu' and 's_delta' must be non-empty grids")
    if u0 == 0:
        raise ValueError("argument 'u0' must be non-zero (zero is a fixed point)")
    names: list[str] = []
    lab = torch.zeros(s_delta.numel(), mu.numel())
    tstar = torch.full((s_delta.numel(), mu.numel()), float("nan"), dtype=torch.float64)
    for i, s in enumerate(s_delta.tolist()):
        for j, m in enumerate(mu.tolist()):
            crit = criteria_1d(m, s, a, [u0], b_delta=b_delta)
            name = str(crit.regimes[0][0])
            if name not in names:
                names.append(name)
            lab[i, j] = names.index(name)
            tb = float(crit.t_blowup_token1[0])
            if math.isfinite(tb):
                tstar[i, j] = tb
    fig, ax = axes_for(ax, (6.0, 4.5))
    cmap = ListedColormap([REGIME_COLORS.get(n, "#a0aec0") for n in names])
    extent = (float(mu[0]), float(mu[-1]), float(s_delta[0]), float(s_delta[-1]))
    ax.imshow(lab.numpy(), origin="lower", extent=extent, aspect="auto", cmap=cmap, vmin=-0.5,
              vmax=len(names) - 0.5, interpolation="nearest")
    if torch.isfinite(tstar).sum() > 3:
        M, S = torch.meshgrid(mu, s_delta, indexing="xy")
        cs = ax.contour(M.numpy(), S.numpy(), torch.log10(tstar).numpy(), colors="w", linewidths=0.7)
        ax.clabel(cs, fontsize=7, fmt=lambda v: f"T*={10 ** v:.2g}")
    ax.legend(handles=[Patch(color=REGIME_COLORS.get(n, "#a0aec0"), label=n) for n in names], fontsize=8,
              loc="lower left")
    ax.set_xlabel("μ = S_Cᵀ S_B")
    ax.set_ylabel("s_Δ")
    ax.set_title(title if title is not None else f"regime of token 0 (u_0(0) = {u0}, a = {a})")
    return fig
