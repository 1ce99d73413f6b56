"""The Mamba-2 architecture config, mapped from the mamba-ssm native and the transformers layouts.

``in_proj`` maps Dm to ``[z (E), x (E), B (G·N), C (G·N), dt (H)]``; the causal convolution runs over
``xBC``; H heads of size P share one scalar decay (the paper's scalar-A case, exact per head).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from ._fields import Fields, check_eps, check_pure_mamba, checked, padding_multiple, show

__all__ = ["Mamba2Config", "mamba2_from_dict"]


@dataclass(frozen=True)
class Mamba2Config:
    """Architecture of a Mamba-2 language model.

    ``in_proj`` maps Dm to ``[z (E), x (E), B (G·N), C (G·N), dt (H)]``; the causal convolution runs
    over ``xBC`` (E + 2·G·N channels); H heads of size P share one scalar decay ``A_h``.

    Attributes:
        d_model: model width Dm.
        n_layer: number of layers K.
        vocab_size: rows of the embedding V (after vocabulary padding).
        d_state: state size N.
        d_conv: causal convolution width.
        expand: inner width multiplier; ``d_inner = expand * d_model`` = H · P.
        headdim: head size P.
        ngroups: groups G of B/C (heads map to groups with ``repeat_interleave``).
        chunk_size: the chunk length of the reference SSD implementations (does not change results).
        dt_limit: ``(lo, hi)`` clamp of Δ after the softplus.
        norm_eps: epsilon of the block norms and the final norm.
        mixer_norm_eps: epsilon of the gated RMSNorm inside the mixer.
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
    d_state: int = 128
    d_conv: int = 4
    expand: int = 2
    headdim: int = 64
    ngroups: int = 1
    chunk_size: int = 256
    dt_limit: tuple[float, float] = (0.0, math.inf)
    norm_eps: float = 1e-5
    mixer_norm_eps: float = 1e-5
    residual_in_fp32: bool = True
    tie_embeddings: bool = False
    conv_bias: bool = True
    proj_bias: bool = False
    layout: str = "hf"
    vocab_size_unpadded: int = 0
    extra: dict = field(default_factory=dict, compare=False, repr=False)

    #: Mamba-2 models always use RMSNorm (a field so code written for `MambaConfig` can read it).
    rms_norm = True

    def __post_init__(self) -> None:
        for name in ("d_model", "n_layer", "vocab_size", "d_state", "d_conv", "expand", "headdim", "ngroups",
                     "chunk_size"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"config field {name!r} must be a positive integer, got {v!r}")
        if self.d_inner % self.headdim:
            raise ValueError(f"config field 'headdim' = {self.headdim} does not divide d_inner = expand * d_model "
                             f"= {self.d_inner}")
        if self.n_heads % self.ngroups:
            raise ValueError(f"config field 'ngroups' = {self.ngroups} does not divide the number of heads "
                             f"{self.n_heads}")
        lim = self.dt_limit
        if (not isinstance(lim, (tuple, list)) or len(lim) != 2
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in lim)
                or not math.isfinite(lim[0]) or math.isnan(lim[1]) or lim[0] < 0 or lim[0] > lim[1]):
            raise ValueError(f"config field 'dt_limit' must be a pair 0 <= lo <= hi with lo finite, got {lim!r}")
        object.__setattr__(self, "dt_limit", (float(lim[0]), float(lim[1])))
        check_eps("norm_eps", self.norm_eps)
        check_eps("mixer_norm_eps", self.mixer_norm_eps)
        if self.vocab_size_unpadded == 0:
            object.__setattr__(self, "vocab_size_unpadded", self.vocab_size)

    @property
    def d_inner(self) -> int:
        """Inner width E = expand · d_model = H · P."""
        return self.expand * self.d_model

    @property
    def n_heads(self) -> int:
        """Number of heads H = E / P."""
        return self.d_inner // self.headdim

    @property
    def conv_dim(self) -> int:
        """Channels of the causal convolution: E + 2·G·N (x, B, C)."""
        return self.d_inner + 2 * self.ngroups * self.d_state

    @property
    def in_proj_dim(self) -> int:
        """Rows of ``in_proj``: z (E) + xBC (E + 2·G·N) + dt (H)."""
        return self.d_inner + self.conv_dim + self.n_heads

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of the fields (without ``extra``), with the derived sizes."""
        d = asdict(self)
        d.pop("extra")
        d["dt_limit"] = list(self.dt_limit)
        d.update(d_inner=self.d_inner, n_heads=self.n_heads, mamba_version=2)
        return d

    def to_hf_dict(self) -> dict[str, Any]:
        """The transformers ``Mamba2Config`` dict of this architecture (``model_type: "mamba2"``)."""
        return {
            "model_type": "mamba2",
            "architectures": ["Mamba2ForCausalLM"],
            "vocab_size": self.vocab_size,
            "hidden_size": self.d_model,
            "state_size": self.d_state,
            "num_hidden_layers": self.n_layer,
            "expand": self.expand,
            "num_heads": self.n_heads,
            "head_dim": self.headdim,
            "n_groups": self.ngroups,
            "chunk_size": self.chunk_size,
            "conv_kernel": self.d_conv,
            "time_step_limit": list(self.dt_limit),
            "use_bias": self.proj_bias,
            "use_conv_bias": self.conv_bias,
            "layer_norm_epsilon": self.norm_eps,
            "residual_in_fp32": self.residual_in_fp32,
            "tie_word_embeddings": self.tie_embeddings,
            "hidden_act": "silu",
        }

    def to_native_dict(self) -> dict[str, Any]:
        """The mamba-ssm ``MambaConfig`` dict of this architecture (``ssm_cfg.layer == "Mamba2"``)."""
        return {
            "d_model": self.d_model,
            "d_intermediate": 0,
            "n_layer": self.n_layer,
            "vocab_size": self.vocab_size_unpadded,
            "ssm_cfg": {"layer": "Mamba2", "d_state": self.d_state, "d_conv": self.d_conv, "expand": self.expand,
                        "headdim": self.headdim, "ngroups": self.ngroups, "chunk_size": self.chunk_size,
                        "dt_limit": list(self.dt_limit), "conv_bias": self.conv_bias, "bias": self.proj_bias},
            "attn_layer_idx": [],
            "attn_cfg": {},
            "rms_norm": True,
            "norm_epsilon": self.norm_eps,
            "residual_in_fp32": self.residual_in_fp32,
            "fused_add_norm": True,
            "pad_vocab_size_multiple": 1 if self.vocab_size == self.vocab_size_unpadded else
            padding_multiple(self.vocab_size_unpadded, self.vocab_size),
            "tie_embeddings": self.tie_embeddings,
        }



def mamba2_from_dict(cfg: dict[str, Any], layout: str, where: str) -> Mamba2Config:
    """Map a Mamba-2 config dict (either layout) to `Mamba2Config`.

    Every field is checked (type, range, finiteness) before anything is built; errors name the
    field as written in the file (``n_groups``, ``ssm_cfg.headdim``).

    Arguments:
        cfg: the parsed config.json.
        layout: ``"hf"`` or ``"native"``.
        where: the file name used in error messages.

    Returns:
        The `Mamba2Config`.

    Raises:
        ValueError: naming ``where`` and the field for a missing/invalid field or an unsupported option.
    """
    f = Fields(cfg, where)
    if layout == "hf":
        d_model, n_layer, vocab = f.pos_int("hidden_size"), f.pos_int("num_hidden_layers"), f.pos_int("vocab_size")
        f.only("hidden_act", ("silu",), "silu")
        expand, head_dim = f.pos_int("expand", 2), f.pos_int("head_dim", 64)
        heads = f.opt_pos_int("num_heads")
        if heads is not None and heads * head_dim != expand * d_model:
            raise ValueError(f"{where}: fields 'num_heads' * 'head_dim' = {heads * head_dim} disagree with "
                             f"expand * hidden_size = {expand * d_model}")
        known = {"model_type", "hidden_size", "num_hidden_layers", "vocab_size", "state_size", "conv_kernel",
                 "expand", "num_heads", "head_dim", "n_groups", "chunk_size", "time_step_limit",
                 "layer_norm_epsilon", "residual_in_fp32", "tie_word_embeddings", "use_conv_bias", "use_bias",
                 "hidden_act"}
        eps = f.eps("layer_norm_epsilon", 1e-5)
        return checked(where, layout, lambda: Mamba2Config(
            d_model=d_model, n_layer=n_layer, vocab_size=vocab, d_state=f.pos_int("state_size", 128),
            d_conv=f.pos_int("conv_kernel", 4), expand=expand, headdim=head_dim, ngroups=f.pos_int("n_groups", 8),
            chunk_size=f.pos_int("chunk_size", 256), dt_limit=f.limit_pair("time_step_limit"), norm_eps=eps,
            mixer_norm_eps=eps, residual_in_fp32=f.flag("residual_in_fp32", True),
            tie_embeddings=f.flag("tie_word_embeddings", False), conv_bias=f.flag("use_conv_bias", True),
            proj_bias=f.flag("use_bias", False), layout="hf", extra={k: v for k, v in cfg.items() if k not in known}))

    d_model, n_layer, vocab = f.pos_int("d_model"), f.pos_int("n_layer"), f.pos_int("vocab_size")
    check_pure_mamba(f)
    if not f.flag("rms_norm", True):
        raise ValueError(f"{where}: field 'rms_norm' is false: Mamba-2 models with LayerNorm are not supported")
    ssm = f.obj("ssm_cfg", required=True)
    unsupported = {"rmsnorm": (True, "the mixer's gated RMSNorm"), "norm_before_gate": (False, "gate before norm"),
                   "D_has_hdim": (False, "one D per head")}
    for key, (want, what) in unsupported.items():
        if ssm.has(key) and ssm.raw(key) is not want:
            raise ValueError(f"{where}: field 'ssm_cfg.{key}' = {show(ssm.raw(key))} is not supported (only {what}: "
                             f"{str(want).lower()})")
    expand = ssm.pos_int("expand", 2)
    d_ssm = ssm.opt_pos_int("d_ssm")
    if d_ssm is not None and d_ssm != expand * d_model:
        raise ValueError(f"{where}: field 'ssm_cfg.d_ssm' = {d_ssm} differs from expand * d_model: partial-SSM "
                         "mixers are not supported")
    mult = f.pos_int("pad_vocab_size_multiple", 8)
    known = {"d_model", "n_layer", "vocab_size", "ssm_cfg", "rms_norm", "residual_in_fp32", "fused_add_norm",
             "pad_vocab_size_multiple", "tie_embeddings", "d_intermediate", "attn_layer_idx", "attn_cfg",
             "norm_epsilon"}
    return checked(where, layout, lambda: Mamba2Config(
        d_model=d_model, n_layer=n_layer, vocab_size=vocab + (-vocab) % mult, d_state=ssm.pos_int("d_state", 128),
        d_conv=ssm.pos_int("d_conv", 4), expand=expand, headdim=ssm.pos_int("headdim", 64),
        ngroups=ssm.pos_int("ngroups", 1), chunk_size=ssm.pos_int("chunk_size", 256),
        dt_limit=ssm.limit_pair("dt_limit"), norm_eps=f.eps("norm_epsilon", 1e-5), mixer_norm_eps=1e-5,
        residual_in_fp32=f.flag("residual_in_fp32", True), tie_embeddings=f.flag("tie_embeddings", True),
        conv_bias=ssm.flag("conv_bias", True), proj_bias=ssm.flag("bias", False), layout="native",
        vocab_size_unpadded=vocab, extra={k: v for k, v in cfg.items() if k not in known}))
