"""Parameter-side predictions per token, each labelled a *theorem* or an *indicator*, and their agreement.

What the theory decides, for a Mamba-1 layer (``M = S_Cᵀ S_B``, tokens u (L, E) entering the layer;
token indices count from 0, so token 0 is the first token, the paper's u_1):

* **one channel (E = 1)** — the paper's one-dimensional theorems for every token (`criteria_1d`),
  when all N decay rates are equal; with different rates, for token 0 only.
* **isotropic layer** — ``M = μ I``, Δ the same in every channel and one decay rate a: then
  ``d/dt ½‖u_l‖² = μ Σ_{j≤l} w_lj (u_l·u_j)²`` with positive weights, so every token's norm moves with
  the sign of μ: all converge (μ < 0, like t^-1/2), all blow up in finite time (μ > 0 and S_Δ = 0,
  T_l ≤ min_{j≤l} 1/(2μΔ‖u_j(0)‖²)), all are unbounded (μ > 0), or nothing moves (μ = 0).
* **token 0, Δ the same in every channel** — token 0 moves along its own ray, with
  ``d‖u_0‖/dt = q ‖u_0‖³ softplus(s‖u_0‖ + b)``, ``q = u_0ᵀMu_0/‖u_0‖²``, ``s = S_Δ[0]·û_0``: the 1-D
  theorem decides it exactly (its blow-up time by quadrature).
* **token 0, definite Sym(M)** — negative definite: convergent; positive definite: unbounded (its
  norm cannot stay bounded, since Δ is bounded below on bounded sets). **Semi-definite**: its norm is
  monotone — non-increasing (``non-divergent``) or non-decreasing (``non-convergent``).

Everything else is an **indicator**, not a theorem: for token 0, the sign of ``u_0ᵀMu_0``; for a
definite layer's later tokens, the paper's 2-D picture (all diverge / all converge); for every other
token — and every Mamba-2 token — the initial direction, the sign of ``⟨u_l, f_l(u(0))⟩`` (does its norm
start growing or shrinking?). `prediction_agreement` counts, per kind, how often the predictions
agree with the integrated labels; disagreements are listed, never hidden.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .._enums import StrEnum
from ..dynamics.fields import field_of_params
from ..nn.params_mamba1 import SSMParams
from ..nn.params_mamba2 import Mamba2Params
from .criteria import criteria_1d
from .labels import COMPATIBLE, Label
from .spectrum import sym_spectrum
from .tokens import TokenVerdict

__all__ = ["PredictionKind", "TokenPrediction", "predict_tokens", "prediction_agreement"]

_STRUCT_RTOL = 1e-9  # structure (isotropy, equal Δ, one decay rate) holds to this relative tolerance


class PredictionKind(StrEnum):
    """Whether a prediction is proven for this system or only suggested by it."""

    THEOREM = "theorem"
    INDICATOR = "indicator"


@dataclass
class TokenPrediction:
    """One token's prediction from the parameters and its initial state.

    Attributes:
        index: token index (0-based).
        label: the predicted `Label` (a regime, or ``non-divergent``/``non-convergent``), None when
            nothing is predicted.
        kind: `PredictionKind`, None when nothing is predicted.
        reason: one line: which theorem or indicator, with its numbers.
        t_blowup: a predicted blow-up time (exact, or an upper bound as the reason says), else None.
    """

    index: int
    label: Label | None
    kind: PredictionKind | None
    reason: str
    t_blowup: float | None = None

    def agrees(self, observed: Label) -> bool | None:
        """True/False when the observed label agrees/disagrees; None when either is undetermined."""
        if self.label is None or observed == Label.UNDETERMINED:
            return None
        return observed in COMPATIBLE.get(self.label, frozenset({self.label}))


def _finite_or_none(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _channel_uniform_delta(p: SSMParams) -> bool:
    """Δ_l^d independent of d for any token: equal rows of S_Δ = W_dt W_x and equal b_Δ."""
    scale = float(p.W_dt.abs().max() * p.W_x.abs().max()) + float(p.delta_bias.abs().max()) + 1e-300
    D = p.W_dt - p.W_dt[:1]
    rows = (D @ (p.W_x @ p.W_x.T) * D).sum(-1).clamp_min(0).sqrt()  # ‖(S_Δ[d] − S_Δ[0])‖ per row
    return bool(rows.max() <= _STRUCT_RTOL * scale * max(1, p.d_inner)) and \
        bool((p.delta_bias - p.delta_bias[0]).abs().max() <= _STRUCT_RTOL * scale)


def _one_rate(p: SSMParams) -> bool:
    return bool((p.A - p.A.flatten()[0]).abs().max() <= _STRUCT_RTOL * (float(p.A.abs().max()) + 1e-300))


def _isotropic_mu(p: SSMParams) -> float | None:
    """μ when M = μ I (only possible for N ≥ E), else None."""
    if p.d_state < p.d_inner:
        return None
    M = p.S_C.T @ p.S_B
    mu = float(torch.diagonal(M).mean())
    tol = _STRUCT_RTOL * (float(M.abs().max()) + 1e-300)
    return mu if bool((M - mu * torch.eye(p.d_inner, dtype=M.dtype, device=M.device)).abs().max() <= tol) else None


def _one_dim(p: SSMParams, u: Tensor) -> list[TokenPrediction]:
    mu, s, b = float((p.S_C * p.S_B).sum()), float(p.W_dt[0] @ p.W_x[:, 0]), float(p.delta_bias[0])
    rates = -p.A[0]
    n = u.shape[0] if _one_rate(p) else 1
    crit = criteria_1d(mu, s, float(rates[0]), u[:n, 0].tolist(), b)
    out = []
    for l in range(n):
        t_b = float(crit.t_blowup_bound[0, l])
        out.append(TokenPrediction(l, crit.regimes[0][l], PredictionKind.THEOREM,
                                   f"one-dimensional theorem: {crit.reasons[0][l]}", _finite_or_none(t_b)))
    return out


def _isotropic(p: SSMParams, u: Tensor, mu: float) -> list[TokenPrediction]:
    if mu == 0:
        return [TokenPrediction(l, Label.STATIC, PredictionKind.THEOREM, "M = 0: the field vanishes")
                for l in range(u.shape[0])]
    if mu < 0:
        return [TokenPrediction(l, Label.CONVERGENT, PredictionKind.THEOREM, f"isotropic layer, M = {mu:.3g}·I < 0: "
                                "every token's norm decreases to 0 like t^-1/2") for l in range(u.shape[0])]
    if float(p.W_dt.abs().max() * p.W_x.abs().max()) == 0.0:
        delta = float(torch.nn.functional.softplus(p.delta_bias[0]))
        r2 = (u * u).sum(-1)
        bound = torch.cummin(1.0 / (2.0 * mu * delta * r2.clamp_min(1e-300)), dim=0).values
        return [TokenPrediction(l, Label.FINITE, PredictionKind.THEOREM, f"isotropic layer, M = {mu:.3g}·I > 0, Δ = "
                                f"{delta:.3g}: every token blows up, token {l} by t ≤ {float(bound[l]):.6g}",
                                float(bound[l])) for l in range(u.shape[0])]
    return [TokenPrediction(l, Label.DIVERGENT, PredictionKind.THEOREM, f"isotropic layer, M = {mu:.3g}·I > 0: "
                            "every token's norm increases without bound") for l in range(u.shape[0])]


def _token1(p: SSMParams, u1: Tensor) -> TokenPrediction:
    r = float(torch.linalg.vector_norm(u1))
    q = float(p.quadratic_form(u1)[0])
    if r == 0:
        return TokenPrediction(0, Label.STATIC, PredictionKind.THEOREM, "u_0 = 0: token 0 stays at 0")
    if _channel_uniform_delta(p):
        v = p.W_dt[0] @ p.W_x  # the common row of S_Δ
        s, b = float(v @ u1) / r, float(p.delta_bias[0])
        crit = criteria_1d(q / r ** 2, s, 1.0, [r], b)
        t_b = float(crit.t_blowup_token1[0])
        return TokenPrediction(0, crit.regimes[0][0], PredictionKind.THEOREM, "Δ equal in every channel: token 0 "
                               f"moves along its ray, d‖u‖/dt = q‖u‖³softplus(s‖u‖+b) with q = {q / r ** 2:.3g}, s = "
                               f"{s:.3g} — {crit.reasons[0][0]}", _finite_or_none(t_b))
    spec = sym_spectrum(p.S_B, p.S_C)
    e = spec.d_inner
    if spec.n_neg == e:
        return TokenPrediction(0, Label.CONVERGENT, PredictionKind.THEOREM, "Sym(M) negative definite: ‖u_0‖ "
                               "decreases to 0")
    if spec.n_pos == e:
        return TokenPrediction(0, Label.DIVERGENT, PredictionKind.THEOREM, "Sym(M) positive definite: ‖u_0‖ increases "
                               "without bound")
    if spec.n_pos == 0 and spec.n_neg:
        return TokenPrediction(0, Label.NONDIVERGENT, PredictionKind.THEOREM, "Sym(M) negative semi-definite: ‖u_0‖ "
                               "never increases")
    if spec.n_neg == 0 and spec.n_pos:
        return TokenPrediction(0, Label.NONCONVERGENT, PredictionKind.THEOREM, "Sym(M) positive semi-definite: ‖u_0‖ "
                               "never decreases")
    if q == 0:
        return TokenPrediction(0, None, None, "u_0ᵀMu_0 = 0: no prediction")
    return TokenPrediction(0, Label.DIVERGENT if q > 0 else Label.CONVERGENT, PredictionKind.INDICATOR,
                           f"sign of u_0ᵀMu_0 = {q:+.3g} (Sym(M) indefinite, Δ differs across channels: the "
                           "initial direction only)")


def _initial_direction(params: SSMParams | Mamba2Params, u: Tensor, first: int) -> list[TokenPrediction]:
    """Indicators for tokens first…L-1 from the sign of ⟨u_l, f_l(u(0))⟩."""
    f = field_of_params(params)(0.0, u[None])[0]
    dots = (u * f).sum(-1)
    out = []
    for l in range(first, u.shape[0]):
        d = float(dots[l])
        lab = Label.DIVERGENT if d > 0 else Label.CONVERGENT if d < 0 else None
        out.append(TokenPrediction(l, lab, PredictionKind.INDICATOR if lab else None,
                                   f"initial direction: d‖u_l‖²/dt = {2 * d:+.3g} at t = 0"))
    return out


def predict_tokens(params: SSMParams | Mamba2Params, u0: Tensor) -> list[TokenPrediction]:
    """Predict every token's regime from a layer's parameters and the tokens entering it (rules above).

    Arguments:
        params: the layer's parameters (computed in float64 on u0's device).
        u0: (L, W) or (1, L, W) tokens the layer's idealised field starts from (W = E for Mamba-1, Dm for
            Mamba-2).

    Returns:
        L `TokenPrediction`, in token order.

    Raises:
        TypeError: for parameters of another type, or a u0 that is not a tensor.
        ValueError: for tokens of the wrong shape or width, no tokens, an integer dtype or non-finite entries
            (a prediction from NaN would be a guess).
    """
    if not isinstance(params, (SSMParams, Mamba2Params)):
        raise TypeError(f"argument 'params' must be SSMParams or Mamba2Params, got {type(params).__name__}")
    if not isinstance(u0, Tensor):
        raise TypeError(f"argument 'u0' must be a torch.Tensor, got {type(u0).__name__}")
    if not (u0.dim() == 2 or (u0.dim() == 3 and u0.shape[0] == 1)) or u0.shape[-1] != params.token_width:
        raise ValueError(f"argument 'u0' must be (L, {params.token_width}) or (1, L, {params.token_width}), "
                         f"got {tuple(u0.shape)}")
    if u0.shape[-2] == 0 or not u0.is_floating_point():
        raise ValueError(f"argument 'u0' must hold at least one token of a floating dtype, got shape "
                         f"{tuple(u0.shape)}, {u0.dtype}")
    if not bool(torch.isfinite(u0).all()):
        raise ValueError("argument 'u0' has non-finite entries (NaN or inf): no prediction can be made from them")
    u = (u0[0] if u0.dim() == 3 else u0).detach().to(torch.float64)
    p: Any = params.to(dtype=torch.float64, device=u.device)
    with torch.no_grad():
        if isinstance(p, Mamba2Params):
            return _initial_direction(p, u, 0)
        if p.d_inner == 1:
            out = _one_dim(p, u)
        elif (mu := _isotropic_mu(p)) is not None and _channel_uniform_delta(p) and _one_rate(p):
            out = _isotropic(p, u, mu)
        else:
            out = [_token1(p, u[0])]
        if len(out) < u.shape[0]:
            spec = sym_spectrum(p.S_B, p.S_C)
            if spec.definite and out[0].kind is PredictionKind.THEOREM and spec.n_pos in (0, spec.d_inner):
                lab = Label.DIVERGENT if spec.n_pos else Label.CONVERGENT
                out += [TokenPrediction(l, lab, PredictionKind.INDICATOR, f"Sym(M) {spec.label}: the paper's "
                                        "2-D picture (all tokens alike), not proven for later tokens")
                        for l in range(len(out), u.shape[0])]
            else:
                out += _initial_direction(p, u, len(out))
    return out


def prediction_agreement(predictions: list[TokenPrediction], verdicts: list[TokenVerdict]) -> dict[str, dict]:
    """How often each kind of prediction agrees with the integrated labels.

    Arguments:
        predictions: from `predict_tokens`.
        verdicts: the integrated labels, in the same token order.

    Returns:
        ``{kind: {"n", "agree", "disagree", "undetermined", "rate", "disagreements"}}`` for kind in
        ("theorem", "indicator"): n counts predictions made, rate = agree / (agree + disagree) (None when
        nothing could be compared), disagreements lists the token indices.

    Raises:
        ValueError: for lists of different lengths.
    """
    if len(predictions) != len(verdicts):
        raise ValueError(f"arguments 'predictions' and 'verdicts' differ in length ({len(predictions)} vs "
                         f"{len(verdicts)})")
    out: dict[str, dict] = {}
    for kind in PredictionKind:
        pairs = [(p, v) for p, v in zip(predictions, verdicts) if p.kind is kind]
        res = [p.agrees(v.label) for p, v in pairs]
        agree, disagree = sum(r is True for r in res), sum(r is False for r in res)
        out[str(kind)] = {"n": len(pairs), "agree": agree, "disagree": disagree,
                          "undetermined": sum(r is None for r in res),
                          "rate": agree / (agree + disagree) if agree + disagree else None,
                          "disagreements": [p.index for p, r in zip([p for p, _ in pairs], res) if r is False]}
    return out
