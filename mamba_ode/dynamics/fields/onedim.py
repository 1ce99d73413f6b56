"""The one-dimensional S6 system (E = 1) of the paper's theorems, alone and many at once.

* `OneDimField` — ``du_l/dt = u_l Σ_{j≤l} u_j² Δ(u_j) g(Σ_{k=j+1..l} Δ(u_k))`` from scalars
  (μ, s_Δ, b_Δ, a) or N decay rates, through the shared scan.
* `PackedOneDimField` — many 1-D systems in one batch, each sequence carrying its own
  parameters as constant state channels; an independent closed-form implementation (O(L²)).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from ..._checks import check_tokens
from ...nn.params_mamba1 import SSMParams
from ...nn.scan_ssd import segment_sums
from .base import VectorField
from .s6 import S6Field

__all__ = ["OneDimField", "PackedOneDimField"]


def _scalar(x: float | Tensor, name: str) -> float:
    try:
        v = float(x.item()) if isinstance(x, Tensor) else float(x)
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"argument {name!r} must be a finite real scalar, got {x!r}") from None
    if not math.isfinite(v):
        raise ValueError(f"argument {name!r} must be finite, got {v}")
    return v


def _vector(x: float | Sequence[float] | Tensor, name: str, dtype: torch.dtype) -> Tensor:
    t = torch.as_tensor(x, dtype=dtype).reshape(-1).clone()
    if t.numel() == 0:
        raise ValueError(f"argument {name!r} must have at least one entry")
    if not torch.isfinite(t).all():
        raise ValueError(f"argument {name!r} must be finite, got {t.tolist()}")
    return t


class OneDimField(S6Field):
    """The one-dimensional S6 system of the paper (E = 1), tokens (B, L, 1).

    ``du_l/dt = u_l Σ_{j≤l} u_j² Δ(u_j) g(Σ_{k=j+1..l} Δ(u_k))`` with ``Δ(u) = softplus(s u + b)``
    and ``g(τ) = Σ_n S_C[n] S_B[n] exp(-a_n τ)``; with one state ``g(τ) = μ exp(-a τ)``. It is an
    `S6Field` with E = 1, so it is evaluated through the shared scan.

    Arguments:
        mu: μ = S_Cᵀ S_B (scalar).
        s_delta: s = S_Δ (scalar).
        a: decay rate a ≥ 0 (A = -a), a scalar; for N rates use `from_states`.
        b_delta: Δ bias b_Δ.
        dtype: dtype of the parameters (float64 by default). The field computes in the dtype of its
            input tokens: the parameters are cast to it (float32 tokens give a float32 field).
        backend: scan backend.

    Raises:
        ValueError: for non-finite values, a < 0, or a vector ``a`` (use `from_states`).
    """

    def __init__(self, mu: float, s_delta: float, a: float = 1.0, b_delta: float = 0.0, *,
                 dtype: torch.dtype = torch.float64, backend: str = "auto") -> None:
        if isinstance(a, (Sequence, Tensor)) and torch.as_tensor(a).numel() != 1:
            raise ValueError("argument 'a' must be a scalar here; for N decay rates use "
                             "OneDimField.from_states(S_B, S_C, a, s_delta, b_delta)")
        mu_v = _scalar(mu, "mu")
        self._init(S_B=torch.ones(1, dtype=dtype), S_C=torch.tensor([mu_v], dtype=dtype),
                   a=_vector(a, "a", dtype), s_delta=_scalar(s_delta, "s_delta"),
                   b_delta=_scalar(b_delta, "b_delta"), dtype=dtype, backend=backend)

    def _init(self, *, S_B: Tensor, S_C: Tensor, a: Tensor, s_delta: float, b_delta: float,
              dtype: torch.dtype, backend: str) -> None:
        if (a < 0).any():
            raise ValueError(f"argument 'a' must be ≥ 0 (A = -a is a decay), got {a.tolist()}")
        n = a.numel()
        if S_B.numel() != n or S_C.numel() != n:
            raise ValueError(f"arguments 'S_B', 'S_C' and 'a' must have the same length N, "
                             f"got {S_B.numel()}, {S_C.numel()}, {n}")
        params = SSMParams(W_x=torch.tensor([[s_delta]], dtype=dtype), W_dt=torch.ones(1, 1, dtype=dtype),
                           delta_bias=torch.tensor([b_delta], dtype=dtype), S_B=S_B.reshape(n, 1),
                           S_C=S_C.reshape(n, 1), A=-a.reshape(1, n), D=torch.zeros(1, dtype=dtype))
        super().__init__(params, use_D=False, backend=backend)
        self.s_delta = s_delta
        self.b_delta = b_delta

    @classmethod
    def from_states(cls, S_B: Sequence[float] | Tensor, S_C: Sequence[float] | Tensor,
                    a: Sequence[float] | Tensor, s_delta: float, b_delta: float = 0.0, *,
                    dtype: torch.dtype = torch.float64, backend: str = "auto") -> OneDimField:
        """The 1-D system with N states: decay rates a_n and per-state S_B[n], S_C[n].

        Arguments:
            S_B: (N,) input projection (one channel).
            S_C: (N,) output projection.
            a: (N,) decay rates ≥ 0 (A[0, n] = -a_n).
            s_delta: s = S_Δ.
            b_delta: b_Δ.
            dtype: parameter dtype.
            backend: scan backend.

        Returns:
            A `OneDimField` with ``g(τ) = Σ_n S_C[n] S_B[n] e^{-a_n τ}``, μ = g(0).

        Raises:
            ValueError: for different lengths, non-finite values or a negative rate.
        """
        self = cls.__new__(cls)
        self._init(S_B=_vector(S_B, "S_B", dtype), S_C=_vector(S_C, "S_C", dtype), a=_vector(a, "a", dtype),
                   s_delta=_scalar(s_delta, "s_delta"), b_delta=_scalar(b_delta, "b_delta"),
                   dtype=dtype, backend=backend)
        return self

    @property
    def mu(self) -> float:
        """μ = g(0) = Σ_n S_C[n] S_B[n]: its sign decides token 1's fate."""
        return float((self.params.S_C * self.params.S_B).sum())

    @property
    def a(self) -> Tensor:
        """(N,) decay rates."""
        return -self.params.A[0]

    def kernel(self, tau: Tensor | float) -> Tensor:
        """g(τ) = Σ_n S_C[n] S_B[n] exp(-a_n τ), elementwise in τ."""
        tau = torch.as_tensor(tau, dtype=self.params.A.dtype)
        w = (self.params.S_C * self.params.S_B)[:, 0]
        return (w * torch.exp(-self.a * tau[..., None])).sum(-1)

    def forward(self, t: float | Tensor, u: Tensor) -> Tensor:
        """du/dt (B, L, 1) at tokens u (B, L, 1)."""
        check_tokens(u, 1, what="1")
        self.nfev += 1
        return self.params_like(u).s6(u, None, use_D=False, backend=self.backend)

    def extra_repr(self) -> str:
        return (f"mu={self.mu:.6g}, s_delta={self.s_delta:.6g}, a={self.a.tolist()}, "
                f"b_delta={self.b_delta:.6g}")


class PackedOneDimField(VectorField):
    """Many 1-D systems in one batch: the parameters ride along as constant channels of the state.

    State v (G, L, 5): channel 0 holds the tokens u, channels 1–4 hold (μ, s, a, b) of that
    sequence's system (constant: their derivative is 0). The token channel follows the 1-D system in closed
    form, O(L²) per sequence:
    ``du_l/dt = μ u_l Σ_{j≤l} u_j² Δ_j exp(-a Σ_{k=j+1..l} Δ_k)``, ``Δ = softplus(s u + b)``.
    Because each trajectory carries its own parameters, `mamba_ode.solve` may split the
    batch freely. An independent implementation of `OneDimField` (tests compare the two), used
    by `mamba_ode.compare_theory_numerics` to integrate many systems at once.
    """

    @staticmethod
    def pack(u0: Tensor, mu: Tensor, s_delta: Tensor, a: Tensor, b_delta: Tensor) -> Tensor:
        """Packed state (B, L, 5) from tokens (B, L) or (B, L, 1) and per-sequence parameters (B,).

        Raises:
            ValueError: for mismatched shapes.
        """
        u = u0[..., 0] if u0.dim() == 3 else u0
        if u.dim() != 2:
            raise ValueError(f"argument 'u0' must be (B, L) or (B, L, 1), got {tuple(u0.shape)}")
        nb, length = u.shape
        cols = []
        for name, x in (("mu", mu), ("s_delta", s_delta), ("a", a), ("b_delta", b_delta)):
            x = torch.as_tensor(x, dtype=u.dtype).reshape(-1)
            if x.numel() != nb:
                raise ValueError(f"argument {name!r} must have one value per sequence ({nb}), got {x.numel()}")
            cols.append(x[:, None].expand(nb, length))
        return torch.stack([u, *cols], dim=-1)

    def forward(self, t: float | Tensor, v: Tensor) -> Tensor:
        """dv/dt (G, L, 5) at packed states v (G, L, 5)."""
        self.nfev += 1
        u = v[..., 0]
        mu, s, a, b = v[:, :1, 1], v[:, :1, 2], v[:, :1, 3], v[:, :1, 4]  # (G, 1)
        delta = torch.nn.functional.softplus(s * u + b)
        length = u.shape[1]
        causal = torch.tril(torch.ones(length, length, dtype=torch.bool, device=u.device))
        seg = segment_sums(delta[..., None])[..., 0]  # [l, j] = Σ_{k=j+1..l} Δ_k for j ≤ l, 0 above
        kern = torch.exp(-a[:, :, None] * seg) * causal
        w = u * u * delta  # (G, L)
        du = mu * u * (kern @ w[..., None])[..., 0]
        out = torch.zeros_like(v)
        out[..., 0] = du
        return out
