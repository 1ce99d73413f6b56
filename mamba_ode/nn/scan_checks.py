"""Argument checks of `mamba_ode.selective_scan`: types, dtypes, shapes and Mamba-2's head layout.

Every message names the argument. Shapes as in `mamba_ode.nn.scan` (B, E, L, N, G).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["check_inputs", "check_heads"]


def check_inputs(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None, z: Tensor | None,
                 delta_bias: Tensor | None, delta_softplus: bool = False) -> None:
    """Validate types, dtypes and shapes (see `mamba_ode.selective_scan` for the arguments).

    Raises:
        TypeError: for an argument that is not a tensor, a complex or integer (or bool) tensor, or a
            ``delta_softplus`` that is not a bool.
        ValueError: for inconsistent shapes; every message names the argument.
    """
    for name, t in (("u", u), ("delta", delta), ("A", A), ("B", B), ("C", C), ("D", D), ("z", z),
                    ("delta_bias", delta_bias)):
        if t is None and name in ("D", "z", "delta_bias"):
            continue
        if not isinstance(t, Tensor):
            raise TypeError(f"selective_scan: argument {name!r} must be a torch.Tensor, "
                            f"got {type(t).__name__}")
        if t.is_complex():
            raise TypeError(f"selective_scan: argument {name!r} is complex ({t.dtype}); mamba_ode implements "
                            "the real selective scan only (mamba-ssm's complex-A path is not supported)")
        if not t.is_floating_point():  # an integer y would truncate the scan's output silently
            raise TypeError(f"selective_scan: argument {name!r} must be a floating tensor, got {t.dtype}")
    if not isinstance(delta_softplus, bool):
        raise TypeError(f"selective_scan: argument 'delta_softplus' must be a bool, got {delta_softplus!r}")
    if u.dim() != 3:
        raise ValueError(f"selective_scan: argument 'u' must have shape (B, E, L), got {tuple(u.shape)}")
    b, e, length = u.shape
    if delta.shape != u.shape:
        raise ValueError(f"selective_scan: argument 'delta' must have the shape of u {tuple(u.shape)}, "
                         f"got {tuple(delta.shape)}")
    if A.dim() != 2 or A.shape[0] != e:
        raise ValueError(f"selective_scan: argument 'A' must have shape (E, N) = ({e}, N), got {tuple(A.shape)}")
    n = A.shape[1]
    for name, t in (("B", B), ("C", C)):
        if t.dim() == 2 and t.shape == (e, n):
            continue  # constant over batch and tokens, like mamba-ssm's (D, N)
        if t.dim() == 3 and t.shape == (b, n, length):
            continue
        if t.dim() == 4 and t.shape[0] == b and t.shape[2:] == (n, length):
            g = t.shape[1]
            if g < 1 or e % g:
                raise ValueError(f"selective_scan: argument {name!r} has {g} groups, which must divide E={e}")
            continue
        raise ValueError(f"selective_scan: argument {name!r} must have shape (B, N, L) = ({b}, {n}, {length}), "
                         f"(B, G, N, L) or constant (E, N) = ({e}, {n}), got {tuple(t.shape)}")
    if D is not None and D.shape != (e,):
        raise ValueError(f"selective_scan: argument 'D' must have shape (E,) = ({e},), got {tuple(D.shape)}")
    if delta_bias is not None and delta_bias.shape != (e,):
        raise ValueError(f"selective_scan: argument 'delta_bias' must have shape (E,) = ({e},), "
                         f"got {tuple(delta_bias.shape)}")
    if z is not None and z.shape != u.shape:
        raise ValueError(f"selective_scan: argument 'z' must have the shape of u {tuple(u.shape)}, "
                         f"got {tuple(z.shape)}")


def check_heads(head_dim: int | None, delta: Tensor, A: Tensor, delta_bias: Tensor | None) -> None:
    """``head_dim`` (unless None) divides E, and every head shares its Δ and a scalar A (the message names
    the argument)."""
    if head_dim is None:
        return
    if isinstance(head_dim, bool) or not isinstance(head_dim, int) or head_dim < 1:
        raise ValueError(f"selective_scan: argument 'head_dim' must be a positive int or None, got {head_dim!r}")
    b, e, length = delta.shape
    if e % head_dim:
        raise ValueError(f"selective_scan: argument 'head_dim' ({head_dim}) must divide E={e}")
    heads = e // head_dim
    per_state = A.stride(1) == 0 or _equal_nan(A, A[:, :1].expand_as(A))  # free for an expanded A
    a = A[:, 0].reshape(heads, head_dim)
    if not (per_state and _equal_nan(a, a[:, :1].expand_as(a))):
        raise ValueError(f"selective_scan: argument 'A' must be constant over each head of head_dim={head_dim} "
                         "channels and over the states (a scalar A per head)")
    shared = [("delta", delta.reshape(b, heads, head_dim, length), 2)]
    if delta_bias is not None:
        shared.append(("delta_bias", delta_bias.reshape(heads, head_dim), 1))
    for name, t, axis in shared:
        if not _equal_nan(t, t.narrow(axis, 0, 1).expand_as(t)):
            raise ValueError(f"selective_scan: argument {name!r} must be equal over the head_dim={head_dim} "
                             "channels of each head")


def _equal_nan(x: Tensor, y: Tensor) -> bool:
    """Elementwise equal, NaN equal to NaN (a solver's trial stage may hand the scan non-finite values,
    which must come out non-finite, not as an error)."""
    return torch.equal(x, y) or bool(((x == y) | (x.isnan() & y.isnan())).all())
