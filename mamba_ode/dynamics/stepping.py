"""Step-size control and the explicit/implicit switch of one segment of `mamba_ode.integrate_tokens`.

DP5 steps under Hairer's PI control (β = 0.04, as in his DOPRI5); when Hairer's stiffness indicator exceeds
3.25 on 15 steps (a run of 6 below resetting the count) the segment switches to the linearly implicit
ROS34PW2 under Gustafsson's predictive control, and back when ``h·|λ|max`` stays below 2 for 10 steps
(20, 40, … after each return). The ROS34PW2 stages use the W of a tracked stiff subspace (`solvers.krylov_w`):
the first stiff step searches it from F(y), a step rejected with an error above 10 searches again from its
error and is retried once or twice at the same size, and a field autograd cannot differentiate, or more stiff
modes than the subspace holds, sends the stages to GMRES.
"""

from __future__ import annotations

import math
from typing import Any

from torch import Tensor

from .solvers.krylov_w import StiffSubspace
from .solvers.steppers import _W_GAMMA, Step, dp5_step, ros34pw2_step

__all__ = ["Stepping"]

_STIFF_RATIO, _STIFF_STEPS, _NONSTIFF_RESET = 3.25, 15, 6  # Hairer's stiffness test, as in his DOPRI5
_EXPLICIT_OK, _EXPLICIT_STEPS = 2.0, 10  # back to explicit steps when h·|λ|max stays below this
_PI_BETA = 0.04  # the PI step-size control of DP5 steps (Hairer's DOPRI5)
_UNSTABLE = 10.0  # a rejected W step with an error above this searches for a stiff mode W missed


class Stepping:
    """Step-size control and the explicit/implicit switch of one segment."""

    def __init__(self, rtol: float, atol: float, stiff_switch: bool, krylov_w: bool = True) -> None:
        self.rtol, self.atol, self.stiff_switch, self.krylov_w = rtol, atol, stiff_switch, krylov_w
        self.subspace: StiffSubspace | None = StiffSubspace() if krylov_w else None
        self.last: tuple[Any, Tensor, Tensor, float, Tensor | None, Step] | None = None  # the last W step's context
        self.retries = 0  # retries of the current step after a search for a missed stiff mode
        self.kind = "dopri5"
        self.stiff_count = self.nonstiff_run = self.explicit_ok = 0
        self.explicit_needed = _EXPLICIT_STEPS  # doubles each time the stiff stepper is needed again
        self.err_old: float | None = None  # error and size of the last accepted step (controller memory)
        self.h_old = 0.0
        self.last_rejected = False

    def step(self, sys: Any, y: Tensor, f: Tensor, h: float) -> Step:
        """One step of size h from (y, f = F(y)) with the current stepper; ``sys`` is the segment's system F
        (callable, with ``jdiag(y)`` for ROS34PW2's preconditioner)."""
        if self.kind == "dopri5":
            return dp5_step(sys, y, f, h)
        jd, sub, solve = sys.jdiag(y), self.subspace, None
        if sub is not None:
            if sub.V is None:  # the first stiff step: look for the stiff modes from F(y)
                if sub.search(sys, y, f, h, jd, f) is None:
                    sub = self.subspace = None
        if sub is not None:
            solve = sub.solver(sys, y, f, h, _W_GAMMA, jd, sys.vjp)
            if solve is None:  # the field is outside autograd: GMRES from here on (and in later segments)
                sub = self.subspace = None
                self.krylov_w = False
        step = ros34pw2_step(sys, y, f, h, jdiag=jd, tol_scale=self.atol + self.rtol * y.abs(), solve=solve,
                             h_lambda=sub.h_lambda if sub is not None else math.nan)
        self.last = (sys, y, f, h, jd, step) if sub is not None else None
        return step

    @property
    def exponent(self) -> float:
        """1/q, q the order of the error estimate plus one (5 for DP5(4), 3 for ROS34PW2's order-2 estimate)."""
        return 0.2 if self.kind == "dopri5" else 1.0 / 3.0

    def rejected(self, err: float, h: float) -> float:
        """The next step size after a rejected step of size h with error err: a quarter when the error is
        not finite or the step was refused for a non-finite state (err ≤ 1), else from the error."""
        self.last_rejected = True
        if self.last is not None and self.subspace is not None and not err <= _UNSTABLE and self.retries < 2:
            sys, y, f, h_step, jd, step = self.last  # unstable: W missed a stiff mode, along which the error points
            self.last = None
            grew = self.subspace.search(sys, y, f, h_step, jd, step.err)
            if grew is None:  # more stiff modes than the subspace holds: GMRES from here on
                self.subspace = None
            if grew is not False:
                self.retries += 1
                return h  # retry the same step with the new W (or with GMRES)
        if not (math.isfinite(err) and err > 1.0):
            return 0.25 * h
        return h * max(0.2, 0.9 * err ** -self.exponent)

    def accepted(self, err: float, h: float) -> float:
        """The next step size after an accepted step of size h with error err ≤ 1.

        DP5: Hairer's PI control of DOPRI5 (β = 0.04), the last accepted error damping the oscillation of
        the step size. ROS34PW2: Gustafsson's predictive control (as in Hairer's RADAU5 and RODAS), the more
        cautious of the standard and the predicted factor. Either way the factor is in [0.2, 5], and no
        growth right after a rejection.
        """
        a = self.exponent
        if err == 0:
            grow = 5.0
        elif self.kind == "dopri5":
            grow = 0.9 * err ** -(a - 0.75 * _PI_BETA) * (self.err_old ** _PI_BETA if self.err_old else 1.0)
        else:
            grow = 0.9 * err ** -a
            if self.err_old is not None and self.h_old > 0:
                grow = min(grow, 0.9 * (h / self.h_old) * (self.err_old / err ** 2) ** a)
        grow = min(5.0, max(0.2, grow))
        if self.last_rejected:
            grow = min(grow, 1.0)
        floor = 1e-4 if self.kind == "dopri5" else 1e-2
        self.retries = 0
        if self.kind == "ros34pw2" and self.subspace is not None:
            self.subspace.track()
        self.err_old, self.h_old, self.last_rejected = max(err, floor), h, False
        return h * grow

    def start_stiff(self) -> None:
        """Switch to ROS34PW2 steps (a fresh stiff subspace, no controller memory)."""
        self.kind, self.explicit_ok, self.err_old = "ros34pw2", 0, None
        self.subspace = StiffSubspace() if self.krylov_w else None

    def switch_after(self, step: Step) -> bool:
        """Update the stiffness counters after an accepted step; True when the stepper changes."""
        if not self.stiff_switch:
            return False
        if self.kind == "dopri5":
            if step.stiffness > _STIFF_RATIO:
                self.stiff_count, self.nonstiff_run = self.stiff_count + 1, 0
            else:
                self.nonstiff_run += 1
                self.stiff_count = 0 if self.nonstiff_run >= _NONSTIFF_RESET else self.stiff_count
            if self.stiff_count >= _STIFF_STEPS:
                self.start_stiff()
                return True
            return False
        self.explicit_ok = self.explicit_ok + 1 if step.stiffness < _EXPLICIT_OK else 0
        if self.explicit_ok >= self.explicit_needed:  # back to explicit steps (a later return costs more)
            self.explicit_needed *= 2
            self.kind, self.stiff_count, self.nonstiff_run, self.err_old = "dopri5", 0, 0, None
            return True
        return False
