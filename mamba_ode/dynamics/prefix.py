"""Causal prefixes: token l's dynamics depends only on tokens ≤ l, so a prefix can be followed alone."""

from __future__ import annotations

import torch
from torch import Tensor

from .._checks import check_matrix

__all__ = ["prefix_batch"]


def prefix_batch(u0: Tensor) -> Tensor:
    """Sequences ``u0[b, :l+1]`` padded with zero tokens: one sequence per (b, l), shape (B·L, L, E).

    Token l depends only on tokens ≤ l, and a zero token stays zero and does not act on earlier tokens
    in the S6 dynamics, so integrating this batch follows token l of sequence b as the *last* token of
    sequence ``b·L + l`` — unaffected by the blow-up of a later token.

    Arguments:
        u0: (B, L, E) initial tokens.

    Returns:
        (B·L, L, E).

    Raises:
        TypeError, ValueError: for a non-tensor or a tensor that is not 3-D.
    """
    check_matrix(u0, "u0", ndim=3)
    nb, length, _ = u0.shape
    out = u0[:, None].expand(nb, length, length, u0.shape[-1]).clone()
    mask = torch.tril(torch.ones(length, length, dtype=torch.bool))  # [l, j]: j ≤ l
    out = out * mask[None, :, :, None].to(u0.dtype)
    return out.reshape(nb * length, length, u0.shape[-1])
