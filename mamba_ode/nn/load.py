"""``load``: from a checkpoint source (read by :mod:`mamba_ode.io`) to a model of the right generation."""

from __future__ import annotations

import os

import torch

from ..io.checkpoints import read_checkpoint, read_refinements
from ..io.config import Mamba2Config
from ..io.tokenizers import tokenizer_for
from .lm import Mamba2LM, MambaLM, MambaLMBase
from .refine import apply_refinements

__all__ = ["load"]


def load(source: str | os.PathLike | None = None, *, dtype: torch.dtype = torch.float32,
         device: str | torch.device = "cpu", refinements: bool = True) -> MambaLMBase:
    """Load a pretrained Mamba model.

    Arguments:
        source: a checkpoint directory (mamba-ssm native or transformers layout), a Hugging Face
            Hub id (``"state-spaces/mamba-130m-hf"``; local cache first, works offline when
            cached), a shipped model name, or None for the shipped default.
        dtype: floating dtype of the parameters.
        device: where to put them.
        refinements: re-install the token reorderings recorded in the checkpoint's ``refine.json``
            (False: the plain network of the stored weights, as any other loader reads it).

    Returns:
        A :class:`MambaLM` in eval mode — or a :class:`Mamba2LM` for a Mamba-2 checkpoint — with
        ``.config``, ``.checkpoint`` and (when the checkpoint ships one) ``.tokenizer``. Token reorderings
        recorded in ``refine.json`` are re-installed.

    Raises:
        FileNotFoundError: missing directory, config or weights; uncached Hub id while offline.
        ValueError: unknown layout, bad config field, missing/unexpected key, wrong shape or
            non-finite weight — naming the file and the key or field.
        TypeError: if dtype is not a floating torch dtype.
    """
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"load: argument 'dtype' must be a floating torch.dtype, got {dtype!r}")
    config, state, info = read_checkpoint(source)
    model: MambaLMBase = Mamba2LM(config) if isinstance(config, Mamba2Config) else MambaLM(config)
    if config.tie_embeddings:
        state = dict(state, **{"lm_head.weight": state["backbone.embeddings.weight"]})
    model.load_state_dict(state, strict=True)
    model.to(device=device, dtype=dtype).eval()
    record = read_refinements(info.directory)
    if record is not None and refinements:
        apply_refinements(model, record)
        model.to(device=device, dtype=dtype).eval()
    model.checkpoint = info
    model.tokenizer = tokenizer_for(info.directory)
    return model
