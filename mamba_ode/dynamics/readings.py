"""Growth readings of one token from the norms at the solver's steps: exponent and ln-t slope over a window.

A reading over the window [t/factor, t] ending at the token's last time t is read from the norms recorded
at the accepted steps, the norm at t/factor interpolated linearly in ln‖u‖ against ln t (exact for a power
law). Nothing here depends on output times.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["window_reading"]


def window_reading(ts: Tensor, norms: Tensor, t1: float, factor: float) -> tuple[float, float]:
    """``(ln‖u(t1)‖ − ln‖u(t1/factor)‖)/ln factor`` and ``(‖u(t1)‖ − ‖u(t1/factor)‖)/ln factor``.

    Arguments:
        ts: (T,) increasing times of the steps, from 0.
        norms: (T,) the token's norm at those times; its last entry is the norm at t1.
        t1: the end of the window (the token's last time).
        factor: the window's width as a ratio of times (> 1): √10 for a half decade, 10 for a decade.

    Returns:
        (exponent, slope); both NaN when t1/factor lies before the first positive step or after the
        last one, or a norm in the window is not positive.
    """
    i0 = int(torch.searchsorted(ts, torch.tensor(t1 / factor, dtype=ts.dtype)))
    if not 0 < i0 < len(ts) or float(ts[i0 - 1]) <= 0:
        return math.nan, math.nan
    ta, tb = float(ts[i0 - 1]), float(ts[i0])
    na, nb, n1 = float(norms[i0 - 1]), float(norms[i0]), float(norms[-1])
    w = (math.log(t1 / factor) - math.log(ta)) / (math.log(tb) - math.log(ta)) if tb > ta else 1.0
    n0 = math.exp((1 - w) * math.log(na) + w * math.log(nb)) if na > 0 and nb > 0 else na + w * (nb - na)
    if not (n0 > 0 and n1 > 0):
        return math.nan, math.nan
    return (math.log(n1) - math.log(n0)) / math.log(factor), (n1 - n0) / math.log(factor)
