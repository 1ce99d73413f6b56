"""The io layer: find and read checkpoints, map their configs, and read their tokenizers.

Nothing here builds a network: `mamba_ode.load` (in `mamba_ode.nn`) turns what this
layer reads into a model. This is the only layer that knows file layouts and key names.
"""

from .checkpoints import Checkpoint, expected_shapes, read_checkpoint, resolve_source, validate_state, write_checkpoint
from .config import AnyConfig, Mamba2Config, MambaConfig, config_from_dict, detect_layout, is_mamba2_config
from .keys import parameter_count
from .machine import available_memory, check_device, check_dtype, check_memory
from .tokenizers import ByteTokenizer, HFTokenizer, load_tokenizer, tokenizer_for

__all__ = [
    "AnyConfig",
    "ByteTokenizer",
    "Checkpoint",
    "HFTokenizer",
    "Mamba2Config",
    "MambaConfig",
    "available_memory",
    "check_device",
    "check_dtype",
    "check_memory",
    "config_from_dict",
    "detect_layout",
    "expected_shapes",
    "is_mamba2_config",
    "load_tokenizer",
    "parameter_count",
    "read_checkpoint",
    "resolve_source",
    "tokenizer_for",
    "validate_state",
    "write_checkpoint",
]
