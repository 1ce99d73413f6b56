"""The Mamba-2 mixer: in_proj → causal conv over xBC → SiLU → SSD per head (the shared scan) → gated
RMSNorm → out_proj. Module names mirror transformers' ``Mamba2Mixer``."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..io.config import Mamba2Config
from .hooks import MIXER_POINTS, HookPoint
from .norms import GatedRMSNorm
from .params_mamba2 import Mamba2Params

__all__ = ["Mamba2Mixer"]


class Mamba2Mixer(nn.Module):
    """The Mamba-2 mixer: in_proj → causal conv over xBC → SiLU → SSD per head → gated RMSNorm → out_proj."""

    def __init__(self, config: Mamba2Config):
        super().__init__()
        dm, e, h, kc = config.d_model, config.d_inner, config.n_heads, config.d_conv
        self.d_inner, self.n_heads, self.head_dim = e, h, config.headdim
        self.n_groups, self.d_state, self.d_conv = config.ngroups, config.d_state, kc
        self.dt_limit = config.dt_limit
        self.conv_dim = config.conv_dim
        self.in_proj = nn.Linear(dm, config.in_proj_dim, bias=config.proj_bias)
        self.conv1d = nn.Conv1d(self.conv_dim, self.conv_dim, kc, groups=self.conv_dim, padding=kc - 1,
                                bias=config.conv_bias)
        self.dt_bias = nn.Parameter(torch.full((h,), math.log(math.expm1(0.01))))
        self.A_log = nn.Parameter(torch.log(torch.arange(1, h + 1, dtype=torch.float32)))
        self.D = nn.Parameter(torch.ones(h))
        self.norm = GatedRMSNorm(e, e // config.ngroups, config.mixer_norm_eps)
        self.out_proj = nn.Linear(e, dm, bias=config.proj_bias)
        #: activation points (named ``layers.{k}.mixer.*`` by the block that owns the mixer)
        self.hp: dict[str, HookPoint] = {name: HookPoint(f"mixer.{name}") for name in MIXER_POINTS}

    @property
    def ssm(self) -> Mamba2Params:
        """This layer's per-head parameters (differentiable views of the weights)."""
        e, gn, h = self.d_inner, self.n_groups * self.d_state, self.n_heads
        w = self.in_proj.weight
        dm = w.shape[1]
        return Mamba2Params(S_z=w[:e], S_x=w[e:2 * e],
                            S_B=w[2 * e:2 * e + gn].view(self.n_groups, self.d_state, dm),
                            S_C=w[2 * e + gn:2 * e + 2 * gn].view(self.n_groups, self.d_state, dm),
                            S_dt=w[2 * e + 2 * gn:2 * e + 2 * gn + h], A=-torch.exp(self.A_log),
                            dt_bias=self.dt_bias, D=self.D, head_dim=self.head_dim, dt_limit=self.dt_limit,
                            W_out=self.out_proj.weight)

    def ssm_inputs(self, h: Tensor, *, conv: bool = True) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """The SSD inputs for (normalised) residual states.

        Arguments:
            h: (B, L, Dm).
            conv: apply the causal depthwise convolution (False: identity in its place; SiLU kept).

        Returns:
            ``(u, B, C, dt, z)``: u (B, L, E), B and C (B, L, G, N), raw dt (B, L, H), z (B, L, E).
        """
        b, length, _ = h.shape
        e, gn = self.d_inner, self.n_groups * self.d_state
        z, xbc, dt = self.in_proj(h).split([e, self.conv_dim, self.n_heads], dim=-1)
        if conv:
            xbc = self.conv1d(xbc.transpose(1, 2))[..., :length].transpose(1, 2)
            xbc = self.hp["conv"](xbc)
        xbc = F.silu(xbc)
        u, Bm, Cm = xbc.split([e, gn, gn], dim=-1)
        shape = (b, length, self.n_groups, self.d_state)
        return u, Bm.reshape(shape), Cm.reshape(shape), dt, z

    def field_input(self, h: Tensor) -> Tensor:
        """The tokens the idealised field of this layer acts on: the mixer input h itself (B, L, Dm)."""
        return h

    def forward(self, h: Tensor, *, conv: bool = True, gate: bool = True, use_D: bool = True,
                backend: str = "auto") -> Tensor:
        """Mixer output for (normalised) residual states.

        Arguments:
            h: (B, L, Dm).
            conv: keep the causal convolution.
            gate: multiply by SiLU(z) inside the gated norm.
            use_D: keep the D skip term.
            backend: scan backend.

        Returns:
            (B, L, Dm).
        """
        hp = self.hp
        u, Bm, Cm, dt, z = self.ssm_inputs(h, conv=conv)
        u, Bm, Cm = hp["u"](u), hp["B"](Bm), hp["C"](Cm)
        p = self.ssm
        delta = hp["delta"](p.delta(dt))
        z = hp["z"](z)
        y = hp["y"](p.ssd(u, delta, Bm, Cm, use_D=use_D, backend=backend))
        return self.out_proj(self.norm(y, z if gate else None).to(h.dtype))
