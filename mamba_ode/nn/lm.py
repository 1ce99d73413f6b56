"""The language models of both generations behind one base class: embedding, blocks, final norm, logits.

Module names mirror transformers' ``MambaForCausalLM`` / ``Mamba2ForCausalLM`` (``backbone.embeddings``,
``backbone.layers.{k}.norm``, ``backbone.layers.{k}.mixer.*``, ``backbone.norm_f``, ``lm_head``), so
``state_dict()`` is a checkpoint in the transformers layout.

Every LM answers the same small interface, which is all the dynamics and the analysis use:

* ``layer_params(k)`` — layer k's parameters in the paper's notation (`SSMParams` for Mamba-1,
  `Mamba2Params` for Mamba-2; both give ``token_width``, ``io_factors()``, ``quadratic_form(u)``
  and ``mixing_matrix(u)``);
* ``field_starts(ids, layers)`` / ``token_states(prompt, k)`` — the tokens the idealised field of a
  layer starts from for a prompt (the S6 input u for Mamba-1, the mixer input for Mamba-2);
* ``embed``, ``head``, ``forward``, ``encode``, ``save_pretrained``.

Shape letters as in `mamba_ode.shapes`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, cast

import torch
from torch import Tensor, nn

from .._checks import layer_index
from ..io.checkpoints import Checkpoint, write_checkpoint, write_refinements
from ..io.config import AnyConfig, Mamba2Config, MambaConfig
from .block import Block, LayerParams
from .mixer_mamba1 import MambaMixer
from .mixer_mamba2 import Mamba2Mixer
from .norms import make_norm
from .refine import refinement_record

__all__ = ["MambaLMBase", "MambaLM", "Mamba2LM", "MambaOutput"]


@dataclass
class MambaOutput:
    """Output of `MambaLMBase.forward`.

    Attributes:
        logits: (B, L, V).
        hidden_states: K+1 tensors (B, L, Dm): x^0 (embedding) … x^K (un-normalised), or None.
        last_hidden_state: (B, L, Dm) Norm_f(x^K).
        internals: layer index → the mixer's internals (``S6Internals`` or ``Mamba2Internals``) for the
            layers asked for.
    """

    logits: Tensor
    last_hidden_state: Tensor
    hidden_states: tuple[Tensor, ...] | None = None
    internals: dict[int, Any] = field(default_factory=dict)


class _Backbone(nn.Module):
    def __init__(self, config: AnyConfig, mixer_cls: type[nn.Module]):
        super().__init__()
        self.embeddings = nn.Embedding(config.vocab_size, config.d_model)
        self.layers = nn.ModuleList(Block(config, k, mixer_cls) for k in range(config.n_layer))
        self.norm_f = make_norm(config)


class MambaLMBase(nn.Module):
    """A Mamba language model (the discrete network: ``x^{k+1} = x^k + Mixer_k(Norm_k(x^k))``).

    Subclasses set the config class and the mixer class of their generation.

    Attributes:
        config: the model's config.
        layers: the K `Block` modules (``layers[k].ssm`` gives the parameters).
        checkpoint: where it was loaded from (None when built directly).
        tokenizer: a tokenizer with ``encode``/``decode`` when the checkpoint ships one, else None.

    Raises:
        TypeError: if ``config`` is not of the generation's config class.
    """

    config_cls: ClassVar[type[MambaConfig] | type[Mamba2Config]] = MambaConfig
    mixer_cls: ClassVar[type[nn.Module]] = MambaMixer
    #: The name of the generation in summaries and reports.
    architecture: ClassVar[str] = "mamba"

    def __init__(self, config: AnyConfig):
        super().__init__()
        if not isinstance(config, self.config_cls):
            raise TypeError(f"{type(self).__name__}: argument 'config' must be a {self.config_cls.__name__}, "
                            f"got {type(config).__name__}")
        self.config: AnyConfig = config
        self.backbone = _Backbone(config, self.mixer_cls)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.backbone.embeddings.weight
        self.checkpoint: Checkpoint | None = None
        self.tokenizer: Any = None

    @property
    def layers(self) -> Sequence[Block]:
        """The K residual blocks (an ``nn.ModuleList``)."""
        return cast(Sequence[Block], self.backbone.layers)

    def embed(self, input_ids: Tensor) -> Tensor:
        """(B, L) token ids → x^0 (B, L, Dm).

        Arguments:
            input_ids: (B, L) (or (L,)) int64/int32 token ids, B, L ≥ 1.

        Returns:
            The embeddings x^0.

        Raises:
            TypeError: for anything but an integer tensor.
            ValueError: for ids outside [0, V), a wrong shape, or an empty batch or sequence.
        """
        if not isinstance(input_ids, Tensor) or input_ids.dtype not in (torch.int64, torch.int32):
            raise TypeError("argument 'input_ids' must be an integer tensor (B, L)")
        if input_ids.dim() == 1:
            input_ids = input_ids.unsqueeze(0)
        if input_ids.dim() != 2:
            raise ValueError(f"argument 'input_ids' must be (B, L), got shape {tuple(input_ids.shape)}")
        if input_ids.numel() == 0:
            raise ValueError(f"argument 'input_ids' is empty (shape {tuple(input_ids.shape)}): need at least one "
                             "sequence and one token")
        if input_ids.min() < 0 or input_ids.max() >= self.config.vocab_size:
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
            `MambaOutput`.

        Raises:
            ValueError: for bad ids or layer indices.
        """
        want = set(range(self.config.n_layer)) if internals is True else set(internals or ())
        bad = [k for k in want if not 0 <= k < self.config.n_layer]
        if bad:
            raise ValueError(f"argument 'internals': layer index {bad[0]} outside [0, {self.config.n_layer})")
        x = self.embed(input_ids)
        hs = [x] if output_hidden_states else None
        got: dict[int, Any] = {}
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
            raise ValueError(f"argument 'prompt' is empty (input_ids of shape {tuple(ids.shape)}): need at least "
                             "one token")
        if ids.dtype not in (torch.int64, torch.int32) or ids.dim() != 2:
            raise ValueError(f"argument 'prompt' must be integer ids of shape (L,) or (B, L), got {ids.dtype} "
                             f"{tuple(ids.shape)}")
        if ids.min() < 0 or ids.max() >= self.config.vocab_size:
            raise ValueError(f"argument 'prompt' has ids outside [0, {self.config.vocab_size})")
        return ids.to(device=device, dtype=torch.int64)

    def layer_params(self, k: int) -> LayerParams:
        """Layer k's parameters in the paper's notation (differentiable views of the weights).

        Arguments:
            k: layer index in [-K, K).

        Returns:
            `SSMParams` (Mamba-1) or `Mamba2Params` (Mamba-2).

        Raises:
            ValueError: for a bad layer index.
        """
        return self.layers[layer_index(k, len(self.layers), "k")].ssm

    @torch.no_grad()
    def field_starts(self, input_ids: Tensor, layers: list[int] | tuple[int, ...]) -> dict[int, Tensor]:
        """The tokens each layer's idealised field starts from, for (B, L) ids, in one pass.

        Arguments:
            input_ids: (B, L) (or (L,)) token ids.
            layers: layer indices in [-K, K).

        Returns:
            ``{k: tokens}`` with k normalised to [0, K): Mamba-1 the S6 input u (B, L, E) of layer k,
            ``SiLU(conv(in_proj(Norm_k(x^k))))``; Mamba-2 the mixer input ``Norm_k(x^k)`` (B, L, Dm).

        Raises:
            ValueError: for bad ids or layer indices.
        """
        want = sorted({layer_index(k, len(self.layers), "layers") for k in layers})
        x = self.embed(input_ids)
        out: dict[int, Tensor] = {}
        for k, block in enumerate(self.layers):
            if k in want:
                out[k] = block.field_input(x)
            if k == want[-1]:
                break
            x = block(x)
        return out

    @torch.no_grad()
    def token_states(self, prompt: str | list[int] | Tensor, k: int) -> Tensor:
        """The tokens layer k's idealised field starts from, for a prompt (see `field_starts`).

        Arguments:
            prompt: text, ids, or an id tensor, as for `encode`.
            k: layer index in [0, K) (negative indices count from the end).

        Returns:
            Mamba-1: (B, L, E), the S6 input; Mamba-2: (B, L, Dm), the mixer input. In the model's dtype.

        Raises:
            ValueError: for a bad prompt or layer index.
        """
        K = self.config.n_layer
        if isinstance(k, bool) or not isinstance(k, int) or not -K <= k < K:
            raise ValueError(f"argument 'k' must be a layer index in [{-K}, {K}), got {k!r}")
        return self.field_starts(self.encode(prompt), [k])[k % K]

    def save_pretrained(self, directory: str | os.PathLike, layout: str = "hf",
                        extra_config: dict | None = None) -> Path:
        """Write the model as a checkpoint (transformers ``model.safetensors`` or native ``.bin``).

        A refined model is written with its **effective** weights (a sign constraint folded into
        ``x_proj.weight``, token-reordering wrappers unwrapped), so any loader reproduces it; the
        refinements themselves (sign, reordering options and score vectors) go to ``refine.json``,
        which `mamba_ode.load` reads back. The tokenizer is saved beside the weights.

        Arguments:
            directory: created if needed.
            layout: ``"hf"`` or ``"native"``.
            extra_config: additional config.json fields (metadata).

        Returns:
            The directory.

        Raises:
            ValueError: for an unknown layout.
        """
        state, record = refinement_record(self)
        out = write_checkpoint(directory, self.config, state, layout=layout, extra_config=extra_config)
        if record is not None:
            write_refinements(out, record)
        if self.tokenizer is not None and hasattr(self.tokenizer, "save"):
            self.tokenizer.save(out)
        return out


class MambaLM(MambaLMBase):
    """A Mamba-1 language model; ``layers[k].ssm`` is an `SSMParams`."""

    config_cls = MambaConfig
    mixer_cls = MambaMixer
    architecture = "mamba"


class Mamba2LM(MambaLMBase):
    """A Mamba-2 language model; ``layers[k].ssm`` is a `Mamba2Params`, internals are per head."""

    config_cls = Mamba2Config
    mixer_cls = Mamba2Mixer
    architecture = "mamba2"
