"""mamba_ode — token dynamics of deep selective state-space models (Mamba) in continuous time.

Implements Vo, Pham, Tong & Nguyen, *Demystifying the Token Dynamics of Deep Selective State
Space Models* (ICLR 2025). Shape letters (B, L, Dm, E, N, R, K) are declared in
:mod:`mamba_ode.shapes`.
"""

from .analysis import Analysis, analyze
from .checkpoints import read_checkpoint
from .compare import DiscreteComparison, compare_discrete
from .config import Mamba2Config, MambaConfig
from .fields import DepthField, MatrixS6Field, OneDimField, S6Field, VectorField, hidden_attention, matrix_s6
from .mamba2 import Mamba2Field, Mamba2LM, Mamba2Params, head_regime_table
from .model import MambaBlock, MambaLM, MambaMixer, MambaOutput, load
from .params import S6Internals, SSMParams
from .refine import (
    InputOutputSign,
    SoftSort,
    TokenReorder,
    constrain_input_output,
    input_output_sign_of,
    reorder_first_block,
    unconstrain_input_output,
)
from .regimes import (
    Criteria1D,
    LayerRegime,
    RegimeTable,
    SymSpectrum,
    TrajectoryClassification,
    blowup_time_1d,
    channel_reductions,
    classify_trajectory,
    compare_theory_numerics,
    criteria_1d,
    criteria_nd,
    importance_scores,
    regime_table,
    sym_spectrum,
)
from .scan import cuda_kernel_available, selective_scan
from .solve import Solution, Status, euler, solve
from .tokenizer import ByteTokenizer

__version__ = "0.1.0"

__all__ = [
    "Analysis",
    "ByteTokenizer",
    "DepthField",
    "DiscreteComparison",
    "MatrixS6Field",
    "OneDimField",
    "S6Field",
    "Solution",
    "Status",
    "VectorField",
    "InputOutputSign",
    "SoftSort",
    "TokenReorder",
    "constrain_input_output",
    "input_output_sign_of",
    "reorder_first_block",
    "unconstrain_input_output",
    "Criteria1D",
    "LayerRegime",
    "RegimeTable",
    "SymSpectrum",
    "TrajectoryClassification",
    "blowup_time_1d",
    "channel_reductions",
    "classify_trajectory",
    "compare_theory_numerics",
    "criteria_1d",
    "criteria_nd",
    "importance_scores",
    "regime_table",
    "sym_spectrum",
    "analyze",
    "compare_discrete",
    "euler",
    "hidden_attention",
    "matrix_s6",
    "solve",
    "MambaBlock",
    "MambaConfig",
    "MambaLM",
    "MambaMixer",
    "MambaOutput",
    "S6Internals",
    "SSMParams",
    "cuda_kernel_available",
    "load",
    "read_checkpoint",
    "selective_scan",
    "__version__",
    "Mamba2Config",
    "Mamba2Field",
    "Mamba2LM",
    "Mamba2Params",
    "head_regime_table",
]
