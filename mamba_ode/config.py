"""One configuration dataclass for Mamba models, mapped from both config layouts.

The mamba-ssm native layout (``d_model``, ``n_layer``, ``ssm_cfg``…) and the Hugging Face
transformers layout (``model_type: "mamba"``, ``hidden_size``, ``state_size``…) both map to
:class:`MambaConfig`. Mamba-2 configs (``ssm_cfg.layer == "Mamba2"`` or ``model_type: "mamba2"``)
map to :class:`Mamba2Config` (SPEC §8).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["MambaConfig", "Mamba2Config", "config_from_dict", "detect_layout", "is_mamba2_config"]


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
            _padding_multiple(self.vocab_size_unpadded, self.vocab_size),
            "tie_embeddings": self.tie_embeddings,
        }


def _padding_multiple(unpadded: int, padded: int) -> int:
    for m in (8, 16, 32, 64, 128, 256, 512, 1024):
        if padded % m == 0 and padded - unpadded < m:
            return m
    return padded


class Mamba2NotSupported(ValueError):
    """Kept for backward compatibility: earlier releases raised it for Mamba-2 checkpoints.

    Mamba-2 checkpoints now load (:class:`Mamba2Config`); nothing in mamba_ode raises it any more.
    """


def is_mamba2_config(cfg: dict[str, Any]) -> bool:
    """True for a Mamba-2 config dict (``model_type: "mamba2"`` or ``ssm_cfg.layer == "Mamba2"``)."""
    if not isinstance(cfg, dict):
        return False
    if cfg.get("model_type") == "mamba2":
        return True
    ssm = cfg.get("ssm_cfg")
    return "d_model" in cfg and isinstance(ssm, dict) and ssm.get("layer") == "Mamba2"


def detect_layout(cfg: dict[str, Any], where: str = "config.json") -> str:
    """Return ``"hf"`` or ``"native"`` for a config dict (Mamba-1 or Mamba-2).

    Raises:
        ValueError: for a config of neither layout, naming ``where`` and the field.
    """
    if not isinstance(cfg, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(cfg).__name__}")
    model_type = cfg.get("model_type")
    if model_type in ("mamba", "mamba2"):
        return "hf"
    if model_type is not None:
        raise ValueError(f"{where}: unknown model_type {model_type!r}; expected 'mamba' or 'mamba2' "
                         "(transformers layout) or a mamba-ssm config with 'd_model'")
    if "d_model" in cfg and "n_layer" in cfg:
        ssm = cfg.get("ssm_cfg") or {}
        layer = ssm.get("layer", "Mamba1") if isinstance(ssm, dict) else "Mamba1"
        if layer not in ("Mamba1", "Mamba2"):
            raise ValueError(f"{where}: unknown ssm_cfg.layer {layer!r}; expected 'Mamba1' or 'Mamba2'")
        return "native"
    if "hidden_size" in cfg and "state_size" in cfg:
        return "hf"
    raise ValueError(f"{where}: unknown layout: neither a transformers Mamba config (model_type 'mamba', "
                     "hidden_size, state_size…) nor a mamba-ssm config (d_model, n_layer, ssm_cfg…)")


def _req(cfg: dict, key: str, where: str):
    if key not in cfg:
        raise ValueError(f"{where}: missing required field {key!r}")
    return cfg[key]


def _rank(v, d_model: int, where: str, key: str) -> int:
    if v in (None, "auto"):
        return math.ceil(d_model / 16)
    if isinstance(v, bool) or not isinstance(v, int):
        raise ValueError(f"{where}: field {key!r} must be an integer or 'auto', got {v!r}")
    return v


def config_from_dict(cfg: dict[str, Any], where: str = "config.json") -> MambaConfig | Mamba2Config:
    """Map a native or HF config dict to :class:`MambaConfig` (Mamba-1) or :class:`Mamba2Config`.

    Arguments:
        cfg: the parsed config.json.
        where: the file name used in error messages.

    Returns:
        A :class:`Mamba2Config` for a Mamba-2 config, else a :class:`MambaConfig`.

    Raises:
        ValueError: naming the file and the field for a missing or invalid field, an unknown
            layout, a hybrid (attention / MLP) model or an unsupported Mamba-2 option.
    """
    layout = detect_layout(cfg, where)
    if is_mamba2_config(cfg):
        return _mamba2_from_dict(cfg, layout, where)
    if layout == "hf":
        d_model = _req(cfg, "hidden_size", where)
        act = cfg.get("hidden_act", "silu")
        if act != "silu":
            raise ValueError(f"{where}: field 'hidden_act' is {act!r}; only 'silu' is supported")
        known = {"hidden_size", "num_hidden_layers", "vocab_size", "state_size", "conv_kernel", "expand",
                 "time_step_rank", "layer_norm_epsilon", "residual_in_fp32", "tie_word_embeddings",
                 "use_conv_bias", "use_bias", "intermediate_size"}
        out = MambaConfig(
            d_model=d_model,
            n_layer=_req(cfg, "num_hidden_layers", where),
            vocab_size=_req(cfg, "vocab_size", where),
            d_state=cfg.get("state_size", 16),
            d_conv=cfg.get("conv_kernel", 4),
            expand=cfg.get("expand", 2),
            dt_rank=_rank(cfg.get("time_step_rank", "auto"), d_model, where, "time_step_rank"),
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

    d_model = _req(cfg, "d_model", where)
    if cfg.get("d_intermediate", 0):
        raise ValueError(f"{where}: field 'd_intermediate' = {cfg['d_intermediate']}: hybrid models with MLP "
                         "blocks are not supported (only pure Mamba stacks)")
    if cfg.get("attn_layer_idx"):
        raise ValueError(f"{where}: field 'attn_layer_idx' is non-empty: hybrid models with attention "
                         "layers are not supported")
    ssm = cfg.get("ssm_cfg") or {}
    if not isinstance(ssm, dict):
        raise ValueError(f"{where}: field 'ssm_cfg' must be an object, got {type(ssm).__name__}")
    vocab = _req(cfg, "vocab_size", where)
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
        n_layer=_req(cfg, "n_layer", where),
        vocab_size=padded,
        d_state=ssm.get("d_state", 16),
        d_conv=ssm.get("d_conv", 4),
        expand=ssm.get("expand", 2),
        dt_rank=_rank(ssm.get("dt_rank", "auto"), d_model, where, "ssm_cfg.dt_rank"),
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


# ----------------------------------------------------------------------------- Mamba-2 (SPEC §8)


@dataclass(frozen=True)
class Mamba2Config:
    """Architecture of a Mamba-2 language model (SPEC §8).

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

    #: Mamba-2 models always use RMSNorm (a field so code written for :class:`MambaConfig` can read it).
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
                or math.isnan(lim[0]) or math.isnan(lim[1]) or lim[0] < 0 or lim[0] > lim[1]):
            raise ValueError(f"config field 'dt_limit' must be a pair 0 <= lo <= hi, got {lim!r}")
        object.__setattr__(self, "dt_limit", (float(lim[0]), float(lim[1])))
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
            _padding_multiple(self.vocab_size_unpadded, self.vocab_size),
            "tie_embeddings": self.tie_embeddings,
        }


def _limit(v: Any, where: str, key: str) -> tuple[float, float]:
    if v is None:
        return (0.0, math.inf)
    if not isinstance(v, (list, tuple)) or len(v) != 2:
        raise ValueError(f"{where}: field {key!r} must be a pair [lo, hi], got {v!r}")
    def num(x: Any) -> float:
        # transformers 5.x writes non-finite floats as {"__float__": "Infinity"}
        if isinstance(x, dict) and set(x) == {"__float__"}:
            x = x["__float__"]
        if isinstance(x, bool):
            raise TypeError(x)
        return float(x)

    try:
        return (num(v[0]), num(v[1]))
    except (TypeError, ValueError):
        raise ValueError(f"{where}: field {key!r} must be a pair of numbers, got {v!r}") from None


def _checked(where: str, build) -> Mamba2Config:
    try:
        return build()
    except ValueError as exc:
        if str(exc).startswith(where):
            raise
        raise ValueError(f"{where}: {exc}") from None


def _mamba2_from_dict(cfg: dict[str, Any], layout: str, where: str) -> Mamba2Config:
    """Map a Mamba-2 config dict (either layout) to :class:`Mamba2Config`.

    Raises:
        ValueError: naming ``where`` and the field for a missing/invalid field or an unsupported option.
    """
    if layout == "hf":
        d_model = _req(cfg, "hidden_size", where)
        act = cfg.get("hidden_act", "silu")
        if act != "silu":
            raise ValueError(f"{where}: field 'hidden_act' is {act!r}; only 'silu' is supported")
        expand = cfg.get("expand", 2)
        heads, head_dim = cfg.get("num_heads"), cfg.get("head_dim", 64)
        if isinstance(expand, int) and isinstance(d_model, int) and isinstance(heads, int) \
                and isinstance(head_dim, int) and heads * head_dim != expand * d_model:
            raise ValueError(f"{where}: fields 'num_heads' * 'head_dim' = {heads * head_dim} disagree with "
                             f"expand * hidden_size = {expand * d_model}")
        known = {"model_type", "hidden_size", "num_hidden_layers", "vocab_size", "state_size", "conv_kernel",
                 "expand", "num_heads", "head_dim", "n_groups", "chunk_size", "time_step_limit",
                 "layer_norm_epsilon", "residual_in_fp32", "tie_word_embeddings", "use_conv_bias", "use_bias",
                 "hidden_act"}
        eps = float(cfg.get("layer_norm_epsilon", 1e-5))
        return _checked(where, lambda: Mamba2Config(
            d_model=d_model, n_layer=_req(cfg, "num_hidden_layers", where), vocab_size=_req(cfg, "vocab_size", where),
            d_state=cfg.get("state_size", 128), d_conv=cfg.get("conv_kernel", 4), expand=expand,
            headdim=head_dim, ngroups=cfg.get("n_groups", 8), chunk_size=cfg.get("chunk_size", 256),
            dt_limit=_limit(cfg.get("time_step_limit"), where, "time_step_limit"), norm_eps=eps,
            mixer_norm_eps=eps, residual_in_fp32=bool(cfg.get("residual_in_fp32", True)),
            tie_embeddings=bool(cfg.get("tie_word_embeddings", False)), conv_bias=bool(cfg.get("use_conv_bias", True)),
            proj_bias=bool(cfg.get("use_bias", False)), layout="hf",
            extra={k: v for k, v in cfg.items() if k not in known}))

    d_model = _req(cfg, "d_model", where)
    if cfg.get("d_intermediate", 0):
        raise ValueError(f"{where}: field 'd_intermediate' = {cfg['d_intermediate']}: hybrid models with MLP "
                         "blocks are not supported (only pure Mamba stacks)")
    if cfg.get("attn_layer_idx"):
        raise ValueError(f"{where}: field 'attn_layer_idx' is non-empty: hybrid models with attention "
                         "layers are not supported")
    if not cfg.get("rms_norm", True):
        raise ValueError(f"{where}: field 'rms_norm' is false: Mamba-2 models with LayerNorm are not supported")
    ssm = cfg["ssm_cfg"]
    unsupported = {"rmsnorm": (True, "the mixer's gated RMSNorm"), "norm_before_gate": (False, "gate before norm"),
                   "D_has_hdim": (False, "one D per head")}
    for key, (want, what) in unsupported.items():
        if key in ssm and bool(ssm[key]) != want:
            raise ValueError(f"{where}: field 'ssm_cfg.{key}' = {ssm[key]!r} is not supported (only {what})")
    expand = ssm.get("expand", 2)
    d_ssm = ssm.get("d_ssm")
    if d_ssm is not None and isinstance(expand, int) and isinstance(d_model, int) and d_ssm != expand * d_model:
        raise ValueError(f"{where}: field 'ssm_cfg.d_ssm' = {d_ssm} differs from expand * d_model: partial-SSM "
                         "mixers are not supported")
    vocab = _req(cfg, "vocab_size", where)
    mult = cfg.get("pad_vocab_size_multiple", 8)
    if not isinstance(vocab, int) or vocab < 1:
        raise ValueError(f"{where}: field 'vocab_size' must be a positive integer, got {vocab!r}")
    if not isinstance(mult, int) or mult < 1:
        raise ValueError(f"{where}: field 'pad_vocab_size_multiple' must be a positive integer, got {mult!r}")
    known = {"d_model", "n_layer", "vocab_size", "ssm_cfg", "rms_norm", "residual_in_fp32", "fused_add_norm",
             "pad_vocab_size_multiple", "tie_embeddings", "d_intermediate", "attn_layer_idx", "attn_cfg",
             "norm_epsilon"}
    return _checked(where, lambda: Mamba2Config(
        d_model=d_model, n_layer=_req(cfg, "n_layer", where), vocab_size=vocab + (-vocab) % mult,
        d_state=ssm.get("d_state", 128), d_conv=ssm.get("d_conv", 4), expand=expand,
        headdim=ssm.get("headdim", 64), ngroups=ssm.get("ngroups", 1), chunk_size=ssm.get("chunk_size", 256),
        dt_limit=_limit(ssm.get("dt_limit"), where, "ssm_cfg.dt_limit"),
        norm_eps=float(cfg.get("norm_epsilon", 1e-5)), mixer_norm_eps=1e-5,
        residual_in_fp32=bool(cfg.get("residual_in_fp32", True)), tie_embeddings=bool(cfg.get("tie_embeddings", True)),
        conv_bias=bool(ssm.get("conv_bias", True)), proj_bias=bool(ssm.get("bias", False)), layout="native",
        vocab_size_unpadded=vocab, extra={k: v for k, v in cfg.items() if k not in known}))
