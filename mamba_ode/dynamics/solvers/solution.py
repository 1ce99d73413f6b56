"""The result of a solve: `Solution`, with a coarse `Status` and a typed `Outcome`
per trajectory (in the spirit of diffrax's ``Solution`` and ``RESULTS``)."""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..._enums import StrEnum

__all__ = ["Status", "Outcome", "Solution"]


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




class Outcome(StrEnum):
    """How the solver stopped on one trajectory: the typed reason behind its `Status`.

    Members (value in brackets):

    * ``SUCCESS`` ("success") — integrated over the whole span.
    * ``BLOWUP`` ("blow-up") — a finite-time singularity signature: the growth rate
      ``r = d ln‖u‖/dt`` extrapolates (``1/r`` linear in t, also under ``log_time``) to a nearby
      singularity; ``t_blowup`` holds its time.
    * ``THRESHOLD`` ("threshold") — ``max|u|`` passed ``blowup_threshold`` without that signature
      (fast growth, not necessarily a singularity); ``t_blowup`` holds the threshold crossing.
    * ``NONFINITE`` ("non-finite") — the state turned NaN or infinite.
    * ``STEP_SIZE`` ("step-size collapse") — the step size collapsed without a singularity
      signature: a stiff or non-smooth field.
    * ``MAX_STEPS`` ("max-steps") — the step budget ran out.
    """

    SUCCESS = "success"
    BLOWUP = "blow-up"
    THRESHOLD = "threshold"
    NONFINITE = "non-finite"
    STEP_SIZE = "step-size collapse"
    MAX_STEPS = "max-steps"

    @property
    def status(self) -> Status:
        """The coarse `Status` of this outcome (growth outcomes are ``BLOWUP``)."""
        return _STATUS_OF[self]

    @property
    def grew(self) -> bool:
        """True when the trajectory stopped because it grew (blow-up, threshold or non-finite)."""
        return self in (Outcome.BLOWUP, Outcome.THRESHOLD, Outcome.NONFINITE)


_STATUS_OF = {Outcome.SUCCESS: Status.SUCCESS, Outcome.BLOWUP: Status.BLOWUP, Outcome.THRESHOLD: Status.BLOWUP,
              Outcome.NONFINITE: Status.BLOWUP, Outcome.STEP_SIZE: Status.STEP_SIZE,
              Outcome.MAX_STEPS: Status.MAX_STEPS}
_DEFAULT_OUTCOME = {Status.SUCCESS: Outcome.SUCCESS, Status.BLOWUP: Outcome.BLOWUP, Status.STEP_SIZE: Outcome.STEP_SIZE,
                    Status.MAX_STEPS: Outcome.MAX_STEPS}


@dataclass
class Solution:
    """Result of `solve` and `euler` (in the spirit of diffrax's ``Solution``).

    Attributes:
        ts: (T,) output times (float64).
        ys: (T, B, L, E) states, in u0's dtype; rows after a trajectory's failure are NaN for it.
        status: per trajectory (length B), a `Status`.
        messages: per trajectory, a readable message.
        t_blowup: (B,) estimated blow-up time (float64), NaN where none.
        t_final: (B,) last time each trajectory reached (float64).
        stats: ``{"nfev": int, "n_accepted": int, "n_rejected": int | None, ...}`` over the whole solve.
        method: solver name; backend: ``"torchdiffeq"``, ``"scipy"`` or ``"euler"``.
        log_time: whether the integration ran in s = ln(1 + t).
        outcomes: per trajectory, the typed `Outcome` (default: derived from ``status``, a
            ``BLOWUP`` status reading as a singularity; an outcome that disagrees with its status is
            replaced by that default).
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
    outcomes: list[Outcome] = field(default_factory=list)

    def __post_init__(self) -> None:
        # the status is authoritative: an outcome missing or disagreeing with it (e.g. after
        # dataclasses.replace(solution, status=...)) becomes the status's default outcome
        given = list(self.outcomes) if len(self.outcomes) == len(self.status) else [None] * len(self.status)
        self.outcomes = [o if o is not None and o.status is s else _DEFAULT_OUTCOME[s]
                         for o, s in zip(given, self.status)]

    @staticmethod
    def default_outcome(status: Status) -> Outcome:
        """The outcome a bare status stands for (a ``BLOWUP`` status reads as a singularity)."""
        return _DEFAULT_OUTCOME[status]

    @property
    def ok(self) -> bool:
        """True when every trajectory succeeded."""
        return all(s.ok for s in self.status)

    @property
    def blew_up(self) -> Tensor:
        """(B,) bool: which trajectories blew up."""
        return torch.tensor([s is Status.BLOWUP for s in self.status], dtype=torch.bool)

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
