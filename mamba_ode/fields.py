"""Vector fields of the continuous-time token dynamics (SPEC §3–5).

A field is a callable ``f(t, u)`` mapping a time and a batch of token sequences to their time
derivative, batched over sequences: tokens are (B, L, E) for the S6 fields, (B, L, 1) for the
one-dimensional system and (B, L, Dm) residual states for the depth-time field of a network.
Every field is a :class:`torch.nn.Module`, counts its evaluations in ``nfev`` and lists the
times where it jumps (``jump_times``) so that solvers can land on them. Nothing here knows
about solvers (:mod:`mamba_ode.solve`) — data flows one way.

* :class:`S6Field` — the paper's idealised dynamics ``du/dt = S6_θ(u)`` of one layer's
  parameters, evaluated through the shared scan (:meth:`SSMParams.s6`), O(B·L·E·N).
* :class:`MatrixS6Field` and :func:`hidden_attention` — the same field written as
  ``Σ_{j≤l} P_lj u_j`` with the explicit "hidden attention" P (B, L, L, E), O(B·L²·E·N):
  for teaching, plotting and as a test oracle. It does not use the scan on purpose.
* :class:`OneDimField` — the E = 1 system of SPEC §5 from scalars (μ, s_Δ, b_Δ, a), or from
  N decay rates with per-state S_B, S_C (:meth:`OneDimField.from_states`).
* :class:`DepthField` — the depth-time field of a whole network in the residual space,
  ``dx/dt = F_{floor(t)}(x)`` with ``F_k = Mixer_k ∘ Norm_k`` on t ∈ [0, K), with switches to
  drop norm, conv or gate and a weight-tied mode.

Shape letters as in :mod:`mamba_ode.shapes`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .params import SSMParams

if TYPE_CHECKING:  # pragma: no cover
    from .model import MambaLM

__all__ = [
    "VectorField",
    "S6Field",
    "MatrixS6Field",
    "OneDimField",
    "DepthField",
    "hidden_attention",
    "matrix_s6",
]


def _time_float(t: float | Tensor) -> float:
    """A scalar time as a Python float (accepts floats and 0-dim / one-element tensors)."""
    if isinstance(t, Tensor):
        if t.numel() != 1:
            raise ValueError(f"argument 't' must be a scalar time, got a tensor of shape {tuple(t.shape)}")
        return float(t.reshape(()).item())
    return float(t)


def _check_tokens(u: Tensor, width: int, name: str = "u", what: str = "E") -> None:
    """Raise ValueError unless u is a floating (B, L, width) tensor with B, L ≥ 1."""
    if not isinstance(u, Tensor):
        raise TypeError(f"argument {name!r} must be a torch.Tensor, got {type(u).__name__}")
    if u.dim() != 3 or u.shape[-1] != width:
        raise ValueError(f"argument {name!r} must have shape (B, L, {what}) with {what}={width}, got {tuple(u.shape)}")
    if u.shape[0] == 0 or u.shape[1] == 0:
        raise ValueError(f"argument {name!r} is empty (shape {tuple(u.shape)}): need at least one sequence and token")
    if not u.is_floating_point():
        raise ValueError(f"argument {name!r} must be a floating tensor, got {u.dtype}")


class VectorField(nn.Module):
    """Base class of the fields: ``forward(t, u)`` plus an evaluation counter.

    Attributes:
        nfev: number of evaluations since construction or :meth:`reset_nfev`.
        jump_times: times where the field is discontinuous in t (empty for autonomous fields).
    """

    def __init__(self) -> None:
        super().__init__()
        self.nfev = 0

    @property
    def jump_times(self) -> tuple[float, ...]:
        """Times of discontinuities in t (none by default)."""
        return ()

    def reset_nfev(self) -> None:
        """Set the evaluation counter to zero."""
        self.nfev = 0


# ============================================================================ S6 field (scan form)


class S6Field(VectorField):
    """The idealised S6 dynamics of one layer: ``du/dt = S6_θ(u)`` (SPEC §4).

    ``S6_θ(u)_l = Σ_{j≤l} P_lj(u) u_j (+ D ⊙ u_l)`` with the hidden attention of SPEC §3,
    evaluated through the shared selective scan (:meth:`SSMParams.s6`, no gate, no convolution,
    no normalisation). The field is autonomous: ``t`` is ignored.

    Arguments:
        params: the layer's :class:`SSMParams` (E channels, N states).
        use_D: include the ``D ⊙ u`` skip term (off by default, as in the paper).
        backend: scan backend, see :func:`mamba_ode.selective_scan`.

    Raises:
        TypeError: if params is not an :class:`SSMParams`.
        ValueError: for an unknown backend.
    """

    def __init__(self, params: SSMParams, *, use_D: bool = False, backend: str = "auto") -> None:
        super().__init__()
        if not isinstance(params, SSMParams):
            raise TypeError(f"argument 'params' must be an SSMParams, got {type(params).__name__}")
        from .scan import BACKENDS  # noqa: PLC0415

        if backend not in BACKENDS:
            raise ValueError(f"argument 'backend' must be one of {BACKENDS}, got {backend!r}")
        self.params = params
        self.use_D = bool(use_D)
        self.backend = backend
        self._cast: dict[tuple, SSMParams] = {}

    # ------------------------------------------------------------------ constructors

    @classmethod
    def from_layer(cls, model: MambaLM, k: int, *, use_D: bool = False, backend: str = "auto",
                   detach: bool = True) -> S6Field:
        """The idealised field of layer k of a loaded model ("the ODE from pretrained weights").

        Arguments:
            model: a :class:`mamba_ode.MambaLM` (what :func:`mamba_ode.load` returns).
            k: layer index in [0, K) (negative indices count from the end).
            use_D: include the D term.
            backend: scan backend.
            detach: take a copy of the weights cut from the autograd graph (a snapshot); False keeps
                differentiable views of the model's parameters.

        Returns:
            An :class:`S6Field` with E = d_inner, N = d_state.

        Raises:
            ValueError: if k is out of range.
            TypeError: if model has no ``layers``.
        """
        layers = getattr(model, "layers", None)
        if layers is None:
            raise TypeError(f"argument 'model' must be a MambaLM (with .layers), got {type(model).__name__}")
        k = _layer_index(k, len(layers), "k")
        params = layers[k].ssm
        if detach:  # a copy: later changes to the model's weights do not move the field
            params = SSMParams(**{name: getattr(params, name).detach().clone() for name in params.__dataclass_fields__})
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
        """The parameters cast to u's dtype and device (cached)."""
        p = self.params
        if p.A.dtype == u.dtype and p.A.device == u.device:
            return p
        key = (u.dtype, u.device)
        if key not in self._cast:
            self._cast[key] = p.to(device=u.device, dtype=u.dtype)
        return self._cast[key]

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
        _check_tokens(u, self.d_inner)
        self.nfev += 1
        return self.params_like(u).s6(u, None, use_D=self.use_D, backend=self.backend)

    def hidden_attention(self, u: Tensor) -> Tensor:
        """P (B, L, L, E) at tokens u (B, L, E); see :func:`hidden_attention`."""
        _check_tokens(u, self.d_inner)
        return hidden_attention(self.params_like(u), u)

    def matrix_form(self, *, block: int = 64) -> MatrixS6Field:
        """The same field in explicit matrix form ``Σ_j P_lj u_j`` (O(L²); teaching and tests)."""
        return MatrixS6Field(self.params, use_D=self.use_D, block=block)

    def extra_repr(self) -> str:
        return f"E={self.d_inner}, N={self.d_state}, use_D={self.use_D}, backend={self.backend!r}"


# ============================================================================ matrix form


def _selective(params: SSMParams, u: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Δ (B, L, E), B (B, L, N), C (B, L, N) for tokens u (B, L, E)."""
    pre, Bm, Cm = params.selective_inputs(u)
    return F.softplus(pre + params.delta_bias), Bm, Cm


def _attention_rows(delta: Tensor, cs: Tensor, Bm: Tensor, Cm: Tensor, A: Tensor, rows: slice,
                    cols: int) -> Tensor:
    """Rows ``rows`` of P restricted to columns [0, cols): (B, |rows|, cols, E).

    delta, cs (B, L, E) with cs the inclusive cumulative sum of delta; Bm, Cm (B, L, N); A (E, N).
    """
    li = torch.arange(rows.start, rows.stop, device=delta.device)
    ji = torch.arange(cols, device=delta.device)
    causal = (ji[None, :] <= li[:, None])  # (lb, cols)
    # Σ_{k=j+1..l} Δ_k = cs_l - cs_j (zero on the diagonal), set to 0 above the diagonal before exp
    seg = cs[:, rows, None, :] - cs[:, None, :cols, :]  # (B, lb, cols, E)
    seg = torch.where(causal[None, :, :, None], seg, torch.zeros((), dtype=seg.dtype, device=seg.device))
    cb = Cm[:, rows, None, :] * Bm[:, None, :cols, :]  # (B, lb, cols, N)
    out = torch.zeros_like(seg)
    for n in range(A.shape[1]):
        out += cb[..., n, None] * torch.exp(seg * A[:, n])
    out *= delta[:, None, :cols, :]
    return out * causal[None, :, :, None]


def hidden_attention(params: SSMParams, u: Tensor) -> Tensor:
    """The hidden-attention matrix P of the S6 layer at tokens u (SPEC §3), materialised.

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
    _check_tokens(u, params.d_inner)
    delta, Bm, Cm = _selective(params, u)
    cs = torch.cumsum(delta, dim=1)
    length = u.shape[1]
    return _attention_rows(delta, cs, Bm, Cm, params.A, slice(0, length), length)


def matrix_s6(params: SSMParams, u: Tensor, *, use_D: bool = False, block: int = 64) -> Tensor:
    """``Σ_{j≤l} P_lj u_j (+ D ⊙ u_l)`` computed from the explicit matrix P, in blocks of rows.

    The O(L²) counterpart of :meth:`SSMParams.s6` (which scans in O(L)); memory O(B·block·L·E).

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
    _check_tokens(u, params.d_inner)
    if not isinstance(block, int) or block < 1:
        raise ValueError(f"argument 'block' must be a positive int, got {block!r}")
    delta, Bm, Cm = _selective(params, u)
    cs = torch.cumsum(delta, dim=1)
    length = u.shape[1]
    y = torch.empty_like(u)
    for r0 in range(0, length, block):
        r1 = min(r0 + block, length)
        P = _attention_rows(delta, cs, Bm, Cm, params.A, slice(r0, r1), r1)  # (B, lb, r1, E)
        y[:, r0:r1] = torch.einsum("bljd,bjd->bld", P, u[:, :r1])
    if use_D:
        y = y + params.D * u
    return y


class MatrixS6Field(S6Field):
    """The S6 field in explicit matrix form ``du_l/dt = Σ_{j≤l} P_lj(u) u_j`` (O(L²)).

    Same parameters and semantics as :class:`S6Field`, computed from the hidden attention P
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
        _check_tokens(u, self.d_inner)
        self.nfev += 1
        return matrix_s6(self.params_like(u), u, use_D=self.use_D, block=self.block)

    def scan_form(self) -> S6Field:
        """The same field evaluated through the scan."""
        return S6Field(self.params, use_D=self.use_D)

    def extra_repr(self) -> str:
        return f"E={self.d_inner}, N={self.d_state}, use_D={self.use_D}, block={self.block}"


# ============================================================================ one dimension


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
    """The one-dimensional S6 system of SPEC §5 (E = 1), tokens (B, L, 1).

    ``du_l/dt = u_l Σ_{j≤l} u_j² Δ(u_j) g(Σ_{k=j+1..l} Δ(u_k))`` with ``Δ(u) = softplus(s u + b)``
    and ``g(τ) = Σ_n S_C[n] S_B[n] exp(-a_n τ)``; with one state ``g(τ) = μ exp(-a τ)``. It is an
    :class:`S6Field` with E = 1, so it is evaluated through the shared scan.

    Arguments:
        mu: μ = S_Cᵀ S_B (scalar).
        s_delta: s = S_Δ (scalar).
        a: decay rate a ≥ 0 (A = -a), a scalar; for N rates use :meth:`from_states`.
        b_delta: Δ bias b_Δ.
        dtype: dtype of the parameters (float64 by default; inputs of another dtype are cast to).
        backend: scan backend.

    Raises:
        ValueError: for non-finite values, a < 0, or a vector ``a`` (use :meth:`from_states`).
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
            A :class:`OneDimField` with ``g(τ) = Σ_n S_C[n] S_B[n] e^{-a_n τ}``, μ = g(0).

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
        """μ = g(0) = Σ_n S_C[n] S_B[n]: its sign decides token 1's fate (SPEC §5)."""
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
        _check_tokens(u, 1, what="1")
        self.nfev += 1
        return self.params_like(u).s6(u, None, use_D=False, backend=self.backend)

    def extra_repr(self) -> str:
        return (f"mu={self.mu:.6g}, s_delta={self.s_delta:.6g}, a={self.a.tolist()}, "
                f"b_delta={self.b_delta:.6g}")


# ============================================================================ depth-time field


def _layer_index(k: int, n_layer: int, name: str) -> int:
    if isinstance(k, bool) or not isinstance(k, int):
        raise ValueError(f"argument {name!r} must be an int layer index, got {k!r}")
    if not -n_layer <= k < n_layer:
        raise ValueError(f"argument {name!r}: layer {k} outside [0, {n_layer})")
    return k % n_layer


class DepthField(VectorField):
    """The depth-time field of a network: ``dx/dt = F_{k(t)}(x)``, ``F_k = Mixer_k ∘ Norm_k``.

    ``k(t) = floor(t)`` clamped to [0, K-1], so t ∈ [0, K] (SPEC §4). Explicit Euler with step 1
    from ``x(0) = model.embed(ids)`` reproduces the network's residual stream x^0..x^K. The field
    jumps at t = 1..K-1 (listed in :attr:`jump_times`); at an integer t it uses layer t.

    Arguments:
        model: a :class:`mamba_ode.MambaLM` (what :func:`mamba_ode.load` returns).
        norm: apply each layer's norm (False: ablation).
        conv: apply the causal convolution (False: identity in its place).
        gate: multiply by SiLU(z) (False: no gate).
        tied_layer: use this one layer for all t (weight-tied mode), or None.
        backend: scan backend.

    Raises:
        ValueError: if tied_layer is out of range.
        TypeError: if model has no ``layers``.
    """

    def __init__(self, model: MambaLM, *, norm: bool = True, conv: bool = True, gate: bool = True,
                 tied_layer: int | None = None, backend: str = "auto") -> None:
        super().__init__()
        layers = getattr(model, "layers", None)
        if layers is None:
            raise TypeError(f"argument 'model' must be a MambaLM (with .layers), got {type(model).__name__}")
        self.model = model
        self.norm, self.conv, self.gate = bool(norm), bool(conv), bool(gate)
        self.tied_layer = None if tied_layer is None else _layer_index(tied_layer, len(layers), "tied_layer")
        self.backend = backend

    @property
    def n_layers(self) -> int:
        """K."""
        return len(self.model.layers)

    @property
    def d_model(self) -> int:
        """Dm."""
        return self.model.config.d_model

    @property
    def t_span(self) -> tuple[float, float]:
        """(0, K): the depth interval of the network."""
        return (0.0, float(self.n_layers))

    @property
    def jump_times(self) -> tuple[float, ...]:
        """1, …, K-1 (none in the weight-tied mode)."""
        if self.tied_layer is not None:
            return ()
        return tuple(float(k) for k in range(1, self.n_layers))

    def layer_at(self, t: float | Tensor) -> int:
        """The layer index k(t) = clamp(floor(t), 0, K-1) (or the tied layer)."""
        if self.tied_layer is not None:
            return self.tied_layer
        tf = _time_float(t)
        if not math.isfinite(tf):
            raise ValueError(f"argument 't' must be finite, got {tf}")
        return min(max(math.floor(tf), 0), self.n_layers - 1)

    def initial_state(self, input_ids: Tensor) -> Tensor:
        """x(0) = embedding of (B, L) token ids, (B, L, Dm)."""
        return self.model.embed(input_ids)

    def forward(self, t: float | Tensor, x: Tensor) -> Tensor:
        """dx/dt = F_{k(t)}(x).

        Arguments:
            t: depth time.
            x: (B, L, Dm) residual states, in the model's dtype.

        Returns:
            (B, L, Dm).

        Raises:
            ValueError: for a wrong shape or dtype of x.
        """
        _check_tokens(x, self.d_model, name="x", what="Dm")
        wdt = self.model.layers[0].mixer.in_proj.weight.dtype
        if x.dtype != wdt:
            raise ValueError(f"argument 'x' has dtype {x.dtype} but the model is {wdt}; "
                             f"load the model with dtype={x.dtype} or cast x")
        self.nfev += 1
        block = self.model.layers[self.layer_at(t)]
        return block.update(x, norm=self.norm, conv=self.conv, gate=self.gate, backend=self.backend)

    def extra_repr(self) -> str:
        return (f"K={self.n_layers}, norm={self.norm}, conv={self.conv}, gate={self.gate}, "
                f"tied_layer={self.tied_layer}")
