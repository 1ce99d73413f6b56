"""The regimes layer: do the tokens converge, blow up in finite time, or grow slowly?

Three views of the same question, one module each:

* from parameters — `criteria` (the paper's theorems),
  `spectrum` (Sym(M) from low-rank factors, per-channel reductions) and
  `table` (one `Verdict` per layer or head);
* from trajectories — `tokens` (per token, from events) and
  `classify` (from a `mamba_ode.Solution` on an output grid);
* per token from parameters, as theorem or indicator — `predict`;
* theory against numerics — `agreement`.

Labels are the ``str`` enums of `labels`. Imports the dynamics and nn layers.
"""

from .agreement import AgreementCase, AgreementReport, compare_theory_numerics, two_dim_params
from .classify import TrajectoryClassification, classify_trajectory
from .criteria import Criteria1D, CriteriaND, blowup_time_1d, criteria_1d, criteria_nd
from .labels import COMPATIBLE, CRITERIA_REGIMES, EXPECTED_LABEL, TRAJECTORY_LABELS, Definiteness, Label
from .predict import PredictionKind, TokenPrediction, predict_tokens, prediction_agreement
from .spectrum import ChannelReductions, SymSpectrum, channel_reductions, sym_spectrum
from .table import (
    RegimeTable,
    Verdict,
    head_verdicts,
    layer_fractions,
    layer_spectrum,
    layer_verdict,
    regime_table,
)
from .tokens import TokenClassification, TokenVerdict, classify_tokens

__all__ = [
    "COMPATIBLE",
    "PredictionKind",
    "TokenClassification",
    "TokenPrediction",
    "TokenVerdict",
    "classify_tokens",
    "prediction_agreement",
    "predict_tokens",
    "AgreementCase",
    "AgreementReport",
    "CRITERIA_REGIMES",
    "ChannelReductions",
    "Criteria1D",
    "CriteriaND",
    "Definiteness",
    "EXPECTED_LABEL",
    "Label",
    "RegimeTable",
    "SymSpectrum",
    "TRAJECTORY_LABELS",
    "TrajectoryClassification",
    "Verdict",
    "blowup_time_1d",
    "channel_reductions",
    "classify_trajectory",
    "compare_theory_numerics",
    "criteria_1d",
    "criteria_nd",
    "head_verdicts",
    "layer_fractions",
    "layer_spectrum",
    "layer_verdict",
    "regime_table",
    "sym_spectrum",
    "two_dim_params",
]
