"""Argument checks of `mamba_ode.solve`, `mamba_ode.euler` and `mamba_ode.integrate_tokens` (messages name
the argument)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = ["check_field", "check_u0", "check_span", "check_t_eval", "check_token_args", "positive", "jump_times",
           "probe"]


def check_field(fn: object) -> None:
    if not callable(fn):
        raise TypeError(f"argument 'field' must be callable f(t, u), got {type(fn).__name__}")


def check_u0(u0: object) -> Tensor:
    if not isinstance(u0, Tensor):
        raise TypeError(f"argument 'u0' must be a torch.Tensor (B, L, E), got {type(u0).__name__}")
    if u0.dim() != 3:
        raise ValueError(f"argument 'u0' must have shape (B, L, E), got {tuple(u0.shape)}")
    if u0.numel() == 0:
        raise ValueError(f"argument 'u0' is empty (shape {tuple(u0.shape)}): need B, L, E ≥ 1 "
                         "(an empty sequence cannot be integrated)")
    if not u0.is_floating_point():
        raise ValueError(f"argument 'u0' must be a floating tensor, got {u0.dtype}")
    if not torch.isfinite(u0).all():
        raise ValueError("argument 'u0' contains non-finite values (NaN or inf)")
    return u0.detach()


def check_span(t_span: Any, log_time: bool) -> tuple[float, float]:
    try:
        t0, t1 = (float(t) for t in t_span)
    except (TypeError, ValueError):
        raise ValueError(f"argument 't_span' must be a pair (t0, t1) of real numbers, got {t_span!r}") from None
    if not (math.isfinite(t0) and math.isfinite(t1)):
        raise ValueError(f"argument 't_span' must be finite, got ({t0}, {t1})")
    if not t1 > t0:
        raise ValueError(f"argument 't_span' must be increasing (t0 < t1), got ({t0}, {t1})")
    if log_time and t0 <= -1.0:
        raise ValueError(f"argument 't_span': log_time needs t0 > -1 (s = ln(1 + t)), got t0={t0}")
    return t0, t1


def check_t_eval(t_eval: object, t0: float, t1: float) -> Tensor | None:
    if t_eval is None:
        return None
    try:
        te = torch.as_tensor(t_eval, dtype=torch.float64).detach().cpu()
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"argument 't_eval' must be a 1-D sequence of times, got {type(t_eval).__name__}") from None
    if te.dim() != 1 or te.numel() == 0:
        raise ValueError(f"argument 't_eval' must be a non-empty 1-D sequence of times, got shape {tuple(te.shape)}")
    if not torch.isfinite(te).all():
        raise ValueError("argument 't_eval' contains non-finite times")
    if te.numel() > 1 and not (te[1:] > te[:-1]).all():
        raise ValueError("argument 't_eval' must be strictly increasing")
    if te[0] < t0 or te[-1] > t1:
        raise ValueError(f"argument 't_eval' must lie inside t_span [{t0}, {t1}], got [{te[0].item()}, "
                         f"{te[-1].item()}]")
    return te


def positive(x: object, name: str) -> float:
    try:
        v = float(x)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"argument {name!r} must be a positive number, got {x!r}") from None
    if not (math.isfinite(v) and v > 0):
        raise ValueError(f"argument {name!r} must be a positive finite number, got {x!r}")
    return v


def jump_times(fn: object, t0: float, t1: float, extra: Sequence[float] | None) -> list[float]:
    jumps = [float(t) for t in getattr(fn, "jump_times", ())]
    if extra is not None:
        jumps += [float(t) for t in extra]
    return sorted({t for t in jumps if t0 < t < t1 and math.isfinite(t)})


def probe(fn: Callable, t0: float, u0: Tensor) -> None:
    """Evaluate the field once so that a wrong width or dtype is reported against u0."""
    try:
        f0 = fn(torch.tensor(t0, dtype=torch.float64), u0)
    except ValueError as err:
        raise ValueError(f"argument 'u0' (shape {tuple(u0.shape)}, {u0.dtype}) does not fit the field: {err}") from err
    if not isinstance(f0, Tensor) or f0.shape != u0.shape:
        got = tuple(f0.shape) if isinstance(f0, Tensor) else type(f0).__name__
        raise ValueError(f"argument 'u0': the field returned {got} for u0 of shape {tuple(u0.shape)}")


def check_token_args(field: object, u0: object, t_max: object, rtol: object, atol: object, max_steps: object,
                     blowup_factor: object) -> Tensor:
    """The arguments of `mamba_ode.integrate_tokens` checked; returns u0 as (L, W)."""
    check_field(field)
    if not isinstance(u0, Tensor):
        raise TypeError(f"argument 'u0' must be a torch.Tensor (1, L, W), got {type(u0).__name__}")
    u = u0[0] if u0.dim() == 3 and u0.shape[0] == 1 else u0
    if u.dim() != 2 or u.numel() == 0 or not u.is_floating_point():
        raise ValueError(f"argument 'u0' must be a non-empty floating (1, L, W) or (L, W) tensor, got "
                         f"{u0.dtype} {tuple(u0.shape)}")
    if not torch.isfinite(u).all():
        raise ValueError("argument 'u0' contains non-finite values (NaN or inf)")
    for name, v in (("t_max", t_max), ("rtol", rtol), ("atol", atol)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not (math.isfinite(v) and v > 0):
            raise ValueError(f"argument {name!r} must be a finite number > 0, got {v!r}")
    if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1:
        raise ValueError(f"argument 'max_steps' must be a positive int, got {max_steps!r}")
    if not (isinstance(blowup_factor, (int, float)) and math.isfinite(blowup_factor) and blowup_factor > 1):
        raise ValueError(f"argument 'blowup_factor' must be a finite number > 1, got {blowup_factor!r}")
    return u
