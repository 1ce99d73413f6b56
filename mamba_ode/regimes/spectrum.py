"""Spectra of the input–output matrix from its low-rank factors, and the per-channel 1-D reductions.

* `sym_spectrum` — the spectrum of ``Sym(M) = (M + Mᵀ)/2``, ``M = S_Cᵀ S_B``, from the factors:
  a 2N×2N problem, never E×E.
* `channel_reductions` — per channel d the 1-D system (μ_d, s_d, b_d, a_d), classified by
  token 1's rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .._checks import check_matrix, finite_scalar
from ..nn.params_mamba1 import SSMParams
from .labels import Definiteness

__all__ = ["SymSpectrum", "sym_spectrum", "ChannelReductions", "channel_reductions"]


@dataclass
class SymSpectrum:
    """Spectrum of ``Sym(M) = (S_Cᵀ S_B + S_Bᵀ S_C)/2`` computed from its rank-≤2N factors.

    Attributes:
        eigenvalues: (k,) ascending eigenvalues of the k×k reduced problem, k = min(E, 2N); the other
            E - k eigenvalues of Sym(M) are exactly 0.
        d_inner: E.
        n_pos, n_neg, n_zero: counts over all E eigenvalues (n_zero includes the E - k exact zeros).
        tol: absolute threshold: |λ| ≤ tol counts as zero.
        label: ``"positive semi-definite"``, ``"negative semi-definite"``, ``"indefinite"`` or ``"zero"``.
        definite: True when no eigenvalue is zero (possible only when E ≤ 2N).
        eigenvectors: (E, k) orthonormal eigenvectors of the reduced eigenvalues when requested, else None.
    """

    eigenvalues: Tensor
    d_inner: int
    n_pos: int
    n_neg: int
    n_zero: int
    tol: float
    label: Definiteness
    definite: bool
    eigenvectors: Tensor | None = None

    def full(self) -> Tensor:
        """(E,) all eigenvalues of Sym(M), ascending (the reduced ones plus E - k zeros)."""
        ev = self.eigenvalues
        zeros = torch.zeros(self.d_inner - ev.numel(), dtype=ev.dtype, device=ev.device)
        return torch.sort(torch.cat([ev, zeros])).values

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python summary (eigenvalues as a list)."""
        return {"d_inner": self.d_inner, "n_pos": self.n_pos, "n_neg": self.n_neg, "n_zero": self.n_zero,
                "tol": self.tol, "label": self.label, "definite": self.definite,
                "eigenvalues": self.eigenvalues.tolist()}


def sym_spectrum(S_B: Tensor | SSMParams, S_C: Tensor | None = None, *, rtol: float | None = None,
                 eigenvectors: bool = False) -> SymSpectrum:
    """Eigenvalues of ``Sym(M)``, ``M = S_Cᵀ S_B``, from the low-rank factors — never an E×E eigenproblem.

    With ``F = [S_Bᵀ, S_Cᵀ]`` (E × 2N) and ``J = ½[[0, I], [I, 0]]``, ``Sym(M) = F J Fᵀ``. A reduced QR
    ``F = Q R`` gives ``Sym(M) = Q (R J Rᵀ) Qᵀ`` with orthonormal Q, so the non-zero eigenvalues are
    those of the k×k symmetric matrix ``R J Rᵀ`` (k = min(E, 2N)); the rest are exactly 0.
    Cost O(E·N²).

    Zero threshold: ``tol = rtol · max|λ|`` with the default ``rtol = max(E, 2N) · eps(dtype of the
    factors)`` (the convention of ``numpy.linalg.matrix_rank``); pass a larger ``rtol`` (e.g. 1e-6) to
    treat eigenvalues small relative to the largest as zero. The computation itself runs in float64
    (cheap at this size, and LAPACK's float32 QR is not faster on CPU).

    Arguments:
        S_B: (N, E) input projection, or an `SSMParams` (then ``S_C`` must be omitted).
        S_C: (N, E) output projection.
        rtol: relative zero tolerance (see above), ≥ 0.
        eigenvectors: also return the (E, k) eigenvectors ``Q V``.

    Returns:
        A `SymSpectrum` (float64 eigenvalues and eigenvectors).

    Raises:
        TypeError: for non-tensor or non-floating factors.
        ValueError: for shapes other than two equal (N, E), NaN/inf entries, or a negative rtol.
    """
    if isinstance(S_B, SSMParams):
        if S_C is not None:
            raise ValueError("sym_spectrum: pass either an SSMParams or the two factors 'S_B' and 'S_C'")
        S_B, S_C = S_B.io_factors()[0]
    check_matrix(S_B, "S_B")
    if S_C is None:
        raise TypeError("sym_spectrum: argument 'S_C' is required with a tensor 'S_B'")
    check_matrix(S_C, "S_C")
    if S_B.shape != S_C.shape:
        raise ValueError(f"arguments 'S_B' and 'S_C' must have the same shape (N, E), "
                         f"got {tuple(S_B.shape)} and {tuple(S_C.shape)}")
    if rtol is not None:
        rtol = finite_scalar(rtol, "rtol")
        if rtol < 0:
            raise ValueError(f"argument 'rtol' must be ≥ 0, got {rtol}")
    in_dtype = S_B.dtype
    S_B = S_B.detach().to(torch.float64)
    S_C = S_C.detach().to(torch.float64)
    n, e = S_B.shape
    F = torch.cat([S_B.transpose(0, 1), S_C.transpose(0, 1)], dim=1)  # (E, 2N)
    Q, R = torch.linalg.qr(F, mode="reduced")  # (E, k), (k, 2N)
    Rb, Rc = R[:, :n], R[:, n:]
    small = 0.5 * (Rb @ Rc.transpose(0, 1) + Rc @ Rb.transpose(0, 1))  # R J Rᵀ, (k, k)
    if eigenvectors:
        ev, V = torch.linalg.eigh(small)
        vecs = Q @ V
    else:
        ev = torch.linalg.eigvalsh(small)
        vecs = None
    scale = float(ev.abs().max()) if ev.numel() else 0.0
    r = rtol if rtol is not None else max(e, 2 * n) * torch.finfo(in_dtype).eps
    tol = r * scale
    n_pos = int((ev > tol).sum())
    n_neg = int((ev < -tol).sum())
    n_zero = e - n_pos - n_neg
    return SymSpectrum(eigenvalues=ev, d_inner=e, n_pos=n_pos, n_neg=n_neg, n_zero=n_zero, tol=tol,
                       label=Definiteness.of_counts(n_pos, n_neg), definite=n_zero == 0 and e > 0, eigenvectors=vecs)


@dataclass
class ChannelReductions:
    """The per-channel 1-D reductions of one layer and their token-1 regimes.

    Attributes:
        mu: (E,) μ_d = M[d, d] = Σ_n S_C[n, d] S_B[n, d].
        s: (E,) s_d = S_Δ[d, d].
        b: (E,) b_d = b_Δ[d].
        a: (E, N) a_d = -A[d, :] (N decay rates per channel).
        regimes: (E,) int codes: -1 convergent (μ_d < -tol), 0 static (|μ_d| ≤ tol), +1 divergent (μ_d > tol).
        fast_both_signs: (E,) bool, divergent channels with |s_d| ≤ tol_s: finite-time blow-up of
            token 1 whatever its sign (otherwise the blow-up is fast for sign(u) = sign(s_d), slow for the other).
        kernel_sign_definite: (E,) bool, channels whose products S_C[n,d] S_B[n,d] all share one sign, so
            ``g_d(τ) = Σ_n S_C[n,d] S_B[n,d] e^{-a_dn τ}`` never changes sign and the one-dimensional later-token
            rules apply; elsewhere only the token-1 rule (sign of μ_d) is a theorem.
        tol, tol_s: absolute zero thresholds used for μ_d and s_d.
    """

    mu: Tensor
    s: Tensor
    b: Tensor
    a: Tensor
    regimes: Tensor
    fast_both_signs: Tensor
    kernel_sign_definite: Tensor
    tol: float
    tol_s: float

    def fractions(self) -> dict[str, float]:
        """Fractions of channels: convergent, static, divergent, divergent fast for both signs,
        and channels with a sign-definite kernel."""
        e = max(self.mu.numel(), 1)
        return {"frac_convergent": float((self.regimes == -1).sum()) / e,
                "frac_static": float((self.regimes == 0).sum()) / e,
                "frac_divergent": float((self.regimes == 1).sum()) / e,
                "frac_divergent_fast_both_signs": float(((self.regimes == 1) & self.fast_both_signs).sum()) / e,
                "frac_kernel_sign_definite": float(self.kernel_sign_definite.sum()) / e}


def channel_reductions(params: SSMParams, *, rtol: float = 1e-6) -> ChannelReductions:
    """Per-channel 1-D reductions (μ_d, s_d, b_d, a_d) of a layer, classified by token 1's rule.

    Arguments:
        params: the layer's `SSMParams`.
        rtol: μ_d with ``|μ_d| ≤ rtol·max_d|μ_d|`` counts as 0 (static); likewise for s_d (fast for both signs).

    Returns:
        A `ChannelReductions` (float64 tensors).

    Raises:
        TypeError: if params is not an `SSMParams`.
        ValueError: for NaN/inf parameters or a negative rtol.
    """
    if not isinstance(params, SSMParams):
        raise TypeError(f"argument 'params' must be an SSMParams, got {type(params).__name__}")
    rtol = finite_scalar(rtol, "rtol")
    if rtol < 0:
        raise ValueError(f"argument 'rtol' must be ≥ 0, got {rtol}")
    p = params.detach().to(dtype=torch.float64)
    for name in ("S_B", "S_C", "W_x", "W_dt", "delta_bias", "A"):
        if not torch.isfinite(getattr(p, name)).all():
            raise ValueError(f"argument 'params' has NaN or infinite entries in {name}")
    prod = p.S_C * p.S_B  # (N, E)
    mu = prod.sum(0)
    s = p.diag_S_delta()
    tol = rtol * float(mu.abs().max()) if mu.numel() else 0.0
    tol_s = rtol * float(s.abs().max()) if s.numel() else 0.0
    regimes = torch.where(mu > tol, 1, torch.where(mu < -tol, -1, 0))
    sign_def = (prod >= 0).all(0) | (prod <= 0).all(0)
    return ChannelReductions(mu=mu, s=s, b=p.delta_bias.clone(), a=-p.A, regimes=regimes,
                             fast_both_signs=s.abs() <= tol_s, kernel_sign_definite=sign_def, tol=tol, tol_s=tol_s)
