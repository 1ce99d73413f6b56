"""mamba_ode — token dynamics of deep selective state-space models (Mamba) in continuous time.

Implements Vo, Pham, Tong & Nguyen, *Demystifying the Token Dynamics of Deep Selective State
Space Models* (ICLR 2025). Shape letters (B, L, Dm, E, N, R, K) are declared in
`mamba_ode.shapes`.

The package is layered, each layer importing only the ones before it:
`mamba_ode.io` (checkpoints, configs, tokenizers) → `mamba_ode.nn` (the scan, parameters,
mixers, models, ``load``) → `mamba_ode.dynamics` (fields, solvers, the discrete comparison) and
`mamba_ode.train` → `mamba_ode.regimes` (criteria, spectra, verdicts, trajectory labels)
→ `mamba_ode.analysis` (``analyze``, figures, report) → `mamba_ode.cli`. The names below are
the public API, grouped by topic.
"""

from ._version import __version__
from .analysis import plots
from .analysis.analyze import Analysis, LayerDynamics, analyze, load_analysis
from .analysis.many import LayerStats, ManyAnalysis, PromptResult, analyze_many
from .analysis.many_report import write_many_report
from .analysis.report import write_report
from .dynamics.compare import DiscreteComparison, compare_discrete
from .dynamics.fields import (
    DepthField,
    Mamba2Field,
    MatrixS6Field,
    OneDimField,
    PackedOneDimField,
    S6Field,
    VectorField,
    layer_field,
)
from .dynamics.prefix import prefix_batch
from .dynamics.solvers import Outcome, Solution, Status, euler, solve
from .dynamics.tokens import TokenEnd, TokenSolution, integrate_tokens
from .io.checkpoints import read_checkpoint
from .io.config import Mamba2Config, MambaConfig
from .io.tokenizers import ByteTokenizer, HFTokenizer
from .nn.block import Block
from .nn.hooks import ActivationCache, HookPoint
from .nn.lm import Mamba2LM, MambaLM, MambaLMBase, MambaOutput
from .nn.load import load
from .nn.mixer_mamba1 import MambaMixer
from .nn.mixer_mamba2 import Mamba2Mixer
from .nn.params_mamba1 import S6Internals, SSMParams, hidden_attention, matrix_s6
from .nn.params_mamba2 import Mamba2Internals, Mamba2Params
from .nn.refine import (
    InputOutputSign,
    SoftSort,
    TokenReorder,
    constrain_input_output,
    importance_scores,
    input_output_sign_of,
    reorder_first_block,
    unconstrain_input_output,
)
from .nn.scan import cuda_kernel_available, selective_scan, triton_available
from .regimes.agreement import AgreementReport, compare_theory_numerics, two_dim_params
from .regimes.classify import TrajectoryClassification, classify_trajectory
from .regimes.criteria import Criteria1D, CriteriaND, blowup_time_1d, criteria_1d, criteria_nd
from .regimes.labels import Definiteness, Label
from .regimes.predict import PredictionKind, TokenPrediction, predict_tokens, prediction_agreement
from .regimes.spectrum import SymSpectrum, channel_reductions, sym_spectrum
from .regimes.table import RegimeTable, Verdict, regime_table
from .regimes.tokens import TokenClassification, TokenVerdict, classify_tokens

__all__ = [
    "__version__",
    # activation points
    "ActivationCache",
    "HookPoint",
    # loading models
    "load",
    "read_checkpoint",
    "MambaConfig",
    "Mamba2Config",
    "MambaLMBase",
    "MambaLM",
    "Mamba2LM",
    "MambaOutput",
    "Block",
    "MambaMixer",
    "Mamba2Mixer",
    "ByteTokenizer",
    "HFTokenizer",
    # parameters in the paper's notation, and the one scan
    "SSMParams",
    "S6Internals",
    "Mamba2Params",
    "Mamba2Internals",
    "selective_scan",
    "cuda_kernel_available",
    "triton_available",
    "hidden_attention",
    "matrix_s6",
    # vector fields
    "VectorField",
    "S6Field",
    "MatrixS6Field",
    "Mamba2Field",
    "OneDimField",
    "PackedOneDimField",
    "DepthField",
    "layer_field",
    "prefix_batch",
    # per-token outcomes by events (the analysis' integrator), and general solving
    "integrate_tokens",
    "TokenSolution",
    "TokenEnd",
    "solve",
    "euler",
    "Solution",
    "Status",
    "Outcome",
    "compare_discrete",
    "DiscreteComparison",
    # regimes
    "Label",
    "Definiteness",
    "criteria_1d",
    "Criteria1D",
    "blowup_time_1d",
    "criteria_nd",
    "CriteriaND",
    "sym_spectrum",
    "SymSpectrum",
    "channel_reductions",
    "regime_table",
    "RegimeTable",
    "Verdict",
    "classify_tokens",
    "TokenClassification",
    "TokenVerdict",
    "predict_tokens",
    "TokenPrediction",
    "PredictionKind",
    "prediction_agreement",
    "classify_trajectory",
    "TrajectoryClassification",
    "compare_theory_numerics",
    "AgreementReport",
    "two_dim_params",
    # the paper's refinements
    "constrain_input_output",
    "unconstrain_input_output",
    "input_output_sign_of",
    "InputOutputSign",
    "SoftSort",
    "TokenReorder",
    "reorder_first_block",
    "importance_scores",
    # analysis and report
    "analyze",
    "analyze_many",
    "load_analysis",
    "ManyAnalysis",
    "PromptResult",
    "LayerStats",
    "write_many_report",
    "Analysis",
    "LayerDynamics",
    "write_report",
    "plots",
]
