"""Labels per token from `mamba_ode.integrate_tokens` — decided by events and by the solver's own steps.

Each token's `TokenEnd` decides most labels directly:

* ``BLOWUP`` → ``divergent-finite-time``, with the token's own t*;
* ``GROWTH`` → ``divergent`` (it grew by the resolution factor without a singularity signature);
* ``DEPENDS`` / ``FAILED`` → ``undetermined``, the reason naming the cause (the token it depends on and
  what happened to it, or why the steps stalled);
* ``HORIZON`` → from the growth exponent ``α = d ln‖u‖/d ln t`` over the last half decade and its average
  ``ᾱ`` over the last decade, both read from the norms at the steps (both must agree): ``convergent`` when
  both are ≤ −0.05 and the decay is not slowing down (α ≤ ᾱ / 1.1 + 0.01: a slowing decay may level off or
  turn after the horizon, so it is ``undetermined``; the decay exponent reported is ᾱ), ``divergent`` when
  both are ≥ 0.02, the ln-t slope ``β = d‖u‖/d ln t`` is not slowing down (β over the last half decade at
  least β̄/1.1 over the decade: constant for the paper's logarithmic divergence, falling for a norm that
  levels off, which is ``undetermined``) and the growth is not
  accelerating (α ≤ 1.1 ᾱ + 0.01: an accelerating token may still blow up after the horizon, so it is
  ``undetermined``; the ln-t slope reported is the decade average), ``bounded`` when both are within
  ±0.005 (and the drift check below), ``undetermined`` otherwise, or when the horizon is shorter than
  ``min_t_end``. The windows record where the token has been; two checks ask where it is heading. Its
  exponent at the horizon (the field's, ``end_exponent``, where explicit steps landed; else the norms' over
  the last eighth of a decade, as after stiff steps t times the field's rate magnifies the tolerated error)
  must agree with a decay (≤ −0.05) or a growth (≥ 0.02): a norm that grew over the decade and came to rest
  on a fixed point just before the horizon is ``undetermined``, not divergent. And a level norm must stay
  level if it kept the last half decade's pace *in t* for another decade: a slow drift ‖u‖ ≈ c ± εt has an
  exponent near 0 while εt ≪ c, and is ``undetermined`` then, not bounded (on trained checkpoints such
  tokens read bounded at t = 100 and blew up or converged by 1e4). Nor is a level norm ``bounded`` when the
  token had no time to move: when the horizon is shorter than its time scale at t = 0, ``‖u0_l‖/‖f_l(u0)‖``
  (``1/initial_speed``; a small token of a cubic field is slow), and its norm never left its start by more than
  the bounded threshold over a decade, it is ``undetermined`` (a token at an exact equilibrium, f_l(u0) = 0,
  is read as usual). Token l's field depends
  on the tokens before it, so a reading at the horizon stands only when every earlier token that also
  reached the horizon has one: after the first token left ``undetermined`` there, later
  tokens are ``undetermined`` too (their own reading kept in the reason), since that token may yet
  drive them — to a blow-up after the horizon, say. Only a token that stayed exactly at zero keeps
  ``bounded``: in the idealised fields its C_l = S_C u_l, hence its field, vanishes whatever the earlier
  tokens do.

Nothing here depends on output times: the evidence comes from the solver's own steps.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from .._checks import finite_scalar
from ..dynamics.readings import window_reading
from ..dynamics.tokens import TokenEnd, TokenSolution
from .labels import TRAJECTORY_LABELS, Label

__all__ = ["TokenVerdict", "TokenClassification", "classify_tokens"]


@dataclass
class TokenVerdict:
    """One token's label from its integrated trajectory.

    Attributes:
        index: token index (0-based).
        label: a trajectory `Label` (convergent, divergent-finite-time, divergent, bounded,
            undetermined).
        reason: one line: why this label (or why undetermined).
        t_blowup: its own blow-up time (``divergent-finite-time``), else None.
        decay_exponent: the decay exponent ᾱ over the last decade (``convergent``), else None.
        growth_slope: the ln-t slope over the last decade (``divergent`` at the horizon), else None.
        end: how its integration ended.
        t_end: when its integration ended.
    """

    index: int
    label: Label
    reason: str
    t_blowup: float | None = None
    decay_exponent: float | None = None
    growth_slope: float | None = None
    end: TokenEnd = TokenEnd.HORIZON
    t_end: float = math.nan

    def to_dict(self) -> dict[str, Any]:
        """The record as a plain dict (labels as text)."""
        d = asdict(self)
        d["label"], d["end"] = str(self.label), str(self.end)
        return d


@dataclass
class TokenClassification:
    """The per-token verdicts of one integration.

    Attributes:
        tokens: one `TokenVerdict` per token, in order.
        thresholds: the thresholds used.
    """

    tokens: list[TokenVerdict]
    thresholds: dict[str, float] = field(default_factory=dict)

    @property
    def labels(self) -> list[Label]:
        """The labels, in token order."""
        return [v.label for v in self.tokens]

    def counts(self) -> dict[str, int]:
        """Number of tokens per trajectory label (keys: the labels' text)."""
        c = Counter(str(v.label) for v in self.tokens)
        return {str(lab): c.get(str(lab), 0) for lab in TRAJECTORY_LABELS}

    def __str__(self) -> str:
        return f"TokenClassification({self.counts()})"


_STATIC = "identically zero (static)"


def _horizon(sol: TokenSolution, l: int, th: dict[str, float]) -> TokenVerdict:
    t_end = sol.t_max
    a, ab = float(sol.growth_exponent[l]), float(sol.decade_exponent[l])
    base: dict[str, Any] = {"index": l, "end": TokenEnd.HORIZON, "t_end": t_end}
    if float(sol.norms[0, l]) <= th["zero_norm"] and float(sol.u_end[l].abs().max()) <= th["zero_norm"]:
        return TokenVerdict(label=Label.BOUNDED, reason=_STATIC, **base)
    if t_end < th["min_t_end"]:
        return TokenVerdict(label=Label.UNDETERMINED, reason=f"horizon t={t_end:.3g} < min_t_end={th['min_t_end']:g}: "
                            "too short to read an asymptotic exponent", **base)
    if not (math.isfinite(a) and math.isfinite(ab)):
        return TokenVerdict(label=Label.UNDETERMINED, reason="no growth exponent over the last decade", **base)
    dmin, gmin, bmax = th["decay_exponent_min"], th["growth_exponent_min"], th["bounded_exponent_max"]
    read = f"exponent {a:.3g} over the last half decade, {ab:.3g} over the decade"
    now, how = _heading(sol, l, t_end)
    if a <= -dmin and ab <= -dmin:
        if not a <= ab / 1.1 + 0.01:
            return TokenVerdict(label=Label.UNDETERMINED, reason=f"‖u‖ decays but slows down at t={t_end:.3g} "
                                f"({read}): it may still level off or turn after the horizon", **base)
        if now > -dmin:
            return TokenVerdict(label=Label.UNDETERMINED, reason=f"‖u‖ decayed over the last decade ({read}) but the "
                                f"{how} at t={t_end:.3g} is {now:.3g}: the decay has stopped at the "
                                "horizon; it may level off or turn after it", **base)
        return TokenVerdict(label=Label.CONVERGENT, reason=f"‖u‖ decays like t^{ab:.3f} over the last decade "
                            f"({read})", decay_exponent=ab, **base)
    if a >= gmin and ab >= gmin:
        slope = float(sol.decade_slope[l])
        if float(sol.log_slope[l]) < slope / 1.1:
            return TokenVerdict(label=Label.UNDETERMINED, reason=f"‖u‖ grows but slows down at t={t_end:.3g} ({read}; "
                                f"slope {float(sol.log_slope[l]):.3g} per unit ln t over the last half decade, "
                                f"{slope:.3g} over the decade): it may still level off after the horizon", **base)
        if not a <= 1.1 * ab + 0.01:
            return TokenVerdict(label=Label.UNDETERMINED, reason=f"‖u‖ grows and accelerates at t={t_end:.3g} "
                                f"({read}): it may still blow up after the horizon", **base)
        if now < gmin:
            return TokenVerdict(label=Label.UNDETERMINED, reason=f"‖u‖ grew over the last decade ({read}) but the "
                                f"{how} at t={t_end:.3g} is {now:.3g}: the growth has stopped at the "
                                "horizon; it may level off after it", **base)
        return TokenVerdict(label=Label.DIVERGENT, reason=f"‖u‖ grows without blow-up up to t={t_end:.3g}, "
                            f"decelerating ({read}), slope {slope:.3g} per unit ln t", growth_slope=slope, **base)
    if abs(a) <= bmax and abs(ab) <= bmax:
        ahead = _decade_ahead(float(sol.log_slope[l]), float(sol.norms[-1, l]))
        if not abs(ahead) <= bmax:
            return TokenVerdict(label=Label.UNDETERMINED, reason=f"‖u‖ is level in ln t ({read}) but drifts: at the "
                                f"last half decade's pace in t, the next decade would have exponent {ahead:.3g} "
                                f"(bounded ≤ {bmax}); integrate further", **base)
        s0 = math.nan if sol.initial_speed is None else float(sol.initial_speed[l])
        if 0 < s0 < 1.0 / t_end and _moved(sol, l) <= math.log(10.0) * bmax:
            return TokenVerdict(label=Label.UNDETERMINED, reason=f"‖u‖ is level ({read}) but had no time to move: its "
                                f"time scale at t=0, ‖u‖/‖du/dt‖ = {1.0 / s0:.3g}, exceeds the horizon t={t_end:.3g}, "
                                "and its norm never left its start; integrate further", **base)
        return TokenVerdict(label=Label.BOUNDED, reason=f"‖u‖ levels off ({read})", **base)
    return TokenVerdict(label=Label.UNDETERMINED, reason=f"{read}: not both past one threshold (bounded ≤ {bmax}, "
                        f"decay ≥ {dmin}, growth ≥ {gmin}); integrate further", **base)


#: The last window read when the field's exponent at the horizon is not available: an eighth of a decade.
_LATE = 10.0 ** 0.125


def _heading(sol: TokenSolution, l: int, t_end: float) -> tuple[float, str]:
    """Token l's exponent at the horizon, and what it was read from: the field's (``end_exponent``, recorded where
    explicit steps landed), else the norms at the steps over the last eighth of a decade (stiff steps: there the
    field's rate times t magnifies the tolerated error); NaN when neither is available (no check)."""
    now = math.nan if sol.end_exponent is None else float(sol.end_exponent[l])
    if math.isfinite(now):
        return now, "the field's exponent"
    return window_reading(sol.ts, sol.norms[:, l], t_end, _LATE)[0], "the exponent over the last eighth of a decade"


def _moved(sol: TokenSolution, l: int) -> float:
    """The largest |ln(‖u_l(t)‖/‖u_l(0)‖)| over the steps: how far token l's norm ever moved from its start."""
    n = sol.norms[:, l]
    n = n[torch.isfinite(n) & (n > 0)]
    return float((n / n[0]).log().abs().max()) if n.numel() else 0.0


def _decade_ahead(half_slope: float, norm: float) -> float:
    """The exponent ``ln(‖u(10t)‖/‖u(t)‖)/ln 10`` of the next decade if ‖u‖ kept changing at the last half
    decade's pace in t (not in ln t): a slow drift ‖u‖ ≈ c + εt has a tiny exponent while εt ≪ c, and this is
    where it shows. ``half_slope`` is β over the last half decade (the change there is β ln √10, over
    t − t/√10); ``norm`` the norm at the horizon. −inf when the drift would reach zero."""
    change = half_slope * math.log(math.sqrt(10.0)) * 9.0 / (1.0 - 10.0 ** -0.5)
    return math.log1p(change / norm) / math.log(10.0) if norm > 0 and change > -norm else -math.inf


def _open_before(verdicts: list[TokenVerdict]) -> None:
    """Leave undetermined every reading at the horizon that follows a token left open there (in place)."""
    first_open: TokenVerdict | None = None
    for v in verdicts:
        if v.end is not TokenEnd.HORIZON or v.reason == _STATIC:
            continue
        if first_open is None:
            first_open = v if v.label is Label.UNDETERMINED else None
        elif v.label is not Label.UNDETERMINED:
            v.reason = (f"depends on token {first_open.index}, still undetermined at the horizon t={v.t_end:.6g}, "
                        f"which may yet drive it (read alone: {v.label}, {v.reason})")
            v.label, v.decay_exponent, v.growth_slope = Label.UNDETERMINED, None, None


def classify_tokens(solution: TokenSolution, *, decay_exponent_min: float = 0.05, growth_exponent_min: float = 0.02,
                    bounded_exponent_max: float = 0.005, min_t_end: float = 100.0,
                    zero_norm: float = 0.0) -> TokenClassification:
    """Label every token of a `TokenSolution` (rules in the module docstring).

    Arguments:
        solution: the result of `mamba_ode.integrate_tokens`.
        decay_exponent_min: convergence threshold on −α.
        growth_exponent_min: divergence threshold on α.
        bounded_exponent_max: boundedness threshold on |α|.
        min_t_end: shortest horizon at which an asymptotic exponent is read.
        zero_norm: norms ≤ this count as zero.

    Returns:
        A `TokenClassification`.

    Raises:
        TypeError: if solution is not a TokenSolution.
        ValueError: for negative or inconsistent thresholds.
    """
    if not isinstance(solution, TokenSolution):
        raise TypeError(f"argument 'solution' must be a TokenSolution (from integrate_tokens), got "
                        f"{type(solution).__name__}")
    th = {"decay_exponent_min": decay_exponent_min, "growth_exponent_min": growth_exponent_min,
          "bounded_exponent_max": bounded_exponent_max, "min_t_end": min_t_end, "zero_norm": zero_norm}
    for k, v in th.items():
        if finite_scalar(v, k) < 0:
            raise ValueError(f"argument {k!r} must be ≥ 0, got {v}")
    if not bounded_exponent_max <= min(decay_exponent_min, growth_exponent_min):
        raise ValueError("argument 'bounded_exponent_max' must not exceed 'decay_exponent_min' or "
                         "'growth_exponent_min'")
    out = []
    for l, end in enumerate(solution.ends):
        t_end, msg = float(solution.t_end[l]), solution.messages[l]
        base: dict[str, Any] = {"index": l, "end": end, "t_end": t_end}
        if end is TokenEnd.BLOWUP:
            out.append(TokenVerdict(label=Label.FINITE, reason=msg, t_blowup=float(solution.t_blowup[l]), **base))
        elif end is TokenEnd.GROWTH:
            out.append(TokenVerdict(label=Label.DIVERGENT, reason=msg, **base))
        elif end is TokenEnd.HORIZON:
            out.append(_horizon(solution, l, th))
        else:
            out.append(TokenVerdict(label=Label.UNDETERMINED, reason=msg, **base))
    _open_before(out)
    return TokenClassification(out, th)
