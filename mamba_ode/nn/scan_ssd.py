"""The selective scan in the chunked matrix form of Mamba-2's SSD, for heads with a scalar A.

When channels come in heads of P consecutive channels that share their step size Δ and a scalar
``A`` (Mamba-2), the decay of the recurrence is the same scalar for all N states and all P channels
of a head. Within a chunk of T tokens the scan is then a masked matrix product (Dao & Gu 2024,
"Transformers are SSMs", the SSD algorithm)::

    y_t = Σ_{s≤t} (C_t · B_s) exp(a Σ_{k=s+1..t} Δ_k) Δ_s x_s  +  exp(a Σ_{k≤t} Δ_k) C_t · h_0
    h_T = exp(a Σ_{k≤T} Δ_k) h_0 + Σ_s exp(a Σ_{k=s+1..T} Δ_k) Δ_s x_s ⊗ B_s

which costs matrix products of O(T·H·(P + N)) per token and T·H exponentials, instead of the E·N
exponentials and elementwise updates per token of the general recurrence. `mamba_ode.selective_scan`
calls `ssd_scan` for its ``"fast"`` backend when given ``head_dim``; it is the same recurrence
(`tests/test_scan_ssd.py` checks it against the plain one), differentiated by autograd.

Shapes (see `mamba_ode.shapes`): B batch, L tokens, H heads of P channels (E = H·P), G groups of
B/C (G divides H), N state size.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["SSD_CHUNK", "ssd_scan"]

#: Tokens per chunk (``benchmarks/bench_ssd.py`` compares 32, 64 and 128).
SSD_CHUNK = 64


def _segment_sums(la: Tensor) -> Tensor:
    """(B, T, H) → (B, T, S, H): ``Σ_{k=s+1..t} la_k`` for t ≥ s, -inf for t < s.

    Summed directly, not as a difference of two cumulative sums: a large step followed by small ones
    would otherwise lose the small ones to cancellation (in float32 above all)."""
    t_len = la.shape[1]
    strict = torch.ones(t_len, t_len, dtype=torch.bool, device=la.device).tril(-1)[None, :, :, None]
    terms = la[:, :, None, :].expand(-1, -1, t_len, -1).masked_fill(~strict, 0.0)  # [t, s] = la_t if t > s
    seg = torch.cumsum(terms, dim=1)
    causal = torch.ones(t_len, t_len, dtype=torch.bool, device=la.device).tril()[None, :, :, None]
    return seg.masked_fill(~causal, -torch.inf)


def ssd_scan(x: Tensor, dt: Tensor, a: Tensor, B: Tensor, C: Tensor, chunk: int = SSD_CHUNK, *,
             last_state: bool = True) -> tuple[Tensor, Tensor | None]:
    """The scan of scalar-A heads from a zero state, chunk by chunk in matrix form.

    Arguments:
        x: (B, L, H, P) inputs.
        dt: (B, L, H) step sizes Δ (after any bias and softplus).
        a: (H,) the scalar A of each head.
        B: (B, L, G, N) input matrices; head h uses group ``h // (H // G)``.
        C: (B, L, G, N) output matrices.
        chunk: tokens per chunk.
        last_state: compute the state after the last token (False: None is returned in its place, and
            the state update of the last chunk is skipped).

    Returns:
        ``(y, h)``: y (B, L, H, P) and the state after the last token h (B, H, P, N), in x's dtype.
    """
    b, length, n_heads, p = x.shape
    g, n = B.shape[2], B.shape[3]
    k = n_heads // g  # heads per group
    h: Tensor | None = None  # the state before the chunk (None: zero)
    ys = []
    for s in range(0, length, chunk):
        xc, dtc = x[:, s:s + chunk], dt[:, s:s + chunk]
        Bc, Cc = B[:, s:s + chunk], C[:, s:s + chunk]
        t_len = xc.shape[1]
        la = dtc * a  # (B, T, H): a Δ_t
        cum = torch.cumsum(la, dim=1)  # a Σ_{k≤t} Δ_k, for the state carried into the chunk
        seg = _segment_sums(la)  # (B, T, S, H): a Σ_{k=s+1..t} Δ_k, -inf above the diagonal
        decay = torch.exp(seg) * dtc[:, None, :, :]  # exp(a Σ_{k=s+1..t} Δ_k) Δ_s
        cb = torch.einsum("btgn,bsgn->bgts", Cc, Bc)  # (B, G, T, S)
        M = decay.permute(0, 3, 1, 2).reshape(b, g, k, t_len, t_len) * cb[:, :, None]  # (B, G, K, T, S)
        xg = xc.reshape(b, t_len, g, k, p)
        y = torch.einsum("bgkts,bsgkp->btgkp", M, xg)
        if h is not None:
            y = y + torch.einsum("btgn,bgkpn->btgkp", Cc, h) * torch.exp(cum).view(b, t_len, g, k, 1)
        ys.append(y.reshape(b, t_len, n_heads, p))
        if s + chunk >= length and not last_state:
            break
        w = decay[:, -1].view(b, t_len, g, k, 1)  # exp(a Σ_{k=s+1..T} Δ_k) Δ_s: the last row
        h_in = torch.einsum("bsgkp,bsgn->bgkpn", xg * w, Bc)
        h = h_in if h is None else h * torch.exp(cum[:, -1]).view(b, g, k, 1, 1) + h_in
    y = torch.cat(ys, dim=1) if ys else x.new_zeros(x.shape)
    if not last_state:
        return y, None
    return y, (h if h is not None else x.new_zeros(b, g, k, p, n)).reshape(b, n_heads, p, n)
