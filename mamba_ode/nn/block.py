"""One residual layer, shared by both generations: ``x + Mixer(Norm(x))`` with a mixer class per generation.

As mamba-ssm's ``Block(dim, mixer_cls)``: the block owns the norm and the residual step; the mixer
(`MambaMixer` or `Mamba2Mixer`)
owns everything generation-specific, including its parameters in the paper's notation (``.ssm``).
"""

from __future__ import annotations

from typing import Protocol, cast

import torch
from torch import Tensor, nn

from ..io.config import AnyConfig
from .hooks import LAYER_POINTS, HookPoint
from .norms import make_norm
from .params_mamba1 import SSMParams
from .params_mamba2 import Mamba2Params

__all__ = ["Block", "LayerParams"]

#: One layer's parameters in the paper's notation, of either generation.
LayerParams = SSMParams | Mamba2Params


class Mixer(Protocol):
    """What a block needs of its mixer (either generation, or a refinement wrapping one)."""

    @property
    def ssm(self) -> LayerParams: ...

    @property
    def hp(self) -> dict[str, HookPoint]: ...

    def field_input(self, h: Tensor) -> Tensor: ...

    def __call__(self, h: Tensor, *, conv: bool = True, gate: bool = True, use_D: bool = True,
                 backend: str = "auto") -> Tensor: ...


class Block(nn.Module):
    """One residual layer: ``x + Mixer(Norm(x))``.

    Arguments:
        config: the model's config (either generation).
        layer_idx: the layer index k.
        mixer_cls: the mixer class, built as ``mixer_cls(config)``.
    """

    norm: nn.Module
    mixer: nn.Module

    def __init__(self, config: AnyConfig, layer_idx: int, mixer_cls: type[nn.Module]):
        super().__init__()
        self.layer_idx = layer_idx
        self.residual_in_fp32 = config.residual_in_fp32
        self.norm = make_norm(config)
        self.mixer = mixer_cls(config)
        #: activation points of this layer (see `mamba_ode.nn.hooks`)
        self.hp: dict[str, HookPoint] = {name: HookPoint(f"layers.{layer_idx}.{name}") for name in LAYER_POINTS}
        for point in cast(Mixer, self.mixer).hp.values():
            point.name = f"layers.{layer_idx}.{point.name}"

    @property
    def ssm(self) -> LayerParams:
        """This layer's parameters in the paper's notation (``SSMParams`` or ``Mamba2Params``)."""
        return self._mixer.ssm

    @property
    def _mixer(self) -> Mixer:
        return cast(Mixer, self.mixer)

    @property
    def _dtype(self) -> torch.dtype:
        return cast(Tensor, self.norm.weight).dtype

    def update(self, x: Tensor, *, norm: bool = True, conv: bool = True, gate: bool = True,
               backend: str = "auto") -> Tensor:
        """The residual update ``F_k(x) = Mixer_k(Norm_k(x))`` (no residual added).

        Arguments:
            x: (B, L, Dm) residual states.
            norm, conv, gate: keep the norm / convolution / gate (ablation switches).
            backend: scan backend.

        Returns:
            (B, L, Dm).
        """
        x = x.to(self._dtype)  # a float32 residual stream of a half-precision model
        h = self.hp["mixer_in"](self.norm(x) if norm else x)
        return self.hp["mixer_out"](self._mixer(h, conv=conv, gate=gate, backend=backend))

    def field_input(self, x: Tensor) -> Tensor:
        """The tokens the idealised field of this layer starts from, for residual states x (B, L, Dm).

        Returns:
            Mamba-1: the S6 input u (B, L, E); Mamba-2: the mixer input ``Norm_k(x)`` (B, L, Dm).
        """
        return self._mixer.field_input(self.norm(x.to(self._dtype)))

    def forward(self, x: Tensor, *, backend: str = "auto") -> Tensor:
        """x (B, L, Dm) → x + F_k(x) (B, L, Dm), through the points ``resid_pre`` … ``resid_post``."""
        x = self.hp["resid_pre"](x)
        res = x
        if self.residual_in_fp32 and x.dtype in (torch.float16, torch.bfloat16):
            res = x.float()
        return self.hp["resid_post"](res + self.update(x, backend=backend))
