"""The discrete comparison: the same field stepped by explicit Euler and integrated adaptively.

With the depth-time field of a network (`mamba_ode.DepthField`) and h = 1, Euler stepping
*is* the pretrained network's residual stream; `compare_discrete` puts it beside the
continuous-time solution at the Euler grid times and reports the error between them. Like
`mamba_ode.dynamics.solvers`, nothing here knows about Mamba.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .solvers import Solution, euler, solve

__all__ = ["DiscreteComparison", "compare_discrete"]


@dataclass
class DiscreteComparison:
    """Euler trajectory and ODE solution side by side at common times.

    Attributes:
        ts: (T,) common times (the Euler grid t0 + i·h).
        discrete: (T, B, L, E) Euler states.
        continuous: (T, B, L, E) ODE states (adaptive solver, interpolated at ts).
        error: (T, B) ``‖discrete − continuous‖`` over (L, E) per trajectory and time (NaN after a
            failure of either).
        rel_error: (T, B) error divided by ``‖continuous‖``.
        h: the Euler step.
        euler_solution, ode_solution: the two `Solution` objects (statuses, stats).
    """

    ts: Tensor
    discrete: Tensor
    continuous: Tensor
    error: Tensor
    rel_error: Tensor
    h: float
    euler_solution: Solution
    ode_solution: Solution

    @property
    def final_error(self) -> Tensor:
        """(B,) error at the last common time."""
        return self.error[-1]

    @property
    def max_error(self) -> float:
        """Largest error over times and trajectories (NaN ignored)."""
        e = self.error[torch.isfinite(self.error)]
        return float(e.max()) if e.numel() else float("nan")


def compare_discrete(field: Callable[[Tensor, Tensor], Tensor], u0: Tensor, t_span: Sequence[float], *,
                     h: float = 1.0, method: str | None = None, rtol: float = 1e-7, atol: float = 1e-9,
                     **solve_kwargs: Any) -> DiscreteComparison:
    """Step the field by Euler with step h and integrate it adaptively; compare at the Euler grid.

    Arguments:
        field: callable ``f(t, u)`` (see `mamba_ode.solve`).
        u0: (B, L, E) initial states (for a network: ``DepthField.initial_state(ids)``).
        t_span: (t0, t1), a whole number of steps h.
        h: Euler step (1: the discrete network for a depth-time field).
        method, rtol, atol: the adaptive solver's settings (method None: the backend's default, see `solve`).
        **solve_kwargs: further arguments of `mamba_ode.solve` (not t_eval).

    Returns:
        A `DiscreteComparison`.

    Raises:
        TypeError, ValueError: as `mamba_ode.euler` and `mamba_ode.solve`.
    """
    if "t_eval" in solve_kwargs:
        raise ValueError("argument 't_eval' is fixed by the Euler grid in compare_discrete")
    disc = euler(field, u0, t_span, h)
    cont = solve(field, u0, t_span, t_eval=disc.ts, method=method, rtol=rtol, atol=atol, **solve_kwargs)
    diff = (disc.ys - cont.ys).flatten(2).double()
    err = diff.norm(dim=-1)
    ref = cont.ys.flatten(2).double().norm(dim=-1)
    return DiscreteComparison(ts=disc.ts, discrete=disc.ys, continuous=cont.ys, error=err, rel_error=err / ref,
                              h=float(h), euler_solution=disc, ode_solution=cont)
