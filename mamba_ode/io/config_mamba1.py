"""The Mamba-1 architecture config, mapped from the mamba-ssm native and the transformers layouts."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from ._fields import Fields, check_eps, check_pure_mamba, checked, padding_multiple

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
        check_eps("norm_eps", self.norm_eps)
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



def mamba1_from_dict(cfg: dict[str, Any], layout: str, where: str = "config.json") -> MambaConfig:
    """Map a Mamba-1 config dict of either layout to `MambaConfig`.

    Every field is checked (type, range, finiteness) before anything is built; errors name the
    field as written in the file (``hidden_size``, ``ssm_cfg.d_state``).

    Arguments:
        cfg: the parsed config.json.
        layout: ``"hf"`` or ``"native"`` (see `mamba_ode.io.config.detect_layout`).
        where: the file name used in error messages.

    Returns:
        The `MambaConfig`.

    Raises:
        ValueError: naming the file and the field for a missing or invalid field or a hybrid
            (attention / MLP) model.
    """
    f = Fields(cfg, where)
    if layout == "hf":
        d_model, n_layer, vocab = f.pos_int("hidden_size"), f.pos_int("num_hidden_layers"), f.pos_int("vocab_size")
        f.only("hidden_act", ("silu",), "silu")
        expand = f.pos_int("expand", 2)
        inter = f.opt_pos_int("intermediate_size")
        if inter is not None and inter != expand * d_model:
            raise ValueError(f"{where}: field 'intermediate_size' = {inter} disagrees with "
                             f"expand * hidden_size = {expand * d_model}")
        known = {"hidden_size", "num_hidden_layers", "vocab_size", "state_size", "conv_kernel", "expand",
                 "time_step_rank", "layer_norm_epsilon", "residual_in_fp32", "tie_word_embeddings",
                 "use_conv_bias", "use_bias", "intermediate_size"}
        return checked(where, layout, lambda: MambaConfig(
            d_model=d_model, n_layer=n_layer, vocab_size=vocab, d_state=f.pos_int("state_size", 16),
            d_conv=f.pos_int("conv_kernel", 4), expand=expand, dt_rank=f.rank("time_step_rank", d_model),
            rms_norm=True, norm_eps=f.eps("layer_norm_epsilon", 1e-5),
            residual_in_fp32=f.flag("residual_in_fp32", True), tie_embeddings=f.flag("tie_word_embeddings", True),
            conv_bias=f.flag("use_conv_bias", True), proj_bias=f.flag("use_bias", False), layout="hf",
            extra={k: v for k, v in cfg.items() if k not in known}))

    d_model, n_layer, vocab = f.pos_int("d_model"), f.pos_int("n_layer"), f.pos_int("vocab_size")
    check_pure_mamba(f)
    ssm = f.obj("ssm_cfg")
    mult = f.pos_int("pad_vocab_size_multiple", 8)
    known = {"d_model", "n_layer", "vocab_size", "ssm_cfg", "rms_norm", "residual_in_fp32", "fused_add_norm",
             "pad_vocab_size_multiple", "tie_embeddings", "d_intermediate", "attn_layer_idx", "attn_cfg",
             "norm_epsilon"}
    return checked(where, layout, lambda: MambaConfig(
        d_model=d_model, n_layer=n_layer, vocab_size=vocab + (-vocab) % mult, d_state=ssm.pos_int("d_state", 16),
        d_conv=ssm.pos_int("d_conv", 4), expand=ssm.pos_int("expand", 2), dt_rank=ssm.rank("dt_rank", d_model),
        rms_norm=f.flag("rms_norm", True), norm_eps=f.eps("norm_epsilon", 1e-5),
        residual_in_fp32=f.flag("residual_in_fp32", True), tie_embeddings=f.flag("tie_embeddings", True),
        conv_bias=ssm.flag("conv_bias", True), proj_bias=ssm.flag("bias", False), layout="native",
        vocab_size_unpadded=vocab, extra={k: v for k, v in cfg.items() if k not in known}))

