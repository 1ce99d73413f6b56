"""Find and read Mamba checkpoints: the only module that knows file layouts and key names.

A source is resolved to ``(MambaConfig, state dict, Checkpoint info)``:

* a directory in the mamba-ssm native layout (config.json with ``d_model``…; key
  ``backbone.embedding.weight``), weights in ``model.safetensors``, ``pytorch_model.bin`` or
  their sharded ``*.index.json`` forms;
* a directory in the transformers layout (``model_type: "mamba"``; key ``backbone.embeddings.weight``);
* the same two layouts for Mamba-2 (``ssm_cfg.layer == "Mamba2"`` / ``model_type: "mamba2"``),
  read into a :class:`~mamba_ode.io.config.Mamba2Config`;
* a Hugging Face Hub id (``state-spaces/mamba-130m-hf``), resolved through ``huggingface_hub``,
  local cache first;
* a shipped model name (``"tiny-shakespeare"``…) from :mod:`mamba_ode.models`.

Every key and shape is checked against the config; errors name the file and the key or field.
The returned state dict uses canonical (transformers) key names.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import snapshot_download
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from ..models import shipped_model_dir, shipped_names
from .config import Mamba2Config, MambaConfig, config_from_dict, detect_layout

__all__ = ["Checkpoint", "read_checkpoint", "expected_shapes", "write_checkpoint", "resolve_source", "validate_state",
           "read_refinements", "write_refinements", "REFINE_FILE"]

CONFIG_FILE = "config.json"
#: Where a refined model records its refinements (sign constraint, token reorderings and their K).
REFINE_FILE = "refine.json"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
INDEX_FILES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
HUB_PATTERNS = ["config.json", "*.safetensors", "*.bin", "*.json", "*.model", "*.txt"]
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class Checkpoint:
    """Where a model came from.

    Attributes:
        source: what the user passed.
        directory: the local directory the files were read from.
        layout: ``"native"`` or ``"hf"``.
        weights: the weight file(s) read.
    """

    source: str
    directory: Path
    layout: str
    weights: tuple[str, ...]


# ----------------------------------------------------------------------------- shapes


def expected_shapes(config: MambaConfig | Mamba2Config) -> dict[str, tuple[int, ...]]:
    """Canonical (transformers) key → expected shape for a Mamba-1 or Mamba-2 config.

    ``lm_head.weight`` is included only for untied models.
    """
    if isinstance(config, Mamba2Config):
        return _expected_shapes_mamba2(config)
    dm, e, n, r, kc, v = (config.d_model, config.d_inner, config.d_state, config.dt_rank,
                          config.d_conv, config.vocab_size)
    shapes: dict[str, tuple[int, ...]] = {"backbone.embeddings.weight": (v, dm), "backbone.norm_f.weight": (dm,)}
    if not config.rms_norm:
        shapes["backbone.norm_f.bias"] = (dm,)
    for k in range(config.n_layer):
        p = f"backbone.layers.{k}."
        shapes[p + "norm.weight"] = (dm,)
        if not config.rms_norm:
            shapes[p + "norm.bias"] = (dm,)
        m = p + "mixer."
        shapes[m + "in_proj.weight"] = (2 * e, dm)
        if config.proj_bias:
            shapes[m + "in_proj.bias"] = (2 * e,)
            shapes[m + "out_proj.bias"] = (dm,)
        shapes[m + "conv1d.weight"] = (e, 1, kc)
        if config.conv_bias:
            shapes[m + "conv1d.bias"] = (e,)
        shapes[m + "x_proj.weight"] = (r + 2 * n, e)
        shapes[m + "dt_proj.weight"] = (e, r)
        shapes[m + "dt_proj.bias"] = (e,)
        shapes[m + "A_log"] = (e, n)
        shapes[m + "D"] = (e,)
        shapes[m + "out_proj.weight"] = (dm, e)
    if not config.tie_embeddings:
        shapes["lm_head.weight"] = (v, dm)
    return shapes


def _expected_shapes_mamba2(config: Mamba2Config) -> dict[str, tuple[int, ...]]:
    """Canonical key → shape for a Mamba-2 config (the same key names in both layouts but the embedding)."""
    dm, e, h, kc, v = config.d_model, config.d_inner, config.n_heads, config.d_conv, config.vocab_size
    shapes: dict[str, tuple[int, ...]] = {"backbone.embeddings.weight": (v, dm), "backbone.norm_f.weight": (dm,)}
    for k in range(config.n_layer):
        p = f"backbone.layers.{k}."
        shapes[p + "norm.weight"] = (dm,)
        m = p + "mixer."
        shapes[m + "in_proj.weight"] = (config.in_proj_dim, dm)
        if config.proj_bias:
            shapes[m + "in_proj.bias"] = (config.in_proj_dim,)
            shapes[m + "out_proj.bias"] = (dm,)
        shapes[m + "conv1d.weight"] = (config.conv_dim, 1, kc)
        if config.conv_bias:
            shapes[m + "conv1d.bias"] = (config.conv_dim,)
        shapes[m + "dt_bias"] = (h,)
        shapes[m + "A_log"] = (h,)
        shapes[m + "D"] = (h,)
        shapes[m + "norm.weight"] = (e,)
        shapes[m + "out_proj.weight"] = (dm, e)
    if not config.tie_embeddings:
        shapes["lm_head.weight"] = (v, dm)
    return shapes


def _native_to_canonical(key: str) -> str:
    if key == "backbone.embedding.weight":
        return "backbone.embeddings.weight"
    return key


def _canonical_to_native(key: str) -> str:
    if key == "backbone.embeddings.weight":
        return "backbone.embedding.weight"
    return key


# ----------------------------------------------------------------------------- reading files


def _read_json(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None


def _load_weight_file(path: Path) -> dict[str, Tensor]:
    if path.name.endswith(".safetensors"):
        try:
            return load_file(str(path))
        except (SafetensorError, OSError) as exc:
            raise ValueError(f"{path}: cannot read safetensors file ({exc})") from None
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, refused globals, truncation
        raise ValueError(f"{path}: cannot read weights with torch.load(weights_only=True) ({exc})") from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise ValueError(f"{path}: expected a dict of tensors (a state dict)")
    return obj


def _read_weights(directory: Path) -> tuple[dict[str, Tensor], tuple[str, ...]]:
    for name in WEIGHT_FILES:
        if (directory / name).is_file():
            return _load_weight_file(directory / name), (name,)
    for name in INDEX_FILES:
        idx_path = directory / name
        if idx_path.is_file():
            index = _read_json(idx_path)
            wmap = index.get("weight_map") if isinstance(index, dict) else None
            if not isinstance(wmap, dict):
                raise ValueError(f"{idx_path}: missing field 'weight_map'")
            state: dict[str, Tensor] = {}
            files = tuple(sorted(set(wmap.values())))
            for fname in files:
                fpath = directory / fname
                if not fpath.is_file():
                    raise FileNotFoundError(f"{idx_path}: shard {fname!r} listed in 'weight_map' is missing")
                state.update(_load_weight_file(fpath))
            return state, files
    raise FileNotFoundError(f"{directory}: no weights found; expected one of "
                            f"{', '.join(WEIGHT_FILES + INDEX_FILES)}")


def validate_state(state: dict[str, Tensor], config: MambaConfig | Mamba2Config, where: str) -> dict[str, Tensor]:
    """Check keys, shapes and finiteness; return the state with canonical keys and ``lm_head`` resolved.

    Raises:
        ValueError: naming ``where`` and the key for a missing, unexpected, mis-shaped or
            non-finite tensor, or a tied ``lm_head.weight`` that differs from the embedding.
    """
    expected = expected_shapes(config)
    native = config.layout == "native"
    canon: dict[str, Tensor] = {}
    for key, t in state.items():
        ck = _native_to_canonical(key) if native else key
        if ck in canon:
            raise ValueError(f"{where}: key {key!r} appears twice (native and transformers names)")
        canon[ck] = t
    head = canon.pop("lm_head.weight", None) if config.tie_embeddings else None
    missing = [k for k in expected if k not in canon]
    if missing:
        shown = _canonical_to_native(missing[0]) if native else missing[0]
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise ValueError(f"{where}: missing key {shown!r}{more}")
    unexpected = [k for k in canon if k not in expected]
    if unexpected:
        shown = _canonical_to_native(unexpected[0]) if native else unexpected[0]
        more = f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else ""
        raise ValueError(f"{where}: unexpected key {shown!r}{more} for the config (n_layer={config.n_layer}, "
                         f"rms_norm={config.rms_norm}, bias={config.proj_bias}, conv_bias={config.conv_bias}, "
                         f"tied={config.tie_embeddings})")
    for k, shape in expected.items():
        t = canon[k]
        name = _canonical_to_native(k) if native else k
        if tuple(t.shape) != shape:
            raise ValueError(f"{where}: key {name!r} has shape {tuple(t.shape)}, expected {shape} from the config")
        if not t.is_floating_point():
            raise ValueError(f"{where}: key {name!r} has dtype {t.dtype}, expected a floating-point tensor")
        if not torch.isfinite(t).all():
            raise ValueError(f"{where}: key {name!r} has non-finite values (NaN or inf)")
    if head is not None:
        emb = canon["backbone.embeddings.weight"]
        if head.shape != emb.shape or not torch.equal(head.to(emb.dtype), emb):
            raise ValueError(f"{where}: key 'lm_head.weight' differs from the embedding although the config "
                             "ties them (tie_embeddings / tie_word_embeddings)")
    return canon


# ----------------------------------------------------------------------------- sources


def _is_hub_id(source: str) -> bool:
    return bool(_HUB_ID.match(source)) and not source.startswith((".", "/", "~"))


def _hub_directory(repo_id: str) -> Path:
    """Resolve a Hub id to a local snapshot directory: cache first, then the network unless offline."""
    try:
        return Path(snapshot_download(repo_id, allow_patterns=HUB_PATTERNS, local_files_only=True))
    except Exception:
        pass
    offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on")
    if offline:
        raise FileNotFoundError(f"hub id {repo_id!r} is not in the local Hugging Face cache and HF_HUB_OFFLINE "
                                "is set; download it once with network access, or pass a local directory")
    try:
        return Path(snapshot_download(repo_id, allow_patterns=HUB_PATTERNS))
    except Exception as exc:
        raise FileNotFoundError(f"hub id {repo_id!r}: not in the local cache and could not be downloaded "
                                f"({type(exc).__name__}: {exc})") from None


def resolve_source(source: str | os.PathLike | None) -> tuple[Path, str]:
    """Map a user source (path, Hub id, shipped name, or None) to a local directory and a label.

    Raises:
        FileNotFoundError: when nothing matches, naming the source.
    """
    if source is None:
        return shipped_model_dir(None), "shipped default"
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"load: argument 'source' must be a path, hub id or shipped name, got {type(source).__name__}")
    src = os.fspath(source)
    path = Path(src).expanduser()
    if path.exists():
        if path.is_file():
            if path.name == CONFIG_FILE or path.suffix in (".safetensors", ".bin"):
                return path.parent, src
            raise ValueError(f"{path}: expected a checkpoint directory (config.json + weights), got a file")
        return path, src
    if src in shipped_names():
        return shipped_model_dir(src), src
    if _is_hub_id(src):
        return _hub_directory(src), src
    raise FileNotFoundError(f"no checkpoint at {src!r}: not an existing directory, not a shipped model "
                            f"({', '.join(shipped_names()) or 'none shipped'}), not a Hub id (owner/name)")


def read_checkpoint(source: str | os.PathLike | None
                    ) -> tuple[MambaConfig | Mamba2Config, dict[str, Tensor], Checkpoint]:
    """Read a checkpoint into (config, canonical state dict, provenance).

    Arguments:
        source: a directory, a Hub id, a shipped model name, or None for the shipped default.

    Returns:
        ``(config, state, info)``; ``config`` is a :class:`MambaConfig` or, for a Mamba-2
        checkpoint, a :class:`Mamba2Config`; ``state`` maps canonical (transformers) keys to CPU
        tensors in the dtype stored in the file.

    Raises:
        FileNotFoundError: missing directory, config.json or weights; Hub id not cached offline.
        ValueError: unknown layout, bad config field, missing/unexpected key, wrong shape,
            non-finite weight, Mamba-2 weights under a Mamba-1 config — the message names the file
            and the key or field.
    """
    directory, label = resolve_source(source)
    cfg_path = directory / CONFIG_FILE
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{cfg_path}: missing config.json in checkpoint directory {directory}")
    raw = _read_json(cfg_path)
    detect_layout(raw, str(cfg_path))
    config = config_from_dict(raw, str(cfg_path))
    state, files = _read_weights(directory)
    m2_key = next((k for k in state if k.endswith("mixer.dt_bias")), None)
    if m2_key is not None and not isinstance(config, Mamba2Config):
        raise ValueError(f"{directory / files[0]}: key {m2_key!r} marks a Mamba-2 checkpoint but {cfg_path} "
                         "describes a Mamba-1 model (expected model_type 'mamba2' or ssm_cfg.layer 'Mamba2')")
    state = validate_state(state, config, str(directory / files[0]))
    return config, state, Checkpoint(str(label), directory, config.layout, files)


def write_checkpoint(directory: str | os.PathLike, config: MambaConfig | Mamba2Config, state: dict[str, Tensor],
                     layout: str = "hf", extra_config: dict | None = None) -> Path:
    """Write ``config.json`` + weights in the transformers (``model.safetensors``) or native
    (``pytorch_model.bin``) layout.

    Arguments:
        directory: created if needed.
        config: the architecture.
        state: canonical state dict (as ``MambaLM.state_dict()`` gives).
        layout: ``"hf"`` or ``"native"``.
        extra_config: additional config.json fields (metadata).

    Returns:
        The directory.

    Raises:
        ValueError: for an unknown layout.
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    if config.tie_embeddings:
        state.pop("lm_head.weight", None)
    if layout == "hf":
        cfg = config.to_hf_dict()
        save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    elif layout == "native":
        cfg = config.to_native_dict()
        native = {_canonical_to_native(k): v for k, v in state.items()}
        if config.tie_embeddings:
            native["lm_head.weight"] = native["backbone.embedding.weight"].clone()
        torch.save(native, str(out / "pytorch_model.bin"))
    else:
        raise ValueError(f"write_checkpoint: argument 'layout' must be 'hf' or 'native', got {layout!r}")
    cfg.update(extra_config or {})
    with open(out / CONFIG_FILE, "w", encoding="utf-8") as f:
        json.dump(cfg, f, indent=2)
    return out


def write_refinements(directory: str | os.PathLike, record: dict) -> Path:
    """Write a model's refinement record as ``refine.json`` beside its weights.

    Returns:
        The path written.
    """
    path = Path(directory) / REFINE_FILE
    path.write_text(json.dumps(record, indent=1), encoding="utf-8")
    return path


def read_refinements(directory: str | os.PathLike) -> dict | None:
    """The refinement record of a checkpoint directory (``refine.json``), or None without one.

    Raises:
        ValueError: for a ``refine.json`` that is not a JSON object, naming the file.
    """
    path = Path(directory) / REFINE_FILE
    if not path.is_file():
        return None
    record = _read_json(path)
    if not isinstance(record, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(record).__name__}")
    return record
