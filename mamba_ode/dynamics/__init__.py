"""The dynamics layer: vector fields of the continuous-time limit, the solvers, and the discrete comparison.

Imports `mamba_ode.nn` (parameters, the scan) and nothing above it.
"""

from .compare import DiscreteComparison, compare_discrete
from .fields import (
    DepthField,
    Mamba2Field,
    MatrixS6Field,
    OneDimField,
    PackedOneDimField,
    S6Field,
    VectorField,
    field_of_params,
    layer_field,
)
from .prefix import prefix_batch
from .solvers import Outcome, Solution, Status, euler, solve

__all__ = [
    "DepthField",
    "DiscreteComparison",
    "Mamba2Field",
    "MatrixS6Field",
    "OneDimField",
    "Outcome",
    "PackedOneDimField",
    "S6Field",
    "Solution",
    "Status",
    "VectorField",
    "compare_discrete",
    "euler",
    "field_of_params",
    "layer_field",
    "prefix_batch",
    "solve",
]
