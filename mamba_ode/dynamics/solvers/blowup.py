"""Reading a stop: does the growth of a trajectory extrapolate to a finite-time singularity?"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from .clock import Clock
from .solution import Outcome

__all__ = ["rate", "singularity", "threshold_outcome", "maxabs"]


def rate(rhs: Callable, tau: float, y: Tensor) -> float:
    """d ln‖y‖/dτ = <y, f(y)> / ‖y‖² for one trajectory y (1, L, E)."""
    with torch.no_grad():
        f = rhs(tau, y)
    yy = float((y.double() * y.double()).sum())
    return float((y.double() * f.double()).sum()) / yy if yy > 0 else math.nan


def singularity(rhs: Callable, hist: list[tuple[float, Tensor]], clock: Clock) -> float | None:
    """Blow-up time t* extrapolated from the last accepted states of one trajectory, or None.

    With r = d ln‖y‖/dt, ``‖y‖ ~ c (t* - t)^{-α}`` gives ``1/r = (t* - t)/α``: the zero of the line
    through the last two (t, 1/r) is t*. Read in t, not in the integration variable τ: in log time an
    exponential growth has a decreasing 1/r in τ and no singularity. Accepted only when r > 0 at both,
    1/r decreases, and t* is within 100 times the span of the history (a singularity the steps were resolving).

    Arguments:
        rhs: dy/dτ.
        hist: the last accepted (τ, state) pairs, oldest first.
        clock: the integration variable τ(t).
    """
    if len(hist) < 2:
        return None
    (s1, y1), (s2, y2) = hist[-2], hist[-1]
    t1, t2 = clock.t(s1), clock.t(s2)
    if not t2 > t1:
        return None
    r1, r2 = rate(rhs, s1, y1) * clock.dtau_dt(t1), rate(rhs, s2, y2) * clock.dtau_dt(t2)
    if not (math.isfinite(r1) and math.isfinite(r2) and r1 > 0 and r2 > 0):
        return None
    i1, i2 = 1.0 / r1, 1.0 / r2
    if not i2 < i1:
        return None
    tstar = t2 + i2 * (t2 - t1) / (i1 - i2)
    if not math.isfinite(tstar) or tstar - t2 > 100.0 * (t2 - clock.t(hist[0][0])):
        return None
    return max(tstar, t2)


def maxabs(y: Tensor) -> float:
    """Largest absolute entry of a tensor."""
    return float(y.abs().max())


def threshold_outcome(y: Tensor, hist: list[tuple[float, Tensor]], tau: float, rhs: Callable, clock: Clock,
                      threshold: float) -> tuple[Outcome, float, str]:
    """The outcome of one trajectory that passed the norm threshold (or turned non-finite) at τ.

    Arguments:
        y: (1, L, E) its state at the stop.
        hist: its last accepted (τ, state) pairs.
        tau: the stop's τ.
        rhs: du/dτ.
        clock: the integration variable τ(t).
        threshold: the norm threshold.

    Returns:
        ``(outcome, t_blowup, message)``: ``NONFINITE`` at the stop time, ``BLOWUP`` with the
        extrapolated singularity, or ``THRESHOLD`` with the interpolated crossing time.
    """
    to_t = clock.t
    if not torch.isfinite(y).all():
        return Outcome.NONFINITE, to_t(tau), f"non-finite: the state turned non-finite at t={to_t(tau):.10g}"
    tb = singularity(rhs, hist, clock)
    if tb is not None:
        return Outcome.BLOWUP, tb, (f"blow-up: max|u|={maxabs(y):.3g} passed the threshold {threshold:.3g} at "
                                    f"t={to_t(tau):.10g}; estimated blow-up time t*={tb:.10g}")
    tb = to_t(tau)
    if len(hist) >= 2:  # interpolate ln max|u| in t (exact for an exponential) between the last two states
        (sa, ya), (sb, yb) = hist[-2], hist[-1]
        la, lb = math.log(max(maxabs(ya), 1e-300)), math.log(max(maxabs(yb), 1e-300))
        if lb > la and la < math.log(threshold) <= lb:
            ta = to_t(sa)
            tb = ta + (math.log(threshold) - la) / (lb - la) * (to_t(sb) - ta)
    return Outcome.THRESHOLD, tb, (f"threshold: max|u| passed the threshold {threshold:.3g} at t≈{tb:.10g} "
                                   "(no finite-time singularity signature)")
