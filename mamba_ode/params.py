"""Per-layer selective-SSM parameters in the paper's notation (SPEC §2–3), and the S6 operator.

For one Mamba-1 layer with ``x_proj.weight = [W_x; S_B; S_C]`` (rows R, N, N) and
``dt_proj`` = (W_dt, b_Δ)::

    Δ_l = softplus(S_Δ u_l + b_Δ),   S_Δ = W_dt W_x   (E×E, rank ≤ R — kept factored)
    B_l = S_B u_l,  C_l = S_C u_l,   A = -exp(A_log)  (E×N)
    M   = S_Cᵀ S_B                   (E×E input–output matrix, rank ≤ N — formed only on request)

:meth:`SSMParams.s6` applies the S6 operator to tokens through :func:`mamba_ode.scan.selective_scan`;
the discrete model's mixer and the idealised vector field both call it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .scan import selective_scan

__all__ = ["SSMParams", "S6Internals"]


@dataclass
class S6Internals:
    """What the S6 layer computed, user-facing layout.

    Attributes:
        u: (B, L, E) SSM input (after conv and SiLU in the discrete model).
        delta: (B, L, E) step sizes Δ = softplus(S_Δ u + b_Δ).
        B: (B, L, N) input matrices B_l = S_B u_l.
        C: (B, L, N) output matrices C_l = S_C u_l.
        y: (B, L, E) SSM output (with the D term, before the gate).
        z: (B, L, E) gate input (None when no gate is applied).
    """

    u: Tensor
    delta: Tensor
    B: Tensor
    C: Tensor
    y: Tensor
    z: Tensor | None = None


@dataclass
class SSMParams:
    """One layer's selective-SSM parameters in the paper's notation.

    The tensors are views of (or differentiable functions of) the layer's weights; E×E matrices
    are never formed unless asked for (:attr:`S_delta`, :meth:`input_output_matrix`).

    Attributes:
        W_x: (R, E) first factor of S_Δ (``x_proj.weight[:R]``).
        W_dt: (E, R) second factor of S_Δ (``dt_proj.weight``).
        delta_bias: (E,) b_Δ (``dt_proj.bias``).
        S_B: (N, E) input projection rows of ``x_proj.weight``.
        S_C: (N, E) output projection rows of ``x_proj.weight``.
        A: (E, N) ``-exp(A_log)``.
        D: (E,) skip term.
    """

    W_x: Tensor
    W_dt: Tensor
    delta_bias: Tensor
    S_B: Tensor
    S_C: Tensor
    A: Tensor
    D: Tensor

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_weights(cls, x_proj_weight: Tensor, dt_proj_weight: Tensor, dt_proj_bias: Tensor,
                     A_log: Tensor, D: Tensor) -> SSMParams:
        """Build from raw layer weights.

        Arguments:
            x_proj_weight: (R + 2N, E).
            dt_proj_weight: (E, R).
            dt_proj_bias: (E,).
            A_log: (E, N).
            D: (E,).

        Raises:
            ValueError: on inconsistent shapes, naming the argument.
        """
        e, r = dt_proj_weight.shape
        if A_log.dim() != 2 or A_log.shape[0] != e:
            raise ValueError(f"SSMParams: argument 'A_log' must be (E, N) with E={e}, got {tuple(A_log.shape)}")
        n = A_log.shape[1]
        if tuple(x_proj_weight.shape) != (r + 2 * n, e):
            raise ValueError(f"SSMParams: argument 'x_proj_weight' must be (R+2N, E) = ({r + 2 * n}, {e}), "
                             f"got {tuple(x_proj_weight.shape)}")
        if tuple(dt_proj_bias.shape) != (e,) or tuple(D.shape) != (e,):
            raise ValueError(f"SSMParams: arguments 'dt_proj_bias' and 'D' must be (E,) = ({e},)")
        return cls(W_x=x_proj_weight[:r], W_dt=dt_proj_weight, delta_bias=dt_proj_bias,
                   S_B=x_proj_weight[r:r + n], S_C=x_proj_weight[r + n:], A=-torch.exp(A_log), D=D)

    # ------------------------------------------------------------------ sizes

    @property
    def d_inner(self) -> int:
        """E."""
        return self.A.shape[0]

    @property
    def d_state(self) -> int:
        """N."""
        return self.A.shape[1]

    @property
    def dt_rank(self) -> int:
        """R."""
        return self.W_x.shape[0]

    # ------------------------------------------------------------------ dense matrices (on request)

    @property
    def S_delta(self) -> Tensor:
        """(E, E) dense S_Δ = W_dt W_x, computed on access (rank ≤ R)."""
        return self.W_dt @ self.W_x

    def input_output_matrix(self) -> Tensor:
        """(E, E) dense M = S_Cᵀ S_B, computed on request (rank ≤ N)."""
        return self.S_C.transpose(0, 1) @ self.S_B

    def diag_S_delta(self) -> Tensor:
        """(E,) the diagonal of S_Δ without forming it."""
        return (self.W_dt * self.W_x.transpose(0, 1)).sum(-1)

    def diag_M(self) -> Tensor:
        """(E,) the diagonal of M = S_Cᵀ S_B without forming it: μ_d = Σ_n S_C[n,d] S_B[n,d]."""
        return (self.S_C * self.S_B).sum(0)

    # ------------------------------------------------------------------ the S6 operator

    def selective_inputs(self, u: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Δ (before softplus and bias), B and C for tokens u.

        Arguments:
            u: (B, L, E) tokens.

        Returns:
            ``(delta_pre, B, C)`` with shapes (B, L, E), (B, L, N), (B, L, N);
            Δ = softplus(delta_pre + delta_bias).
        """
        low = u @ self.W_x.transpose(0, 1)  # (B, L, R)
        return low @ self.W_dt.transpose(0, 1), u @ self.S_B.transpose(0, 1), u @ self.S_C.transpose(0, 1)

    def delta(self, u: Tensor) -> Tensor:
        """(B, L, E) step sizes Δ = softplus(S_Δ u + b_Δ) for tokens u (B, L, E)."""
        pre, _, _ = self.selective_inputs(u)
        return torch.nn.functional.softplus(pre + self.delta_bias)

    def s6(self, u: Tensor, z: Tensor | None = None, *, use_D: bool = True, backend: str = "auto",
           return_internals: bool = False) -> Tensor | tuple[Tensor, S6Internals]:
        """Apply the S6 layer to tokens: ``y_l = Σ_{j≤l} P_lj u_j (+ D ⊙ u_l)``, gated by SiLU(z).

        Arguments:
            u: (B, L, E) tokens.
            z: (B, L, E) gate input, optional.
            use_D: include the ``D ⊙ u`` term.
            backend: scan backend (see :func:`mamba_ode.selective_scan`).
            return_internals: also return :class:`S6Internals`.

        Returns:
            (B, L, E) output, and the internals when asked.

        Raises:
            ValueError: if u is not (B, L, E) with this layer's E.
        """
        if u.dim() != 3 or u.shape[-1] != self.d_inner:
            raise ValueError(f"s6: argument 'u' must be (B, L, E) with E={self.d_inner}, got {tuple(u.shape)}")
        pre, Bm, Cm = self.selective_inputs(u)
        y = selective_scan(u.transpose(1, 2), pre.transpose(1, 2), self.A, Bm.transpose(1, 2), Cm.transpose(1, 2),
                           D=self.D if use_D else None, z=None, delta_bias=self.delta_bias,
                           delta_softplus=True, backend=backend).transpose(1, 2)
        out = y * torch.nn.functional.silu(z) if z is not None else y
        if not return_internals:
            return out
        delta = torch.nn.functional.softplus(pre + self.delta_bias)
        return out, S6Internals(u=u, delta=delta, B=Bm, C=Cm, y=y, z=z)

    def to(self, *args, **kwargs) -> SSMParams:
        """Move/cast every tensor (``torch.Tensor.to`` arguments)."""
        return SSMParams(**{k: getattr(self, k).to(*args, **kwargs) for k in self.__dataclass_fields__})

    def detach(self) -> SSMParams:
        """A copy cut from the autograd graph."""
        return SSMParams(**{k: getattr(self, k).detach() for k in self.__dataclass_fields__})
