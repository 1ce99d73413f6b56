"""Verdicts from parameters: one `Verdict` per layer (Mamba-1) or per head (Mamba-2), and the table.

A verdict holds the spectrum of ``Sym(M)`` of the layer's (or head's group's) input–output matrix
``M = S_Cᵀ S_B`` — computed from the low-rank factors, `sym_spectrum`
— with its sign structure, and what else the parameters say: for Mamba-1 the fractions of channels
whose 1-D reduction converges / is static / diverges; for Mamba-2 the head's decay rate, Δ bias, Δ at
zero input and skip. The same record feeds the printed table, the analysis, the figures and the
report's ``summary.json``.

For Mamba-2 the input–output matrix of group g, ``M_g = S_C^gᵀ S_B^g`` (Dm×Dm, rank ≤ N), is defined on
the mixer input with the convolution, the SiLU and the ``in_proj`` bias set aside; heads of one group
share it. Since A is scalar per head, a head's memory kernel ``(C·B) e^{-a τ}`` never changes sign
along τ: its sign is that of the quadratic form ``hᵀ M_g h``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor

from ..nn.lm import MambaLMBase
from ..nn.params_mamba1 import SSMParams
from ..nn.params_mamba2 import Mamba2Params
from .labels import SIGN_SYMBOL, Definiteness
from .spectrum import SymSpectrum, channel_reductions, sym_spectrum

__all__ = ["Verdict", "RegimeTable", "layer_verdict", "head_verdicts", "regime_table", "layer_spectrum",
           "layer_fractions"]


@dataclass
class Verdict:
    """The verdict of one layer (Mamba-1, ``head`` None) or one head (Mamba-2) from its parameters.

    Attributes:
        layer: layer index k.
        head: head index (Mamba-2), None for a Mamba-1 layer.
        group: the B/C group of the head (0 for Mamba-1).
        width: the width of the space M acts on: E (Mamba-1, the S6 input) or Dm (Mamba-2, the mixer input).
        d_state: N.
        n_pos, n_neg, n_zero: eigenvalue counts of Sym(M) over all ``width`` eigenvalues.
        label: the `Definiteness` of Sym(M).
        eig_max, eig_min: extreme eigenvalues of Sym(M) (zeros included when width > 2N).
        eigenvalues: the ≤ 2N eigenvalues of the reduced problem, ascending (the others are exactly 0).
        channel_fractions: Mamba-1: fraction of the E channels whose 1-D reduction is ``convergent``
            (μ_d < 0), ``static`` (μ_d = 0) or ``divergent`` (μ_d > 0); empty for a Mamba-2 head.
        frac_fast_both_signs: Mamba-1: fraction of channels divergent in finite time for both signs of
            token 1 (s_d = 0); None for Mamba-2.
        frac_kernel_sign_definite: Mamba-1: fraction of channels whose memory kernel never changes sign
            (the 1-D later-token theorems apply there); None for Mamba-2.
        mu_min, mu_max: Mamba-1: range of the channel μ_d; None for Mamba-2.
        a, dt_bias, delta0, D: Mamba-2: the head's decay rate, Δ bias, Δ at zero raw step and skip;
            None for Mamba-1.
        seconds: time to compute the record (a group's spectrum counted once).
    """

    layer: int
    head: int | None
    group: int
    width: int
    d_state: int
    n_pos: int
    n_neg: int
    n_zero: int
    label: Definiteness
    eig_max: float
    eig_min: float
    eigenvalues: list[float] = field(default_factory=list)
    channel_fractions: dict[str, float] = field(default_factory=dict)
    frac_fast_both_signs: float | None = None
    frac_kernel_sign_definite: float | None = None
    mu_min: float | None = None
    mu_max: float | None = None
    a: float | None = None
    dt_bias: float | None = None
    delta0: float | None = None
    D: float | None = None
    seconds: float = 0.0

    @property
    def sign(self) -> str:
        """``"+"``, ``"-"``, ``"±"`` or ``"0"``: what the input–output matrix can do to a token's norm."""
        return SIGN_SYMBOL[self.label]

    def to_dict(self) -> dict[str, Any]:
        """The record as a plain dict (JSON-ready)."""
        d = asdict(self)
        d["label"] = str(self.label)
        return d


def _extremes(spec: SymSpectrum) -> tuple[float, float]:
    """(max, min) of all eigenvalues of Sym(M): the reduced ones and, when width > 2N, zero."""
    ev = spec.eigenvalues
    e_max = float(ev.max()) if ev.numel() else 0.0
    e_min = float(ev.min()) if ev.numel() else 0.0
    if spec.d_inner > ev.numel():
        e_max, e_min = max(e_max, 0.0), min(e_min, 0.0)
    return e_max, e_min


def _finite_factors(factors: list[tuple[Tensor, Tensor]], layer: int) -> list[tuple[Tensor, Tensor]]:
    out = [(b.detach().to(torch.float64), c.detach().to(torch.float64)) for b, c in factors]
    if not all(bool(torch.isfinite(b).all() and torch.isfinite(c).all()) for b, c in out):
        raise ValueError(f"argument 'params' (layer {layer}) has NaN or infinite entries in S_B/S_C")
    return out


def layer_verdict(params: SSMParams, layer: int = 0, *, rtol: float | None = None,
                  channel_rtol: float = 1e-6) -> Verdict:
    """The verdict of one Mamba-1 layer: spectrum of Sym(M) from the factors and the per-channel 1-D regimes.

    Arguments:
        params: the layer's `SSMParams` (computed in float64).
        layer: index stored in the record.
        rtol: zero tolerance of the spectrum (see `sym_spectrum`).
        channel_rtol: zero tolerance of the channel reductions.

    Returns:
        A `Verdict` with ``head`` None.

    Raises:
        TypeError: if params is not an `SSMParams`.
        ValueError: for NaN/inf parameters, naming the layer.
    """
    t0 = time.perf_counter()
    if not isinstance(params, SSMParams):
        raise TypeError(f"argument 'params' must be an SSMParams, got {type(params).__name__}")
    ((S_B, S_C),) = _finite_factors(params.io_factors(), layer)
    spec = sym_spectrum(S_B, S_C, rtol=rtol)
    ch = channel_reductions(params, rtol=channel_rtol)
    fr = ch.fractions()
    e_max, e_min = _extremes(spec)
    return Verdict(layer=layer, head=None, group=0, width=spec.d_inner, d_state=params.d_state, n_pos=spec.n_pos,
                   n_neg=spec.n_neg, n_zero=spec.n_zero, label=spec.label, eig_max=e_max, eig_min=e_min,
                   eigenvalues=spec.eigenvalues.tolist(),
                   channel_fractions={"convergent": fr["frac_convergent"], "static": fr["frac_static"],
                                      "divergent": fr["frac_divergent"]},
                   frac_fast_both_signs=fr["frac_divergent_fast_both_signs"],
                   frac_kernel_sign_definite=fr["frac_kernel_sign_definite"], mu_min=float(ch.mu.min()),
                   mu_max=float(ch.mu.max()), seconds=time.perf_counter() - t0)


def head_verdicts(params: Mamba2Params, layer: int = 0, *, rtol: float | None = None) -> list[Verdict]:
    """The verdicts of every head of one Mamba-2 layer (one spectrum per group, shared by its heads).

    Arguments:
        params: the layer's `Mamba2Params`.
        layer: index stored in the records.
        rtol: zero tolerance of the spectra.

    Returns:
        H `Verdict` records, by head.

    Raises:
        TypeError: if params is not a `Mamba2Params`.
        ValueError: for NaN/inf parameters, naming the layer.
    """
    if not isinstance(params, Mamba2Params):
        raise TypeError(f"argument 'params' must be a Mamba2Params, got {type(params).__name__}")
    specs = []
    for S_B, S_C in _finite_factors(params.io_factors(), layer):
        t0 = time.perf_counter()
        spec = sym_spectrum(S_B, S_C, rtol=rtol)
        specs.append((spec, *_extremes(spec), time.perf_counter() - t0))
    groups = params.group_of_head().tolist()
    with torch.no_grad():
        delta0 = params.delta(torch.zeros_like(params.dt_bias.detach()).double()[None]).squeeze(0)
    out = []
    for h in range(params.n_heads):
        spec, e_max, e_min, secs = specs[groups[h]]
        out.append(Verdict(layer=layer, head=h, group=groups[h], width=spec.d_inner, d_state=params.d_state,
                           n_pos=spec.n_pos, n_neg=spec.n_neg, n_zero=spec.n_zero, label=spec.label, eig_max=e_max,
                           eig_min=e_min, eigenvalues=spec.eigenvalues.tolist(), a=float(params.a[h]),
                           dt_bias=float(params.dt_bias[h]), delta0=float(delta0[h]), D=float(params.D[h]),
                           seconds=secs))
    return out


class RegimeTable(list):
    """A list of `Verdict` records — one per layer (Mamba-1) or per layer and head (Mamba-2)."""

    def to_dicts(self) -> list[dict[str, Any]]:
        """The table as a list of dicts (JSON-ready)."""
        return [r.to_dict() for r in self]

    def to_dataframe(self) -> Any:
        """The table as a ``pandas.DataFrame`` (pandas is imported lazily).

        Raises:
            ImportError: if pandas is not installed.
        """
        try:
            import pandas as pd  # noqa: PLC0415  (optional)
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError("RegimeTable.to_dataframe needs pandas; use to_dicts() without it") from exc
        return pd.DataFrame(self.to_dicts())

    def layer(self, k: int) -> list[Verdict]:
        """The verdicts of layer k (one for Mamba-1, one per head for Mamba-2)."""
        return [r for r in self if r.layer == k]

    def __str__(self) -> str:
        if any(r.head is not None for r in self):
            rows = [f"{'layer':>5} {'head':>4} {'grp':>3} {'Dm':>5} {'N':>3} {'+':>4} {'-':>4} {'0':>5} {'sign':>4} "
                    f"{'a':>9} {'delta0':>9}"]
            rows += [f"{r.layer:>5} {r.head:>4} {r.group:>3} {r.width:>5} {r.d_state:>3} {r.n_pos:>4} {r.n_neg:>4} "
                     f"{r.n_zero:>5} {r.sign:>4} {r.a:>9.4g} {r.delta0:>9.4g}" for r in self]
            return "\n".join(rows)
        rows = [f"{'layer':>5} {'E':>5} {'N':>3} {'+':>4} {'-':>4} {'0':>5} {'label':<23} {'conv':>6} {'div':>6}"]
        rows += [f"{r.layer:>5} {r.width:>5} {r.d_state:>3} {r.n_pos:>4} {r.n_neg:>4} {r.n_zero:>5} {r.label:<23} "
                 f"{r.channel_fractions['convergent']:>6.3f} {r.channel_fractions['divergent']:>6.3f}" for r in self]
        return "\n".join(rows)


def regime_table(model: MambaLMBase | Iterable[SSMParams | Mamba2Params], *, rtol: float | None = None,
                 channel_rtol: float = 1e-6) -> RegimeTable:
    """The verdict of every layer (Mamba-1) or every layer and head (Mamba-2) of a model.

    Arguments:
        model: a model of either generation (anything with ``.layers[k].ssm``), or an iterable of
            `SSMParams` / `Mamba2Params`.
        rtol: zero tolerance of the spectra (see `sym_spectrum`).
        channel_rtol: zero tolerance of the Mamba-1 channel reductions.

    Returns:
        A `RegimeTable`, ordered by layer (then head).

    Raises:
        TypeError: if model has neither ``.layers`` nor yields parameters.
        ValueError: for NaN/inf parameters (naming the layer).
    """
    layers = getattr(model, "layers", None)
    if layers is not None:
        params_list = [blk.ssm for blk in layers]
    elif isinstance(model, Iterable) and not isinstance(model, (str, bytes, Tensor)):
        params_list = list(model)
    else:
        raise TypeError(f"argument 'model' must be a Mamba model or an iterable of layer parameters, "
                        f"got {type(model).__name__}")
    table = RegimeTable()
    with torch.no_grad():
        for k, p in enumerate(params_list):
            if isinstance(p, SSMParams):
                table.append(layer_verdict(p, k, rtol=rtol, channel_rtol=channel_rtol))
            elif isinstance(p, Mamba2Params):
                table.extend(head_verdicts(p, k, rtol=rtol))
            else:
                raise TypeError(f"argument 'model': item {k} is {type(p).__name__}, not SSMParams or Mamba2Params")
    return table


def layer_spectrum(verdicts: Sequence[Verdict]) -> dict[str, Any]:
    """One layer's spectrum from its verdicts: counts summed over its distinct groups.

    Arguments:
        verdicts: the verdicts of one layer (one Mamba-1 record, or the heads of a Mamba-2 layer).

    Returns:
        ``{n_pos, n_neg, n_zero, label, eig_max, eig_min, eigenvalues}``; the label is the groups' common
        one, or ``indefinite`` when they differ.

    Raises:
        ValueError: for no verdicts.
    """
    if not verdicts:
        raise ValueError("argument 'verdicts' is empty")
    groups = {r.group: r for r in verdicts}  # heads of one group share its spectrum
    labels = {r.label for r in groups.values()}
    return {"n_pos": sum(r.n_pos for r in groups.values()), "n_neg": sum(r.n_neg for r in groups.values()),
            "n_zero": sum(r.n_zero for r in groups.values()),
            "label": labels.pop() if len(labels) == 1 else Definiteness.INDEFINITE,
            "eig_max": max(r.eig_max for r in verdicts), "eig_min": min(r.eig_min for r in verdicts),
            "eigenvalues": [v for g in sorted(groups) for v in groups[g].eigenvalues]}


def layer_fractions(verdicts: Sequence[Verdict]) -> dict[str, float]:
    """What fraction of a layer's units falls in each class.

    Mamba-1 (one record): the fractions of channels per 1-D regime (``channel_fractions``). Mamba-2:
    the fractions of heads whose group's quadratic form is ``positive``, ``negative``, ``indefinite``
    or ``zero``.

    Raises:
        ValueError: for no verdicts.
    """
    if not verdicts:
        raise ValueError("argument 'verdicts' is empty")
    if len(verdicts) == 1 and verdicts[0].head is None:
        return dict(verdicts[0].channel_fractions)
    names = {"+": "positive", "-": "negative", "±": "indefinite", "0": "zero"}
    return {name: sum(r.sign == sg for r in verdicts) / len(verdicts) for sg, name in names.items()}
