"""Canonical (transformers) key names of a checkpoint, their expected shapes, and the parameter count.

The count is computed from the config alone, from one layer's shapes times the number of layers:
it never builds a table with one entry per layer, so a config with an absurd ``n_layer`` costs
nothing to size (see `mamba_ode.io.machine`).
"""

from __future__ import annotations

import math

from .config import AnyConfig, Mamba2Config

__all__ = ["expected_shapes", "parameter_count", "native_to_canonical", "canonical_to_native"]


def _global_shapes(config: AnyConfig) -> dict[str, tuple[int, ...]]:
    """The keys outside the layers: embedding and final norm (``lm_head`` is `_head_shapes`)."""
    dm, v = config.d_model, config.vocab_size
    shapes: dict[str, tuple[int, ...]] = {"backbone.embeddings.weight": (v, dm), "backbone.norm_f.weight": (dm,)}
    if not config.rms_norm:
        shapes["backbone.norm_f.bias"] = (dm,)
    return shapes


def _head_shapes(config: AnyConfig) -> dict[str, tuple[int, ...]]:
    """``lm_head.weight`` for an untied model, else nothing."""
    return {} if config.tie_embeddings else {"lm_head.weight": (config.vocab_size, config.d_model)}


def _layer_shapes(config: AnyConfig, k: int) -> dict[str, tuple[int, ...]]:
    """The keys of layer ``k`` (the same shapes for every layer)."""
    dm, e, n, kc = config.d_model, config.d_inner, config.d_state, config.d_conv
    p = f"backbone.layers.{k}."
    m = p + "mixer."
    shapes: dict[str, tuple[int, ...]] = {p + "norm.weight": (dm,)}
    if not config.rms_norm:
        shapes[p + "norm.bias"] = (dm,)
    if isinstance(config, Mamba2Config):
        h, rows, conv = config.n_heads, config.in_proj_dim, config.conv_dim
        shapes[m + "in_proj.weight"] = (rows, dm)
        if config.proj_bias:
            shapes[m + "in_proj.bias"] = (rows,)
            shapes[m + "out_proj.bias"] = (dm,)
        shapes[m + "conv1d.weight"] = (conv, 1, kc)
        if config.conv_bias:
            shapes[m + "conv1d.bias"] = (conv,)
        shapes.update({m + "dt_bias": (h,), m + "A_log": (h,), m + "D": (h,), m + "norm.weight": (e,),
                       m + "out_proj.weight": (dm, e)})
        return shapes
    r = config.dt_rank
    shapes[m + "in_proj.weight"] = (2 * e, dm)
    if config.proj_bias:
        shapes[m + "in_proj.bias"] = (2 * e,)
        shapes[m + "out_proj.bias"] = (dm,)
    shapes[m + "conv1d.weight"] = (e, 1, kc)
    if config.conv_bias:
        shapes[m + "conv1d.bias"] = (e,)
    shapes.update({m + "x_proj.weight": (r + 2 * n, e), m + "dt_proj.weight": (e, r), m + "dt_proj.bias": (e,),
                   m + "A_log": (e, n), m + "D": (e,), m + "out_proj.weight": (dm, e)})
    return shapes


def expected_shapes(config: AnyConfig) -> dict[str, tuple[int, ...]]:
    """Canonical (transformers) key → expected shape for a Mamba-1 or Mamba-2 config.

    One entry per key of every layer: call it only for a config whose size was checked
    (`mamba_ode.io.machine.check_memory`) and whose layer count matches the weights.

    Arguments:
        config: the architecture.

    Returns:
        The shapes, ``lm_head.weight`` included only for untied models.
    """
    shapes = _global_shapes(config)
    for k in range(config.n_layer):
        shapes.update(_layer_shapes(config, k))
    shapes.update(_head_shapes(config))
    return shapes


def parameter_count(config: AnyConfig) -> int:
    """The number of parameters of a model, from its config alone (no loop over the layers).

    Arguments:
        config: the architecture.

    Returns:
        The total number of scalars of the weights (a Python int, exact however large).
    """
    per_layer = sum(math.prod(s) for s in _layer_shapes(config, 0).values())
    fixed = {**_global_shapes(config), **_head_shapes(config)}
    return sum(math.prod(s) for s in fixed.values()) + config.n_layer * per_layer


def native_to_canonical(key: str) -> str:
    """A mamba-ssm key name → the canonical (transformers) one (only the embedding differs).

    Arguments:
        key: a key of a native state dict.

    Returns:
        The canonical key.
    """
    if key == "backbone.embedding.weight":
        return "backbone.embeddings.weight"
    return key


def canonical_to_native(key: str) -> str:
    """A canonical (transformers) key name → the mamba-ssm one.

    Arguments:
        key: a canonical key.

    Returns:
        The native key.
    """
    if key == "backbone.embeddings.weight":
        return "backbone.embedding.weight"
    return key
