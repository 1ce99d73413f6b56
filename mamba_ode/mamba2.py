"""The discrete Mamba-2 network (SPEC §8): SSD mixer per head, per-head parameters, token-mixing matrix, regimes.

Module names mirror transformers' ``Mamba2ForCausalLM`` (``backbone.embeddings``,
``backbone.layers.{k}.norm``, ``backbone.layers.{k}.mixer.{in_proj, conv1d, dt_bias, A_log, D, norm,
out_proj}``, ``backbone.norm_f``, ``lm_head``), so ``state_dict()`` is a checkpoint in the
transformers layout.

One Mamba-2 layer, for normalised residual states ``h`` (B, L, Dm)::

    [z, x, B, C, dt] = in_proj(h)                 z, x: E;  B, C: G·N;  dt: H
    [x, B, C] = SiLU(causal_conv1d([x, B, C]))
    Δ^h_l = clamp(softplus(dt^h_l + dt_bias_h), dt_limit)          one step size per head
    s^h_l = exp(-a_h Δ^h_l) s^h_{l-1} + Δ^h_l x^h_l ⊗ B^g_l         (P×N state, A_h = -a_h scalar)
    y^h_l = s^h_l C^g_l + D_h x^h_l                                  g = group of head h
    out = out_proj(GatedRMSNorm(y, z))             y ⊙ SiLU(z), RMS-normalised per group of E/G channels

The scan is the project's one :func:`mamba_ode.scan.selective_scan`: a head of size P with scalar
``A_h`` is P Mamba-1 channels with ``A[d, :] = A_h`` and ``Δ^d = Δ^h`` for each channel d of the head,
and B/C passed grouped, (B, G, N, L).

Because A is scalar per head, SPEC §3's token-mixing matrix is exact per head:
``y^h_l = Σ_{j≤l} P^h_lj x^h_j + D_h x^h_l`` with
``P^h_lj = (C^g_l · B^g_j) Δ^h_j exp(-a_h Σ_{k=j+1..l} Δ^h_k)`` (:meth:`Mamba2Params.token_mixing_matrix`).
Unlike Mamba-1, B and C do not come from the SSM input x but from ``in_proj`` of the mixer input h,
through the convolution. The input–output matrix of group g is therefore defined on the mixer
input (the normalised residual state that ``in_proj`` feeds to the convolution) with the
convolution, the SiLU and the ``in_proj`` bias set aside: ``B^g_j ≈ S_B^g h_j``, ``C^g_l ≈ S_C^g h_l``,
``M_g = S_C^gᵀ S_B^g`` (Dm×Dm, rank ≤ N). Every spectrum reported here is of that matrix.

Shapes (see :mod:`mamba_ode.shapes`): B batch, L tokens, Dm model width, E = H·P inner width,
H heads, P head size, G groups, N state size, K layers.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .checkpoints import Checkpoint
from .config import Mamba2Config
from .fields import VectorField, _check_tokens, _layer_index
from .model import MambaBlock, MambaLM, RMSNorm
from .regimes import RegimeTable, sym_spectrum
from .scan import selective_scan

__all__ = ["Mamba2LM", "Mamba2Block", "Mamba2Mixer", "Mamba2Params", "Mamba2Internals", "GatedRMSNorm",
           "Mamba2Field", "HeadRegime", "Mamba2RegimeTable", "head_regime_table"]


# ----------------------------------------------------------------------------- parameters


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
        """The SSD recurrence per head, through :func:`mamba_ode.scan.selective_scan`.

        Arguments:
            u: (B, L, E) SSM input x (heads of P channels side by side).
            delta: (B, L, H) step sizes Δ (already softplus-ed and clamped, see :meth:`delta`).
            B: (B, L, G, N) input matrices per group.
            C: (B, L, G, N) output matrices per group.
            use_D: add the skip ``D_h x^h_l``.
            backend: scan backend (see :func:`mamba_ode.selective_scan`).

        Returns:
            (B, L, E) y in the dtype of u (computed in at least float32).

        Raises:
            ValueError: on inconsistent shapes, naming the argument.
        """
        self._check_ssd(u, delta, B, C)
        p = self.head_dim
        y = selective_scan(u.transpose(1, 2), delta.repeat_interleave(p, dim=-1).transpose(1, 2), self.channel_A(),
                           B.permute(0, 2, 3, 1), C.permute(0, 2, 3, 1),
                           D=self.D.repeat_interleave(p) if use_D else None, backend=backend)
        return y.transpose(1, 2)

    def token_mixing_matrix(self, delta: Tensor, B: Tensor, C: Tensor) -> Tensor:
        """The per-head scalar-A token-mixing matrix (SPEC §3, §8) — O(L²·H): for teaching and tests.

        ``P^h_lj = (C^g_l · B^g_j) Δ^h_j exp(-a_h Σ_{k=j+1..l} Δ^h_k)`` for j ≤ l (0 above the
        diagonal), g the group of head h; then ``y^h_l = Σ_j P^h_lj x^h_j + D_h x^h_l`` equals
        :meth:`ssd`. B and C are the conv outputs (they come from ``in_proj`` of the mixer input,
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
        cum = torch.cumsum(delta, dim=1).transpose(1, 2)  # (B, H, L): Σ_{k≤l} Δ_k
        seg = cum[:, :, :, None] - cum[:, :, None, :]  # Σ_{k=j+1..l} Δ_k
        causal = torch.ones(length, length, dtype=torch.bool, device=delta.device).tril()
        decay = torch.exp(self.A.to(delta.dtype)[None, :, None, None] * seg.masked_fill(~causal, 0.0))
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


class GatedRMSNorm(nn.Module):
    """Gated RMSNorm of Mamba-2: ``w ⊙ RMSNorm_group(y ⊙ SiLU(z))``, normalised per group of E/G channels.

    Computed in at least float32 (as transformers and mamba-ssm do).
    """

    def __init__(self, d: int, group_size: int, eps: float = 1e-5):
        super().__init__()
        if d % group_size:
            raise ValueError(f"GatedRMSNorm: group_size {group_size} does not divide width {d}")
        self.weight = nn.Parameter(torch.ones(d))
        self.group_size = group_size
        self.eps = eps

    def forward(self, y: Tensor, z: Tensor | None = None) -> Tensor:
        """y, z (..., E) → (..., E) in the dtype of y (no gate when z is None)."""
        dtype = y.dtype
        wd = torch.promote_types(dtype, torch.float32)
        v = y.to(wd)
        if z is not None:
            v = v * F.silu(z.to(wd))
        g = v.view(*v.shape[:-1], -1, self.group_size)
        g = g * torch.rsqrt(g.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * g.view(v.shape).to(dtype)


# ----------------------------------------------------------------------------- modules


class Mamba2Mixer(nn.Module):
    """The Mamba-2 mixer: in_proj → causal conv over xBC → SiLU → SSD per head → gated RMSNorm → out_proj."""

    def __init__(self, config: Mamba2Config):
        super().__init__()
        dm, e, h, kc = config.d_model, config.d_inner, config.n_heads, config.d_conv
        self.d_inner, self.n_heads, self.head_dim = e, h, config.headdim
        self.n_groups, self.d_state, self.d_conv = config.ngroups, config.d_state, kc
        self.dt_limit = config.dt_limit
        self.conv_dim = config.conv_dim
        self.in_proj = nn.Linear(dm, config.in_proj_dim, bias=config.proj_bias)
        self.conv1d = nn.Conv1d(self.conv_dim, self.conv_dim, kc, groups=self.conv_dim, padding=kc - 1,
                                bias=config.conv_bias)
        self.dt_bias = nn.Parameter(torch.full((h,), math.log(math.expm1(0.01))))
        self.A_log = nn.Parameter(torch.log(torch.arange(1, h + 1, dtype=torch.float32)))
        self.D = nn.Parameter(torch.ones(h))
        self.norm = GatedRMSNorm(e, e // config.ngroups, config.mixer_norm_eps)
        self.out_proj = nn.Linear(e, dm, bias=config.proj_bias)

    @property
    def ssm(self) -> Mamba2Params:
        """This layer's per-head parameters (differentiable views of the weights)."""
        e, gn, h = self.d_inner, self.n_groups * self.d_state, self.n_heads
        w = self.in_proj.weight
        dm = w.shape[1]
        return Mamba2Params(S_z=w[:e], S_x=w[e:2 * e],
                            S_B=w[2 * e:2 * e + gn].view(self.n_groups, self.d_state, dm),
                            S_C=w[2 * e + gn:2 * e + 2 * gn].view(self.n_groups, self.d_state, dm),
                            S_dt=w[2 * e + 2 * gn:2 * e + 2 * gn + h], A=-torch.exp(self.A_log),
                            dt_bias=self.dt_bias, D=self.D, head_dim=self.head_dim, dt_limit=self.dt_limit)

    def ssm_inputs(self, h: Tensor, *, conv: bool = True) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """The SSD inputs for (normalised) residual states.

        Arguments:
            h: (B, L, Dm).
            conv: apply the causal depthwise convolution (False: identity in its place; SiLU kept).

        Returns:
            ``(u, B, C, dt, z)``: u (B, L, E), B and C (B, L, G, N), raw dt (B, L, H), z (B, L, E).
        """
        b, length, _ = h.shape
        e, gn = self.d_inner, self.n_groups * self.d_state
        z, xbc, dt = self.in_proj(h).split([e, self.conv_dim, self.n_heads], dim=-1)
        if conv:
            xbc = self.conv1d(xbc.transpose(1, 2))[..., :length].transpose(1, 2)
        xbc = F.silu(xbc)
        u, Bm, Cm = xbc.split([e, gn, gn], dim=-1)
        shape = (b, length, self.n_groups, self.d_state)
        return u, Bm.reshape(shape), Cm.reshape(shape), dt, z

    def forward(self, h: Tensor, *, conv: bool = True, gate: bool = True, use_D: bool = True,
                return_internals: bool = False, backend: str = "auto") -> Tensor | tuple[Tensor, Mamba2Internals]:
        """Mixer output for (normalised) residual states.

        Arguments:
            h: (B, L, Dm).
            conv: keep the causal convolution.
            gate: multiply by SiLU(z) inside the gated norm.
            use_D: keep the D skip term.
            return_internals: also return the :class:`Mamba2Internals`.
            backend: scan backend.

        Returns:
            (B, L, Dm), and :class:`Mamba2Internals` when asked.
        """
        u, Bm, Cm, dt, z = self.ssm_inputs(h, conv=conv)
        p = self.ssm
        delta = p.delta(dt)
        y = p.ssd(u, delta, Bm, Cm, use_D=use_D, backend=backend)
        out = self.out_proj(self.norm(y, z if gate else None).to(h.dtype))
        if return_internals:
            return out, Mamba2Internals(u=u, delta=delta, B=Bm, C=Cm, y=y, z=z if gate else None)
        return out


class Mamba2Block(nn.Module):
    """One residual layer: ``x + Mixer(RMSNorm(x))``."""

    def __init__(self, config: Mamba2Config, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.residual_in_fp32 = config.residual_in_fp32
        self.norm = RMSNorm(config.d_model, config.norm_eps)
        self.mixer = Mamba2Mixer(config)

    @property
    def ssm(self) -> Mamba2Params:
        """This layer's per-head parameters."""
        return self.mixer.ssm

    # The residual update F_k = Mixer_k ∘ Norm_k and the residual step do not depend on the mixer:
    # share Mamba-1's (internals are :class:`Mamba2Internals` here).
    update = MambaBlock.update
    forward = MambaBlock.forward


class _Backbone2(nn.Module):
    def __init__(self, config: Mamba2Config):
        super().__init__()
        self.embeddings = nn.Embedding(config.vocab_size, config.d_model)
        self.layers = nn.ModuleList(Mamba2Block(config, k) for k in range(config.n_layer))
        self.norm_f = RMSNorm(config.d_model, config.norm_eps)


class Mamba2LM(nn.Module):
    """A Mamba-2 language model (the discrete network of SPEC §2 with the mixer of §8).

    The same user API as :class:`mamba_ode.MambaLM` (``forward`` → :class:`mamba_ode.MambaOutput`
    with x^0..x^K, ``embed``, ``head``, ``encode``, ``token_states``, ``save_pretrained``); the
    internals are :class:`Mamba2Internals` and ``layers[k].ssm`` is a :class:`Mamba2Params`.

    Attributes:
        config: the :class:`mamba_ode.config.Mamba2Config`.
        layers: the K :class:`Mamba2Block` modules.
        checkpoint: where it was loaded from (None when built directly).
        tokenizer: a tokenizer with ``encode``/``decode`` when the checkpoint ships one, else None.
    """

    #: Lets code that handles both generations dispatch without importing this module.
    is_mamba2 = True

    def __init__(self, config: Mamba2Config):
        super().__init__()
        if not isinstance(config, Mamba2Config):
            raise TypeError(f"Mamba2LM: argument 'config' must be a Mamba2Config, got {type(config).__name__}")
        self.config = config
        self.backbone = _Backbone2(config)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.backbone.embeddings.weight
        self.checkpoint: Checkpoint | None = None
        self.tokenizer = None

    @property
    def layers(self) -> nn.ModuleList:
        """The K residual blocks."""
        return self.backbone.layers

    # The network-level methods do not depend on the mixer: share Mamba-1's.
    embed = MambaLM.embed
    head = MambaLM.head
    forward = MambaLM.forward
    encode = MambaLM.encode

    @torch.no_grad()
    def token_states(self, prompt: str | list[int] | Tensor, k: int) -> Tensor:
        """The tokens h (B, L, Dm) entering layer k's mixer for a prompt: ``Norm_k(x^k)``.

        These are the states :class:`Mamba2Field` of layer k acts on (its tokens live in the mixer input
        space, where the per-group input–output matrices are defined), unlike Mamba-1's
        :meth:`mamba_ode.MambaLM.token_states`, which returns the (B, L, E) SSM input.

        Arguments:
            prompt: text, ids, or an id tensor, as for :meth:`encode`.
            k: layer index in [0, K) (negative indices count from the end).

        Returns:
            (B, L, Dm) tensor in the model's dtype.

        Raises:
            ValueError: for a bad prompt or layer index.
        """
        K = self.config.n_layer
        if isinstance(k, bool) or not isinstance(k, int) or not -K <= k < K:
            raise ValueError(f"argument 'k' must be a layer index in [{-K}, {K}), got {k!r}")
        k %= K
        hs = self.forward(self.encode(prompt), output_hidden_states=True).hidden_states
        return self.layers[k].norm(hs[k])

    save_pretrained = MambaLM.save_pretrained


# ----------------------------------------------------------------------------- idealised field


class Mamba2Field(VectorField):
    """The idealised dynamics of one Mamba-2 layer in its input space: ``dh/dt = W_out SSD_θ(h)``.

    The analogue of :class:`mamba_ode.S6Field` (SPEC §4) for Mamba-2: norm, convolution, SiLU and gate are
    dropped, one layer's parameters are shared across depth, and tokens ``h_l ∈ R^Dm`` (the mixer input)
    evolve by ``x = S_x h``, ``B^g = S_B^g h``, ``C^g = S_C^g h``, ``Δ = clamp(softplus(S_dt h + dt_bias))``
    and the SSD scan per head (:meth:`Mamba2Params.ssd`), mapped back by ``out_proj``. Written with the
    per-head token-mixing matrix: ``dh_l/dt = Σ_h W_out^h Σ_{j≤l} P^h_lj(h) S_x^h h_j`` where
    ``C^g_l · B^g_j = h_lᵀ M_g h_j`` with ``M_g = S_C^gᵀ S_B^g`` — the input–output matrix of the regime
    table. The field is autonomous: ``t`` is ignored. The ``in_proj``/``out_proj`` biases are set aside.

    Arguments:
        params: the layer's :class:`Mamba2Params`.
        out_proj: (Dm, E) the layer's ``out_proj.weight``.
        use_D: include the ``D_h x^h`` skip (off by default, as in the paper).
        backend: scan backend.

    Raises:
        TypeError: if params is not a :class:`Mamba2Params`.
        ValueError: if out_proj is not (Dm, E) for the params.
    """

    def __init__(self, params: Mamba2Params, out_proj: Tensor, *, use_D: bool = False, backend: str = "auto"):
        super().__init__()
        if not isinstance(params, Mamba2Params):
            raise TypeError(f"argument 'params' must be a Mamba2Params, got {type(params).__name__}")
        dm = params.S_x.shape[1]
        if not isinstance(out_proj, Tensor) or tuple(out_proj.shape) != (dm, params.d_inner):
            shape = tuple(out_proj.shape) if isinstance(out_proj, Tensor) else type(out_proj).__name__
            raise ValueError(f"argument 'out_proj' must have shape (Dm, E) = ({dm}, {params.d_inner}), got {shape}")
        self.params, self.out_proj = params, out_proj
        self.use_D, self.backend = bool(use_D), backend

    @classmethod
    def from_layer(cls, model: Any, k: int, *, use_D: bool = False, backend: str = "auto",
                   detach: bool = True) -> Mamba2Field:
        """The idealised field of layer k of a :class:`Mamba2LM`.

        Arguments:
            model: a :class:`Mamba2LM`.
            k: layer index in [0, K) (negative counts from the end).
            use_D: include the D term.
            backend: scan backend.
            detach: snapshot the weights (cut from autograd); False keeps differentiable views.

        Returns:
            A :class:`Mamba2Field` on tokens (B, L, Dm).

        Raises:
            TypeError: if model is not a Mamba-2 model.
            ValueError: if k is out of range.
        """
        if not getattr(model, "is_mamba2", False):
            raise TypeError(f"argument 'model' must be a Mamba2LM, got {type(model).__name__}")
        k = _layer_index(k, len(model.layers), "k")
        mixer = model.layers[k].mixer
        params, w = mixer.ssm, mixer.out_proj.weight
        if detach:
            params = Mamba2Params(**{n: (v.detach().clone() if isinstance(v, Tensor) else v)
                                     for n, v in vars(params).items()})
            w = w.detach().clone()
        return cls(params, w, use_D=use_D, backend=backend)

    @property
    def d_model(self) -> int:
        """Dm, the width of the tokens."""
        return self.out_proj.shape[0]

    def selective(self, h: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(x, Δ, B, C)`` for tokens h (B, L, Dm): x (B, L, E), Δ (B, L, H), B and C (B, L, G, N)."""
        p = self.params
        b, length, dm = h.shape
        x = h @ p.S_x.to(h.dtype).T
        Bm = (h @ p.S_B.reshape(-1, dm).to(h.dtype).T).view(b, length, p.n_groups, p.d_state)
        Cm = (h @ p.S_C.reshape(-1, dm).to(h.dtype).T).view(b, length, p.n_groups, p.d_state)
        return x, p.delta(h @ p.S_dt.to(h.dtype).T), Bm, Cm

    def forward(self, t: float | Tensor, h: Tensor) -> Tensor:
        """dh/dt at tokens h (B, L, Dm) → (B, L, Dm).

        Raises:
            ValueError: if h is not (B, L, Dm) or empty.
        """
        _check_tokens(h, self.d_model, name="h", what="Dm")
        self.nfev += 1
        x, delta, Bm, Cm = self.selective(h)
        y = self.params.ssd(x, delta, Bm, Cm, use_D=self.use_D, backend=self.backend)
        return y @ self.out_proj.to(y.dtype).T

    def matrix_form(self, h: Tensor) -> Tensor:
        """The same field through the explicit per-head matrix P (O(L²); teaching and tests): (B, L, Dm)."""
        _check_tokens(h, self.d_model, name="h", what="Dm")
        p = self.params
        x, delta, Bm, Cm = self.selective(h)
        b, length, _ = h.shape
        P = p.token_mixing_matrix(delta, Bm, Cm)  # (B, H, L, L)
        xh = x.view(b, length, p.n_heads, p.head_dim).transpose(1, 2)  # (B, H, L, P)
        y = P @ xh
        if self.use_D:
            y = y + p.D.to(y.dtype)[None, :, None, None] * xh
        return y.transpose(1, 2).reshape(b, length, -1) @ self.out_proj.to(y.dtype).T

    def extra_repr(self) -> str:
        p = self.params
        return (f"Dm={self.d_model}, H={p.n_heads}, P={p.head_dim}, G={p.n_groups}, N={p.d_state}, "
                f"use_D={self.use_D}, backend={self.backend!r}")


# ----------------------------------------------------------------------------- regimes per head


@dataclass
class HeadRegime:
    """One (layer, head) row of the Mamba-2 regime table.

    The spectrum is that of ``Sym(M_g)``, ``M_g = S_C^gᵀ S_B^g`` (Dm×Dm, rank ≤ N) of the head's group g,
    defined on the mixer input with the convolution, SiLU and ``in_proj`` bias set aside (SPEC §8).
    Heads of one group share it; they differ in decay ``a``, Δ bias and D. Since A is scalar per head, the
    head's memory kernel ``(C·B) e^{-a τ}`` never changes sign along τ: its sign is that of the quadratic
    form ``hᵀ M_g h`` — ``sign`` is ``"+"`` (positive semi-definite: self-interaction can only amplify),
    ``"-"`` (negative semi-definite: only damp), ``"±"`` (indefinite: depends on the token) or ``"0"``.

    Attributes:
        layer, head, group: indices.
        d_model, d_state: Dm (the width M_g acts on), N.
        n_pos, n_neg, n_zero: eigenvalue counts of Sym(M_g) over all Dm eigenvalues.
        label: definiteness label (see :func:`mamba_ode.sym_spectrum`).
        sign: ``"+"``, ``"-"``, ``"±"`` or ``"0"``.
        eig_max, eig_min: extreme eigenvalues of Sym(M_g) (zeros included when Dm > 2N).
        a: decay rate ``a_h = exp(A_log_h)``.
        dt_bias: Δ bias of the head.
        delta0: ``Δ`` at zero raw step (``clamp(softplus(dt_bias))``).
        D: skip of the head.
        seconds: time to compute the row (shared spectrum counted once per group).
        eigenvalues: the ≤ 2N eigenvalues of the group's reduced problem, ascending (the others are 0).
    """

    layer: int
    head: int
    group: int
    d_model: int
    d_state: int
    n_pos: int
    n_neg: int
    n_zero: int
    label: str
    sign: str
    eig_max: float
    eig_min: float
    a: float
    dt_bias: float
    delta0: float
    D: float
    seconds: float = 0.0
    eigenvalues: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The record as a plain dict."""
        return asdict(self)


_SIGNS = {"positive semi-definite": "+", "negative semi-definite": "-", "indefinite": "±", "zero": "0"}


class Mamba2RegimeTable(RegimeTable):
    """A list of :class:`HeadRegime` records, one per layer and head (``to_dicts``, ``to_dataframe``)."""

    def __str__(self) -> str:
        head = (f"{'layer':>5} {'head':>4} {'grp':>3} {'Dm':>5} {'N':>3} {'+':>4} {'-':>4} {'0':>5} {'sign':>4} "
                f"{'a':>9} {'delta0':>9}")
        rows = [head]
        for r in self:
            rows.append(f"{r.layer:>5} {r.head:>4} {r.group:>3} {r.d_model:>5} {r.d_state:>3} {r.n_pos:>4} "
                        f"{r.n_neg:>4} {r.n_zero:>5} {r.sign:>4} {r.a:>9.4g} {r.delta0:>9.4g}")
        return "\n".join(rows)


def head_regime_table(model: Any, *, rtol: float | None = None) -> Mamba2RegimeTable:
    """The regime record of every layer and head of a Mamba-2 model.

    Arguments:
        model: a :class:`Mamba2LM` (anything with ``.layers[k].ssm`` giving :class:`Mamba2Params`), or an
            iterable of :class:`Mamba2Params`.
        rtol: zero tolerance of the spectra (see :func:`mamba_ode.sym_spectrum`).

    Returns:
        A :class:`Mamba2RegimeTable` with K·H rows, ordered by layer then head.

    Raises:
        TypeError: for anything that does not give :class:`Mamba2Params`.
        ValueError: for NaN/inf parameters, naming the layer.
    """
    layers = getattr(model, "layers", None)
    params_list = [blk.ssm for blk in layers] if layers is not None else list(model)
    table = Mamba2RegimeTable()
    with torch.no_grad():
        for k, p in enumerate(params_list):
            if not isinstance(p, Mamba2Params):
                raise TypeError(f"argument 'model': layer {k} gives {type(p).__name__}, not Mamba2Params")
            S_B, S_C = p.S_B.detach().double(), p.S_C.detach().double()
            if not (torch.isfinite(S_B).all() and torch.isfinite(S_C).all()):
                raise ValueError(f"argument 'model' (layer {k}) has NaN or infinite entries in S_B/S_C")
            specs = []
            for g in range(p.n_groups):
                t0 = time.perf_counter()
                spec = sym_spectrum(S_B[g], S_C[g], rtol=rtol)
                ev = spec.eigenvalues
                e_max = float(ev.max()) if ev.numel() else 0.0
                e_min = float(ev.min()) if ev.numel() else 0.0
                if spec.d_inner > ev.numel():
                    e_max, e_min = max(e_max, 0.0), min(e_min, 0.0)
                specs.append((spec, e_max, e_min, time.perf_counter() - t0))
            groups = p.group_of_head().tolist()
            delta0 = p.delta(torch.zeros_like(p.dt_bias.detach()).double()[None]).squeeze(0)
            for h in range(p.n_heads):
                spec, e_max, e_min, secs = specs[groups[h]]
                table.append(HeadRegime(
                    layer=k, head=h, group=groups[h], d_model=spec.d_inner, d_state=p.d_state, n_pos=spec.n_pos,
                    n_neg=spec.n_neg, n_zero=spec.n_zero, label=spec.label, sign=_SIGNS[spec.label],
                    eig_max=e_max, eig_min=e_min, a=float(p.a[h]), dt_bias=float(p.dt_bias[h]),
                    delta0=float(delta0[h]), D=float(p.D[h]), seconds=secs,
                    eigenvalues=spec.eigenvalues.tolist()))
    return table
