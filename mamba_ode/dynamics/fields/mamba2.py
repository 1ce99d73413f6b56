"""The idealised dynamics of one Mamba-2 layer in its input space: ``dh/dt = W_out SSD_θ(h)``."""

from __future__ import annotations

from typing import cast

from torch import Tensor

from ..._checks import check_tokens, layer_index
from ...nn.lm import MambaLMBase
from ...nn.params_mamba2 import Mamba2Params
from ...nn.scan import BACKENDS
from .base import VectorField

__all__ = ["Mamba2Field"]


class Mamba2Field(VectorField):
    """The idealised dynamics of one Mamba-2 layer in its input space: ``dh/dt = W_out SSD_θ(h)``.

    The analogue of `mamba_ode.S6Field` for Mamba-2: norm, convolution, SiLU and gate are
    dropped, one layer's parameters are shared across depth, and tokens ``h_l ∈ R^Dm`` (the mixer input)
    evolve by ``x = S_x h``, ``B^g = S_B^g h``, ``C^g = S_C^g h``, ``Δ = clamp(softplus(S_dt h + dt_bias))``
    and the SSD scan per head (`Mamba2Params.ssd`), mapped back by ``W_out`` (``out_proj``). Written
    with the per-head token-mixing matrix: ``dh_l/dt = Σ_h W_out^h Σ_{j≤l} P^h_lj(h) S_x^h h_j`` where
    ``C^g_l · B^g_j = h_lᵀ M_g h_j`` with ``M_g = S_C^gᵀ S_B^g`` — the input–output matrix of the regime
    table. The field is autonomous: ``t`` is ignored. The ``in_proj``/``out_proj`` biases are set aside.

    Arguments:
        params: the layer's `Mamba2Params`, with ``W_out`` (Dm, E).
        use_D: include the ``D_h x^h`` skip (off by default, as in the paper).
        backend: scan backend.

    Raises:
        TypeError: if params is not a `Mamba2Params`.
        ValueError: if ``params.W_out`` is missing or not (Dm, E), or for an unknown backend.
    """

    def __init__(self, params: Mamba2Params, *, use_D: bool = False, backend: str = "auto"):
        super().__init__()
        if not isinstance(params, Mamba2Params):
            raise TypeError(f"argument 'params' must be a Mamba2Params, got {type(params).__name__}")
        if backend not in BACKENDS:
            raise ValueError(f"argument 'backend' must be one of {BACKENDS}, got {backend!r}")
        dm = params.token_width
        w = params.W_out
        if not isinstance(w, Tensor) or tuple(w.shape) != (dm, params.d_inner):
            shape = tuple(w.shape) if isinstance(w, Tensor) else type(w).__name__
            raise ValueError(f"argument 'params': W_out must have shape (Dm, E) = ({dm}, {params.d_inner}), "
                             f"got {shape}")
        self.params = params
        self.use_D, self.backend = bool(use_D), backend

    @classmethod
    def from_layer(cls, model: MambaLMBase, k: int, *, use_D: bool = False, backend: str = "auto",
                   detach: bool = True) -> Mamba2Field:
        """The idealised field of layer k of a Mamba-2 model.

        Arguments:
            model: a `mamba_ode.Mamba2LM`.
            k: layer index in [0, K) (negative counts from the end).
            use_D: include the D term.
            backend: scan backend.
            detach: snapshot the weights (cut from autograd); False keeps differentiable views.

        Returns:
            A `Mamba2Field` on tokens (B, L, Dm).

        Raises:
            TypeError: if model is not a Mamba-2 model.
            ValueError: if k is out of range.
        """
        layers = getattr(model, "layers", None)
        if layers is None or not isinstance(getattr(layers[0], "ssm", None), Mamba2Params):
            raise TypeError(f"argument 'model' must be a Mamba2LM, got {type(model).__name__}")
        params = layers[layer_index(k, len(layers), "k")].ssm
        return cls(params.snapshot() if detach else params, use_D=use_D, backend=backend)

    @property
    def out_proj(self) -> Tensor:
        """(Dm, E) the layer's ``out_proj.weight`` (``params.W_out``)."""
        return cast(Tensor, self.params.W_out)  # checked in __init__

    @property
    def d_model(self) -> int:
        """Dm, the width of the tokens."""
        return self.out_proj.shape[0]

    def params_like(self, h: Tensor) -> Mamba2Params:
        """The parameters cast to h's dtype and device (cached; see `VectorField.cast_params`)."""
        return self.cast_params(self.params, h)

    def selective(self, h: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(x, Δ, B, C)`` for tokens h (B, L, Dm); see `Mamba2Params.selective`."""
        return self.params_like(h).selective(h)

    def forward(self, t: float | Tensor, h: Tensor) -> Tensor:
        """dh/dt at tokens h (B, L, Dm) → (B, L, Dm).

        Raises:
            ValueError: if h is not (B, L, Dm) or empty.
        """
        check_tokens(h, self.d_model, name="h", what="Dm")
        self.nfev += 1
        p = self.params_like(h)
        x, delta, Bm, Cm = p.selective(h)
        y = p.ssd(x, delta, Bm, Cm, use_D=self.use_D, backend=self.backend)
        return y @ cast(Tensor, p.W_out).T

    def matrix_form(self, h: Tensor) -> Tensor:
        """The same field through the explicit per-head matrix P (O(L²); teaching and tests): (B, L, Dm)."""
        check_tokens(h, self.d_model, name="h", what="Dm")
        p = self.params
        x, delta, Bm, Cm = self.selective(h)
        b, length, _ = h.shape
        P = p.token_mixing_matrix(delta, Bm, Cm)  # (B, H, L, L)
        xh = x.view(b, length, p.n_heads, p.head_dim).transpose(1, 2)  # (B, H, L, P)
        y = P @ xh
        if self.use_D:
            y = y + p.D.to(y.dtype)[None, :, None, None] * xh
        return y.transpose(1, 2).reshape(b, length, -1) @ self.out_proj.to(y.dtype).T

    def extra_repr(self) -> str:
        p = self.params
        return (f"Dm={self.d_model}, H={p.n_heads}, P={p.head_dim}, G={p.n_groups}, N={p.d_state}, "
                f"use_D={self.use_D}, backend={self.backend!r}")
