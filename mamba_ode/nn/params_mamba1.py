"""Mamba-1: one layer's selective-SSM parameters in the paper's notation, and the S6 operator.

For one Mamba-1 layer with ``x_proj.weight = [W_x; S_B; S_C]`` (rows R, N, N) and
``dt_proj`` = (W_dt, b_Δ)::

    Δ_l = softplus(S_Δ u_l + b_Δ),   S_Δ = W_dt W_x   (E×E, rank ≤ R — kept factored)
    B_l = S_B u_l,  C_l = S_C u_l,   A = -exp(A_log)  (E×N)
    M   = S_Cᵀ S_B                   (E×E input–output matrix, rank ≤ N — formed only on request)

`SSMParams.s6` applies the S6 operator to tokens through `mamba_ode.scan.selective_scan`;
the discrete model's mixer and the idealised vector field both call it. The same operator in
explicit matrix form (the paper's "hidden attention", O(L²)) is `SSMParams.mixing_matrix`
and `matrix_s6`: for teaching, figures and as the scan's test oracle.

Shape letters as in `mamba_ode.shapes`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .._checks import check_tokens
from .hooks import HookPoint
from .scan import selective_scan
from .scan_ssd import segment_sums

__all__ = ["SSMParams", "S6Internals", "hidden_attention", "matrix_s6"]


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
    are never formed unless asked for (`S_delta`, `input_output_matrix`).

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
        dt = u.dtype  # the weights follow the tokens' dtype (a no-op when equal), as in `Mamba2Params.selective`
        low = u @ self.W_x.to(dt).transpose(0, 1)  # (B, L, R)
        return (low @ self.W_dt.to(dt).transpose(0, 1), u @ self.S_B.to(dt).transpose(0, 1),
                u @ self.S_C.to(dt).transpose(0, 1))

    def delta(self, u: Tensor) -> Tensor:
        """(B, L, E) step sizes Δ = softplus(S_Δ u + b_Δ) for tokens u (B, L, E)."""
        pre, _, _ = self.selective_inputs(u)
        return torch.nn.functional.softplus(pre + self.delta_bias.to(pre.dtype))

    def s6(self, u: Tensor, z: Tensor | None = None, *, use_D: bool = True, backend: str = "auto",
           hooks: Mapping[str, HookPoint] | None = None) -> Tensor:
        """Apply the S6 layer to tokens: ``y_l = Σ_{j≤l} P_lj u_j (+ D ⊙ u_l)``, gated by SiLU(z).

        Arguments:
            u: (B, L, E) tokens.
            z: (B, L, E) gate input, optional.
            use_D: include the ``D ⊙ u`` term.
            backend: scan backend (see `mamba_ode.selective_scan`).
            hooks: the mixer's activation points ``u``, ``B``, ``C``, ``delta``, ``z``, ``y`` (see
                `mamba_ode.nn.hooks`); each reads or replaces its activation. None: no points.

        Returns:
            (B, L, E) output.

        Raises:
            ValueError: if u is not (B, L, E) with this layer's E.
        """
        if u.dim() != 3 or u.shape[-1] != self.d_inner:
            raise ValueError(f"s6: argument 'u' must be (B, L, E) with E={self.d_inner}, got {tuple(u.shape)}")
        if hooks is not None:
            u = hooks["u"](u)
        pre, Bm, Cm = self.selective_inputs(u)
        delta_bias: Tensor | None = self.delta_bias
        softplus = True
        if hooks is not None:
            Bm, Cm = hooks["B"](Bm), hooks["C"](Cm)
            if hooks["delta"].active:  # Δ itself is read or replaced: form it, and scan with it as it is
                # in float32 at least, as the scan forms it: reading Δ must not change the result
                wd = torch.promote_types(pre.dtype, torch.float32)
                d32 = torch.nn.functional.softplus(pre.to(wd) + self.delta_bias.to(wd))
                shown = d32.to(pre.dtype)
                got = hooks["delta"](shown)
                pre = d32 if got is shown else got
                delta_bias, softplus = None, False
            if z is not None:
                z = hooks["z"](z)
        y = selective_scan(u.transpose(1, 2), pre.transpose(1, 2), self.A, Bm.transpose(1, 2), Cm.transpose(1, 2),
                           D=self.D if use_D else None, z=None, delta_bias=delta_bias,
                           delta_softplus=softplus, backend=backend).transpose(1, 2)
        if hooks is not None:
            y = hooks["y"](y)
        return y * torch.nn.functional.silu(z) if z is not None else y

    def states_at(self, u: Tensor, delta: Tensor, B: Tensor, C: Tensor, positions: Sequence[int], *,
                  backend: str = "auto") -> Tensor:
        """The SSM state h_q (after token q) for each position q, by the shared selective scan.

        Arguments:
            u: (B, L, E) SSM input; delta: (B, L, E) step sizes Δ; B, C: (B, L, N) — as cached at the
                points ``mixer.u``, ``mixer.delta``, ``mixer.B``, ``mixer.C``.
            positions: P token positions in [0, L).
            backend: scan backend.

        Returns:
            (B, P, E, N) states ``h_q = Σ_{j≤q} exp(A Σ_{k=j+1..q} Δ_k) ⊙ Δ_j B_j u_j``.
        """
        return torch.stack([selective_scan(u[:, :q + 1].transpose(1, 2), delta[:, :q + 1].transpose(1, 2), self.A,
                                           B[:, :q + 1].transpose(1, 2), C[:, :q + 1].transpose(1, 2),
                                           return_last_state=True, backend=backend)[1] for q in positions], dim=1)

    # ------------------------------------------------------------------ the interface shared with Mamba2Params

    @property
    def token_width(self) -> int:
        """Width of the tokens the idealised field acts on: E (the S6 input)."""
        return self.d_inner

    @property
    def n_groups(self) -> int:
        """G = 1: one input–output matrix per layer."""
        return 1

    def io_factors(self) -> list[tuple[Tensor, Tensor]]:
        """``[(S_B, S_C)]``: the (N, E) factors of the one input–output matrix M = S_Cᵀ S_B."""
        return [(self.S_B, self.S_C)]

    def quadratic_form(self, u: Tensor) -> Tensor:
        """``uᵀ M u`` per token and group, without forming M.

        Arguments:
            u: (..., E) tokens.

        Returns:
            (..., 1): the quadratic form of the one group.
        """
        S_B, S_C = self.S_B.to(u.dtype), self.S_C.to(u.dtype)
        if u.dim() == 1:  # one token: two matrix-vector products and a dot product
            return ((S_C @ u) @ (S_B @ u)).reshape(1)
        return ((u @ S_C.transpose(0, 1)) * (u @ S_B.transpose(0, 1))).sum(-1, keepdim=True)

    def mixing_matrix(self, u: Tensor) -> Tensor:
        """The hidden-attention matrix P at tokens u (B, L, E), see `hidden_attention`: (B, L, L, E).

        The parameters are cast to u's dtype and device first.
        """
        return hidden_attention(self.to(device=u.device, dtype=u.dtype), u)

    def to(self, *args, **kwargs) -> SSMParams:
        """Move/cast every tensor.

        Arguments:
            *args, **kwargs: as for ``torch.Tensor.to`` (a device, a dtype, or both).

        Returns:
            A new `SSMParams`; this one is unchanged.
        """
        return SSMParams(**{k: getattr(self, k).to(*args, **kwargs) for k in self.__dataclass_fields__})

    def detach(self) -> SSMParams:
        """Views cut from the autograd graph (sharing storage with the weights)."""
        return SSMParams(**{k: getattr(self, k).detach() for k in self.__dataclass_fields__})

    def snapshot(self) -> SSMParams:
        """A copy of the tensors, cut from the autograd graph (later weight changes do not move it)."""
        return SSMParams(**{k: getattr(self, k).detach().clone() for k in self.__dataclass_fields__})


# ============================================================================ explicit matrix form


def _selective(params: SSMParams, u: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Δ (B, L, E), B (B, L, N), C (B, L, N) for tokens u (B, L, E)."""
    pre, Bm, Cm = params.selective_inputs(u)
    return F.softplus(pre + params.delta_bias), Bm, Cm


def _attention_rows(delta: Tensor, Bm: Tensor, Cm: Tensor, A: Tensor, rows: slice) -> Tensor:
    """Rows ``rows`` of P restricted to columns [0, rows.stop): (B, |rows|, rows.stop, E).

    delta (B, L, E); Bm, Cm (B, L, N); A (E, N).
    """
    cols = rows.stop
    li = torch.arange(rows.start, rows.stop, device=delta.device)
    ji = torch.arange(cols, device=delta.device)
    causal = (ji[None, :] <= li[:, None])  # (lb, cols)
    seg = segment_sums(delta, rows)  # (B, lb, cols, E): Σ_{k=j+1..l} Δ_k, 0 on and above the diagonal
    cb = Cm[:, rows, None, :] * Bm[:, None, :cols, :]  # (B, lb, cols, N)
    out = torch.zeros_like(seg)
    for n in range(A.shape[1]):
        out += cb[..., n, None] * torch.exp(seg * A[:, n])
    out *= delta[:, None, :cols, :]
    return out * causal[None, :, :, None]


def hidden_attention(params: SSMParams, u: Tensor) -> Tensor:
    """The hidden-attention matrix P of the S6 layer at tokens u, materialised.

    ``P[b, l, j, d] = Δ_j^d Σ_n C_l[n] B_j[n] exp(A[d, n] Σ_{k=j+1..l} Δ_k^d)`` for j ≤ l, 0 above
    the diagonal, so that ``S6(u)_l = Σ_j P[:, l, j] ⊙ u_j + D ⊙ u_l``. General diagonal A
    (E × N). Costs O(B·L²·E·N) time and O(B·L²·E) memory: for small L only.

    Arguments:
        params: layer parameters (E channels, N states).
        u: (B, L, E) tokens.

    Returns:
        P (B, L, L, E), in u's dtype.

    Raises:
        ValueError: if u is not (B, L, E) with the parameters' E.
    """
    check_tokens(u, params.d_inner)
    delta, Bm, Cm = _selective(params, u)
    return _attention_rows(delta, Bm, Cm, params.A, slice(0, u.shape[1]))


def matrix_s6(params: SSMParams, u: Tensor, *, use_D: bool = False, block: int = 64) -> Tensor:
    """``Σ_{j≤l} P_lj u_j (+ D ⊙ u_l)`` computed from the explicit matrix P, in blocks of rows.

    The O(L²) counterpart of `SSMParams.s6` (which scans in O(L)); memory O(B·block·L·E).

    Arguments:
        params: layer parameters.
        u: (B, L, E) tokens.
        use_D: include the D term.
        block: rows of P formed at once.

    Returns:
        (B, L, E).

    Raises:
        ValueError: if u is not (B, L, E) with the parameters' E, or block < 1.
    """
    check_tokens(u, params.d_inner)
    if not isinstance(block, int) or block < 1:
        raise ValueError(f"argument 'block' must be a positive int, got {block!r}")
    delta, Bm, Cm = _selective(params, u)
    length = u.shape[1]
    y = torch.empty_like(u)
    for r0 in range(0, length, block):
        r1 = min(r0 + block, length)
        P = _attention_rows(delta, Bm, Cm, params.A, slice(r0, r1))  # (B, lb, r1, E)
        y[:, r0:r1] = torch.einsum("bljd,bjd->bld", P, u[:, :r1])
    if use_D:
        y = y + params.D * u
    return y
