"""The depth-time field of a whole network: ``dx/dt = F_{floor(t)}(x)``, ``F_k = Mixer_k ∘ Norm_k``.

Explicit Euler with step 1 from the embedding reproduces the network's residual stream exactly;
switches drop norm, convolution or gate, and a weight-tied mode uses one layer for all t.
"""

from __future__ import annotations

import math

from torch import Tensor

from ..._checks import check_tokens, layer_index, time_float
from ...nn.lm import MambaLMBase
from .base import VectorField

__all__ = ["DepthField"]


class DepthField(VectorField):
    """The depth-time field of a network: ``dx/dt = F_{k(t)}(x)``, ``F_k = Mixer_k ∘ Norm_k``.

    ``k(t) = floor(t)`` clamped to [0, K-1], so t ∈ [0, K]. Explicit Euler with step 1
    from ``x(0) = model.embed(ids)`` reproduces the network's residual stream x^0..x^K. The field
    jumps at t = 1..K-1 (listed in `jump_times`); at an integer t it uses layer t.

    Arguments:
        model: a Mamba model of either generation (what `mamba_ode.load` returns).
        norm: apply each layer's norm (False: ablation).
        conv: apply the causal convolution (False: identity in its place).
        gate: multiply by SiLU(z) (False: no gate).
        tied_layer: use this one layer for all t (weight-tied mode), or None.
        backend: scan backend.

    Raises:
        ValueError: if tied_layer is out of range.
        TypeError: if model has no ``layers``.
    """

    def __init__(self, model: MambaLMBase, *, norm: bool = True, conv: bool = True, gate: bool = True,
                 tied_layer: int | None = None, backend: str = "auto") -> None:
        super().__init__()
        layers = getattr(model, "layers", None)
        if layers is None:
            raise TypeError(f"argument 'model' must be a MambaLM (with .layers), got {type(model).__name__}")
        self.model = model
        self.norm, self.conv, self.gate = bool(norm), bool(conv), bool(gate)
        self.tied_layer = None if tied_layer is None else layer_index(tied_layer, len(layers), "tied_layer")
        self.backend = backend

    @property
    def n_layers(self) -> int:
        """K."""
        return len(self.model.layers)

    @property
    def d_model(self) -> int:
        """Dm."""
        return self.model.config.d_model

    @property
    def t_span(self) -> tuple[float, float]:
        """(0, K): the depth interval of the network."""
        return (0.0, float(self.n_layers))

    @property
    def jump_times(self) -> tuple[float, ...]:
        """1, …, K-1 (none in the weight-tied mode)."""
        if self.tied_layer is not None:
            return ()
        return tuple(float(k) for k in range(1, self.n_layers))

    def layer_at(self, t: float | Tensor) -> int:
        """The layer index k(t) = clamp(floor(t), 0, K-1) (or the tied layer)."""
        if self.tied_layer is not None:
            return self.tied_layer
        tf = time_float(t)
        if not math.isfinite(tf):
            raise ValueError(f"argument 't' must be finite, got {tf}")
        return min(max(math.floor(tf), 0), self.n_layers - 1)

    def initial_state(self, input_ids: Tensor) -> Tensor:
        """x(0) = embedding of (B, L) token ids, (B, L, Dm)."""
        return self.model.embed(input_ids)

    def forward(self, t: float | Tensor, x: Tensor) -> Tensor:
        """dx/dt = F_{k(t)}(x).

        Arguments:
            t: depth time.
            x: (B, L, Dm) residual states, in the model's dtype.

        Returns:
            (B, L, Dm).

        Raises:
            ValueError: for a wrong shape or dtype of x.
        """
        check_tokens(x, self.d_model, name="x", what="Dm")
        wdt = self.model.lm_head.weight.dtype
        if x.dtype != wdt:
            raise ValueError(f"argument 'x' has dtype {x.dtype} but the model is {wdt}; "
                             f"load the model with dtype={x.dtype} or cast x")
        self.nfev += 1
        block = self.model.layers[self.layer_at(t)]
        return block.update(x, norm=self.norm, conv=self.conv, gate=self.gate, backend=self.backend)

    def extra_repr(self) -> str:
        return (f"K={self.n_layers}, norm={self.norm}, conv={self.conv}, gate={self.gate}, "
                f"tied_layer={self.tied_layer}")
