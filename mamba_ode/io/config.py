"""Architecture configs: one dataclass per generation, mapped from both config layouts.

The mamba-ssm native layout (``d_model``, ``n_layer``, ``ssm_cfg``…) and the Hugging Face
transformers layout (``model_type: "mamba"``, ``hidden_size``, ``state_size``…) both map to
`MambaConfig`; Mamba-2 configs (``ssm_cfg.layer == "Mamba2"`` or ``model_type: "mamba2"``)
map to `Mamba2Config`.
"""

from __future__ import annotations

from typing import Any

from ._fields import show
from .config_mamba1 import MambaConfig, mamba1_from_dict
from .config_mamba2 import Mamba2Config, mamba2_from_dict

__all__ = ["MambaConfig", "Mamba2Config", "AnyConfig", "config_from_dict", "detect_layout", "is_mamba2_config"]

#: A config of either generation.
AnyConfig = MambaConfig | Mamba2Config


def is_mamba2_config(cfg: dict[str, Any]) -> bool:
    """True for a Mamba-2 config dict (``model_type: "mamba2"`` or ``ssm_cfg.layer == "Mamba2"``).

    Arguments:
        cfg: the parsed config.json (anything else gives False).

    Returns:
        Whether it describes a Mamba-2 model.
    """
    if not isinstance(cfg, dict):
        return False
    if cfg.get("model_type") == "mamba2":
        return True
    ssm = cfg.get("ssm_cfg")
    return "d_model" in cfg and isinstance(ssm, dict) and ssm.get("layer") == "Mamba2"


def detect_layout(cfg: dict[str, Any], where: str = "config.json") -> str:
    """Return ``"hf"`` or ``"native"`` for a config dict (Mamba-1 or Mamba-2).

    Arguments:
        cfg: the parsed config.json.
        where: the file name used in error messages.

    Returns:
        ``"hf"`` (``model_type`` present, or ``hidden_size`` + ``state_size``) or ``"native"``.

    Raises:
        ValueError: for a config of neither layout, naming ``where`` and the field.
    """
    if not isinstance(cfg, dict):
        raise ValueError(f"{where}: expected a JSON object, got {show(cfg)}")
    model_type = cfg.get("model_type")
    if model_type in ("mamba", "mamba2"):
        return "hf"
    if model_type is not None:
        raise ValueError(f"{where}: unknown model_type {show(model_type)}; expected 'mamba' or 'mamba2' "
                         "(transformers layout) or a mamba-ssm config with 'd_model'")
    if "d_model" in cfg or "n_layer" in cfg:  # native; a missing one of the two is then named
        ssm = cfg.get("ssm_cfg") or {}
        layer = ssm.get("layer", "Mamba1") if isinstance(ssm, dict) else "Mamba1"
        if layer not in ("Mamba1", "Mamba2"):
            raise ValueError(f"{where}: unknown ssm_cfg.layer {show(layer)}; expected 'Mamba1' or 'Mamba2'")
        return "native"
    if "hidden_size" in cfg and "state_size" in cfg:
        return "hf"
    raise ValueError(f"{where}: unknown layout: neither a transformers Mamba config (model_type 'mamba', "
                     "hidden_size, state_size…) nor a mamba-ssm config (d_model, n_layer, ssm_cfg…)")


def config_from_dict(cfg: dict[str, Any], where: str = "config.json") -> MambaConfig | Mamba2Config:
    """Map a native or HF config dict to `MambaConfig` (Mamba-1) or `Mamba2Config`.

    Arguments:
        cfg: the parsed config.json.
        where: the file name used in error messages.

    Returns:
        A `Mamba2Config` for a Mamba-2 config, else a `MambaConfig`.

    Raises:
        ValueError: naming the file and the field for a missing or invalid field, an unknown
            layout, a hybrid (attention / MLP) model or an unsupported Mamba-2 option.
    """
    layout = detect_layout(cfg, where)
    if is_mamba2_config(cfg):
        return mamba2_from_dict(cfg, layout, where)
    return mamba1_from_dict(cfg, layout, where)
