"""The integration variable: t itself, or s = ln(1 + t) for long horizons."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["Clock"]


class Clock:
    """The integration variable τ: t itself, or s = ln(1 + t) with ``log_time``."""

    def __init__(self, log_time: bool) -> None:
        self.log = log_time

    def tau(self, t: float) -> float:
        return math.log1p(t) if self.log else t

    def t(self, tau: float) -> float:
        return math.expm1(tau) if self.log else tau

    def dtau_dt(self, t: float) -> float:
        """dτ/dt at t."""
        return 1.0 / (1.0 + t) if self.log else 1.0

    def rhs(self, fn: Callable, t_lo: float, t_hi: float) -> Callable[[float, Tensor], Tensor]:
        """du/dτ on the piece [t_lo, t_hi] with t clamped to [t_lo, t_hi) (left limit at t_hi). The adaptive
        steps land on t_hi (torchdiffeq's ``step_t``; scipy's ``t_bound``), so no stage passes it: the clamp
        only keeps a field that ends or jumps at t_hi on its left limit, and puts no kink into a step."""
        t_top = math.nextafter(t_hi, -math.inf)

        def f(tau: float, y: Tensor) -> Tensor:
            t = min(max(self.t(tau), t_lo), t_top)
            dy = fn(torch.tensor(t, dtype=torch.float64), y)
            return dy * (1.0 + t) if self.log else dy

        return f
