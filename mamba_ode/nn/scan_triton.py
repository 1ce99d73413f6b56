"""Triton kernels of the selective scan: ``backend="triton"`` of `mamba_ode.selective_scan`.

This module imports triton at its top, so nothing imports it at package import time:
``mamba_ode.nn.scan`` loads it with `importlib.import_module` the first time a triton scan
runs (triton is an optional dependency). Call `mamba_ode.selective_scan` rather than this
module; it validates the arguments.

Design. One program per (batch element, block of ``BLOCK_E`` channels); it keeps the state
``h`` (BLOCK_E, N) in registers and walks over the tokens in chunks of ``BLOCK_L``. Inside a chunk
the recurrence ``h_t = exp(Δ_t A) h_{t-1} + Δ_t u_t B_t`` is one ``tl.associative_scan`` over the
token axis of (BLOCK_E, N, BLOCK_L) tiles of the pairs ``(exp(Δ A), Δ u B)``; the state is carried
from chunk to chunk. Accumulation is in float32 (float64 when an input is float64); outputs are
written in the dtype of ``u`` and the last state in the accumulation dtype.

The backward pass walks the chunks in reverse. It recomputes each chunk's states from the state
at the chunk's start (saved by the forward pass, (B, L / BLOCK_L, E, N)), and runs the adjoint
recurrence ``G_t = g_t C_t + exp(Δ_{t+1} A) G_{t+1}`` (``G_t`` = dLoss/dh_t) as a reverse
associative scan, carrying ``G`` between chunks; a gradient flowing into the returned last state
starts the carry. Gradients of token-varying B/C are summed over the channels of a block inside
the kernel and over blocks by torch (no atomics: deterministic).

With ``TRITON_INTERPRET=1`` set before this module is first imported, triton's interpreter runs
the same kernels on CPU tensors (slow; for tests on small shapes).
"""

import torch
import triton
import triton.language as tl
from torch import Tensor

__all__ = ["selective_scan_triton", "interpreted"]

#: channels per program (forward, backward); powers of two, lowered to divide E // G for grouped B/C
BLOCK_E_FWD = 8
BLOCK_E_BWD = 4
#: elements of one (BLOCK_E, BLOCK_N, BLOCK_L) tile in the forward / backward kernel: bounds the
#: registers per thread (N = 16, 16-token chunks: 8 and 4 channels per program); for a large N
#: (Mamba-2: 128) the chunk and the channel block shrink instead
TILE_FWD = 2048
TILE_BWD = 1024
#: longest token chunk (``chunk_size`` is rounded up to a power of two and capped here)
MAX_BLOCK_L = 64
NUM_WARPS = 4
#: token-varying gB / gC: per-block partial sums (deterministic) while they hold at most this many
#: times the elements of u, else atomic adds into (B, G, N, L)
PARTIAL_MAX_RATIO = 4


# ----------------------------------------------------------------------------- device helpers


@triton.jit
def _combine(a1, b1, a2, b2):
    # the step x -> a1 x + b1 followed by x -> a2 x + b2
    return a1 * a2, a2 * b1 + b2


@triton.jit
def _sigmoid(x):
    return 1.0 / (1.0 + tl.exp(-x))


@triton.jit
def _softplus(x):
    # log1p(exp(x)) with log1p accurate for tiny exp(x); x itself above 20 (torch's threshold)
    w = tl.exp(tl.minimum(x, 20.0))
    v = 1.0 + w
    d = tl.where(v == 1.0, 1.0, v - 1.0)
    lp = tl.where(v == 1.0, w, tl.log(v) * (w / d))
    return tl.where(x > 20.0, x, lp)


@triton.jit
def _step_sizes(ptrs, mask, bias, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, ACC: tl.constexpr):
    # (delta + bias, Δ) of a (BLOCK_E, BLOCK_L) tile; Δ = 0 outside the mask (a neutral step)
    x = tl.load(ptrs, mask=mask, other=0.0).to(ACC)
    if HAS_BIAS:
        x = x + bias[:, None]
    dt = x
    if SOFTPLUS:
        dt = _softplus(x)
    return x, tl.where(mask, dt, 0.0)


@triton.jit
def _io_tile(base, offs_n, t, mask_nl, s_n, s_l, const, VAR: tl.constexpr, ACC: tl.constexpr):
    # B or C of one chunk, broadcastable to (BLOCK_E, BLOCK_N, BLOCK_L)
    if VAR:
        x = tl.load(base + offs_n[:, None] * s_n + t[None, :] * s_l, mask=mask_nl, other=0.0).to(ACC)
        out = x[None, :, :]
    else:
        out = const[:, :, None]
    return out


@triton.jit
def _const_tile(ptr, offs_e, offs_n, mask_en, s_e, s_n, VAR: tl.constexpr, ACC: tl.constexpr,
                BLOCK_E: tl.constexpr, BLOCK_N: tl.constexpr):
    # a constant (E, N) B or C, loaded once per program (zeros, unused, when it varies per token)
    if VAR:
        out = tl.zeros((BLOCK_E, BLOCK_N), ACC)
    else:
        out = tl.load(ptr + offs_e[:, None] * s_e + offs_n[None, :] * s_n, mask=mask_en, other=0.0).to(ACC)
    return out


@triton.jit
def _chunk_states(h0, dt, u, A, Bx):
    # states after each token of a chunk, (BLOCK_E, BLOCK_N, BLOCK_L), and the inputs Δ u B
    dA = tl.exp(dt[:, None, :] * A[:, :, None])
    dBu = (dt * u)[:, None, :] * Bx
    a, b = tl.associative_scan((dA, dBu), 2, _combine)
    return a * h0[:, :, None] + b, dBu


@triton.jit
def _put(ptrs, x, mask, ATOMIC: tl.constexpr):
    if ATOMIC:
        tl.atomic_add(ptrs, x, mask=mask)
    else:
        tl.store(ptrs, x, mask=mask)


@triton.jit
def _at_token(x, offs_l, k: tl.constexpr):
    # x[:, :, k] of a (BLOCK_E, BLOCK_N, BLOCK_L) tile
    return tl.sum(tl.where(offs_l[None, None, :] == k, x, 0.0), axis=2)


# ----------------------------------------------------------------------------- kernels


@triton.jit
def _scan_fwd_kernel(
    u_ptr, dl_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, y_ptr, last_ptr, chunk_ptr,
    E, L, N, n_chunks, per_B, per_C,
    su_b, su_e, su_l, sd_b, sd_e, sd_l, sz_b, sz_e, sz_l, sA_e, sA_n,
    sB_b, sB_g, sB_n, sB_l, sC_b, sC_g, sC_n, sC_l,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    VAR_B: tl.constexpr, VAR_C: tl.constexpr, SAVE_CHUNKS: tl.constexpr, ACC: tl.constexpr,
    BLOCK_E: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_L: tl.constexpr,
):
    pid_b = tl.program_id(0).to(tl.int64)
    e0 = tl.program_id(1) * BLOCK_E
    offs_e = e0 + tl.arange(0, BLOCK_E)
    offs_n = tl.arange(0, BLOCK_N)
    offs_l = tl.arange(0, BLOCK_L)
    mask_e = offs_e < E
    mask_n = offs_n < N
    mask_en = mask_e[:, None] & mask_n[None, :]
    A = tl.load(A_ptr + offs_e[:, None] * sA_e + offs_n[None, :] * sA_n, mask=mask_en, other=0.0).to(ACC)
    bias = tl.load(bias_ptr + offs_e, mask=mask_e, other=0.0).to(ACC) if HAS_BIAS else tl.zeros((BLOCK_E,), ACC)
    Dv = tl.load(D_ptr + offs_e, mask=mask_e, other=0.0).to(ACC) if HAS_D else tl.zeros((BLOCK_E,), ACC)
    B_base = B_ptr + pid_b * sB_b + (e0 // per_B) * sB_g
    C_base = C_ptr + pid_b * sC_b + (e0 // per_C) * sC_g
    B_const = _const_tile(B_ptr, offs_e, offs_n, mask_en, sB_g, sB_n, VAR_B, ACC, BLOCK_E, BLOCK_N)
    C_const = _const_tile(C_ptr, offs_e, offs_n, mask_en, sC_g, sC_n, VAR_C, ACC, BLOCK_E, BLOCK_N)
    u_rows = u_ptr + pid_b * su_b + offs_e[:, None] * su_e
    d_rows = dl_ptr + pid_b * sd_b + offs_e[:, None] * sd_e
    z_rows = z_ptr + pid_b * sz_b + offs_e[:, None] * sz_e
    y_rows = y_ptr + pid_b * E * L + offs_e[:, None] * L
    en_offs = offs_e[:, None] * N + offs_n[None, :]
    chunk_base = chunk_ptr + pid_b * n_chunks * E * N
    h = tl.zeros((BLOCK_E, BLOCK_N), ACC)
    for c in range(0, n_chunks):
        t = c * BLOCK_L + offs_l
        mask_l = t < L
        m_el = mask_e[:, None] & mask_l[None, :]
        m_nl = mask_n[:, None] & mask_l[None, :]
        if SAVE_CHUNKS:
            tl.store(chunk_base + c * E * N + en_offs, h, mask=mask_en)
        u = tl.load(u_rows + t[None, :] * su_l, mask=m_el, other=0.0).to(ACC)
        _, dt = _step_sizes(d_rows + t[None, :] * sd_l, m_el, bias, HAS_BIAS, SOFTPLUS, ACC)
        Bx = _io_tile(B_base, offs_n, t, m_nl, sB_n, sB_l, B_const, VAR_B, ACC)
        Cx = _io_tile(C_base, offs_n, t, m_nl, sC_n, sC_l, C_const, VAR_C, ACC)
        hs, _ = _chunk_states(h, dt, u, A, Bx)
        y = tl.sum(hs * Cx, axis=1)
        if HAS_D:
            y += Dv[:, None] * u
        if HAS_Z:
            z = tl.load(z_rows + t[None, :] * sz_l, mask=m_el, other=0.0).to(ACC)
            y = y * z * _sigmoid(z)
        tl.store(y_rows + t[None, :], y, mask=m_el)
        h = _at_token(hs, offs_l, BLOCK_L - 1)  # padded tokens are neutral steps: the state at L - 1
    tl.store(last_ptr + pid_b * E * N + en_offs, h, mask=mask_en)


# long function: one kernel; splitting it would move its (BLOCK_E, N, BLOCK_L) tiles through more helpers
@triton.jit
def _scan_bwd_kernel(
    u_ptr, dl_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, chunk_ptr, gy_ptr, glast_ptr,
    gu_ptr, gdl_ptr, gz_ptr, gA_ptr, gB_ptr, gC_ptr, gD_ptr, gbias_ptr,
    E, L, N, n_chunks, per_B, per_C,
    su_b, su_e, su_l, sd_b, sd_e, sd_l, sz_b, sz_e, sz_l, sA_e, sA_n,
    sB_b, sB_g, sB_n, sB_l, sC_b, sC_g, sC_n, sC_l, sg_b, sg_e, sg_l, sh_b, sh_e, sh_n,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    VAR_B: tl.constexpr, VAR_C: tl.constexpr, HAS_GLAST: tl.constexpr, ACC: tl.constexpr, ATOMIC: tl.constexpr,
    BLOCK_E: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_L: tl.constexpr,
):
    pid_b = tl.program_id(0).to(tl.int64)
    pid_e = tl.program_id(1)
    e0 = pid_e * BLOCK_E
    offs_e = e0 + tl.arange(0, BLOCK_E)
    offs_n = tl.arange(0, BLOCK_N)
    offs_l = tl.arange(0, BLOCK_L)
    mask_e = offs_e < E
    mask_n = offs_n < N
    mask_en = mask_e[:, None] & mask_n[None, :]
    A = tl.load(A_ptr + offs_e[:, None] * sA_e + offs_n[None, :] * sA_n, mask=mask_en, other=0.0).to(ACC)
    bias = tl.load(bias_ptr + offs_e, mask=mask_e, other=0.0).to(ACC) if HAS_BIAS else tl.zeros((BLOCK_E,), ACC)
    Dv = tl.load(D_ptr + offs_e, mask=mask_e, other=0.0).to(ACC) if HAS_D else tl.zeros((BLOCK_E,), ACC)
    B_base = B_ptr + pid_b * sB_b + (e0 // per_B) * sB_g
    C_base = C_ptr + pid_b * sC_b + (e0 // per_C) * sC_g
    B_const = _const_tile(B_ptr, offs_e, offs_n, mask_en, sB_g, sB_n, VAR_B, ACC, BLOCK_E, BLOCK_N)
    C_const = _const_tile(C_ptr, offs_e, offs_n, mask_en, sC_g, sC_n, VAR_C, ACC, BLOCK_E, BLOCK_N)
    u_rows = u_ptr + pid_b * su_b + offs_e[:, None] * su_e
    d_rows = dl_ptr + pid_b * sd_b + offs_e[:, None] * sd_e
    z_rows = z_ptr + pid_b * sz_b + offs_e[:, None] * sz_e
    g_rows = gy_ptr + pid_b * sg_b + offs_e[:, None] * sg_e
    out_rows = pid_b * E * L + offs_e[:, None] * L  # gu, gdelta, gz: contiguous (B, E, L)
    en_offs = offs_e[:, None] * N + offs_n[None, :]
    chunk_base = chunk_ptr + pid_b * n_chunks * E * N
    # token-varying gB / gC: one (N, L) partial sum per block of channels, (B, E / BLOCK_E, N, L), or
    # atomic adds into (B, G, N, L)
    if ATOMIC:
        gB_base = (pid_b * (E // per_B) + e0 // per_B) * N * L
        gC_base = (pid_b * (E // per_C) + e0 // per_C) * N * L
    else:
        gB_base = (pid_b * tl.num_programs(1) + pid_e) * N * L
        gC_base = gB_base
    if HAS_GLAST:
        carry = tl.load(glast_ptr + pid_b * sh_b + offs_e[:, None] * sh_e + offs_n[None, :] * sh_n,
                        mask=mask_en, other=0.0).to(ACC)
    else:
        carry = tl.zeros((BLOCK_E, BLOCK_N), ACC)
    gA = tl.zeros((BLOCK_E, BLOCK_N), ACC)
    gBk = tl.zeros((BLOCK_E, BLOCK_N), ACC)
    gCk = tl.zeros((BLOCK_E, BLOCK_N), ACC)
    gD = tl.zeros((BLOCK_E,), ACC)
    gbias = tl.zeros((BLOCK_E,), ACC)
    for i in range(0, n_chunks):
        c = n_chunks - 1 - i
        t = c * BLOCK_L + offs_l
        mask_l = t < L
        m_el = mask_e[:, None] & mask_l[None, :]
        m_nl = mask_n[:, None] & mask_l[None, :]
        u = tl.load(u_rows + t[None, :] * su_l, mask=m_el, other=0.0).to(ACC)
        x, dt = _step_sizes(d_rows + t[None, :] * sd_l, m_el, bias, HAS_BIAS, SOFTPLUS, ACC)
        Bx = _io_tile(B_base, offs_n, t, m_nl, sB_n, sB_l, B_const, VAR_B, ACC)
        Cx = _io_tile(C_base, offs_n, t, m_nl, sC_n, sC_l, C_const, VAR_C, ACC)
        h0 = tl.load(chunk_base + c * E * N + en_offs, mask=mask_en, other=0.0)
        hs, dBu = _chunk_states(h0, dt, u, A, Bx)
        gout = tl.load(g_rows + t[None, :] * sg_l, mask=m_el, other=0.0).to(ACC)
        if HAS_Z:  # y = (C·h + D u) SiLU(z)
            z = tl.load(z_rows + t[None, :] * sz_l, mask=m_el, other=0.0).to(ACC)
            sz = _sigmoid(z)
            pre = tl.sum(hs * Cx, axis=1)
            if HAS_D:
                pre += Dv[:, None] * u
            gz = gout * pre * sz * (1.0 + z * (1.0 - sz))
            tl.store(gz_ptr + out_rows + t[None, :], gz, mask=m_el)
            g = gout * z * sz
        else:
            g = gout
        # adjoint: G_t = g_t C_t + exp(Δ_{t+1} A) G_{t+1}; Δ_{t+1} = 0 (factor 1) past the sequence
        tn = t + 1
        _, dtn = _step_sizes(d_rows + tn[None, :] * sd_l, mask_e[:, None] & (tn < L)[None, :], bias,
                             HAS_BIAS, SOFTPLUS, ACC)
        dAn = tl.exp(dtn[:, None, :] * A[:, :, None])
        Ga, Gb = tl.associative_scan((dAn, g[:, None, :] * Cx), 2, _combine, reverse=True)
        G = Ga * carry[:, :, None] + Gb
        carry = _at_token(G, offs_l, 0)
        gdA = G * (hs - dBu)  # dLoss/d(Δ A) = G_t exp(Δ_t A) h_{t-1}
        gA += tl.sum(gdA * dt[:, None, :], axis=2)
        GB = tl.sum(G * Bx, axis=1)
        gdt = tl.sum(gdA * A[:, :, None], axis=1) + GB * u
        gu = GB * dt
        if HAS_D:
            gu += Dv[:, None] * g
            gD += tl.sum(g * u, axis=1)
        if SOFTPLUS:
            gdt = gdt * tl.where(x > 20.0, 1.0, _sigmoid(x))
        gdt = tl.where(m_el, gdt, 0.0)
        gbias += tl.sum(gdt, axis=1)
        tl.store(gu_ptr + out_rows + t[None, :], gu, mask=m_el)
        tl.store(gdl_ptr + out_rows + t[None, :], gdt, mask=m_el)
        gBx = G * (dt * u)[:, None, :]
        gCx = hs * g[:, None, :]
        nl_offs = offs_n[:, None] * L + t[None, :]
        if VAR_B:
            _put(gB_ptr + gB_base + nl_offs, tl.sum(gBx, axis=0), m_nl, ATOMIC)
        else:
            gBk += tl.sum(gBx, axis=2)
        if VAR_C:
            _put(gC_ptr + gC_base + nl_offs, tl.sum(gCx, axis=0), m_nl, ATOMIC)
        else:
            gCk += tl.sum(gCx, axis=2)
    en_out = pid_b * E * N + en_offs
    tl.store(gA_ptr + en_out, gA, mask=mask_en)
    if not VAR_B:
        tl.store(gB_ptr + en_out, gBk, mask=mask_en)
    if not VAR_C:
        tl.store(gC_ptr + en_out, gCk, mask=mask_en)
    if HAS_D:
        tl.store(gD_ptr + pid_b * E + offs_e, gD, mask=mask_e)
    if HAS_BIAS:
        tl.store(gbias_ptr + pid_b * E + offs_e, gbias, mask=mask_e)


# ----------------------------------------------------------------------------- host side


def interpreted() -> bool:
    """True when the kernels run through triton's interpreter (``TRITON_INTERPRET=1`` at import).

    Returns:
        Whether CPU tensors can be scanned (the interpreter) rather than CUDA tensors only.
    """
    return type(_scan_fwd_kernel).__name__ == "InterpretedFunction"


def _next_pow2(n: int) -> int:
    return 1 << max(n - 1, 0).bit_length()


def _io_layout(X: Tensor, e: int) -> tuple[Tensor, tuple[int, int, int, int], int, bool]:
    """B or C → (tensor, strides (batch, group or channel, state, token), channels per group, varies).

    A constant (E, N) tensor is read as E "groups" of one channel that do not vary with the token.
    """
    if X.dim() == 2:
        return X, (0, X.stride(0), X.stride(1), 0), 1, False
    X4 = X.unsqueeze(1) if X.dim() == 3 else X
    return X4, (X4.stride(0), X4.stride(1), X4.stride(2), X4.stride(3)), e // X4.shape[1], True


def _block_n(n: int) -> int:
    return max(2, _next_pow2(n))


def _block_l(chunk_size: int, n: int) -> int:
    """Tokens per chunk: ``chunk_size`` rounded up to a power of two, within the backward tile budget."""
    return max(2, min(MAX_BLOCK_L, _next_pow2(chunk_size), TILE_BWD // _block_n(n)))


def _block_e(e: int, cap: int, tile: int, n: int, block_l: int, pers: list[int]) -> int:
    """Largest power of two ≤ cap, within the tile budget (and ≤ E rounded up), dividing the group
    sizes of token-varying B/C (so that a block of channels reads one group)."""
    blk = max(1, min(cap, tile // (_block_n(n) * block_l), _next_pow2(e)))
    while blk > 1 and any(p % blk for p in pers):
        blk //= 2
    return blk


def _common_strides(u: Tensor, delta: Tensor, z: Tensor | None, A: Tensor,
                    lb: tuple[int, ...], lc: tuple[int, ...]) -> list[int]:
    zs = list(z.stride()) if z is not None else [0, 0, 0]
    return [*u.stride(), *delta.stride(), *zs, *A.stride(), *lb, *lc]


def _acc_dtype(*ts: Tensor) -> torch.dtype:
    return torch.float64 if any(t.dtype == torch.float64 for t in ts) else torch.float32


_TL = {torch.float32: tl.float32, torch.float64: tl.float64}


class _TritonScan(torch.autograd.Function):
    """Forward and backward selective scan in Triton kernels (see the module docstring)."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, softplus, block_l):
        b, e, length = u.shape
        n = A.shape[1]
        acc = _acc_dtype(u, delta, A, B, C)
        Bk, lb, per_b, var_b = _io_layout(B, e)
        Ck, lc, per_c, var_c = _io_layout(C, e)
        n_chunks = triton.cdiv(length, block_l)
        save = any(ctx.needs_input_grad[:8])
        y = torch.empty(b, e, length, device=u.device, dtype=u.dtype)
        last = torch.zeros(b, e, n, device=u.device, dtype=acc)
        chunks = torch.empty((b, n_chunks, e, n) if save else (1,), device=u.device, dtype=acc)
        blk = _block_e(e, BLOCK_E_FWD, TILE_FWD, n, block_l, [p for p, v in ((per_b, var_b), (per_c, var_c)) if v])
        if b * e * length:
            _scan_fwd_kernel[(b, triton.cdiv(e, blk))](
                u, delta, A, Bk, Ck, D if D is not None else u, z if z is not None else u,
                delta_bias if delta_bias is not None else u, y, last, chunks,
                e, length, n, n_chunks, per_b, per_c, *_common_strides(u, delta, z, A, lb, lc),
                HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None, SOFTPLUS=softplus,
                VAR_B=var_b, VAR_C=var_c, SAVE_CHUNKS=save, ACC=_TL[acc],
                BLOCK_E=blk, BLOCK_N=_block_n(n), BLOCK_L=block_l, num_warps=NUM_WARPS)
        ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, chunks)
        ctx.softplus, ctx.block_l = softplus, block_l
        return y, last

    @staticmethod
    def backward(ctx, gy, glast):
        u, delta, A, B, C, D, z, delta_bias, chunks = ctx.saved_tensors
        b, e, length = u.shape
        n = A.shape[1]
        acc = chunks.dtype
        Bk, lb, per_b, var_b = _io_layout(B, e)
        Ck, lc, per_c, var_c = _io_layout(C, e)
        blk = _block_e(e, BLOCK_E_BWD, TILE_BWD, n, ctx.block_l,
                       [p for p, v in ((per_b, var_b), (per_c, var_c)) if v])
        n_blk = triton.cdiv(e, blk)
        atomic = n_blk * n > PARTIAL_MAX_RATIO * e
        gy = gy if gy is not None else torch.zeros_like(u)
        dev = u.device
        gu = torch.zeros(b, e, length, device=dev, dtype=u.dtype)
        gdl = torch.zeros(b, e, length, device=dev, dtype=delta.dtype)
        gz = torch.zeros(b, e, length, device=dev, dtype=z.dtype) if z is not None else gu
        gA = torch.zeros(b, e, n, device=dev, dtype=acc)
        gB = torch.zeros(_grad_buffer(b, e, n, length, Bk, var_b, atomic, n_blk), device=dev, dtype=acc)
        gC = torch.zeros(_grad_buffer(b, e, n, length, Ck, var_c, atomic, n_blk), device=dev, dtype=acc)
        gD = torch.zeros(b, e, device=dev, dtype=acc)
        gbias = torch.zeros(b, e, device=dev, dtype=acc)
        sh = glast.stride() if glast is not None else (0, 0, 0)
        if b * e * length:
            _scan_bwd_kernel[(b, n_blk)](
                u, delta, A, Bk, Ck, D if D is not None else u, z if z is not None else u,
                delta_bias if delta_bias is not None else u, chunks, gy, glast if glast is not None else gy,
                gu, gdl, gz, gA, gB, gC, gD, gbias,
                e, length, n, chunks.shape[1], per_b, per_c, *_common_strides(u, delta, z, A, lb, lc),
                *gy.stride(), *sh,
                HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None, SOFTPLUS=ctx.softplus,
                VAR_B=var_b, VAR_C=var_c, HAS_GLAST=glast is not None, ACC=_TL[acc], ATOMIC=atomic,
                BLOCK_E=blk, BLOCK_N=_block_n(n), BLOCK_L=ctx.block_l, num_warps=NUM_WARPS)
        return (gu, gdl, gA.sum(0).to(A.dtype), _io_grad(gB, B, var_b, atomic), _io_grad(gC, C, var_c, atomic),
                gD.sum(0).to(D.dtype) if D is not None else None, gz if z is not None else None,
                gbias.sum(0).to(delta_bias.dtype) if delta_bias is not None else None, None, None)


def _grad_buffer(b: int, e: int, n: int, length: int, X4: Tensor, var: bool, atomic: bool,
                 n_blk: int) -> tuple[int, ...]:
    """Shape of the kernel's gradient buffer for B or C (see `_io_grad`)."""
    if not var:
        return (b, e, n)
    return (b, X4.shape[1], n, length) if atomic else (b, n_blk, n, length)


def _io_grad(part: Tensor, X: Tensor, var: bool, atomic: bool) -> Tensor:
    """The kernel's gradient buffer of B or C, summed into X's shape and dtype.

    Constant: (B, E, N) per batch element; token-varying: (B, E / BLOCK_E, N, L) partial sums with
    the blocks of one group adjacent, or (B, G, N, L) already summed (atomic adds).
    """
    if not var:
        return part.sum(0).to(X.dtype)
    b, n_part, n, length = part.shape
    g = 1 if X.dim() == 3 else X.shape[1]
    out = part if atomic else part.view(b, g, n_part // g, n, length).sum(2)
    return (out.squeeze(1) if X.dim() == 3 else out).to(X.dtype)


def selective_scan_triton(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None,
                          z: Tensor | None, delta_bias: Tensor | None, delta_softplus: bool,
                          chunk_size: int) -> tuple[Tensor, Tensor]:
    """The selective scan in Triton kernels, differentiable in every tensor argument.

    Arguments are those of `mamba_ode.selective_scan`, already validated there:

    Arguments:
        u: (B, E, L) float32, float16 or bfloat16 (float64 computes in float64).
        delta: (B, E, L) step sizes before ``delta_bias`` and softplus.
        A: (E, N) real.
        B: (B, N, L), (B, G, N, L) or constant (E, N).
        C: (B, N, L), (B, G, N, L) or constant (E, N), grouped independently of ``B``.
        D: (E,) or None.
        z: (B, E, L) or None; the output is multiplied by ``SiLU(z)``.
        delta_bias: (E,) or None, added before the softplus.
        delta_softplus: apply softplus to ``delta + delta_bias``.
        chunk_size: tokens per chunk, rounded up to a power of two (2 … ``MAX_BLOCK_L``, and at
            most ``TILE_BWD / N``).

    Returns:
        ``(y, last_state)``: y (B, E, L) in u's dtype; last_state (B, E, N) in float32 (float64
        when an input is float64). Both carry gradients.

    Raises:
        ValueError: when the tensors are on the CPU and the interpreter is off (``TRITON_INTERPRET``).
    """
    if not u.is_cuda and not interpreted():
        raise ValueError("selective_scan: backend='triton' needs CUDA tensors (argument 'u' is on "
                         f"{u.device}); on the CPU set TRITON_INTERPRET=1 before the first triton scan to run "
                         "triton's interpreter (slow), or use backend='fast'")
    block_l = _block_l(chunk_size, A.shape[1])
    if u.is_cuda:
        with torch.cuda.device(u.device):
            y, last = _TritonScan.apply(u, delta, A, B, C, D, z, delta_bias, delta_softplus, block_l)
    else:
        y, last = _TritonScan.apply(u, delta, A, B, C, D, z, delta_bias, delta_softplus, block_l)
    return y, last
