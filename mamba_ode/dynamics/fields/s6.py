"""The paper's idealised S6 dynamics of one Mamba-1 layer: ``du/dt = S6_θ(u)``, in scan and matrix form.

* `S6Field` — ``du_l/dt = Σ_{j≤l} P_lj(u) u_j`` (+ ``D ⊙ u_l`` optionally), evaluated through
  the shared scan (`SSMParams.s6`), O(B·L·E·N).
* `MatrixS6Field` — the same field from the explicit hidden attention P (B, L, L, E),
  O(B·L²·E·N): for teaching and as an independent oracle of the scan form.

Shape letters as in `mamba_ode.shapes`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..._checks import check_tokens, layer_index
from ...nn.lm import MambaLMBase
from ...nn.params_mamba1 import SSMParams, hidden_attention, matrix_s6
from ...nn.scan import BACKENDS
from .base import VectorField

__all__ = ["S6Field", "MatrixS6Field"]


class S6Field(VectorField):
    """The idealised S6 dynamics of one layer: ``du/dt = S6_θ(u)``.

    ``S6_θ(u)_l = Σ_{j≤l} P_lj(u) u_j (+ D ⊙ u_l)`` with the hidden attention P,
    evaluated through the shared selective scan (`SSMParams.s6`, no gate, no convolution,
    no normalisation). The field is autonomous: ``t`` is ignored.

    Arguments:
        params: the layer's `SSMParams` (E channels, N states).
        use_D: include the ``D ⊙ u`` skip term (off by default, as in the paper).
        backend: scan backend, see `mamba_ode.selective_scan`.

    Raises:
        TypeError: if params is not an `SSMParams`.
        ValueError: for an unknown backend.
    """

    def __init__(self, params: SSMParams, *, use_D: bool = False, backend: str = "auto") -> None:
        super().__init__()
        if not isinstance(params, SSMParams):
            raise TypeError(f"argument 'params' must be an SSMParams, got {type(params).__name__}")
        if backend not in BACKENDS:
            raise ValueError(f"argument 'backend' must be one of {BACKENDS}, got {backend!r}")
        self.params = params
        self.use_D = bool(use_D)
        self.backend = backend

    # ------------------------------------------------------------------ constructors

    @classmethod
    def from_layer(cls, model: MambaLMBase, k: int, *, use_D: bool = False, backend: str = "auto",
                   detach: bool = True) -> S6Field:
        """The idealised field of layer k of a loaded model ("the ODE from pretrained weights").

        Arguments:
            model: a Mamba-1 model (what `mamba_ode.load` returns).
            k: layer index in [0, K) (negative indices count from the end).
            use_D: include the D term.
            backend: scan backend.
            detach: take a copy of the weights cut from the autograd graph (a snapshot); False keeps
                differentiable views of the model's parameters.

        Returns:
            An `S6Field` with E = d_inner, N = d_state.

        Raises:
            ValueError: if k is out of range.
            TypeError: if model has no ``layers``.
        """
        layers = getattr(model, "layers", None)
        if layers is None:
            raise TypeError(f"argument 'model' must be a MambaLM (with .layers), got {type(model).__name__}")
        params = layers[layer_index(k, len(layers), "k")].ssm
        if not isinstance(params, SSMParams):
            raise TypeError(f"argument 'model': layer {k} is not a Mamba-1 layer ({type(params).__name__}); "
                            "use mamba_ode.layer_field(model, k) for any generation")
        if detach:  # a copy: later changes to the model's weights do not move the field
            params = params.snapshot()
        return cls(params, use_D=use_D, backend=backend)

    # ------------------------------------------------------------------ sizes

    @property
    def d_inner(self) -> int:
        """E."""
        return self.params.d_inner

    @property
    def d_state(self) -> int:
        """N."""
        return self.params.d_state

    def params_like(self, u: Tensor) -> SSMParams:
        """The parameters cast to u's dtype and device (cached; see `VectorField.cast_params`)."""
        return self.cast_params(self.params, u)

    # ------------------------------------------------------------------ evaluation

    def forward(self, t: float | Tensor, u: Tensor) -> Tensor:
        """du/dt at tokens u.

        Arguments:
            t: time (ignored: the field is autonomous).
            u: (B, L, E) tokens.

        Returns:
            (B, L, E) = S6_θ(u).

        Raises:
            ValueError: if u is not (B, L, E) with this field's E, or empty.
        """
        check_tokens(u, self.d_inner)
        self.nfev += 1
        return self.params_like(u).s6(u, None, use_D=self.use_D, backend=self.backend)

    def jacobian_diagonal(self, t: float | Tensor, u: Tensor) -> Tensor:
        """The self-interaction part of the Jacobian's diagonal, ``∂f_l^d/∂u_l^d ≈ P_ll^d (+ D_d)``.

        ``P_ll^d = Δ_l^d (C_l · B_l)`` is the token's own term of the token-mixing sum, holding Δ, B and C
        fixed: where a layer is stiff (a channel with a large Δ decaying fast), this is the stiff part.
        Stiff steppers use it as a cheap Jacobian approximation (`mamba_ode.integrate_tokens`).

        Arguments:
            t: time (ignored).
            u: (B, L, E) tokens.

        Returns:
            (B, L, E).
        """
        check_tokens(u, self.d_inner)
        p = self.params_like(u)
        pre, B, C = p.selective_inputs(u)
        out = torch.nn.functional.softplus(pre + p.delta_bias) * (B * C).sum(-1, keepdim=True)
        return out + p.D if self.use_D else out

    def hidden_attention(self, u: Tensor) -> Tensor:
        """P (B, L, L, E) at tokens u (B, L, E); see `hidden_attention`."""
        check_tokens(u, self.d_inner)
        return hidden_attention(self.params_like(u), u)

    def matrix_form(self, *, block: int = 64) -> MatrixS6Field:
        """The same field in explicit matrix form ``Σ_j P_lj u_j`` (O(L²); teaching and tests)."""
        return MatrixS6Field(self.params, use_D=self.use_D, block=block)

    def extra_repr(self) -> str:
        return f"E={self.d_inner}, N={self.d_state}, use_D={self.use_D}, backend={self.backend!r}"


class MatrixS6Field(S6Field):
    """The S6 field in explicit matrix form ``du_l/dt = Σ_{j≤l} P_lj(u) u_j`` (O(L²)).

    Same parameters and semantics as `S6Field`, computed from the hidden attention P
    instead of the scan: for teaching and as an independent oracle of the scan form.

    Arguments:
        params: layer parameters.
        use_D: include the D term.
        block: rows of P formed at once (memory O(B·block·L·E)).
    """

    def __init__(self, params: SSMParams, *, use_D: bool = False, block: int = 64) -> None:
        super().__init__(params, use_D=use_D, backend="reference")
        if not isinstance(block, int) or block < 1:
            raise ValueError(f"argument 'block' must be a positive int, got {block!r}")
        self.block = block

    def forward(self, t: float | Tensor, u: Tensor) -> Tensor:
        """du/dt (B, L, E) at tokens u (B, L, E) from the explicit matrix form."""
        check_tokens(u, self.d_inner)
        self.nfev += 1
        return matrix_s6(self.params_like(u), u, use_D=self.use_D, block=self.block)

    def scan_form(self) -> S6Field:
        """The same field evaluated through the scan."""
        return S6Field(self.params, use_D=self.use_D)

    def extra_repr(self) -> str:
        return f"E={self.d_inner}, N={self.d_state}, use_D={self.use_D}, block={self.block}"
