"""The Mamba-1 mixer: in_proj → causal conv → SiLU → S6 (the shared scan) → gate → out_proj."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..io.config import MambaConfig
from .hooks import MIXER_POINTS, HookPoint
from .params_mamba1 import SSMParams

__all__ = ["MambaMixer"]


class MambaMixer(nn.Module):
    """The Mamba-1 mixer: in_proj → causal conv → SiLU → S6 → gate → out_proj."""

    def __init__(self, config: MambaConfig):
        super().__init__()
        dm, e, n, r, kc = config.d_model, config.d_inner, config.d_state, config.dt_rank, config.d_conv
        self.d_inner, self.d_state, self.dt_rank, self.d_conv = e, n, r, kc
        self.in_proj = nn.Linear(dm, 2 * e, bias=config.proj_bias)
        self.conv1d = nn.Conv1d(e, e, kc, groups=e, padding=kc - 1, bias=config.conv_bias)
        self.x_proj = nn.Linear(e, r + 2 * n, bias=False)
        self.dt_proj = nn.Linear(r, e, bias=True)
        self.A_log = nn.Parameter(torch.log(torch.arange(1, n + 1, dtype=torch.float32)).repeat(e, 1))
        self.D = nn.Parameter(torch.ones(e))
        self.out_proj = nn.Linear(e, dm, bias=config.proj_bias)
        #: activation points (named ``layers.{k}.mixer.*`` by the block that owns the mixer)
        self.hp: dict[str, HookPoint] = {name: HookPoint(f"mixer.{name}") for name in MIXER_POINTS}

    @property
    def ssm(self) -> SSMParams:
        """This layer's selective-SSM parameters (differentiable views of the weights)."""
        return SSMParams.from_weights(self.x_proj.weight, self.dt_proj.weight, self.dt_proj.bias,
                                      self.A_log, self.D)

    def ssm_input(self, x: Tensor, *, conv: bool = True) -> tuple[Tensor, Tensor]:
        """The SSM input u and gate input z for (normalised) residual states.

        Arguments:
            x: (B, L, Dm).
            conv: apply the causal depthwise convolution (False: identity in its place; SiLU kept).

        Returns:
            ``(u, z)``, both (B, L, E).
        """
        xz = self.in_proj(x)
        xi, z = xz.chunk(2, dim=-1)
        if conv:
            length = x.shape[1]
            xi = self.conv1d(xi.transpose(1, 2))[..., :length].transpose(1, 2)
            xi = self.hp["conv"](xi)
        return F.silu(xi), z

    def field_input(self, h: Tensor) -> Tensor:
        """The tokens the idealised field of this layer acts on: the S6 input u (B, L, E) for mixer input
        h (B, L, Dm)."""
        return self.ssm_input(h)[0]

    def forward(self, x: Tensor, *, conv: bool = True, gate: bool = True, use_D: bool = True,
                backend: str = "auto") -> Tensor:
        """Mixer output for (normalised) residual states.

        Arguments:
            x: (B, L, Dm).
            conv: keep the causal convolution.
            gate: multiply by SiLU(z).
            use_D: keep the D skip term.
            backend: scan backend.

        Returns:
            (B, L, Dm).
        """
        u, z = self.ssm_input(x, conv=conv)
        y = self.ssm.s6(u, z if gate else None, use_D=use_D, backend=backend, hooks=self.hp)
        return self.out_proj(y)
