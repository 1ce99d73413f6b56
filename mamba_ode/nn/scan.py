"""The selective scan — the one place in mamba_ode where the S6 recurrence is written.

Every part of the toolkit that needs a scan (the discrete model, the vector fields, the
refinements, training) calls `selective_scan`. Its signature and semantics follow
mamba-ssm's ``selective_scan_fn``; the layout is (B, E, L) as in mamba-ssm.

Shapes (see `mamba_ode.shapes`): B batch, E channels (``d_inner``), L tokens, N state size,
G groups of B/C (Mamba-2; G = 1 for Mamba-1). As in mamba-ssm, B and C are each either
token-varying, (B, N, L) or grouped (B, G, N, L), or constant (E, N), independently of each other.

For each channel d the recurrence is::

    h_l = exp(Δ_l^d A_d) ⊙ h_{l-1} + Δ_l^d u_l^d B_l        (h_0 = 0, h ∈ R^N)
    y_l^d = <C_l, h_l> + D_d u_l^d
    y_l^d ← y_l^d · SiLU(z_l^d)                              (if z is given)

with ``Δ = softplus(delta + delta_bias)`` when ``delta_softplus`` is true. Only a real A is
supported: mamba-ssm's complex-A path is refused with a TypeError naming ``'A'``.

Backends:

* ``"reference"`` — the plain recurrence written as directly as possible, differentiated by
  autograd. Slow; the oracle for the others.
* ``"fast"`` — the default off CUDA. Works in chunks of tokens with a (B, L, E, N)-contiguous
  layout, never holding a (B, E, L, N) tensor for the whole sequence, and has a hand-written
  backward pass that recomputes each chunk from the saved chunk-boundary states.
* ``"triton"`` — forward and backward Triton kernels (`mamba_ode.nn.scan_triton`, imported
  on first use; triton is optional). CUDA tensors, or CPU tensors through triton's interpreter
  when ``TRITON_INTERPRET=1`` is set.
* ``"cuda"`` — mamba-ssm's fused kernel.

``"auto"`` takes mamba-ssm's kernel for CUDA tensors when it is importable (and accepts the
arguments' dtypes), else ``"triton"`` when triton imports, else ``"fast"`` with one warning; CPU
tensors get ``"fast"``.
"""

from __future__ import annotations

import importlib
import warnings
from types import ModuleType
from typing import Literal, cast, overload

import torch
import torch.nn.functional as F
from torch import Tensor

from .scan_checks import check_heads, check_inputs
from .scan_ssd import ssd_scan

__all__ = ["selective_scan", "BACKENDS", "check_backend", "cuda_kernel_available", "triton_available"]

BACKENDS = ("auto", "reference", "fast", "cuda", "triton")
Backend = Literal["auto", "reference", "fast", "cuda", "triton"]

#: Tokens per chunk in the fast backend (chosen by ``benchmarks/bench_scan.py``).
DEFAULT_CHUNK = 16

_CUDA_WARNED = False  # one warning when backend="cuda" finds no mamba-ssm kernel
_GPU_WARNED = False  # one warning when "auto" finds no GPU kernel at all for CUDA tensors
INSTALL_HINT = "pip install 'mamba_ode[cuda]' (builds mamba-ssm's CUDA kernel)"


def _ssd_applies(heads: int, u: Tensor, dt: Tensor, Bg: Tensor, Cg: Tensor) -> bool:
    """True when SSD's matrix form applies: token-varying B and C with the same groups, each holding whole
    heads, and finite inputs (the matrix form multiplies the masked future by 0, which would spread a NaN
    or an infinity to earlier tokens; the recurrence keeps them causal)."""
    if Bg.dim() != 4 or Cg.dim() != 4 or Bg.shape[1] != Cg.shape[1] or heads % Bg.shape[1]:
        return False
    return all(bool(torch.isfinite(t).all()) for t in (u, dt, Bg, Cg))


def _scan_heads(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, head_dim: int,
                last_state: bool) -> tuple[Tensor, Tensor | None]:
    """The scan of scalar-A heads by SSD's matrix form. u, delta (B, E, L); A (E, N); B, C (B, G, N, L).

    Returns y (B, E, L), h (B, E, N) (None unless ``last_state``).
    """
    b, e, length = u.shape
    heads = e // head_dim
    x = u.transpose(1, 2).reshape(b, length, heads, head_dim)
    dt = delta[:, ::head_dim].transpose(1, 2)  # (B, L, H): the first channel of each head
    a = A[::head_dim, 0]  # (H,)
    y, h = ssd_scan(x, dt, a, B.permute(0, 3, 1, 2), C.permute(0, 3, 1, 2), last_state=last_state)
    return y.reshape(b, length, e).transpose(1, 2), None if h is None else h.reshape(b, e, A.shape[1])


def _as_groups(t: Tensor) -> Tensor:
    """(B, N, L) → (B, 1, N, L); (B, G, N, L) and constant (E, N) unchanged."""
    return t.unsqueeze(1) if t.dim() == 3 else t


# ----------------------------------------------------------------------------- reference


def _per_channel(X: Tensor, b: int, e: int, length: int) -> Tensor:
    """(B, G, N, L) or constant (E, N) → (B, E, N, L) (a broadcast view for a constant)."""
    if X.dim() == 2:
        return X[None, :, :, None].expand(b, e, X.shape[1], length)
    return X.repeat_interleave(e // X.shape[1], dim=1)


def _scan_reference(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor) -> tuple[Tensor, Tensor]:
    """Plain recurrence. u, delta (B, E, L); A (E, N); B, C (B, G, N, L) or (E, N).

    Returns y (B, E, L), h (B, E, N).
    """
    b, e, length = u.shape
    Bx = _per_channel(B, b, e, length)  # (B, E, N, L)
    Cx = _per_channel(C, b, e, length)
    h = u.new_zeros(b, e, A.shape[1])
    ys = []
    for t in range(length):
        dA = torch.exp(delta[:, :, t, None] * A)
        h = dA * h + (delta[:, :, t] * u[:, :, t])[:, :, None] * Bx[:, :, :, t]
        ys.append((h * Cx[:, :, :, t]).sum(-1))
    y = torch.stack(ys, dim=-1) if ys else u.new_zeros(b, e, 0)
    return y, h


# ----------------------------------------------------------------------------- fast (chunked)


def _expand_groups(x: Tensor, e: int) -> Tensor:
    """(B, T, G, N) → broadcastable (B, T, E, N) (no copy when G == 1); a constant (E, N) as is."""
    if x.dim() == 2:
        return x
    g = x.shape[2]
    if g == 1:
        return x
    return x.repeat_interleave(e // g, dim=2)


def _tokens(x: Tensor, sl: slice) -> Tensor:
    """The chunk ``sl`` of a (B, L, G, N) B or C; a constant (E, N) one as is."""
    return x if x.dim() == 2 else x[:, sl]


def _chunk_forward(h: Tensor, u: Tensor, dt: Tensor, A: Tensor, Bc: Tensor,
                   work: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor]:
    """Scan one chunk. h (B, E, N) start state; u, dt (B, T, E); A (E, N); Bc (B, T, G, N) or (E, N).

    ``work``: two (B, T', E, N) buffers with T' ≥ T to write hs and dA into (a scan reuses them from
    chunk to chunk: fresh multi-megabyte tensors per chunk cost page faults); None allocates them.

    Returns hs (B, T, E, N) — the states after each token — and dA (B, T, E, N).
    """
    b, t_len, e = u.shape
    if work is None:
        work = (u.new_empty(b, t_len, e, A.shape[1]), u.new_empty(b, t_len, e, A.shape[1]))
    hs, dA = work[0][:, :t_len], work[1][:, :t_len]
    torch.mul(dt.unsqueeze(-1), A, out=dA).exp_()  # (B, T, E, N)
    torch.mul((dt * u).unsqueeze(-1), _expand_groups(Bc, e), out=hs)  # dBu, scanned in place below
    hv, av = hs.unbind(1), dA.unbind(1)  # per-token views made at once: indexing in the loop costs more
    for t in range(len(hv)):
        hv[t].addcmul_(av[t], hv[t - 1] if t else h)
    return hs, dA


def _contract_C(hs: Tensor, Cc: Tensor) -> Tensor:
    """y[b, t, e] = Σ_n hs[b, t, e, n] C[b, t, g(e), n]. hs (B, T, E, N); Cc (B, T, G, N) or (E, N)."""
    if Cc.dim() == 2:
        return torch.einsum("bten,en->bte", hs, Cc)
    b, t, e, n = hs.shape
    g = Cc.shape[2]
    return torch.einsum("btgpn,btgn->btgp", hs.view(b, t, g, e // g, n), Cc).reshape(b, t, e)


def _group_sum(x: Tensor, w: Tensor, like: Tensor) -> Tensor:
    """Σ over the channels of a group (and, for a constant ``like`` (E, N), over batch and tokens).

    x (B, T, E, N), w (B, T, E) → (B, T, G, N) for ``like`` (B, L, G, N), or (E, N).
    """
    if like.dim() == 2:
        return torch.einsum("bten,bte->en", x, w)
    b, t, e, n = x.shape
    g = like.shape[2]
    return torch.einsum("btgpn,btgp->btgn", x.view(b, t, g, e // g, n), w.view(b, t, g, e // g))


def _fast_forward(u: Tensor, dt: Tensor, A: Tensor, Bm: Tensor, Cm: Tensor, chunk: int, *,
                  keep_starts: bool) -> tuple[Tensor, Tensor, Tensor | None]:
    """The chunked forward scan. u, dt (B, L, E); A (E, N); Bm, Cm (B, L, G, N) or (E, N).

    Returns y (B, L, E), the last state (B, E, N) and, with ``keep_starts``, the state before each
    chunk (n_chunks, B, E, N) for the backward pass (else None).
    """
    b, length, e = u.shape
    n = A.shape[1]
    y = u.new_empty(b, length, e)
    h = u.new_zeros(b, e, n)
    starts = range(0, length, chunk)
    h_starts = u.new_empty(len(starts), b, e, n) if keep_starts else None
    width = min(chunk, length)
    work = (u.new_empty(b, width, e, n), u.new_empty(b, width, e, n))
    for i, s in enumerate(starts):
        sl = slice(s, min(s + chunk, length))
        if h_starts is not None:
            h_starts[i] = h
        hs, _ = _chunk_forward(h, u[:, sl], dt[:, sl], A, _tokens(Bm, sl), work)
        y[:, sl] = _contract_C(hs, _tokens(Cm, sl))
        h = hs[:, -1].clone()  # the next chunk overwrites the buffers
    return y, h, h_starts


class _FastScan(torch.autograd.Function):
    """Chunked scan with a recomputing backward pass. Internal layout (B, L, E); B/C (B, L, G, N) or (E, N)."""

    @staticmethod
    def forward(ctx, u, dt, A, Bm, Cm, chunk):  # u, dt (B, L, E); A (E, N); Bm, Cm (B, L, G, N) or (E, N)
        y, h, h_starts = _fast_forward(u, dt, A, Bm, Cm, chunk, keep_starts=True)
        ctx.save_for_backward(u, dt, A, Bm, Cm, h_starts)
        ctx.chunk = chunk
        return y, h

    @staticmethod
    def backward(ctx, gy, gh_last):
        u, dt, A, Bm, Cm, h_starts = ctx.saved_tensors
        chunk = ctx.chunk
        b, length, e = u.shape
        n = A.shape[1]
        gu = torch.zeros_like(u)
        gdt = torch.zeros_like(dt)
        gA = torch.zeros_like(A)
        gB = torch.zeros_like(Bm)
        gC = torch.zeros_like(Cm)
        # carry = dL/dh_{s-1} contributed through the chunk that starts at s (i.e. dA_s * G_s)
        carry = gh_last.clone() if gh_last is not None else u.new_zeros(b, e, n)
        gy = gy if gy is not None else torch.zeros_like(u)
        starts = list(range(0, length, chunk))
        for i in reversed(range(len(starts))):
            s = starts[i]
            sl = slice(s, min(s + chunk, length))
            uc, dtc, Bc, Cc, gyc = u[:, sl], dt[:, sl], _tokens(Bm, sl), _tokens(Cm, sl), gy[:, sl]
            hs, dA = _chunk_forward(h_starts[i], uc, dtc, A, Bc)
            Cx = _expand_groups(Cc, e)
            # G_t = gy_t ⊗ C_t + dA_{t+1} ⊙ G_{t+1}; scanned in place, last step gets the carry
            G = gyc.unsqueeze(-1) * Cx
            G[:, -1].add_(carry)
            gv, av = G.unbind(1), dA.unbind(1)
            for t in range(len(gv) - 2, -1, -1):
                gv[t].addcmul_(av[t + 1], gv[t + 1])
            carry = dA[:, 0] * G[:, 0]
            # h_{t-1} for each t in the chunk
            hprev = torch.cat([h_starts[i].unsqueeze(1), hs[:, :-1]], dim=1)
            # grad through dA = exp(dt A): dL/d(dt A) = G ⊙ h_{t-1} ⊙ dA
            gdA = G * hprev
            gdA.mul_(dA)
            gdt[:, sl] = torch.einsum("bten,en->bte", gdA, A)
            gA += torch.einsum("bten,bte->en", gdA, dtc)
            del gdA, hprev, dA
            # grad through dBu = dt u B
            if Bc.dim() == 2:
                GB = torch.einsum("bten,en->bte", G, Bc)
            elif Bc.shape[2] > 1:
                GB = torch.einsum("bten,bten->bte", G, _expand_groups(Bc, e))
            else:
                GB = torch.einsum("bten,btn->bte", G, Bc[:, :, 0])
            gdt[:, sl] += GB * uc
            gu[:, sl] = GB * dtc
            if Bm.dim() == 2:
                gB += _group_sum(G, dtc * uc, Bm)
            else:
                gB[:, sl] = _group_sum(G, dtc * uc, Bm)
            if Cm.dim() == 2:
                gC += _group_sum(hs, gyc, Cm)
            else:
                gC[:, sl] = _group_sum(hs, gyc, Cm)
        return gu, gdt, gA, gB, gC, None


def _scan_fast(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, chunk: int) -> tuple[Tensor, Tensor]:
    """u, delta (B, E, L); A (E, N); B, C (B, G, N, L) or (E, N) → y (B, E, L), h (B, E, N)."""
    if u.shape[-1] == 0:
        return u.new_zeros(u.shape), u.new_zeros(u.shape[0], u.shape[1], A.shape[1])
    ut = u.transpose(1, 2).contiguous()
    dtt = delta.transpose(1, 2).contiguous()
    Bt = B if B.dim() == 2 else B.permute(0, 3, 1, 2).contiguous()  # (B, L, G, N)
    Ct = C if C.dim() == 2 else C.permute(0, 3, 1, 2).contiguous()
    if torch.is_grad_enabled() and any(t.requires_grad for t in (ut, dtt, A, Bt, Ct)):
        y, h = _FastScan.apply(ut, dtt, A, Bt, Ct, chunk)
    else:  # nothing to differentiate (e.g. a vector field inside a solver): the same forward, no tape
        y, h, _ = _fast_forward(ut, dtt, A, Bt, Ct, chunk, keep_starts=False)
    return y.transpose(1, 2), h


# ----------------------------------------------------------------------------- cuda


def cuda_kernel_available() -> bool:
    """True when mamba-ssm's compiled selective-scan kernel can be imported.

    mamba-ssm is imported lazily here and nowhere at module import time: on a machine without
    CUDA its package init fails, which this function reports as ``False``.

    Returns:
        Whether ``backend="cuda"`` can run mamba-ssm's kernel.
    """
    try:
        from mamba_ssm.ops import selective_scan_interface as ssi  # noqa: PLC0415
    except Exception:  # ImportError, or the CUDA extension failing to load
        return False
    return getattr(ssi, "selective_scan_cuda", None) is not None


def _triton_module() -> ModuleType:
    """``mamba_ode.nn.scan_triton``, imported on first use (it imports the optional triton at its top)."""
    return importlib.import_module("mamba_ode.nn.scan_triton")


def triton_available() -> bool:
    """True when triton imports, so that ``backend="triton"`` can run (on CUDA tensors, or on CPU
    tensors through triton's interpreter when ``TRITON_INTERPRET=1`` was set before the first use).

    Returns:
        Whether the package's Triton kernels can be loaded.
    """
    try:
        _triton_module()
    except Exception:  # ImportError, or a triton install that fails to initialise
        return False
    return True


def _cuda_kernel_accepts(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None,
                         z: Tensor | None, delta_bias: Tensor | None) -> bool:
    """Whether mamba-ssm's kernel takes these arguments as they are (its dtype and group rules)."""
    if u.dtype not in (torch.float32, torch.float16, torch.bfloat16) or delta.dtype != u.dtype:
        return False
    if A.dtype != torch.float32 or A.shape[1] > 256 or (z is not None and z.dtype != u.dtype):
        return False
    if any(t is not None and t.dtype != torch.float32 for t in (D, delta_bias)):
        return False
    if any(X.dtype != (torch.float32 if X.dim() == 2 else u.dtype) for X in (B, C)):
        return False
    groups_b = 1 if B.dim() < 4 else B.shape[1]  # the kernel reads C's groups from B
    if C.dim() == 4 and C.shape[1] != groups_b:
        return False
    tensors = [t for t in (delta, A, B, C, D, z, delta_bias) if t is not None]
    return all(t.device == u.device for t in tensors)


def _scan_cuda(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state):
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn  # noqa: PLC0415

    return selective_scan_fn(u, delta, A, B, C, D=D, z=z, delta_bias=delta_bias,
                             delta_softplus=delta_softplus, return_last_state=return_last_state)


def _warn_no_cuda_kernel(fallback: str) -> None:
    global _CUDA_WARNED
    if not _CUDA_WARNED:
        _CUDA_WARNED = True
        warnings.warn(f"mamba-ssm's CUDA selective-scan kernel is not available; using the {fallback!r} scan "
                      f"instead. To use the kernel: {INSTALL_HINT}", RuntimeWarning, stacklevel=4)


def _warn_no_gpu_kernel() -> None:
    global _GPU_WARNED
    if not _GPU_WARNED:
        _GPU_WARNED = True
        warnings.warn("no GPU selective-scan kernel (neither mamba-ssm's nor triton imports); CUDA tensors are "
                      f"scanned by the PyTorch 'fast' scan. Install triton (pip install triton) or {INSTALL_HINT}",
                      RuntimeWarning, stacklevel=4)


def check_backend(backend: str, device: torch.device | str | None = None) -> None:
    """Raise unless ``backend`` is known and (given a device) can scan tensors on ``device``.

    For checking a setting before any work (a command-line option, an analysis): ``"triton"`` needs triton
    and CUDA tensors, or triton's interpreter (``TRITON_INTERPRET=1``) for CPU tensors. ``"cuda"`` runs
    anywhere (it falls back with one warning, see `selective_scan`).

    Arguments:
        backend: one of ``BACKENDS``.
        device: where the tensors will live; None checks the name only.

    Raises:
        ValueError: for an unknown backend, or ``"triton"`` on a CPU device without the interpreter.
        ImportError: for ``"triton"`` when triton is not installed (with a device given).
    """
    if backend not in BACKENDS:
        raise ValueError(f"selective_scan: unknown backend {backend!r}; choose one of {BACKENDS}")
    if backend != "triton" or device is None:
        return
    if not triton_available():
        raise ImportError("selective_scan: backend='triton' needs triton (pip install triton)")
    if torch.device(device).type != "cuda" and not _triton_module().interpreted():
        raise ValueError(f"selective_scan: backend='triton' needs CUDA tensors, and these are on {device}; on "
                         "the CPU set TRITON_INTERPRET=1 before the first triton scan to run triton's interpreter "
                         "(slow), or use backend='fast'")


def _choose_backend(backend: str, u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None,
                    z: Tensor | None, delta_bias: Tensor | None, return_last_state: bool) -> str:
    """Resolve ``"auto"`` and the fallbacks of ``"cuda"`` (see `selective_scan`)."""
    if backend == "auto":
        if not u.is_cuda:
            return "fast"
        tensors = [t for t in (u, delta, A, B, C, D, z, delta_bias) if t is not None]
        # mamba-ssm's backward ignores a gradient flowing into the last state: not its kernel then
        grad_into_state = return_last_state and torch.is_grad_enabled() and any(t.requires_grad for t in tensors)
        if not grad_into_state and cuda_kernel_available() and _cuda_kernel_accepts(u, delta, A, B, C, D, z,
                                                                                   delta_bias):
            return "cuda"
        if triton_available():
            return "triton"
        _warn_no_gpu_kernel()
        return "fast"
    if backend == "cuda":
        if u.is_cuda and cuda_kernel_available():
            return "cuda"
        fallback = "triton" if u.is_cuda and triton_available() else "fast"
        _warn_no_cuda_kernel(fallback)
        return fallback
    if backend == "triton" and not triton_available():
        raise ImportError("selective_scan: backend='triton' needs triton (pip install triton)")
    return backend


# ----------------------------------------------------------------------------- public


@overload
def selective_scan(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None = ...,
                   z: Tensor | None = ..., delta_bias: Tensor | None = ..., delta_softplus: bool = ...,
                   return_last_state: Literal[False] = ..., backend: str = ..., chunk_size: int = ...,
                   head_dim: int | None = ...) -> Tensor: ...


@overload
def selective_scan(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None = ...,
                   z: Tensor | None = ..., delta_bias: Tensor | None = ..., delta_softplus: bool = ...,
                   *, return_last_state: Literal[True], backend: str = ...,
                   chunk_size: int = ..., head_dim: int | None = ...) -> tuple[Tensor, Tensor]: ...


def selective_scan(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
    backend: str = "auto",
    chunk_size: int = DEFAULT_CHUNK,
    head_dim: int | None = None,
) -> Tensor | tuple[Tensor, Tensor]:
    """Run the selective scan (S6 recurrence), with mamba-ssm's ``selective_scan_fn`` semantics.

    Arguments:
        u: (B, E, L) input tokens of the SSM, one channel per row.
        delta: (B, E, L) step sizes before ``delta_bias`` and softplus.
        A: (E, N) real state matrix (diagonal per channel; negative for a stable scan). A complex
            A (mamba-ssm's complex path) is refused.
        B: (B, N, L) input matrix per token; (B, G, N, L) with G groups dividing E (channel d uses
            group ``d // (E // G)``, like ``repeat_interleave``); or (E, N), constant over batch and
            tokens.
        C: output matrix, of any of the shapes of ``B``, independently of it (variable B with a
            constant C and vice versa; different group counts).
        D: (E,) skip connection, optional.
        z: (B, E, L) gate, optional; the output (after ``D``) is multiplied by ``SiLU(z)``.
        delta_bias: (E,) added to ``delta`` before the softplus, optional.
        delta_softplus: apply softplus to ``delta + delta_bias``.
        return_last_state: also return the state after the last token; a gradient flowing into it
            is propagated by the ``"reference"``, ``"fast"`` and ``"triton"`` backends (mamba-ssm's
            kernel ignores it, so ``"auto"`` avoids that kernel when such a gradient can arise).
        backend: ``"auto"`` — for CUDA tensors mamba-ssm's kernel when importable and it accepts
            the dtypes, else ``"triton"`` when triton imports, else ``"fast"`` (one warning); for
            CPU tensors ``"fast"``. ``"reference"`` (plain recurrence, autograd), ``"fast"``
            (chunked PyTorch scan), ``"triton"`` (Triton kernels, forward and backward; CUDA
            tensors, or CPU tensors through triton's interpreter with ``TRITON_INTERPRET=1``) or
            ``"cuda"`` (mamba-ssm's kernel; without it one warning and ``"triton"`` on CUDA
            tensors, ``"fast"`` otherwise).
        chunk_size: tokens per chunk of the ``"fast"`` backend, and of the ``"triton"`` one
            (rounded up to a power of two, at most 64 and at most 1024 / N there).
        head_dim: Mamba-2's layout, optional: the channels come in heads of ``head_dim`` consecutive
            channels that share their step size (``delta`` and ``delta_bias``) and a scalar A (A
            constant over a head's channels and states). The ``"fast"`` backend then computes the
            scan in the chunked matrix form of SSD (`mamba_ode.nn.scan_ssd`; for token-varying B
            and C whose groups hold whole heads), the other backends the general recurrence; the
            results are equal. A gradient reaching A, ``delta`` or ``delta_bias`` lands on the first
            entry of each head's block (the sum over the block is the same as without ``head_dim``).

    Returns:
        y (B, E, L) in the dtype of ``u``; with ``return_last_state`` the pair
        ``(y, last_state)`` where ``last_state`` is (B, E, N) in the computation dtype: float32,
        or float64 when an input is float64 (mamba-ssm: float32).

    Raises:
        ValueError: on inconsistent shapes (the message names the argument), an unknown backend,
            ``backend="triton"`` on CPU tensors without the interpreter, or a ``head_dim`` that does not
            divide E or whose heads do not share Δ and a scalar A.
        TypeError: when an argument is not a tensor, is complex or not floating (integer tensors would
            truncate y), or ``delta_softplus`` is not a bool (the message names it).
        ImportError: for ``backend="triton"`` when triton is not installed.
    """
    check_backend(backend)
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"selective_scan: argument 'chunk_size' must be a positive int, got {chunk_size!r}")
    check_inputs(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    check_heads(head_dim, delta, A, delta_bias)
    backend = _choose_backend(backend, u, delta, A, B, C, D, z, delta_bias, return_last_state)
    if backend == "cuda":
        return _scan_cuda(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)
    if backend == "triton":
        y, h = _triton_module().selective_scan_triton(u, delta, A, B, C, D, z, delta_bias, delta_softplus,
                                                      chunk_size)
        return (y, h) if return_last_state else y

    y, h = _scan_torch(u, delta, A, B, C, D, z, delta_bias, delta_softplus, backend, chunk_size, head_dim,
                       return_last_state)
    return (y, cast(Tensor, h)) if return_last_state else y  # h is None only without return_last_state


def _scan_torch(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None, z: Tensor | None,
                delta_bias: Tensor | None, delta_softplus: bool, backend: str,
                chunk_size: int, head_dim: int | None = None,
                last_state: bool = True) -> tuple[Tensor, Tensor | None]:
    """The "reference" and "fast" backends around the scan proper: bias, softplus, D, gate, dtypes.

    The last state may be None when ``last_state`` is False (the SSD form then skips it)."""
    # compute in a common float dtype of every tensor argument, at least float32 (mamba-ssm keeps its
    # state in float32), from the bias and the softplus on (as mamba-ssm: delta.float() + delta_bias.float())
    wd = torch.float32
    for t in (u, delta, A, B, C, D, z, delta_bias):
        if t is not None:
            wd = torch.promote_types(wd, t.dtype)
    u_w, dt, A = u.to(wd), delta.to(wd), A.to(wd)
    if delta_bias is not None:
        dt = dt + delta_bias.to(wd)[None, :, None]
    if delta_softplus:
        dt = F.softplus(dt)
    Bg, Cg = _as_groups(B).to(wd), _as_groups(C).to(wd)
    h: Tensor | None
    if backend == "reference":
        y, h = _scan_reference(u_w, dt, A, Bg, Cg)
    elif head_dim is not None and _ssd_applies(u.shape[1] // head_dim, u_w, dt, Bg, Cg):
        y, h = _scan_heads(u_w, dt, A, Bg, Cg, head_dim, last_state)
    else:
        y, h = _scan_fast(u_w, dt, A, Bg, Cg, chunk_size)
    if D is not None:
        y = y + D.to(wd)[None, :, None] * u_w
    if z is not None:
        y = y * F.silu(z.to(wd))
    return y.to(u.dtype), h
