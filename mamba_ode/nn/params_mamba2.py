"""Mamba-2: one layer's parameters in the paper's notation and the SSD recurrence per head.

One Mamba-2 layer, for normalised residual states ``h`` (B, L, Dm)::

    [z, x, B, C, dt] = in_proj(h)                 z, x: E;  B, C: G·N;  dt: H
    [x, B, C] = SiLU(causal_conv1d([x, B, C]))
    Δ^h_l = clamp(softplus(dt^h_l + dt_bias_h), dt_limit)          one step size per head
    s^h_l = exp(-a_h Δ^h_l) s^h_{l-1} + Δ^h_l x^h_l ⊗ B^g_l         (P×N state, A_h = -a_h scalar)
    y^h_l = s^h_l C^g_l + D_h x^h_l                                  g = group of head h
    out = out_proj(GatedRMSNorm(y, z))             y ⊙ SiLU(z), RMS-normalised per group of E/G channels

The scan is the project's one `mamba_ode.selective_scan`: a head of size P with scalar
``A_h`` is P Mamba-1 channels with ``A[d, :] = A_h`` and ``Δ^d = Δ^h`` for each channel d of the head,
and B/C passed grouped, (B, G, N, L).

Because A is scalar per head, the paper's token-mixing matrix is exact per head:
``y^h_l = Σ_{j≤l} P^h_lj x^h_j + D_h x^h_l`` with
``P^h_lj = (C^g_l · B^g_j) Δ^h_j exp(-a_h Σ_{k=j+1..l} Δ^h_k)`` (`Mamba2Params.token_mixing_matrix`).
Unlike Mamba-1, B and C do not come from the SSM input x but from ``in_proj`` of the mixer input h,
through the convolution. The input–output matrix of group g is therefore defined on the mixer
input (the normalised residual state that ``in_proj`` feeds to the convolution) with the
convolution, the SiLU and the ``in_proj`` bias set aside: ``B^g_j ≈ S_B^g h_j``, ``C^g_l ≈ S_C^g h_l``,
``M_g = S_C^gᵀ S_B^g`` (Dm×Dm, rank ≤ N). Every spectrum reported for Mamba-2 is of that matrix.

Shapes (see `mamba_ode.shapes`): B batch, L tokens, Dm model width, E = H·P inner width,
H heads, P head size, G groups, N state size.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .scan import selective_scan
from .scan_ssd import segment_sums

__all__ = ["Mamba2Params", "Mamba2Internals"]


@dataclass
class Mamba2Internals:
    """What one Mamba-2 SSD layer computed, user-facing layout.

    Attributes:
        u: (B, L, E) SSM input x (after conv and SiLU), heads of P channels side by side.
        delta: (B, L, H) step sizes Δ per head (softplus, clamped to ``dt_limit``).
        B: (B, L, G, N) input matrices per group (after conv and SiLU).
        C: (B, L, G, N) output matrices per group (after conv and SiLU).
        y: (B, L, E) SSM output (with the D term, before the gated norm).
        z: (B, L, E) gate input (None when no gate is applied).
    """

    u: Tensor
    delta: Tensor
    B: Tensor
    C: Tensor
    y: Tensor
    z: Tensor | None = None


@dataclass
class Mamba2Params:
    """One Mamba-2 layer's parameters in the paper's notation (differentiable views of the weights).

    B and C are not functions of the SSM input here (as in Mamba-1) but of the mixer input h through
    ``in_proj`` and the convolution; ``S_B``/``S_C`` are the ``in_proj`` rows that feed them, i.e. the
    factors of the per-group input–output matrix with the convolution, SiLU and bias set aside.

    Attributes:
        S_x: (E, Dm) ``in_proj`` rows of the SSM input x.
        S_z: (E, Dm) ``in_proj`` rows of the gate z.
        S_B: (G, N, Dm) ``in_proj`` rows of B, per group.
        S_C: (G, N, Dm) ``in_proj`` rows of C, per group.
        S_dt: (H, Dm) ``in_proj`` rows of the raw step size, per head.
        A: (H,) scalar state matrix per head, ``A_h = -exp(A_log_h) = -a_h``.
        dt_bias: (H,) Δ bias per head.
        D: (H,) skip per head.
        head_dim: P.
        dt_limit: ``(lo, hi)`` clamp of Δ after the softplus.
        W_out: (Dm, E) ``out_proj.weight``, which maps the SSD output back to the mixer input space
            (the idealised field needs it; None when only the SSD recurrence is used).
    """

    S_x: Tensor
    S_z: Tensor
    S_B: Tensor
    S_C: Tensor
    S_dt: Tensor
    A: Tensor
    dt_bias: Tensor
    D: Tensor
    head_dim: int
    dt_limit: tuple[float, float] = (0.0, math.inf)
    W_out: Tensor | None = None

    @property
    def n_heads(self) -> int:
        """H."""
        return self.A.shape[0]

    @property
    def n_groups(self) -> int:
        """G."""
        return self.S_B.shape[0]

    @property
    def d_state(self) -> int:
        """N."""
        return self.S_B.shape[1]

    @property
    def d_inner(self) -> int:
        """E = H · P."""
        return self.n_heads * self.head_dim

    @property
    def a(self) -> Tensor:
        """(H,) decay rates ``a_h = -A_h = exp(A_log_h)`` (positive)."""
        return -self.A

    def group_of_head(self) -> Tensor:
        """(H,) int64 group index of each head (heads map to groups like ``repeat_interleave``)."""
        return torch.arange(self.n_heads, device=self.A.device) // (self.n_heads // self.n_groups)

    def delta(self, dt: Tensor) -> Tensor:
        """Step sizes ``Δ = clamp(softplus(dt + dt_bias), dt_limit)``.

        Arguments:
            dt: (..., H) raw step sizes (the ``in_proj`` dt block).

        Returns:
            (..., H) Δ.

        Raises:
            ValueError: if the last dimension is not H.
        """
        if dt.shape[-1] != self.n_heads:
            raise ValueError(f"argument 'dt' must end in H = {self.n_heads}, got shape {tuple(dt.shape)}")
        lo, hi = self.dt_limit
        out = F.softplus(dt + self.dt_bias.to(dt.dtype))
        if lo > 0.0 or hi < math.inf:
            out = out.clamp(min=lo, max=hi)
        return out

    def channel_A(self) -> Tensor:
        """(E, N) Mamba-1 channel form of A: every channel d of head h gets ``A[d, :] = A_h``."""
        return self.A.repeat_interleave(self.head_dim)[:, None].expand(self.d_inner, self.d_state)

    def _check_ssd(self, u: Tensor, delta: Tensor, B: Tensor, C: Tensor) -> None:
        b, length = u.shape[:2]
        want = {"u": (u, (b, length, self.d_inner)), "delta": (delta, (b, length, self.n_heads)),
                "B": (B, (b, length, self.n_groups, self.d_state)), "C": (C, (b, length, self.n_groups, self.d_state))}
        for name, (t, shape) in want.items():
            if tuple(t.shape) != shape:
                raise ValueError(f"argument {name!r} must have shape {shape} (B, L, ...), got {tuple(t.shape)}")

    def ssd(self, u: Tensor, delta: Tensor, B: Tensor, C: Tensor, *, use_D: bool = True,
            backend: str = "auto") -> Tensor:
        """The SSD recurrence per head, through `mamba_ode.scan.selective_scan`.

        Arguments:
            u: (B, L, E) SSM input x (heads of P channels side by side).
            delta: (B, L, H) step sizes Δ (already softplus-ed and clamped, see `delta`).
            B: (B, L, G, N) input matrices per group.
            C: (B, L, G, N) output matrices per group.
            use_D: add the skip ``D_h x^h_l``.
            backend: scan backend (see `mamba_ode.selective_scan`).

        Returns:
            (B, L, E) y in the dtype of u (computed in at least float32).

        Raises:
            ValueError: on inconsistent shapes, naming the argument.
        """
        self._check_ssd(u, delta, B, C)
        p = self.head_dim
        y = selective_scan(u.transpose(1, 2), delta.repeat_interleave(p, dim=-1).transpose(1, 2), self.channel_A(),
                           B.permute(0, 2, 3, 1), C.permute(0, 2, 3, 1),
                           D=self.D.repeat_interleave(p) if use_D else None, backend=backend, head_dim=p)
        return y.transpose(1, 2)

    def states_at(self, u: Tensor, delta: Tensor, B: Tensor, C: Tensor, positions: Sequence[int], *,
                  backend: str = "auto") -> Tensor:
        """The SSM state after token q for each position q, per channel, by the shared selective scan.

        Arguments:
            u: (B, L, E) SSM input; delta: (B, L, H) step sizes; B, C: (B, L, G, N) — as cached at the
                points ``mixer.u``, ``mixer.delta``, ``mixer.B``, ``mixer.C``.
            positions: P token positions in [0, L).
            backend: scan backend.

        Returns:
            (B, P, E, N): channel e of head h holds ``Σ_{j≤q} exp(-a_h Σ_{k=j+1..q} Δ^h_k) Δ^h_j B^g_j x^e_j``.
        """
        p = self.head_dim
        dl = delta.repeat_interleave(p, dim=-1)
        return torch.stack([selective_scan(u[:, :q + 1].transpose(1, 2), dl[:, :q + 1].transpose(1, 2),
                                           self.channel_A(), B[:, :q + 1].permute(0, 2, 3, 1),
                                           C[:, :q + 1].permute(0, 2, 3, 1), return_last_state=True,
                                           backend=backend, head_dim=p)[1] for q in positions], dim=1)

    def token_mixing_matrix(self, delta: Tensor, B: Tensor, C: Tensor) -> Tensor:
        """The per-head scalar-A token-mixing matrix — O(L²·H): for teaching and tests.

        ``P^h_lj = (C^g_l · B^g_j) Δ^h_j exp(-a_h Σ_{k=j+1..l} Δ^h_k)`` for j ≤ l (0 above the
        diagonal), g the group of head h; then ``y^h_l = Σ_j P^h_lj x^h_j + D_h x^h_l`` equals
        `ssd`. B and C are the conv outputs (they come from ``in_proj`` of the mixer input,
        not from x).

        Arguments:
            delta: (B, L, H) step sizes.
            B: (B, L, G, N) input matrices per group.
            C: (B, L, G, N) output matrices per group.

        Returns:
            (B, H, L, L) P, lower triangular in (l, j).

        Raises:
            ValueError: on inconsistent shapes.
        """
        b, length, h = delta.shape
        if h != self.n_heads or B.shape != C.shape or tuple(B.shape) != (b, length, self.n_groups, self.d_state):
            raise ValueError(f"arguments 'delta' (B, L, H={self.n_heads}), 'B' and 'C' (B, L, G={self.n_groups}, "
                             f"N={self.d_state}) disagree: {tuple(delta.shape)}, {tuple(B.shape)}, {tuple(C.shape)}")
        cb = torch.einsum("blgn,bjgn->bglj", C, B)  # (B, G, L, L)
        cb = cb.repeat_interleave(self.n_heads // self.n_groups, dim=1)  # (B, H, L, L)
        seg = segment_sums(delta).permute(0, 3, 1, 2)  # (B, H, L, L): Σ_{k=j+1..l} Δ_k, 0 above the diagonal
        causal = torch.ones(length, length, dtype=torch.bool, device=delta.device).tril()
        decay = torch.exp(self.A.to(delta.dtype)[None, :, None, None] * seg)
        P = cb * decay * delta.transpose(1, 2)[:, :, None, :]
        return P.masked_fill(~causal, 0.0)

    def input_output_matrix(self, group: int) -> Tensor:
        """``M_g = S_C^gᵀ S_B^g`` (Dm, Dm), rank ≤ N, on the mixer input (conv, SiLU, bias set aside).

        Raises:
            ValueError: for a group index outside [0, G).
        """
        if not 0 <= group < self.n_groups:
            raise ValueError(f"argument 'group' must be in [0, {self.n_groups}), got {group}")
        return self.S_C[group].T @ self.S_B[group]

    # ------------------------------------------------------------------ the interface shared with SSMParams

    @property
    def token_width(self) -> int:
        """Width of the tokens the idealised field acts on: Dm (the mixer input)."""
        return self.S_x.shape[1]

    def io_factors(self) -> list[tuple[Tensor, Tensor]]:
        """``[(S_B^g, S_C^g)]`` for g < G: the (N, Dm) factors of each group's input–output matrix."""
        return [(self.S_B[g], self.S_C[g]) for g in range(self.n_groups)]

    def quadratic_form(self, h: Tensor) -> Tensor:
        """``hᵀ M_g h`` per token and group, without forming M_g.

        Arguments:
            h: (..., Dm) tokens in the mixer input space.

        Returns:
            (..., G).
        """
        if h.dim() == 1:  # one token: two matrix-vector products and a dot product per group
            return torch.stack([(c.to(h.dtype) @ h) @ (b.to(h.dtype) @ h) for b, c in self.io_factors()])
        dm = h.shape[-1]
        b = h @ self.S_B.reshape(-1, dm).to(h.dtype).T  # (..., G·N)
        c = h @ self.S_C.reshape(-1, dm).to(h.dtype).T
        return (b * c).reshape(*h.shape[:-1], self.n_groups, self.d_state).sum(-1)

    def selective(self, h: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(x, Δ, B, C)`` of the idealised layer at tokens h, with conv, SiLU and biases set aside.

        Arguments:
            h: (B, L, Dm) tokens in the mixer input space.

        Returns:
            x (B, L, E), Δ (B, L, H), B and C (B, L, G, N).
        """
        b, length, dm = h.shape
        x = h @ self.S_x.to(h.dtype).T
        Bm = (h @ self.S_B.reshape(-1, dm).to(h.dtype).T).view(b, length, self.n_groups, self.d_state)
        Cm = (h @ self.S_C.reshape(-1, dm).to(h.dtype).T).view(b, length, self.n_groups, self.d_state)
        return x, self.delta(h @ self.S_dt.to(h.dtype).T), Bm, Cm

    def mixing_matrix(self, h: Tensor) -> Tensor:
        """The per-head token-mixing matrix at tokens h: (B, L, L, H), lower triangular in (l, j).

        Arguments:
            h: (B, L, Dm) tokens in the mixer input space.
        """
        _, delta, Bm, Cm = self.selective(h)
        return self.token_mixing_matrix(delta, Bm, Cm).permute(0, 2, 3, 1)

    def _map(self, fn: Callable[[Tensor], Tensor]) -> Mamba2Params:
        """A copy with ``fn`` applied to every tensor field."""
        changes: dict[str, Any] = {f.name: fn(v) for f in fields(self)
                                   if isinstance(v := getattr(self, f.name), Tensor)}
        return replace(self, **changes)

    def snapshot(self) -> Mamba2Params:
        """A copy of the tensors, cut from the autograd graph (later weight changes do not move it)."""
        return self._map(lambda v: v.detach().clone())

    def to(self, *args: Any, **kwargs: Any) -> Mamba2Params:
        """Move/cast every tensor.

        Arguments:
            *args, **kwargs: as for ``torch.Tensor.to`` (a device, a dtype, or both).

        Returns:
            A new `Mamba2Params`; this one is unchanged.
        """
        return self._map(lambda v: v.to(*args, **kwargs))
