"""The Mamba-1 architecture config, mapped from the mamba-ssm native and the transformers layouts."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from ._fields import padding_multiple, rank, req

__all__ = ["MambaConfig", "mamba1_from_dict"]


@dataclass(frozen=True)
class MambaConfig:
    """Architecture of a Mamba-1 language model.

    Attributes:
        d_model: model width Dm.
        n_layer: number of layers K.
        vocab_size: rows of the embedding V (after vocabulary padding).
        d_state: state size N.
        d_conv: causal convolution width.
        expand: inner width multiplier; ``d_inner = expand * d_model``.
        dt_rank: rank R of the Δ projection.
        rms_norm: RMSNorm (True) or LayerNorm (False) before each mixer and at the end.
        norm_eps: epsilon of the norms.
        residual_in_fp32: keep the residual stream in float32 for half-precision models.
        tie_embeddings: ``lm_head`` shares the embedding matrix.
        conv_bias: the convolution has a bias.
        proj_bias: ``in_proj`` and ``out_proj`` have biases.
        layout: ``"native"`` (mamba-ssm) or ``"hf"`` (transformers) — the layout it was read from.
        vocab_size_unpadded: the vocabulary size before padding (equal to ``vocab_size`` for HF).
        extra: the unrecognised remainder of the source config, kept for round trips.
    """

    d_model: int
    n_layer: int
    vocab_size: int
    d_state: int = 16
    d_conv: int = 4
    expand: int = 2
    dt_rank: int = 0
    rms_norm: bool = True
    norm_eps: float = 1e-5
    residual_in_fp32: bool = True
    tie_embeddings: bool = True
    conv_bias: bool = True
    proj_bias: bool = False
    layout: str = "hf"
    vocab_size_unpadded: int = 0
    extra: dict = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        for name in ("d_model", "n_layer", "vocab_size", "d_state", "d_conv", "expand"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"config field {name!r} must be a positive integer, got {v!r}")
        if self.dt_rank == 0:
            object.__setattr__(self, "dt_rank", math.ceil(self.d_model / 16))
        if not isinstance(self.dt_rank, int) or self.dt_rank < 1:
            raise ValueError(f"config field 'dt_rank' must be a positive integer or 'auto', got {self.dt_rank!r}")
        if self.vocab_size_unpadded == 0:
            object.__setattr__(self, "vocab_size_unpadded", self.vocab_size)

    @property
    def d_inner(self) -> int:
        """Inner width E = expand · d_model."""
        return self.expand * self.d_model

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of the fields (without ``extra``)."""
        d = asdict(self)
        d.pop("extra")
        d["d_inner"] = self.d_inner
        return d

    def to_hf_dict(self) -> dict[str, Any]:
        """The transformers ``MambaConfig`` dict of this architecture (``model_type: "mamba"``).

        Raises:
            ValueError: for a LayerNorm model, which transformers' Mamba cannot express.
        """
        if not self.rms_norm:
            raise ValueError("a LayerNorm Mamba (rms_norm=False) has no transformers equivalent")
        return {
            "model_type": "mamba",
            "architectures": ["MambaForCausalLM"],
            "vocab_size": self.vocab_size,
            "hidden_size": self.d_model,
            "state_size": self.d_state,
            "num_hidden_layers": self.n_layer,
            "expand": self.expand,
            "intermediate_size": self.d_inner,
            "conv_kernel": self.d_conv,
            "time_step_rank": self.dt_rank,
            "use_bias": self.proj_bias,
            "use_conv_bias": self.conv_bias,
            "layer_norm_epsilon": self.norm_eps,
            "residual_in_fp32": self.residual_in_fp32,
            "tie_word_embeddings": self.tie_embeddings,
            "hidden_act": "silu",
        }

    def to_native_dict(self) -> dict[str, Any]:
        """The mamba-ssm ``MambaConfig`` dict of this architecture."""
        return {
            "d_model": self.d_model,
            "d_intermediate": 0,
            "n_layer": self.n_layer,
            "vocab_size": self.vocab_size_unpadded,
            "ssm_cfg": {"layer": "Mamba1", "d_state": self.d_state, "d_conv": self.d_conv,
                        "expand": self.expand, "dt_rank": self.dt_rank, "conv_bias": self.conv_bias,
                        "bias": self.proj_bias},
            "attn_layer_idx": [],
            "attn_cfg": {},
            "rms_norm": self.rms_norm,
            "residual_in_fp32": self.residual_in_fp32,
            "fused_add_norm": True,
            "pad_vocab_size_multiple": 1 if self.vocab_size == self.vocab_size_unpadded else
            padding_multiple(self.vocab_size_unpadded, self.vocab_size),
            "tie_embeddings": self.tie_embeddings,
        }



# long function: over 80 lines with its docstring, which documents every argument
def mamba1_from_dict(cfg: dict[str, Any], layout: str, where: str = "config.json") -> MambaConfig:
    """Map a Mamba-1 config dict of either layout to :class:`MambaConfig`.

    Arguments:
        cfg: the parsed config.json.
        layout: ``"hf"`` or ``"native"`` (see :func:`mamba_ode.io.config.detect_layout`).
        where: the file name used in error messages.

    Returns:
        The :class:`MambaConfig`.

    Raises:
        ValueError: naming the file and the field for a missing or invalid field or a hybrid
            (attention / MLP) model.
    """
    if layout == "hf":
        d_model = req(cfg, "hidden_size", where)
        act = cfg.get("hidden_act", "silu")
        if act != "silu":
            raise ValueError(f"{where}: field 'hidden_act' is {act!r}; only 'silu' is supported")
        known = {"hidden_size", "num_hidden_layers", "vocab_size", "state_size", "conv_kernel", "expand",
                 "time_step_rank", "layer_norm_epsilon", "residual_in_fp32", "tie_word_embeddings",
                 "use_conv_bias", "use_bias", "intermediate_size"}
        out = MambaConfig(
            d_model=d_model,
            n_layer=req(cfg, "num_hidden_layers", where),
            vocab_size=req(cfg, "vocab_size", where),
            d_state=cfg.get("state_size", 16),
            d_conv=cfg.get("conv_kernel", 4),
            expand=cfg.get("expand", 2),
            dt_rank=rank(cfg.get("time_step_rank", "auto"), d_model, where, "time_step_rank"),
            rms_norm=True,
            norm_eps=float(cfg.get("layer_norm_epsilon", 1e-5)),
            residual_in_fp32=bool(cfg.get("residual_in_fp32", True)),
            tie_embeddings=bool(cfg.get("tie_word_embeddings", True)),
            conv_bias=bool(cfg.get("use_conv_bias", True)),
            proj_bias=bool(cfg.get("use_bias", False)),
            layout="hf",
            extra={k: v for k, v in cfg.items() if k not in known},
        )
        inter = cfg.get("intermediate_size")
        if inter is not None and inter != out.d_inner:
            raise ValueError(f"{where}: field 'intermediate_size' = {inter} disagrees with "
                             f"expand * hidden_size = {out.d_inner}")
        return out

    d_model = req(cfg, "d_model", where)
    if cfg.get("d_intermediate", 0):
        raise ValueError(f"{where}: field 'd_intermediate' = {cfg['d_intermediate']}: hybrid models with MLP "
                         "blocks are not supported (only pure Mamba stacks)")
    if cfg.get("attn_layer_idx"):
        raise ValueError(f"{where}: field 'attn_layer_idx' is non-empty: hybrid models with attention "
                         "layers are not supported")
    ssm = cfg.get("ssm_cfg") or {}
    if not isinstance(ssm, dict):
        raise ValueError(f"{where}: field 'ssm_cfg' must be an object, got {type(ssm).__name__}")
    vocab = req(cfg, "vocab_size", where)
    mult = cfg.get("pad_vocab_size_multiple", 8)
    if not isinstance(vocab, int) or vocab < 1:
        raise ValueError(f"{where}: field 'vocab_size' must be a positive integer, got {vocab!r}")
    if not isinstance(mult, int) or mult < 1:
        raise ValueError(f"{where}: field 'pad_vocab_size_multiple' must be a positive integer, got {mult!r}")
    padded = vocab + (-vocab) % mult
    known = {"d_model", "n_layer", "vocab_size", "ssm_cfg", "rms_norm", "residual_in_fp32", "fused_add_norm",
             "pad_vocab_size_multiple", "tie_embeddings", "d_intermediate", "attn_layer_idx", "attn_cfg",
             "norm_epsilon"}
    return MambaConfig(
        d_model=d_model,
        n_layer=req(cfg, "n_layer", where),
        vocab_size=padded,
        d_state=ssm.get("d_state", 16),
        d_conv=ssm.get("d_conv", 4),
        expand=ssm.get("expand", 2),
        dt_rank=rank(ssm.get("dt_rank", "auto"), d_model, where, "ssm_cfg.dt_rank"),
        rms_norm=bool(cfg.get("rms_norm", True)),
        norm_eps=float(cfg.get("norm_epsilon", 1e-5)),
        residual_in_fp32=bool(cfg.get("residual_in_fp32", True)),
        tie_embeddings=bool(cfg.get("tie_embeddings", True)),
        conv_bias=bool(ssm.get("conv_bias", True)),
        proj_bias=bool(ssm.get("bias", False)),
        layout="native",
        vocab_size_unpadded=vocab,
        extra={k: v for k, v in cfg.items() if k not in known},
    )

