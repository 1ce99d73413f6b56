"""Solving token trajectories: `solve` (adaptive, blow-up aware) and `euler` (fixed grid).

Nothing in this package knows about Mamba: a field is any callable ``f(t, u)`` on (B, L, E) states.
"""

from .api import BACKENDS, SCIPY_METHODS, TORCHDIFFEQ_METHODS, solve
from .euler import euler
from .solution import Outcome, Solution, Status

__all__ = ["BACKENDS", "SCIPY_METHODS", "TORCHDIFFEQ_METHODS", "Outcome", "Solution", "Status", "euler", "solve"]
