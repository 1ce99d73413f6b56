"""The paper's criteria: regimes predicted from parameters, without integrating.

* `criteria_1d` — the one-dimensional theorems: per token convergent / static / divergent in
  finite time / divergent logarithmically; token 1's blow-up time exactly (by quadrature,
  `blowup_time_1d`) and, for later tokens, an upper bound.
* `criteria_nd` — E dimensions: the sign of ``u_1ᵀ M u_1`` decides token 1 (a theorem for a
  definite Sym(M), or for equal Δ on every channel); the paper's 2-D picture for later tokens.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .._checks import check_matrix, finite_scalar
from ..nn.params_mamba1 import SSMParams
from .labels import EXPECTED_LABEL, Label
from .spectrum import SymSpectrum, sym_spectrum

__all__ = ["blowup_time_1d", "Criteria1D", "criteria_1d", "CriteriaND", "criteria_nd"]

CONVERGENT, STATIC, FINITE, LOGARITHMIC = Label.CONVERGENT, Label.STATIC, Label.FINITE, Label.LOGARITHMIC
DIVERGENT, UNDECIDED = Label.DIVERGENT, Label.UNDECIDED


def _softplus(x: float) -> float:
    return float(np.logaddexp(0.0, x))


def blowup_time_1d(mu: float, s_delta: float, r0: float, b_delta: float = 0.0) -> float:
    """Blow-up time of the isolated 1-D equation ``dr/dt = μ r³ softplus(s r + b)``, r(0) = r0 > 0.

    ``T* = ∫_{r0}^∞ dr / (μ r³ softplus(s r + b))``, computed by ``scipy.integrate.quad`` after the
    substitution r = r0/x (x ∈ (0, 1]), which makes the integrand smooth and bounded. For token 1
    of the 1-D system this is exact with ``s = s_Δ·sign(u_1(0))``, ``r0 = |u_1(0)|``.

    Arguments:
        mu: μ > 0.
        s_delta: the signed slope s·sign(u(0)); must be ≥ 0 (otherwise there is no blow-up).
        r0: |u(0)| > 0.
        b_delta: Δ bias.

    Returns:
        T* (a float, relative accuracy about 1e-12).

    Raises:
        ValueError: if μ ≤ 0, s < 0 or r0 ≤ 0 (the integral diverges), or an argument is not finite.
    """
    mu = finite_scalar(mu, "mu")
    s = finite_scalar(s_delta, "s_delta")
    r0 = finite_scalar(r0, "r0")
    b = finite_scalar(b_delta, "b_delta")
    if mu <= 0 or s < 0 or r0 <= 0:
        raise ValueError(f"blowup_time_1d: finite-time blow-up needs mu > 0, s_delta ≥ 0 and r0 > 0, "
                         f"got mu={mu}, s_delta={s}, r0={r0}")

    def integrand(x: float) -> float:
        if x <= 0.0:
            return 0.0
        return x / (mu * r0 * r0 * _softplus(s * r0 / x + b))

    from scipy.integrate import quad  # lazily: a third of a second to import

    val, _ = quad(integrand, 0.0, 1.0, epsabs=0.0, epsrel=1e-12, limit=200)
    return float(val)


@dataclass
class Criteria1D:
    """Per-token regimes of the 1-D system predicted from its parameters.

    Attributes:
        mu, s_delta, a, b_delta: the parameters.
        u0: (B, L) initial tokens (float64).
        regimes: B lists of L regimes from ``convergent``, ``static``, ``divergent-finite-time``,
            ``divergent-logarithmic``.
        decided: (B, L) bool — True where a theorem decides (always, except ``tol``-close to μ = 0).
        t_blowup_token1: (B,) exact blow-up time of token 1 (quadrature), ``inf`` where it does not blow up.
        t_blowup_bound: (B, L) **upper bound** on the time token l becomes unbounded (exact for l = 1),
            ``inf`` where no finite-time blow-up is predicted.
        growth_slope_bound: (B, L) for ``divergent-logarithmic`` tokens, 1/|s|: the asymptotic slope of
            |u_1| against ln t for token 1, a **lower bound** on the asymptotic slope for later tokens
            (their growth is at most O((ln t)^l)); NaN elsewhere.
        decay_amplitude: (B,) for μ < 0, the limit of ``|u_1(t)|·√t`` = 1/sqrt(2|μ| softplus(b)); NaN else.
        reasons: B lists of L one-line explanations (a token index in them is its position in the list,
            from 0).
    """

    mu: float
    s_delta: float
    a: float
    b_delta: float
    u0: Tensor
    regimes: list[list[Label]]
    decided: Tensor
    t_blowup_token1: Tensor
    t_blowup_bound: Tensor
    growth_slope_bound: Tensor
    decay_amplitude: Tensor
    reasons: list[list[str]]

    @property
    def expected_labels(self) -> list[list[str]]:
        """The trajectory label each regime predicts (`EXPECTED_LABEL`)."""
        return [[EXPECTED_LABEL[r] for r in row] for row in self.regimes]

    def divergence_order(self) -> list[list[int]]:
        """Per sequence, token indices (0-based) from the fastest to the slowest to diverge.

        Finite-time tokens first, by their blow-up-time bound (the true blow-up times are
        non-increasing in l for μ > 0, because a token's blow-up drags every later token with it),
        ties broken towards later tokens; then logarithmic tokens, later tokens first (the bound
        O((ln t)^l) grows with l). Convergent and static tokens are left out.

        Returns:
            B lists of token indices.
        """
        out = []
        for b, row in enumerate(self.regimes):
            fin = [l for l, r in enumerate(row) if r == FINITE]
            slow = [l for l, r in enumerate(row) if r == LOGARITHMIC]
            bound = self.t_blowup_bound[b]
            fin.sort(key=lambda l: (float(bound[l]), -l))
            slow.sort(key=lambda l: -l)
            out.append(fin + slow)
        return out

    def __str__(self) -> str:
        lines = [f"Criteria1D(mu={self.mu:.4g}, s_delta={self.s_delta:.4g}, a={self.a:.4g}, "
                 f"b_delta={self.b_delta:.4g})"]
        for b, row in enumerate(self.regimes):
            t1 = float(self.t_blowup_token1[b])
            tail = f"; token 1 blows up at T={t1:.6g}" if math.isfinite(t1) else ""
            lines.append(f"  seq {b}: " + ", ".join(row) + tail)
        return "\n".join(lines)


def _tokens_1d(u0: Any) -> Tensor:
    if isinstance(u0, (int, float)) and not isinstance(u0, bool):
        u0 = [float(u0)]
    try:
        t = torch.as_tensor(u0, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"argument 'u0' must be a tensor or a sequence of numbers, got {type(u0).__name__}") from None
    if t.dim() == 3:
        if t.shape[-1] != 1:
            raise ValueError(f"argument 'u0' must be (L,), (B, L) or (B, L, 1) for the 1-D system, "
                             f"got {tuple(t.shape)}")
        t = t[..., 0]
    if t.dim() == 1:
        t = t[None]
    if t.dim() != 2 or t.numel() == 0:
        raise ValueError(f"argument 'u0' must be a non-empty (L,), (B, L) or (B, L, 1) array, got {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise ValueError("argument 'u0' contains NaN or infinite entries")
    return t.clone()


# long function: over 80 lines with its docstring, which documents every argument
def criteria_1d(mu: float, s_delta: float, a: float, u0: Any, b_delta: float = 0.0, *,
                mu_tol: float = 0.0) -> Criteria1D:
    """Predict each token's regime in the 1-D system from its parameters, without integrating.

    The system is ``du_l/dt = μ u_l Σ_{j≤l} u_j² Δ(u_j) exp(-a Σ_{k=j+1..l} Δ(u_k))`` with
    ``Δ(u) = softplus(s u + b)``. The bracket is ≥ 0, so each token keeps its sign and |u_l| is monotone.
    The rules, per token l (1-based), are theorems for this system:

    * ``u_l(0) = 0`` or μ = 0: **static** (the token never moves).
    * μ < 0: **convergent**, |u_l| → 0 like t^{-1/2}; ``|u_1|√t → 1/sqrt(2|μ| softplus(b))``.
    * μ > 0 and some token j ≤ l with ``u_j(0) ≠ 0`` and ``s·u_j(0) ≥ 0`` (s = 0 included):
      **divergent-finite-time**. Token 1's blow-up time is exact,
      ``T* = ∫_{|u_1(0)|}^∞ dr / (μ r³ softplus(s sign(u_1(0)) r + b))``. For l ≥ 2 only an upper
      bound is given: token j blows up no later than its isolated equation does (the other terms of
      the bracket are ≥ 0), and a token that blows up at T makes every later token unbounded by T
      (its term in their bracket integrates to infinity), so
      ``T_l ≤ min_{j ≤ l, s u_j(0) ≥ 0} T*(|u_j(0)|)``.
    * μ > 0 and ``s·u_j(0) < 0`` for all j ≤ l: **divergent-logarithmic** — no blow-up (every
      ``u_j² Δ(u_j)`` stays bounded), ``|u_1| ≈ ln(t)/|s|``; later tokens grow at least that fast
      and at most like O((ln t)^l).

    Arguments:
        mu: μ = S_Cᵀ S_B (scalar).
        s_delta: s = S_Δ (scalar).
        a: decay rate a ≥ 0 (A = -a), scalar.
        u0: initial tokens, (L,), (B, L) or (B, L, 1).
        b_delta: Δ bias b_Δ.
        mu_tol: |μ| ≤ mu_tol is treated as μ = 0 (default 0: only an exact zero is static).

    Returns:
        A `Criteria1D`.

    Raises:
        TypeError: for a non-numeric argument.
        ValueError: for non-finite parameters or tokens, a < 0, a vector ``a`` or a badly shaped ``u0``.
    """
    if isinstance(a, (Tensor, np.ndarray, list, tuple)) and np.asarray(
            a.detach().cpu() if isinstance(a, Tensor) else a).size != 1:
        raise ValueError("argument 'a' must be a scalar decay rate for criteria_1d (with N different rates the "
                         "kernel g(τ) may change sign and the later-token theorems do not apply)")
    mu_v = finite_scalar(mu, "mu")
    s = finite_scalar(s_delta, "s_delta")
    a_v = finite_scalar(a, "a")
    b = finite_scalar(b_delta, "b_delta")
    tol = finite_scalar(mu_tol, "mu_tol")
    if a_v < 0:
        raise ValueError(f"argument 'a' must be ≥ 0 (A = -a is a decay), got {a_v}")
    if tol < 0:
        raise ValueError(f"argument 'mu_tol' must be ≥ 0, got {tol}")
    u = _tokens_1d(u0)
    nb, length = u.shape
    regimes: list[list[Label]] = []
    reasons: list[list[str]] = []
    decided = torch.ones(nb, length, dtype=torch.bool)
    t1 = torch.full((nb,), math.inf, dtype=torch.float64)
    bound = torch.full((nb, length), math.inf, dtype=torch.float64)
    slope = torch.full((nb, length), math.nan, dtype=torch.float64)
    amp = torch.full((nb,), math.nan, dtype=torch.float64)
    sp_b = _softplus(b)
    if mu_v < -tol:
        amp[:] = 1.0 / math.sqrt(2.0 * abs(mu_v) * sp_b)
    for bi in range(nb):
        row_r: list[Label] = []
        row_x: list[str] = []
        best = math.inf  # min over fast tokens so far of the isolated blow-up time
        fast_from = -1
        for l in range(length):
            x = float(u[bi, l])
            if abs(mu_v) <= tol:
                row_r.append(STATIC)
                row_x.append("mu = 0: the field vanishes" if mu_v == 0 else f"|mu| ≤ mu_tol={tol:g}: treated as 0")
                decided[bi, l] = mu_v == 0
                continue
            if mu_v > 0 and x != 0.0 and s * x >= 0:
                tj = blowup_time_1d(mu_v, abs(s), abs(x), b)
                if tj < best:
                    best, fast_from = tj, l
            if x == 0.0:
                row_r.append(STATIC)
                row_x.append("u_l(0) = 0: the token stays at 0")
                continue
            if mu_v < 0:
                row_r.append(CONVERGENT)
                row_x.append("mu < 0: |u_l| decreases to 0 like t^(-1/2)")
                continue
            if math.isfinite(best):
                row_r.append(FINITE)
                bound[bi, l] = best
                if l == 0:
                    t1[bi] = best
                    row_x.append(f"mu > 0, s*u(0) ≥ 0: blow-up at T = {best:.8g} (exact, quadrature)")
                else:
                    row_x.append(f"mu > 0, s*u_j(0) ≥ 0 for token j={fast_from} ≤ l={l}: blow-up no later than "
                                 f"T ≤ {best:.6g} (upper bound)")
            else:
                row_r.append(LOGARITHMIC)
                slope[bi, l] = 1.0 / abs(s)
                row_x.append("mu > 0, s*u_j(0) < 0 for all j ≤ l: no blow-up, growth like ln(t)/|s|"
                             + ("" if l == 0 else " at least, O((ln t)^l) at most (bounds)"))
        regimes.append(row_r)
        reasons.append(row_x)
    return Criteria1D(mu=mu_v, s_delta=s, a=a_v, b_delta=b, u0=u, regimes=regimes, decided=decided,
                      t_blowup_token1=t1, t_blowup_bound=bound, growth_slope_bound=slope,
                      decay_amplitude=amp, reasons=reasons)


@dataclass
class CriteriaND:
    """Per-token predictions for an E-dimensional layer from Sym(M).

    Attributes:
        spectrum: the `SymSpectrum` of Sym(M).
        regimes: B lists of L regimes: ``divergent`` (Sym(M) positive definite), ``convergent`` (negative
            definite), ``undecided`` otherwise; token 1 with equal Δ on all channels follows the sign of
            ``u_1ᵀ M u_1`` exactly (``divergent-finite-time`` / ``convergent``).
        sources: B lists of L strings: ``"theorem"`` (token 1: the sign of the quadratic form decides
            d|u_1|²/dt) or ``"paper"`` (later tokens: the paper's 2-D claim, checked numerically, not proven).
        quad_form: (B,) u_1ᵀ M u_1.
        t_blowup_token1: (B,) exact blow-up time of token 1 when Δ is equal on all channels and
            u_1ᵀ M u_1 > 0: ``T = 1/(2 q softplus(b) |u_1(0)|²)`` with ``q = u_1ᵀ M u_1 / |u_1|²`` (then
            ``d|u_1|/dt = q softplus(b) |u_1|³``); inf otherwise.
    """

    spectrum: SymSpectrum
    regimes: list[list[Label]]
    sources: list[list[str]]
    quad_form: Tensor
    t_blowup_token1: Tensor

    @property
    def expected_labels(self) -> list[list[str]]:
        """The trajectory label each regime predicts."""
        return [[EXPECTED_LABEL[r] for r in row] for row in self.regimes]


def _equal_delta(p: SSMParams) -> bool:
    return bool((p.W_dt @ p.W_x).abs().max() == 0) and bool((p.delta_bias == p.delta_bias[0]).all())


def criteria_nd(params: SSMParams, u0: Tensor, *, rtol: float | None = None) -> CriteriaND:
    """Predict regimes of an E-dimensional S6 system from Sym(M) (no integration).

    Token 1 obeys ``d/dt ½|u_1|² = (u_1ᵀ M u_1) Σ_d Δ_1^d (u_1^d)²``: a definite Sym(M) decides its fate
    (a theorem). For later tokens the rule "positive definite → all diverge, negative definite → all
    converge" is the paper's (2-D figure) and is only checked numerically (source ``"paper"``). With an
    indefinite Sym(M) the outcome depends on the tokens: decided only for token 1 when Δ is the same on
    every channel (S_Δ = 0 and a constant b_Δ): then u_1 keeps its direction and the sign of ``u_1ᵀ M u_1``
    decides, with blow-up time ``T = 1/(2 q softplus(b) |u_1(0)|²)``, ``q = u_1ᵀ M u_1 / |u_1|²``.

    Arguments:
        params: layer parameters (E channels).
        u0: (B, L, E) initial tokens.
        rtol: zero tolerance of the spectrum.

    Returns:
        A `CriteriaND`.

    Raises:
        TypeError: if params is not an `SSMParams` or u0 not a tensor.
        ValueError: for a wrong shape of u0 or non-finite values.
    """
    if not isinstance(params, SSMParams):
        raise TypeError(f"argument 'params' must be an SSMParams, got {type(params).__name__}")
    check_matrix(u0, "u0", ndim=3)
    if u0.shape[-1] != params.d_inner:
        raise ValueError(f"argument 'u0' must be (B, L, E) with E={params.d_inner}, got {tuple(u0.shape)}")
    p = params.detach().to(dtype=torch.float64)
    u = u0.detach().to(torch.float64)
    spec = sym_spectrum(p.S_B, p.S_C, rtol=rtol)
    u1 = u[:, 0]
    q = ((u1 @ p.S_C.transpose(0, 1)) * (u1 @ p.S_B.transpose(0, 1))).sum(-1)  # (B,) = u_1ᵀ M u_1
    eq = _equal_delta(p)
    t1 = torch.full((u.shape[0],), math.inf, dtype=torch.float64)
    regimes, sources = [], []
    for b in range(u.shape[0]):
        row, src = [], []
        for l in range(u.shape[1]):
            if spec.definite and spec.n_pos == spec.d_inner:
                row.append(DIVERGENT)
                src.append("theorem" if l == 0 else "paper")
            elif spec.definite and spec.n_neg == spec.d_inner:
                row.append(CONVERGENT)
                src.append("theorem" if l == 0 else "paper")
            elif l == 0 and eq and float(q[b]) != 0.0:
                r2 = float((u1[b] ** 2).sum())
                if float(q[b]) > 0:
                    row.append(FINITE)
                    t1[b] = 1.0 / (2.0 * (float(q[b]) / r2) * _softplus(float(p.delta_bias[0])) * r2)
                else:
                    row.append(CONVERGENT)
                src.append("theorem")
            else:
                row.append(UNDECIDED)
                src.append("none")
        regimes.append(row)
        sources.append(src)
    return CriteriaND(spectrum=spec, regimes=regimes, sources=sources, quad_form=q, t_blowup_token1=t1)
