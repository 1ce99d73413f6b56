"""Shared pieces of the figures: one colour per label, axes creation, record access and checks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ..regimes.labels import Label

__all__ = ["REGIME_COLORS", "axes_for", "require", "records_of", "get", "seq_index"]


#: One colour per regime label, shared by every figure and the HTML report.
REGIME_COLORS: dict[str, str] = {
    Label.CONVERGENT: "#2b6cb0",
    Label.STATIC: "#718096",
    Label.BOUNDED: "#38a169",
    Label.DIVERGENT: "#dd6b20",
    Label.FINITE: "#c53030",
    Label.LOGARITHMIC: "#dd6b20",
    Label.UNDETERMINED: "#a0aec0",
    Label.UNDECIDED: "#a0aec0",
}


def axes_for(ax: Axes | None, figsize: tuple[float, float] = (6.0, 4.0)) -> tuple[Figure, Axes]:
    """(figure, axes): a new figure when ``ax`` is None, else ax's figure."""
    if ax is None:
        fig, ax = plt.subplots(figsize=figsize, layout="constrained")
        return fig, ax
    root = ax.get_figure(root=True)
    if not isinstance(root, Figure):
        raise ValueError("argument 'ax' belongs to no figure")
    return root, ax


def require(obj: Any, attrs: Sequence[str], name: str) -> None:
    """TypeError unless obj has every attribute in attrs."""
    missing = [a for a in attrs if not hasattr(obj, a)]
    if missing:
        raise TypeError(f"argument {name!r} must have attributes {', '.join(attrs)} "
                        f"({type(obj).__name__} lacks {', '.join(missing)})")


def seq_index(seq: int, n: int) -> int:
    if not isinstance(seq, int) or not -n <= seq < n:
        raise ValueError(f"argument 'seq' must be an int in [{-n}, {n}), got {seq!r}")
    return seq % n


def records_of(table: Any, name: str) -> list[Any]:
    records = list(getattr(table, "records", table))
    if not records:
        raise ValueError(f"argument {name!r} holds no layer records")
    return records


def get(rec: Any, key: str, default: Any = None) -> Any:
    if isinstance(rec, dict):
        return rec.get(key, default)
    return getattr(rec, key, default)
