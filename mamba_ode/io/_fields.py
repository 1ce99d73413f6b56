"""Helpers shared by the config parsers of both generations (field access and coercion)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def padding_multiple(unpadded: int, padded: int) -> int:
    """The smallest power-of-two multiple (8…1024) that pads ``unpadded`` to ``padded``, else ``padded``."""
    for m in (8, 16, 32, 64, 128, 256, 512, 1024):
        if padded % m == 0 and padded - unpadded < m:
            return m
    return padded


def req(cfg: dict, key: str, where: str) -> Any:
    """``cfg[key]``, or a ValueError naming the file and the missing field."""
    if key not in cfg:
        raise ValueError(f"{where}: missing required field {key!r}")
    return cfg[key]


def rank(v: Any, d_model: int, where: str, key: str) -> int:
    """A Δ rank: an int, or ``"auto"``/None for ``ceil(d_model / 16)``."""
    if v in (None, "auto"):
        return math.ceil(d_model / 16)
    if isinstance(v, bool) or not isinstance(v, int):
        raise ValueError(f"{where}: field {key!r} must be an integer or 'auto', got {v!r}")
    return v


def limit_pair(v: Any, where: str, key: str) -> tuple[float, float]:
    """A ``[lo, hi]`` pair of numbers (None: ``(0, inf)``)."""
    if v is None:
        return (0.0, math.inf)
    if not isinstance(v, (list, tuple)) or len(v) != 2:
        raise ValueError(f"{where}: field {key!r} must be a pair [lo, hi], got {v!r}")
    def num(x: Any) -> float:
        # transformers 5.x writes non-finite floats as {"__float__": "Infinity"}
        if isinstance(x, dict) and set(x) == {"__float__"}:
            x = x["__float__"]
        if isinstance(x, bool):
            raise TypeError(x)
        return float(x)

    try:
        return (num(v[0]), num(v[1]))
    except (TypeError, ValueError):
        raise ValueError(f"{where}: field {key!r} must be a pair of numbers, got {v!r}") from None


def checked(where: str, build: Callable[[], T]) -> T:
    """``build()``, with a ValueError's message prefixed by the file name when it lacks it."""
    try:
        return build()
    except ValueError as exc:
        if str(exc).startswith(where):
            raise
        raise ValueError(f"{where}: {exc}") from None

