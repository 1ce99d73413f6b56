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

__all__ = ["SSD_CHUNK", "segment_sums", "ssd_scan"]

#: Tokens per chunk (``benchmarks/bench_ssd.py`` compares 32, 64 and 128).
SSD_CHUNK = 64


def segment_sums(x: Tensor, rows: slice | None = None) -> Tensor:
    """The sums of x over token segments: ``S[b, l, j, f] = Σ_{k=j+1..l} x[b, k, f]`` for j ≤ l (0 on the
    diagonal), 0 for j > l — the exponents of the scan's decay between tokens j and l.

    Each is summed term by term from k = l down to j + 1, never as a difference of two cumulative sums,
    which loses the small terms that follow a large one (in float32 above all).

    Arguments:
        x: (B, L, F) per-token terms (e.g. Δ per channel, or a·Δ per head).
        rows: the rows l to return (all by default); the columns are j < ``rows.stop``.

    Returns:
        (B, R, C, F) with R = len(rows), C = ``rows.stop``.
    """
    rows = slice(0, x.shape[1]) if rows is None else rows
    cols = rows.stop
    li = torch.arange(rows.start, rows.stop, device=x.device)
    ki = torch.arange(cols, device=x.device)
    beyond = (ki[None, :] > li[:, None])[None, :, :, None]  # k > l: not in any segment ending at l
    terms = x[:, None, :cols, :].expand(-1, len(li), -1, -1).masked_fill(beyond, 0.0)  # [l, k] = x_k, k ≤ l
    tail = terms.flip(2).cumsum(2).flip(2)  # [l, j] = Σ_{j≤k≤l} x_k
    return torch.cat([tail[:, :, 1:], torch.zeros_like(tail[:, :, :1])], dim=2)  # Σ_{j<k≤l} x_k


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
        causal = torch.ones(t_len, t_len, dtype=torch.bool, device=x.device).tril()[None, :, :, None]
        cum = torch.cumsum(la, dim=1)  # a Σ_{k≤t} Δ_k, for the state carried into the chunk
        seg = segment_sums(la).masked_fill(~causal, -torch.inf)  # (B, T, S, H): a Σ_{k=s+1..t} Δ_k
        decay = torch.exp(seg) * dtc[:, None, :, :]  # exp(a Σ_{k=s+1..t} Δ_k) Δ_s, 0 for s > t
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
