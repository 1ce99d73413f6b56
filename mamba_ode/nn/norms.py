"""The norms of both generations: RMSNorm, LayerNorm (Mamba-1 option) and Mamba-2's gated RMSNorm."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..io.config import AnyConfig

__all__ = ["RMSNorm", "GatedRMSNorm", "make_norm"]


class RMSNorm(nn.Module):
    """RMSNorm: ``w ⊙ x / sqrt(mean(x²) + eps)``, computed in at least float32 (as transformers)."""

    def __init__(self, d: int, eps: float = 1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        """x (..., Dm) → (..., Dm)."""
        dtype = x.dtype
        xf = x.to(torch.promote_types(dtype, torch.float32))
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * xf.to(dtype)


def make_norm(config: AnyConfig) -> nn.Module:
    """RMSNorm or LayerNorm (with bias) of width Dm, as the config says."""
    if config.rms_norm:
        return RMSNorm(config.d_model, config.norm_eps)
    return nn.LayerNorm(config.d_model, eps=config.norm_eps)


class GatedRMSNorm(nn.Module):
    """Gated RMSNorm of Mamba-2: ``w ⊙ RMSNorm_group(y ⊙ SiLU(z))``, normalised per group of E/G channels.

    Computed in at least float32 (as transformers and mamba-ssm do).
    """

    def __init__(self, d: int, group_size: int, eps: float = 1e-5):
        super().__init__()
        if d % group_size:
            raise ValueError(f"GatedRMSNorm: group_size {group_size} does not divide width {d}")
        self.weight = nn.Parameter(torch.ones(d))
        self.group_size = group_size
        self.eps = eps

    def forward(self, y: Tensor, z: Tensor | None = None) -> Tensor:
        """y, z (..., E) → (..., E) in the dtype of y (no gate when z is None)."""
        dtype = y.dtype
        wd = torch.promote_types(dtype, torch.float32)
        v = y.to(wd)
        if z is not None:
            v = v * F.silu(z.to(wd))
        g = v.view(*v.shape[:-1], -1, self.group_size)
        g = g * torch.rsqrt(g.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * g.view(v.shape).to(dtype)
