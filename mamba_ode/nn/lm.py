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
* ``embed``, ``head``, ``forward``, ``encode``, ``save_pretrained``;
* ``hook_points()``, ``hooks(...)``, ``run_with_cache(...)`` — named activations, read or patched
  (`mamba_ode.nn.hooks`); ``forward(internals=...)`` and ``field_starts`` read them the same way.

Shape letters as in `mamba_ode.shapes`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, cast

import torch
from torch import Tensor, nn

from .._checks import layer_index
from ..io.checkpoints import Checkpoint, write_checkpoint, write_refinements
from ..io.config import AnyConfig, Mamba2Config, MambaConfig
from .block import Block, LayerParams
from .hooks import ActivationCache, HookFn, HookPoint, select_names
from .mixer_mamba1 import MambaMixer
from .mixer_mamba2 import Mamba2Mixer
from .norms import make_norm
from .params_mamba1 import S6Internals
from .params_mamba2 import Mamba2Internals
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


class _Done(Exception):
    """Raised by a hook to end a forward pass early (internal)."""


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
    #: The activation point (``layers.{k}.<point>``) holding the tokens a layer's idealised field starts from.
    field_point: ClassVar[str] = "mixer.u"

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

    @property
    def device(self) -> torch.device:
        """The device of the weights (as transformers' ``model.device``)."""
        return next(self.parameters()).device

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
                internals: bool | Iterable[int] = (), backend: str = "auto") -> MambaOutput:
        """Run the network.

        Arguments:
            input_ids: (B, L) (or (L,)) token ids.
            output_hidden_states: return x^0..x^K (un-normalised residual stream).
            internals: layer indices whose SSM internals (u, Δ, B, C, y, z) to return (True: all; negative
                indices count from the end, and the keys of ``MambaOutput.internals`` are in [0, K)); read
                from the activation points ``layers.{k}.mixer.*`` (see `run_with_cache`).
            backend: scan backend.

        Returns:
            `MambaOutput`.

        Raises:
            ValueError: for bad ids or layer indices.
            TypeError: for ``internals`` that is neither a bool nor an iterable of layer indices.
        """
        K = self.config.n_layer
        if internals is True:
            want = list(range(K))
        elif internals is None or internals is False:
            want = []
        elif isinstance(internals, (str, bytes)) or not isinstance(internals, Iterable):
            raise TypeError(f"argument 'internals' must be True, False or layer indices (a list, range, ...), got "
                            f"{type(internals).__name__} {internals!r}")
        else:  # integer-like indices (numpy's too), negative ones counting from the end
            want = sorted({layer_index(k, K, "internals") for k in internals})
        if want:
            names = [f"layers.{k}.mixer.{p}" for k in want for p in ("u", "delta", "B", "C", "y", "z")]
            out, cache = self.run_with_cache(input_ids, names, output_hidden_states=output_hidden_states,
                                             backend=backend, detach=False)
            cls = Mamba2Internals if isinstance(self, Mamba2LM) else S6Internals
            out.internals = {k: cls(**{p: cache[f"layers.{k}.mixer.{p}"] for p in ("u", "delta", "B", "C", "y", "z")})
                             for k in want}
            return out
        x = self.embed(input_ids)
        hs = [x] if output_hidden_states else None
        for block in self.layers:
            x = block(x, backend=backend)
            if hs is not None:
                hs.append(x)
        last = self.backbone.norm_f(x)
        logits = self.lm_head(last.to(self.lm_head.weight.dtype))
        return MambaOutput(logits=logits, last_hidden_state=last, hidden_states=tuple(hs) if hs is not None else None)

    # ------------------------------------------------------------------ activation points

    def hook_points(self) -> dict[str, HookPoint]:
        """Every named activation point, in the order a forward pass reaches them (see `mamba_ode.nn.hooks`).

        Returns:
            name → `HookPoint`, e.g. ``layers.0.resid_pre``, ``layers.0.mixer.delta``.
        """
        points: dict[str, HookPoint] = {}
        for block in self.layers:
            mixer_points = getattr(block.mixer, "hp", {})
            for name in ("resid_pre", "mixer_in"):
                points[block.hp[name].name] = block.hp[name]
            for point in mixer_points.values():
                points[point.name] = point
            for name in ("mixer_out", "resid_post"):
                points[block.hp[name].name] = block.hp[name]
        return points

    @contextmanager
    def hooks(self, fwd: Mapping[str, HookFn] | Sequence[tuple[str, HookFn]]) -> Iterator[MambaLMBase]:
        """Register hooks for the duration of a ``with`` block (removed on exit, also after an error).

        Arguments:
            fwd: ``{name_or_pattern: fn}`` or ``[(name_or_pattern, fn), ...]``; a pattern (``"layers.*.mixer.y"``)
                registers ``fn`` on every point it matches. ``fn(activation, name)`` returns None to read
                or a tensor of the same shape to replace the activation (activation patching).

        Returns:
            A context manager yielding the model.

        Raises:
            ValueError: if a name matches no point. TypeError: if a hook is not callable.
        """
        pairs = list(fwd.items()) if isinstance(fwd, Mapping) else list(fwd)
        points = self.hook_points()
        names = list(points)
        registered: list[tuple[HookPoint, HookFn]] = []
        for pattern, fn in pairs:
            if not callable(fn):
                raise TypeError(f"argument 'fwd': the hook for '{pattern}' is not callable")
            for name in select_names(names, pattern, argument="fwd"):
                if not any(pt is points[name] and f is fn for pt, f in registered):  # overlapping patterns: once
                    registered.append((points[name], fn))
        for point, fn in registered:
            point.fns.append(fn)
        try:
            yield self
        finally:
            for point, fn in registered:
                point.fns.remove(fn)

    def run_with_cache(self, input_ids: Tensor, names: str | Sequence[str] | Callable[[str], bool] | None = None, *,
                       states_at: Sequence[int] | None = None, output_hidden_states: bool = False,
                       backend: str = "auto", detach: bool = True) -> tuple[MambaOutput, ActivationCache]:
        """Run the model once and keep the activations named.

        Arguments:
            input_ids: (B, L) (or (L,)) token ids.
            names: None (every point), a name or glob pattern, a list of them, or a predicate on names.
            states_at: token positions (0-based; negative count from the end) after which to also give
                the SSM state of every layer with a cached point: ``layers.{k}.mixer.state``, (B, P, E, N)
                for P positions (Mamba-2: E = H·P channels, state per group's N), from the cached u, Δ,
                B, C by the shared selective scan.
            output_hidden_states: as in `forward`.
            backend: scan backend.
            detach: store detached tensors (False keeps the autograd graph).

        Returns:
            ``(output, cache)``: the `MambaOutput` and an `ActivationCache`.

        Raises:
            ValueError: for a name matching no point, bad ids or positions out of range.
        """
        chosen = select_names(list(self.hook_points()), names)
        store: dict[str, Tensor] = {}

        def keep(x: Tensor, name: str) -> None:
            store[name] = x.detach() if detach else x

        layers = sorted({int(n.split(".")[1]) for n in chosen})
        extra = [f"layers.{k}.mixer.{p}" for k in layers for p in ("u", "delta", "B", "C")] if states_at else []
        internal: dict[str, Tensor] = {}

        def keep_internal(x: Tensor, name: str) -> None:
            internal[name] = x.detach() if detach else x

        with self.hooks([(n, keep) for n in chosen] + [(n, keep_internal) for n in extra]):
            out = self(input_ids, output_hidden_states=output_hidden_states, backend=backend)
        if states_at:
            length = out.logits.shape[1]
            if any(isinstance(q, bool) or not isinstance(q, int) for q in states_at):
                raise ValueError(f"argument 'states_at': positions must be ints, got {list(states_at)}")
            pos = [int(q) for q in states_at]
            if any(not -length <= q < length for q in pos):
                raise ValueError(f"argument 'states_at': positions must lie in [{-length}, {length}), got {pos}")
            pos = [q % length for q in pos]
            for k in layers:
                u, dl, Bm, Cm = (internal[f"layers.{k}.mixer.{p}"] for p in ("u", "delta", "B", "C"))
                store[f"layers.{k}.mixer.state"] = self.layers[k].ssm.states_at(u, dl, Bm, Cm, pos, backend=backend)
        return out, ActivationCache(store)

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
        names = [f"layers.{k}.{self.field_point}" for k in want]
        store: dict[str, Tensor] = {}

        def keep(x: Tensor, name: str) -> None:
            store[name] = x
            if len(store) == len(names):
                raise _Done  # every start is known: the layers after the last one are not run

        try:
            with self.hooks([(n, keep) for n in names]):
                self(input_ids)
        except _Done:
            pass
        return {k: store[n] for k, n in zip(want, names)}

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
    field_point = "mixer_in"
