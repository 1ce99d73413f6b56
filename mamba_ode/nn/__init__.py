"""The nn layer: the one selective scan, each generation's parameters and mixer behind one residual block
and one LM base, the refinements, and ``load``.

Imports only `mamba_ode.io` below it.
"""

from .block import Block
from .lm import Mamba2LM, MambaLM, MambaLMBase, MambaOutput
from .load import load
from .mixer_mamba1 import MambaMixer
from .mixer_mamba2 import Mamba2Mixer
from .norms import GatedRMSNorm, RMSNorm, make_norm
from .params_mamba1 import S6Internals, SSMParams, hidden_attention, matrix_s6
from .params_mamba2 import Mamba2Internals, Mamba2Params
from .scan import BACKENDS, cuda_kernel_available, selective_scan

__all__ = [
    "BACKENDS",
    "Block",
    "GatedRMSNorm",
    "Mamba2Internals",
    "Mamba2LM",
    "Mamba2Mixer",
    "Mamba2Params",
    "MambaLM",
    "MambaLMBase",
    "MambaMixer",
    "MambaOutput",
    "RMSNorm",
    "S6Internals",
    "SSMParams",
    "cuda_kernel_available",
    "hidden_attention",
    "load",
    "make_norm",
    "matrix_s6",
    "selective_scan",
]
