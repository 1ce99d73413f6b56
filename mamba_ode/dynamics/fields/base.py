"""The base class of the vector fields: ``forward(t, u)``, an evaluation counter and jump times.

A field maps a time and a batch of token sequences to their time derivative, batched over
sequences (trajectory b's derivative depends only on trajectory b). Nothing here knows about
solvers (`mamba_ode.dynamics.solvers`).
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from torch import Tensor, nn

__all__ = ["VectorField"]


class VectorField(nn.Module):
    """Base class of the fields: ``forward(t, u)`` plus an evaluation counter.

    Attributes:
        nfev: number of evaluations since construction or `reset_nfev`.
        jump_times: times where the field is discontinuous in t (empty for autonomous fields).
    """

    def __init__(self) -> None:
        super().__init__()
        self.nfev = 0

    @property
    def jump_times(self) -> tuple[float, ...]:
        """Times of discontinuities in t (none by default)."""
        return ()

    def reset_nfev(self) -> None:
        """Set the evaluation counter to zero."""
        self.nfev = 0

    def cast_params(self, params: Any, like: Tensor) -> Any:
        """``params`` (a dataclass of tensors with ``.to``) cast to the dtype and device of ``like``.

        The cast is cached, keyed by the parameters object and the version counters of its tensors, so
        a reassigned or in-place modified parameter is never served stale; it is not cached when a
        tensor requires a gradient (a cached cast would tie every later call to one autograd graph).

        Arguments:
            params: the field's parameters.
            like: a tensor of the wanted dtype and device.

        Returns:
            ``params`` itself when its tensors already have like's dtype and device, else the cast copy.
        """
        tensors = [v for f in fields(params) if isinstance(v := getattr(params, f.name), Tensor)]
        if all(t.dtype == like.dtype and t.device == like.device for t in tensors if t.is_floating_point()):
            return params
        if any(t.requires_grad for t in tensors):
            return params.to(device=like.device, dtype=like.dtype)
        key = (like.dtype, like.device, id(params), tuple(t._version for t in tensors))
        cache = self.__dict__.setdefault("_cast_cache", {})
        if key not in cache:
            cache.clear()  # one cast kept: older keys belong to replaced or modified parameters
            cache[key] = (params, params.to(device=like.device, dtype=like.dtype))  # params kept: id stays unique
        return cache[key][1]
