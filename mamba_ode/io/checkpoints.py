"""Find and read Mamba checkpoints: the only module that knows file layouts and key names.

A source is resolved to ``(MambaConfig, state dict, Checkpoint info)``:

* a directory in the mamba-ssm native layout (config.json with ``d_model``…; key
  ``backbone.embedding.weight``), weights in ``model.safetensors``, ``pytorch_model.bin`` or
  their sharded ``*.index.json`` forms;
* a directory in the transformers layout (``model_type: "mamba"``; key ``backbone.embeddings.weight``);
* the same two layouts for Mamba-2 (``ssm_cfg.layer == "Mamba2"`` / ``model_type: "mamba2"``),
  read into a `Mamba2Config`;
* a Hugging Face Hub id (``state-spaces/mamba-130m-hf``), resolved through ``huggingface_hub``,
  local cache first;
* a shipped model name (``"tiny-shakespeare"``…) from `mamba_ode.models`.

Every key and shape is checked against the config; errors name the file and the key or field.
The returned state dict uses canonical (transformers) key names.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from ..models import shipped_model_dir, shipped_names
from ._fields import show
from .config import Mamba2Config, MambaConfig, config_from_dict, detect_layout
from .files import read_json
from .hub import hub_directory, is_hub_id
from .keys import canonical_to_native, expected_shapes, native_to_canonical
from .machine import check_device, check_dtype, check_memory

__all__ = ["Checkpoint", "read_checkpoint", "expected_shapes", "write_checkpoint", "resolve_source", "validate_state",
           "read_refinements", "write_refinements", "REFINE_FILE"]

CONFIG_FILE = "config.json"
#: Where a refined model records its refinements (sign constraint, token reorderings and their K).
REFINE_FILE = "refine.json"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
INDEX_FILES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
HUB_PATTERNS = ["config.json", "*.safetensors", "*.bin", "*.json", "*.model", "*.txt"]
_LAYER_KEY = re.compile(r"^backbone\.layers\.(\d{1,12})\.")


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


# ----------------------------------------------------------------------------- reading files


_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _load_weight_file(path: Path) -> dict[str, Tensor]:
    """The tensors of one weight file, keyed by str; a ValueError naming the file for anything else."""
    if path.name.endswith(".safetensors"):
        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
            raise ValueError(f"{path}: cannot read safetensors file ({_one_line(exc)})") from None
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, refused globals, truncation
        raise ValueError(f"{path}: cannot read weights with torch.load(weights_only=True) ({_one_line(exc)})"
                         ) from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a dict of tensors (a state dict), got {type(obj).__name__}")
    for key, value in obj.items():
        if not isinstance(key, str):
            raise ValueError(f"{path}: expected a dict of tensors (a state dict), got the key {key!r} "
                             f"({type(key).__name__}) that is not a str")
        if not isinstance(value, Tensor) or value.layout != torch.strided:
            raise ValueError(f"{path}: key {key!r} holds a {type(value).__name__}"
                             f"{'' if not isinstance(value, Tensor) else f' of layout {value.layout}'}, "
                             "expected a dense tensor")
    return obj


def _one_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return (lines[0][:300] if lines else type(exc).__name__)


def _shard_names(idx_path: Path) -> tuple[str, ...]:
    """The shard file names listed in a ``*.index.json`` (plain names inside the directory)."""
    index = read_json(idx_path)
    wmap = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(wmap, dict):
        raise ValueError(f"{idx_path}: missing field 'weight_map' (an object mapping keys to shard files)")
    for key, fname in wmap.items():
        if not isinstance(fname, str) or not fname or Path(fname).name != fname or fname.startswith("."):
            raise ValueError(f"{idx_path}: field 'weight_map.{key}' must be a file name in the checkpoint "
                             f"directory, got {show(fname)}")
    return tuple(sorted(set(wmap.values())))


def _read_weights(directory: Path) -> tuple[dict[str, Tensor], tuple[str, ...]]:
    for name in WEIGHT_FILES:
        if (directory / name).is_file():
            return _load_weight_file(directory / name), (name,)
    for name in INDEX_FILES:
        idx_path = directory / name
        if idx_path.is_file():
            files = _shard_names(idx_path)
            state: dict[str, Tensor] = {}
            for fname in files:
                fpath = directory / fname
                if not fpath.is_file():
                    raise FileNotFoundError(f"{idx_path}: shard {fname!r} listed in 'weight_map' is missing")
                state.update(_load_weight_file(fpath))
            return state, files
    raise FileNotFoundError(f"{directory}: no weights found; expected one of "
                            f"{', '.join(WEIGHT_FILES + INDEX_FILES)}")


def _check_layer_count(state: dict[str, Tensor], config: MambaConfig | Mamba2Config, where: str) -> None:
    """Refuse a config with more layers than the weights hold, before any per-layer table is built."""
    found = {int(m.group(1)) for k in state if (m := _LAYER_KEY.match(k))}
    if len(found) >= config.n_layer:
        return
    first = 0
    for k in sorted(found):
        if k != first:
            break
        first += 1
    field = "num_hidden_layers" if config.layout == "hf" else "n_layer"
    raise ValueError(f"{where}: missing key 'backbone.layers.{first}.norm.weight' (and more): the weights hold "
                     f"{len(found)} layers but the config says {field} = {config.n_layer}")


def validate_state(state: dict[str, Tensor], config: MambaConfig | Mamba2Config, where: str) -> dict[str, Tensor]:
    """Check keys, shapes, dtypes and finiteness; return the state with canonical keys and ``lm_head`` resolved.

    Arguments:
        state: the tensors read from the weight file(s) (native or transformers key names).
        config: the architecture they must match.
        where: the weight file's name for messages.

    Returns:
        The state with canonical (transformers) keys; a tied ``lm_head.weight`` dropped.

    Raises:
        ValueError: naming ``where`` and the key for a missing, unexpected, mis-shaped, non-float or
            non-finite tensor, or a tied ``lm_head.weight`` that differs from the embedding.
    """
    native = config.layout == "native"
    canon: dict[str, Tensor] = {}
    for key, t in state.items():
        ck = native_to_canonical(key) if native else key
        if ck in canon:
            raise ValueError(f"{where}: key {key!r} appears twice (native and transformers names)")
        canon[ck] = t
    _check_layer_count(canon, config, where)
    expected = expected_shapes(config)
    head = canon.pop("lm_head.weight", None) if config.tie_embeddings else None
    missing = [k for k in expected if k not in canon]
    if missing:
        shown = canonical_to_native(missing[0]) if native else missing[0]
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise ValueError(f"{where}: missing key {shown!r}{more}")
    unexpected = [k for k in canon if k not in expected]
    if unexpected:
        shown = canonical_to_native(unexpected[0]) if native else unexpected[0]
        more = f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else ""
        raise ValueError(f"{where}: unexpected key {shown!r}{more} for the config (n_layer={config.n_layer}, "
                         f"rms_norm={config.rms_norm}, bias={config.proj_bias}, conv_bias={config.conv_bias}, "
                         f"tied={config.tie_embeddings})")
    for k, shape in expected.items():
        t = canon[k]
        name = canonical_to_native(k) if native else k
        if tuple(t.shape) != shape:
            raise ValueError(f"{where}: key {name!r} has shape {tuple(t.shape)}, expected {shape} from the config")
        if t.dtype not in _FLOAT_DTYPES:
            raise ValueError(f"{where}: key {name!r} has dtype {t.dtype}, expected a floating-point tensor "
                             "(float16, bfloat16, float32 or float64)")
        if not torch.isfinite(t).all():
            raise ValueError(f"{where}: key {name!r} has non-finite values (NaN or inf)")
    if head is not None:
        emb = canon["backbone.embeddings.weight"]
        if (head.shape != emb.shape or head.dtype not in _FLOAT_DTYPES
                or not torch.equal(head.to(emb.dtype), emb)):
            raise ValueError(f"{where}: key 'lm_head.weight' differs from the embedding although the config "
                             "ties them (tie_embeddings / tie_word_embeddings)")
    return canon


# ----------------------------------------------------------------------------- sources


def resolve_source(source: str | os.PathLike | None) -> tuple[Path, str]:
    """Map a user source (path, Hub id, shipped name, or None) to a local directory and a label.

    Arguments:
        source: a checkpoint directory (or its config.json / weight file), a shipped model name, a
            Hub id, or None for the shipped default.

    Returns:
        ``(directory, label)``.

    Raises:
        TypeError: for a source of another type.
        ValueError: for an empty string or a path the system cannot look up.
        FileNotFoundError: when nothing matches, naming the source; for an uncached Hub id.
    """
    if source is None:
        return shipped_model_dir(None), "shipped default"
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"load: argument 'source' must be a path, hub id or shipped name, got {type(source).__name__}")
    src = os.fspath(source)
    if not isinstance(src, str):
        raise TypeError(f"load: argument 'source' must be a str path, got {type(src).__name__}")
    if not src.strip():
        raise ValueError(f"load: argument 'source' is an empty string ({src!r}); pass a checkpoint directory, "
                         "a Hub id (owner/name) or a shipped model name, or None for the shipped default")
    path = Path(src).expanduser()
    try:
        exists, is_file = path.exists(), path.is_file()
    except (OSError, ValueError) as exc:
        raise ValueError(f"load: argument 'source' {src[:200]!r} is not a usable path ({_one_line(exc)})") from None
    if exists:
        if is_file:
            if path.name == CONFIG_FILE or path.suffix in (".safetensors", ".bin"):
                return path.parent, src
            raise ValueError(f"{path}: expected a checkpoint directory (config.json + weights), got a file")
        return path, src
    if src in shipped_names():
        return shipped_model_dir(src), src
    if is_hub_id(src):
        return hub_directory(src, HUB_PATTERNS), src
    raise FileNotFoundError(f"no checkpoint at {src[:200]!r}: not an existing directory, not a shipped model "
                            f"({', '.join(shipped_names()) or 'none shipped'}), not a Hub id (owner/name)")


def read_checkpoint(source: str | os.PathLike | None, *, dtype: torch.dtype = torch.float32,
                    device: str | torch.device = "cpu"
                    ) -> tuple[MambaConfig | Mamba2Config, dict[str, Tensor], Checkpoint]:
    """Read a checkpoint into (config, canonical state dict, provenance).

    The config is read and checked field by field, and the model it describes is sized against the
    memory ``device`` has (for ``dtype``), before the weights are read or anything is built per layer.

    Arguments:
        source: a directory, a Hub id, a shipped model name, or None for the shipped default.
        dtype: the dtype the model will be built in (for the memory check only).
        device: where the model will live (for the memory check only).

    Returns:
        ``(config, state, info)``; ``config`` is a `MambaConfig` or, for a Mamba-2
        checkpoint, a `Mamba2Config`; ``state`` maps canonical (transformers) keys to CPU
        tensors in the dtype stored in the file.

    Raises:
        FileNotFoundError: missing directory, config.json or weights; Hub id neither cached nor downloadable.
        ValueError: unknown layout, bad config field, a model too large for the memory available,
            missing/unexpected key, wrong shape, non-finite weight, Mamba-2 weights under a Mamba-1
            config, a file that is not UTF-8 or not JSON — the message names the file and the key or field.
        TypeError: for a source, dtype or device of the wrong type.
    """
    dtype = check_dtype(dtype, where="read_checkpoint")
    dev = check_device(device, where="read_checkpoint")
    directory, label = resolve_source(source)
    cfg_path = directory / CONFIG_FILE
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{cfg_path}: missing config.json in checkpoint directory {directory}")
    raw = read_json(cfg_path)
    detect_layout(raw, str(cfg_path))
    config = config_from_dict(raw, str(cfg_path))
    check_memory(config, dtype, dev, str(cfg_path))
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
        native = {canonical_to_native(k): v for k, v in state.items()}
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

    Arguments:
        directory: the checkpoint directory.

    Returns:
        The record (``{"input_output_sign", "token_reorder", "K"}``), or None.

    Raises:
        ValueError: naming the file and the field for a ``refine.json`` that is not UTF-8 JSON, not an
            object, or whose ``token_reorder`` / ``K`` fields have the wrong form.
    """
    path = Path(directory) / REFINE_FILE
    if not path.is_file():
        return None
    record = read_json(path)
    if not isinstance(record, dict):
        raise ValueError(f"{path}: expected a JSON object, got {show(record)}")
    reorder, scores = record.get("token_reorder") or {}, record.get("K") or {}
    if not isinstance(reorder, dict):
        raise ValueError(f"{path}: field 'token_reorder' must be an object (module path → options), "
                         f"got {show(reorder)}")
    for name, opts in reorder.items():
        if (not isinstance(opts, dict) or set(opts) - {"tau", "hard", "permute_back"}
                or not all(isinstance(opts.get(k, False), bool) for k in ("hard", "permute_back"))
                or not isinstance(opts.get("tau", 1.0), (int, float)) or isinstance(opts.get("tau"), bool)
                or not 0 < float(opts.get("tau", 1.0)) < float("inf")):
            raise ValueError(f"{path}: field 'token_reorder.{name}' must be an object with a positive finite 'tau' "
                             f"and boolean 'hard' and 'permute_back', got {show(opts)}")
    if not isinstance(scores, dict):
        raise ValueError(f"{path}: field 'K' must be an object (vector name → list of numbers), got {show(scores)}")
    for name, vec in scores.items():
        if not isinstance(vec, list) or not all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                                and abs(x) < float("inf") for x in vec):
            raise ValueError(f"{path}: field 'K.{name}' must be a list of finite numbers, got {show(vec)}")
    return record
