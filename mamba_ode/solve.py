"""Integrating token trajectories: ``solve(field, u0, t_span, ...) → Solution``.

This module knows nothing about Mamba: a field is any callable ``f(t, u)`` on tensors
(B, L, E) → (B, L, E).
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

__all__ = ["Status", "Solution"]


class Status(enum.Enum):
    """Outcome of one trajectory."""

    SUCCESS = "success"
    BLOWUP = "blow-up"
    STEP_SIZE = "step-size failure"
    MAX_STEPS = "max-steps"

    @property
    def ok(self) -> bool:
        """True for a trajectory integrated over the whole span."""
        return self is Status.SUCCESS


@dataclass
class Solution:
    """Result of :func:`solve` (in the spirit of diffrax's ``Solution``).

    Attributes:
        ts: (T,) output times.
        ys: (T, B, L, E) states; rows after a trajectory's failure are NaN for that trajectory.
        status: per trajectory (length B), a :class:`Status`.
        messages: per trajectory, a readable message.
        t_blowup: (B,) estimated blow-up time, NaN where none.
        t_final: (B,) last time each trajectory reached.
        stats: ``{"nfev": int, "n_accepted": int, "n_rejected": int, ...}``.
        method: solver name; backend: ``"torchdiffeq"``, ``"scipy"`` or ``"euler"``.
        log_time: whether the integration ran in s = ln(1 + t).
    """

    ts: Tensor
    ys: Tensor
    status: list[Status]
    messages: list[str]
    t_blowup: Tensor
    t_final: Tensor
    stats: dict = field(default_factory=dict)
    method: str = ""
    backend: str = ""
    log_time: bool = False

    @property
    def ok(self) -> bool:
        """True when every trajectory succeeded."""
        return all(s.ok for s in self.status)

    @property
    def message(self) -> str:
        """One readable line summarising the statuses."""
        counts: dict[str, int] = {}
        for s in self.status:
            counts[s.value] = counts.get(s.value, 0) + 1
        return ", ".join(f"{n} {k}" for k, n in counts.items())

    def __repr__(self) -> str:
        tb = [f"{t:.6g}" for t in self.t_blowup.tolist() if not math.isnan(t)]
        return (f"Solution(T={self.ts.numel()}, ys={tuple(self.ys.shape)}, status=[{self.message}], "
                f"t_blowup=[{', '.join(tb)}], stats={self.stats})")
