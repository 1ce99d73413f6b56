"""``load``: from a checkpoint source (read by `mamba_ode.io`) to a model of the right generation."""

from __future__ import annotations

import os
from typing import Any

import torch

from ..io.checkpoints import REFINE_FILE, read_checkpoint, read_refinements
from ..io.config import Mamba2Config
from ..io.machine import check_device, check_dtype
from ..io.tokenizers import check_tokenizer_arg, load_tokenizer
from .lm import Mamba2LM, MambaLM, MambaLMBase
from .refine import apply_refinements

__all__ = ["load"]


def load(source: str | os.PathLike | None = None, *, dtype: torch.dtype = torch.float32,
         device: str | torch.device = "cpu", refinements: bool = True, tokenizer: Any = None) -> MambaLMBase:
    """Load a pretrained Mamba model.

    Everything is checked before it is used: the arguments first, then every config field (type,
    range, finiteness), then the memory the model needs (parameters × bytes of ``dtype``, from the
    config alone) against the memory ``device`` has, then every weight's key, shape, dtype and
    finiteness; only then is the network built. Every error is one line naming the file and the
    field or key as written in that file (or the argument).

    Arguments:
        source: a checkpoint directory (mamba-ssm native or transformers layout), a Hugging Face
            Hub id (``"state-spaces/mamba-130m-hf"``; local cache first, works offline when
            cached), a shipped model name, or None for the shipped default.
        dtype: floating dtype of the parameters.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` (N < the number of GPUs), ``"mps"`` where
            available, or a ``torch.device``.
        refinements: re-install the token reorderings recorded in the checkpoint's ``refine.json``
            (False: the plain network of the stored weights, as any other loader reads it; the file
            is then not read).
        tokenizer: None for the checkpoint's own tokenizer (``tokenizer.json`` through the
            ``tokenizers`` library, or the package's byte tokenizer); or, overriding it, a directory
            or ``tokenizer.json`` path, a Hub id (``"EleutherAI/gpt-neox-20b"`` for the original
            ``state-spaces/mamba-*`` checkpoints; same resolution as ``source``), or an object with
            ``encode``/``decode``. Its vocabulary must fit the model's ``vocab_size``.

    Returns:
        A `MambaLM` in eval mode — or a `Mamba2LM` for a Mamba-2 checkpoint — with
        ``.config``, ``.checkpoint`` and ``.tokenizer`` (None when there is none). Token
        reorderings recorded in ``refine.json`` are re-installed.

    Raises:
        FileNotFoundError: missing directory, config.json, weights or shard; a Hub id (checkpoint or
            tokenizer) neither cached nor downloadable (offline, or no network); a tokenizer path
            that holds no tokenizer.
        ValueError: bad content, naming the file and the key or field: unknown layout, a config field
            of the wrong type, out of range or not finite, a model too large for the memory
            available (both numbers given), missing/unexpected key, wrong shape, non-float or
            non-finite weight, a file that is not UTF-8 or not JSON, a bad ``refine.json``, a
            tokenizer vocabulary larger than the model's; and bad argument values (an empty
            ``source``, an unknown or absent ``device``).
        TypeError: for a ``source``, ``dtype``, ``device``, ``refinements`` or ``tokenizer`` of the
            wrong type (``dtype`` must be a floating torch dtype).
        ImportError: for an explicit ``tokenizer.json`` without the ``tokenizers`` library (a
            checkpoint's own ``tokenizer.json`` only warns and the model has no tokenizer).
    """
    dtype = check_dtype(dtype)
    dev = check_device(device)
    if not isinstance(refinements, bool):
        raise TypeError(f"load: argument 'refinements' must be a bool, got {type(refinements).__name__}")
    check_tokenizer_arg(tokenizer)
    config, state, info = read_checkpoint(source, dtype=dtype, device=dev)
    tok = load_tokenizer(tokenizer, config.vocab_size, info.directory)
    record = read_refinements(info.directory) if refinements else None
    model: MambaLMBase = Mamba2LM(config) if isinstance(config, Mamba2Config) else MambaLM(config)
    # cast before the copy: a float64 checkpoint loaded as float64 stays exact (not through float32).
    # (Building on the meta device would skip the random initialisation, but its first use imports
    # torch's meta registrations: seconds, more than the initialisation costs a small model.)
    model.to(device=dev, dtype=dtype)
    if config.tie_embeddings:
        state = dict(state, **{"lm_head.weight": state["backbone.embeddings.weight"]})
    model.load_state_dict(state, strict=True)
    model.eval()
    if record is not None:
        try:
            apply_refinements(model, record)
        except (ValueError, TypeError, AttributeError, KeyError, RuntimeError) as exc:
            raise ValueError(f"{info.directory / REFINE_FILE}: cannot re-install the recorded refinements "
                             f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
        model.to(device=dev, dtype=dtype).eval()
    model.checkpoint = info
    model.tokenizer = tok
    return model
