"""The base class of the vector fields: ``forward(t, u)``, an evaluation counter and jump times.

A field maps a time and a batch of token sequences to their time derivative, batched over
sequences (trajectory b's derivative depends only on trajectory b). Nothing here knows about
solvers (`mamba_ode.dynamics.solvers`).
"""

from __future__ import annotations

from torch import nn

__all__ = ["VectorField"]


class VectorField(nn.Module):
    """Base class of the fields: ``forward(t, u)`` plus an evaluation counter.

    Attributes:
        nfev: number of evaluations since construction or `reset_nfev`.
        jump_times: times where the field is discontinuous in t (empty for autonomous fields).
    """

    def __init__(self) -> None:
        super().__init__()
        self.nfev = 0

    @property
    def jump_times(self) -> tuple[float, ...]:
        """Times of discontinuities in t (none by default)."""
        return ()

    def reset_nfev(self) -> None:
        """Set the evaluation counter to zero."""
        self.nfev = 0
