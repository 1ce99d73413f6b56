"""The analysis layer: ``analyze`` (the whole pipeline on one prompt), figures and the HTML report.

Imports every layer below it; only assembles (no new numerics here but the drawing itself).
"""

from . import plots
from .analyze import DEFAULT_PROMPT, Analysis, LayerDynamics, agreement, analyze, regime_of_labels
from .report import FIGURE_NAMES, make_figures, render_html, write_report
from .summary import SCHEMA_VERSION, comparison_sentence, validate_summary

__all__ = [
    "DEFAULT_PROMPT",
    "FIGURE_NAMES",
    "SCHEMA_VERSION",
    "Analysis",
    "LayerDynamics",
    "agreement",
    "analyze",
    "comparison_sentence",
    "make_figures",
    "plots",
    "regime_of_labels",
    "render_html",
    "validate_summary",
    "write_report",
]
