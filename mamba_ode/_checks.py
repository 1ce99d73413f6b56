"""Argument checks shared by every layer (the bottom of the import graph: imports only torch).

Each check raises ``TypeError`` or ``ValueError`` with a message that names the argument.
"""

from __future__ import annotations

import math
import operator
from typing import Any

from torch import Tensor

__all__ = ["check_matrix", "check_tokens", "finite_scalar", "layer_index", "time_float"]


def time_float(t: float | Tensor) -> float:
    """A scalar time as a Python float (accepts floats and 0-dim / one-element tensors).

    Raises:
        ValueError: for a tensor with more than one element.
    """
    if isinstance(t, Tensor):
        if t.numel() != 1:
            raise ValueError(f"argument 't' must be a scalar time, got a tensor of shape {tuple(t.shape)}")
        return float(t.reshape(()).item())
    return float(t)


def check_tokens(u: Any, width: int, name: str = "u", what: str = "E") -> None:
    """Raise unless u is a floating (B, L, width) tensor with B, L ≥ 1.

    Raises:
        TypeError: if u is not a tensor.
        ValueError: for a wrong shape, an empty batch or sequence, or an integer dtype.
    """
    if not isinstance(u, Tensor):
        raise TypeError(f"argument {name!r} must be a torch.Tensor, got {type(u).__name__}")
    if u.dim() != 3 or u.shape[-1] != width:
        raise ValueError(f"argument {name!r} must have shape (B, L, {what}) with {what}={width}, got {tuple(u.shape)}")
    if u.shape[0] == 0 or u.shape[1] == 0:
        raise ValueError(f"argument {name!r} is empty (shape {tuple(u.shape)}): need at least one sequence and token")
    if not u.is_floating_point():
        raise ValueError(f"argument {name!r} must be a floating tensor, got {u.dtype}")


def layer_index(k: Any, n_layer: int, name: str) -> int:
    """A layer index in [-K, K) (an int, or integer-like such as numpy's integers) normalised to [0, K).

    Raises:
        ValueError: for a bool, a non-integer or an out-of-range index.
    """
    if not isinstance(k, bool):
        try:
            k = operator.index(k)
        except TypeError:
            pass
    if isinstance(k, bool) or not isinstance(k, int):
        raise ValueError(f"argument {name!r} must be an int layer index, got {k!r}")
    if not -n_layer <= k < n_layer:
        raise ValueError(f"argument {name!r}: layer {k} outside [{-n_layer}, {n_layer}) (negative indices count "
                         "from the end)")
    return k % n_layer


def finite_scalar(x: Any, name: str) -> float:
    """A finite real scalar (a number or a one-element tensor) as a float.

    Raises:
        TypeError: for a bool, text (str, bytes or bytearray, even a numeric one: a number given as text is
            a mistake to report, not to read) or a non-number.
        ValueError: for a multi-element tensor or a non-finite value.
    """
    if isinstance(x, (str, bytes, bytearray)):
        raise TypeError(f"argument {name!r} must be a real number, got {type(x).__name__} {x!r}")
    if isinstance(x, Tensor):
        if x.numel() != 1:
            raise ValueError(f"argument {name!r} must be a scalar, got a tensor of shape {tuple(x.shape)}")
        x = x.item()
    if isinstance(x, bool):
        raise TypeError(f"argument {name!r} must be a real number, got bool")
    try:
        v = float(x)
    except (TypeError, ValueError):
        raise TypeError(f"argument {name!r} must be a real number, got {type(x).__name__}") from None
    if not math.isfinite(v):
        raise ValueError(f"argument {name!r} must be finite, got {v}")
    return v


def check_matrix(x: Any, name: str, ndim: int = 2) -> Tensor:
    """A finite floating tensor with ``ndim`` dimensions.

    Raises:
        TypeError: for a non-tensor or an integer dtype.
        ValueError: for a wrong number of dimensions or NaN/inf entries.
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"argument {name!r} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != ndim:
        raise ValueError(f"argument {name!r} must have {ndim} dimensions, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"argument {name!r} must be a floating tensor, got {x.dtype}")
    if not x.isfinite().all():
        raise ValueError(f"argument {name!r} contains NaN or infinite entries")
    return x
