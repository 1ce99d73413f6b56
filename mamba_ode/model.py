"""The discrete Mamba-1 network: embedding, residual blocks, norms, logits — and its S6 internals.

Module names mirror transformers' ``MambaForCausalLM`` (``backbone.embeddings``,
``backbone.layers.{k}.norm``, ``backbone.layers.{k}.mixer.{in_proj, conv1d, x_proj, dt_proj,
A_log, D, out_proj}``, ``backbone.norm_f``, ``lm_head``), so ``state_dict()`` is a checkpoint in
the transformers layout. The selective SSM runs through :meth:`SSMParams.s6`, i.e. the shared
:func:`mamba_ode.selective_scan`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .checkpoints import Checkpoint, read_checkpoint
from .config import Mamba2Config, MambaConfig
from .params import S6Internals, SSMParams

if TYPE_CHECKING:
    from .mamba2 import Mamba2LM

__all__ = ["MambaLM", "MambaBlock", "MambaMixer", "RMSNorm", "MambaOutput", "load"]


class RMSNorm(nn.Module):
    """RMSNorm: ``w ⊙ x / sqrt(mean(x²) + eps)``, computed in at least float32 (as transformers)."""

    def __init__(self, d: int, eps: float = 1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        """x (..., Dm) → (..., Dm)."""
        dtype = x.dtype
        xf = x.to(torch.promote_types(dtype, torch.float32))
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * xf.to(dtype)


def make_norm(config: MambaConfig) -> nn.Module:
    """RMSNorm or LayerNorm (with bias) of width Dm, as the config says."""
    if config.rms_norm:
        return RMSNorm(config.d_model, config.norm_eps)
    return nn.LayerNorm(config.d_model, eps=config.norm_eps)


class MambaMixer(nn.Module):
    """The Mamba-1 mixer: in_proj → causal conv → SiLU → S6 → gate → out_proj."""

    def __init__(self, config: MambaConfig):
        super().__init__()
        dm, e, n, r, kc = config.d_model, config.d_inner, config.d_state, config.dt_rank, config.d_conv
        self.d_inner, self.d_state, self.dt_rank, self.d_conv = e, n, r, kc
        self.in_proj = nn.Linear(dm, 2 * e, bias=config.proj_bias)
        self.conv1d = nn.Conv1d(e, e, kc, groups=e, padding=kc - 1, bias=config.conv_bias)
        self.x_proj = nn.Linear(e, r + 2 * n, bias=False)
        self.dt_proj = nn.Linear(r, e, bias=True)
        self.A_log = nn.Parameter(torch.log(torch.arange(1, n + 1, dtype=torch.float32)).repeat(e, 1))
        self.D = nn.Parameter(torch.ones(e))
        self.out_proj = nn.Linear(e, dm, bias=config.proj_bias)

    @property
    def ssm(self) -> SSMParams:
        """This layer's selective-SSM parameters (differentiable views of the weights)."""
        return SSMParams.from_weights(self.x_proj.weight, self.dt_proj.weight, self.dt_proj.bias,
                                      self.A_log, self.D)

    def ssm_input(self, x: Tensor, *, conv: bool = True) -> tuple[Tensor, Tensor]:
        """The SSM input u and gate input z for (normalised) residual states.

        Arguments:
            x: (B, L, Dm).
            conv: apply the causal depthwise convolution (False: identity in its place; SiLU kept).

        Returns:
            ``(u, z)``, both (B, L, E).
        """
        xz = self.in_proj(x)
        xi, z = xz.chunk(2, dim=-1)
        if conv:
            length = x.shape[1]
            xi = self.conv1d(xi.transpose(1, 2))[..., :length].transpose(1, 2)
        return F.silu(xi), z

    def forward(self, x: Tensor, *, conv: bool = True, gate: bool = True, use_D: bool = True,
                return_internals: bool = False, backend: str = "auto") -> Tensor | tuple[Tensor, S6Internals]:
        """Mixer output for (normalised) residual states.

        Arguments:
            x: (B, L, Dm).
            conv: keep the causal convolution.
            gate: multiply by SiLU(z).
            use_D: keep the D skip term.
            return_internals: also return the S6 internals.
            backend: scan backend.

        Returns:
            (B, L, Dm), and :class:`S6Internals` when asked.
        """
        u, z = self.ssm_input(x, conv=conv)
        y, internals = self.ssm.s6(u, z if gate else None, use_D=use_D, backend=backend, return_internals=True)
        out = self.out_proj(y)
        return (out, internals) if return_internals else out


class MambaBlock(nn.Module):
    """One residual layer: ``x + Mixer(Norm(x))``."""

    def __init__(self, config: MambaConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.residual_in_fp32 = config.residual_in_fp32
        self.norm = make_norm(config)
        self.mixer = MambaMixer(config)

    @property
    def ssm(self) -> SSMParams:
        """This layer's selective-SSM parameters (S_B, S_C, A, D, delta_bias, S_delta…)."""
        return self.mixer.ssm

    def update(self, x: Tensor, *, norm: bool = True, conv: bool = True, gate: bool = True,
               return_internals: bool = False, backend: str = "auto"):
        """The residual update ``F_k(x) = Mixer_k(Norm_k(x))`` (no residual added).

        Arguments:
            x: (B, L, Dm) residual states.
            norm, conv, gate: keep the norm / convolution / gate (ablation switches).
            return_internals: also return the S6 internals.
            backend: scan backend.

        Returns:
            (B, L, Dm), and :class:`S6Internals` when asked.
        """
        x = x.to(self.norm.weight.dtype)  # a float32 residual stream of a half-precision model
        h = self.norm(x) if norm else x
        return self.mixer(h, conv=conv, gate=gate, return_internals=return_internals, backend=backend)

    def forward(self, x: Tensor, *, return_internals: bool = False, backend: str = "auto"):
        """x (B, L, Dm) → x + F_k(x) (B, L, Dm), and the internals when asked."""
        res = x
        if self.residual_in_fp32 and x.dtype in (torch.float16, torch.bfloat16):
            res = x.float()
        out = self.update(x, return_internals=return_internals, backend=backend)
        if return_internals:
            return res + out[0], out[1]
        return res + out


@dataclass
class MambaOutput:
    """Output of :meth:`MambaLM.forward`.

    Attributes:
        logits: (B, L, V).
        hidden_states: K+1 tensors (B, L, Dm): x^0 (embedding) … x^K (un-normalised), or None.
        last_hidden_state: (B, L, Dm) Norm_f(x^K).
        internals: layer index → :class:`S6Internals` for the layers asked for.
    """

    logits: Tensor
    last_hidden_state: Tensor
    hidden_states: tuple[Tensor, ...] | None = None
    internals: dict[int, S6Internals] = field(default_factory=dict)


class _Backbone(nn.Module):
    def __init__(self, config: MambaConfig):
        super().__init__()
        self.embeddings = nn.Embedding(config.vocab_size, config.d_model)
        self.layers = nn.ModuleList(MambaBlock(config, k) for k in range(config.n_layer))
        self.norm_f = make_norm(config)


class MambaLM(nn.Module):
    """A Mamba-1 language model (the discrete network of SPEC §2).

    Attributes:
        config: the :class:`MambaConfig`.
        layers: the K :class:`MambaBlock` modules (``model.layers[k].ssm`` gives SSM parameters).
        checkpoint: where it was loaded from (None when built directly).
        tokenizer: a tokenizer with ``encode``/``decode`` when the checkpoint ships one, else None.
    """

    def __init__(self, config: MambaConfig):
        super().__init__()
        self.config = config
        self.backbone = _Backbone(config)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.backbone.embeddings.weight
        self.checkpoint: Checkpoint | None = None
        self.tokenizer = None

    @property
    def layers(self) -> nn.ModuleList:
        """The K residual blocks."""
        return self.backbone.layers

    def embed(self, input_ids: Tensor) -> Tensor:
        """(B, L) token ids → x^0 (B, L, Dm).

        Raises:
            ValueError: for ids outside [0, V) or a wrong shape.
        """
        if not isinstance(input_ids, Tensor) or input_ids.dtype not in (torch.int64, torch.int32):
            raise TypeError("argument 'input_ids' must be an integer tensor (B, L)")
        if input_ids.dim() == 1:
            input_ids = input_ids.unsqueeze(0)
        if input_ids.dim() != 2:
            raise ValueError(f"argument 'input_ids' must be (B, L), got shape {tuple(input_ids.shape)}")
        if input_ids.numel() and (input_ids.min() < 0 or input_ids.max() >= self.config.vocab_size):
            raise ValueError(f"argument 'input_ids' has ids outside [0, {self.config.vocab_size})")
        return self.backbone.embeddings(input_ids)

    def head(self, x: Tensor) -> Tensor:
        """x^K (B, L, Dm) → logits (B, L, V) = lm_head(Norm_f(x^K))."""
        return self.lm_head(self.backbone.norm_f(x).to(self.lm_head.weight.dtype))

    def forward(self, input_ids: Tensor, *, output_hidden_states: bool = False,
                internals: bool | list[int] | tuple[int, ...] = (), backend: str = "auto") -> MambaOutput:
        """Run the network.

        Arguments:
            input_ids: (B, L) (or (L,)) token ids.
            output_hidden_states: return x^0..x^K (un-normalised residual stream).
            internals: layer indices whose S6 internals to return (True: all).
            backend: scan backend.

        Returns:
            :class:`MambaOutput`.

        Raises:
            ValueError: for bad ids or layer indices.
        """
        want = set(range(self.config.n_layer)) if internals is True else set(internals or ())
        bad = [k for k in want if not 0 <= k < self.config.n_layer]
        if bad:
            raise ValueError(f"argument 'internals': layer index {bad[0]} outside [0, {self.config.n_layer})")
        x = self.embed(input_ids)
        hs = [x] if output_hidden_states else None
        got: dict[int, S6Internals] = {}
        for k, block in enumerate(self.layers):
            if k in want:
                x, got[k] = block(x, return_internals=True, backend=backend)
            else:
                x = block(x, backend=backend)
            if hs is not None:
                hs.append(x)
        last = self.backbone.norm_f(x)
        logits = self.lm_head(last.to(self.lm_head.weight.dtype))
        return MambaOutput(logits=logits, last_hidden_state=last,
                           hidden_states=tuple(hs) if hs is not None else None, internals=got)

    def encode(self, prompt: str | list[int] | Tensor) -> Tensor:
        """Token ids (1, L) (or (B, L)) for a prompt: text through ``self.tokenizer``, or ids as given.

        Arguments:
            prompt: a string (needs a tokenizer), a list of ids, or an integer tensor (L,) / (B, L).

        Returns:
            (B, L) int64 ids on the model's device.

        Raises:
            ValueError: for text without a tokenizer, an empty prompt, or ids outside [0, V).
            TypeError: for any other prompt type.
        """
        device = self.lm_head.weight.device
        if isinstance(prompt, str):
            if self.tokenizer is None:
                raise ValueError("argument 'prompt' is text but this model has no tokenizer; pass token ids")
            prompt = list(self.tokenizer.encode(prompt))
        if isinstance(prompt, (list, tuple)):
            if not all(isinstance(i, int) for i in prompt):
                raise TypeError("argument 'prompt' as a list must hold ints (token ids)")
            prompt = torch.tensor(prompt, dtype=torch.int64)
        if not isinstance(prompt, Tensor):
            raise TypeError(f"argument 'prompt' must be a str, a list of ids or a tensor, got {type(prompt).__name__}")
        ids = prompt.unsqueeze(0) if prompt.dim() == 1 else prompt
        if ids.numel() == 0:
            raise ValueError("argument 'prompt' is empty: need at least one token")
        if ids.dtype not in (torch.int64, torch.int32) or ids.dim() != 2:
            raise ValueError(f"argument 'prompt' must be integer ids of shape (L,) or (B, L), got {ids.dtype} "
                             f"{tuple(ids.shape)}")
        if ids.min() < 0 or ids.max() >= self.config.vocab_size:
            raise ValueError(f"argument 'prompt' has ids outside [0, {self.config.vocab_size})")
        return ids.to(device=device, dtype=torch.int64)

    @torch.no_grad()
    def token_states(self, prompt: str | list[int] | Tensor, k: int) -> Tensor:
        """The tokens u (B, L, E) entering layer k's selective SSM for a prompt (the S6 input).

        These are the "real token states" the idealised field of layer k is started from:
        ``SiLU(conv(in_proj(Norm_k(x^k))))`` of the discrete network.

        Arguments:
            prompt: text, ids, or an id tensor, as for :meth:`encode`.
            k: layer index in [0, K) (negative counts from the end).

        Returns:
            (B, L, E) tensor in the model's dtype.

        Raises:
            ValueError: for a bad prompt or layer index.
        """
        K = self.config.n_layer
        if not isinstance(k, int) or not -K <= k < K:
            raise ValueError(f"argument 'k' must be a layer index in [{-K}, {K}), got {k!r}")
        k %= K
        out = self.forward(self.encode(prompt), internals=[k])
        return out.internals[k].u

    def save_pretrained(self, directory: str | os.PathLike, layout: str = "hf", extra_config: dict | None = None):
        """Write the model as a checkpoint (transformers ``model.safetensors`` or native ``.bin``).

        Returns:
            The directory (a :class:`pathlib.Path`).
        """
        from .checkpoints import write_checkpoint  # noqa: PLC0415

        return write_checkpoint(directory, self.config, self.state_dict(), layout=layout, extra_config=extra_config)


def load(source: str | os.PathLike | None = None, *, dtype: torch.dtype = torch.float32,
         device: str | torch.device = "cpu") -> MambaLM | Mamba2LM:
    """Load a pretrained Mamba model.

    Arguments:
        source: a checkpoint directory (mamba-ssm native or transformers layout), a Hugging Face
            Hub id (``"state-spaces/mamba-130m-hf"``; local cache first, works offline when
            cached), a shipped model name, or None for the shipped default.
        dtype: floating dtype of the parameters.
        device: where to put them.

    Returns:
        A :class:`MambaLM` in eval mode — or a :class:`mamba_ode.mamba2.Mamba2LM` for a Mamba-2
        checkpoint — with ``.config``, ``.checkpoint`` and (for shipped models) ``.tokenizer``.

    Raises:
        FileNotFoundError: missing directory, config or weights; uncached Hub id while offline.
        ValueError: unknown layout, bad config field, missing/unexpected key, wrong shape or
            non-finite weight — naming the file and the key or field.
        TypeError: if dtype is not a floating torch dtype.
    """
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"load: argument 'dtype' must be a floating torch.dtype, got {dtype!r}")
    config, state, info = read_checkpoint(source)
    if isinstance(config, Mamba2Config):
        from .mamba2 import Mamba2LM  # noqa: PLC0415  (mamba2 imports this module)

        model = Mamba2LM(config)
    else:
        model = MambaLM(config)
    if config.tie_embeddings:
        state = dict(state, **{"lm_head.weight": state["backbone.embeddings.weight"]})
    model.load_state_dict(state, strict=True)
    model.to(device=device, dtype=dtype).eval()
    model.checkpoint = info
    from .tokenizer import tokenizer_for  # noqa: PLC0415

    model.tokenizer = tokenizer_for(info.directory)
    return model
