"""Typed access to the fields of a config file, shared by the config parsers of both generations.

Every error names the file and the field **as written in that file** (``hidden_size`` in the
transformers layout, ``ssm_cfg.d_state`` for a nested native field), the value found and what was
expected, in one line.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

T = TypeVar("T")

_MISSING: Any = object()

#: Internal `MambaConfig` / `Mamba2Config` field → the field as written in a transformers config.
HF_NAMES = {"d_model": "hidden_size", "n_layer": "num_hidden_layers", "vocab_size": "vocab_size",
            "vocab_size_unpadded": "vocab_size",
            "d_state": "state_size", "d_conv": "conv_kernel", "expand": "expand", "dt_rank": "time_step_rank",
            "norm_eps": "layer_norm_epsilon", "mixer_norm_eps": "layer_norm_epsilon", "headdim": "head_dim",
            "ngroups": "n_groups", "chunk_size": "chunk_size", "dt_limit": "time_step_limit",
            "residual_in_fp32": "residual_in_fp32", "tie_embeddings": "tie_word_embeddings",
            "conv_bias": "use_conv_bias", "proj_bias": "use_bias"}
#: Internal field → the field as written in a mamba-ssm (native) config.
NATIVE_NAMES = {"d_model": "d_model", "n_layer": "n_layer", "vocab_size": "vocab_size",
                "vocab_size_unpadded": "vocab_size",
                "d_state": "ssm_cfg.d_state", "d_conv": "ssm_cfg.d_conv", "expand": "ssm_cfg.expand",
                "dt_rank": "ssm_cfg.dt_rank", "norm_eps": "norm_epsilon", "headdim": "ssm_cfg.headdim",
                "ngroups": "ssm_cfg.ngroups", "chunk_size": "ssm_cfg.chunk_size", "dt_limit": "ssm_cfg.dt_limit",
                "rms_norm": "rms_norm", "residual_in_fp32": "residual_in_fp32", "tie_embeddings": "tie_embeddings",
                "conv_bias": "ssm_cfg.conv_bias", "proj_bias": "ssm_cfg.bias"}


def file_name_of(field_name: str, layout: str) -> str:
    """The name a config field has in a config file of ``layout``.

    Arguments:
        field_name: a `MambaConfig` / `Mamba2Config` field.
        layout: ``"hf"`` or ``"native"``.

    Returns:
        The field as written in the file (``hidden_size``, ``ssm_cfg.d_state``), or ``field_name``.
    """
    names = HF_NAMES if layout == "hf" else NATIVE_NAMES
    return names.get(field_name, field_name)


def show(value: Any) -> str:
    """A short one-line description of a JSON value for error messages (never recursive, never long).

    Arguments:
        value: a parsed JSON value.

    Returns:
        E.g. ``'16' (a string)``, ``null``, ``a list of 3 items``, ``an integer of about 101 digits``.
    """
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true (a boolean)" if value else "false (a boolean)"
    if isinstance(value, int):
        if value.bit_length() > 64:
            return f"an integer of about {int(value.bit_length() * math.log10(2)) + 1} digits"
        return f"{value} (an integer)"
    if isinstance(value, float):
        return f"{value!r} (a float)"
    if isinstance(value, str):
        text = value if len(value) <= 40 else value[:40] + "…"
        return f"{text!r} (a string)"
    if isinstance(value, (list, tuple)):
        return f"a list of {len(value)} item{'' if len(value) == 1 else 's'}"
    if isinstance(value, Mapping):
        return f"an object with {len(value)} key{'' if len(value) == 1 else 's'}"
    return f"a {type(value).__name__}"


def check_eps(name: str, value: Any) -> None:
    """Raise unless a dataclass's norm epsilon is a finite number in (0, 1].

    Arguments:
        name: the config field's name.
        value: its value.

    Raises:
        ValueError: naming the config field.
    """
    x = _number(value)
    if x is None or not math.isfinite(x) or not 0 < x <= 1:
        raise ValueError(f"config field {name!r} must be a finite number in (0, 1], got {value!r}")


def padding_multiple(unpadded: int, padded: int) -> int:
    """The smallest power-of-two multiple (8…1024) that pads ``unpadded`` to ``padded``, else ``padded``."""
    for m in (8, 16, 32, 64, 128, 256, 512, 1024):
        if padded % m == 0 and padded - unpadded < m:
            return m
    return padded


def _number(x: Any) -> float | None:
    """A JSON number (or transformers 5.x's ``{"__float__": "Infinity"}``) as a float, else None."""
    if isinstance(x, Mapping) and set(x) == {"__float__"} and isinstance(x["__float__"], str):
        try:
            return float(x["__float__"])
        except ValueError:
            return None
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    try:
        return float(x)
    except OverflowError:  # an integer too large for a float
        return math.inf if x > 0 else -math.inf


class Fields:
    """Typed, checked access to one JSON object of a config file.

    Arguments:
        cfg: the parsed object.
        where: the file name used in error messages.
        prefix: the path of this object inside the file (``"ssm_cfg."``) used in field names.

    Examples:
        >>> Fields({"hidden_size": 16}, "config.json").pos_int("hidden_size")
        16
    """

    def __init__(self, cfg: Mapping[str, Any], where: str, prefix: str = "") -> None:
        self.cfg = cfg
        self.where = where
        self.prefix = prefix

    def name(self, key: str) -> str:
        """The field's name as written in the file (with the path of nested objects)."""
        return self.prefix + key

    def has(self, key: str) -> bool:
        """True when the field is present (even as null)."""
        return key in self.cfg

    def raw(self, key: str, default: Any = None) -> Any:
        """The field's value unchecked (``default`` when absent)."""
        return self.cfg.get(key, default)

    def error(self, key: str, value: Any, expected: str) -> ValueError:
        """A ValueError naming the file, the field, the value found and what was expected."""
        return ValueError(f"{self.where}: field {self.name(key)!r} must be {expected}, got {show(value)}")

    def _get(self, key: str, default: Any) -> Any:
        if key in self.cfg:
            return self.cfg[key]
        if default is _MISSING:
            raise ValueError(f"{self.where}: missing required field {self.name(key)!r}")
        return default

    def pos_int(self, key: str, default: Any = _MISSING) -> int:
        """A positive integer (a required field without ``default``).

        Arguments:
            key: the field.
            default: the value when absent (none: the field is required).

        Returns:
            The integer.

        Raises:
            ValueError: for a missing required field or any value that is not an integer ≥ 1.
        """
        v = self._get(key, default)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise self.error(key, v, "a positive integer")
        return v

    def nonneg_int(self, key: str, default: int) -> int:
        """An integer ≥ 0 (absent or null: ``default``).

        Arguments:
            key: the field.
            default: the value when absent or null.

        Returns:
            The integer.

        Raises:
            ValueError: for any other value.
        """
        v = self._get(key, default)
        if v is None:
            return default
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise self.error(key, v, "an integer >= 0")
        return v

    def opt_pos_int(self, key: str) -> int | None:
        """A positive integer, or None when absent or null.

        Arguments:
            key: the field.

        Returns:
            The integer or None.

        Raises:
            ValueError: for any other value.
        """
        v = self.cfg.get(key)
        return None if v is None else self.pos_int(key)

    def rank(self, key: str, d_model: int) -> int:
        """A Δ rank: a positive integer, or ``"auto"`` / null / absent for ``ceil(d_model / 16)``.

        Arguments:
            key: the field.
            d_model: the model width the automatic rank derives from.

        Returns:
            The rank.

        Raises:
            ValueError: for any other value.
        """
        v = self.cfg.get(key)
        if v is None or v == "auto":
            return math.ceil(d_model / 16)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise self.error(key, v, "a positive integer or 'auto'")
        return v

    def flag(self, key: str, default: bool) -> bool:
        """A boolean (``true``/``false``; absent: ``default``).

        Arguments:
            key: the field.
            default: the value when absent.

        Returns:
            The boolean.

        Raises:
            ValueError: for any other value (a string ``"false"`` would otherwise read as true).
        """
        v = self._get(key, default)
        if not isinstance(v, bool):
            raise self.error(key, v, "true or false")
        return v

    def eps(self, key: str, default: float) -> float:
        """A norm epsilon: a finite number in (0, 1].

        Arguments:
            key: the field.
            default: the value when absent.

        Returns:
            The epsilon as a float.

        Raises:
            ValueError: for a non-number, a non-finite number or one outside (0, 1].
        """
        v = self._get(key, default)
        x = _number(v)
        if x is None or not math.isfinite(x) or not 0 < x <= 1:
            raise self.error(key, v, "a finite number in (0, 1]")
        return x

    def limit_pair(self, key: str) -> tuple[float, float]:
        """A Δ clamp ``[lo, hi]`` with ``0 <= lo <= hi``, lo finite (null or absent: ``(0, inf)``).

        Arguments:
            key: the field.

        Returns:
            ``(lo, hi)`` as floats.

        Raises:
            ValueError: for anything else (NaN, a reversed pair, a negative or infinite lower bound).
        """
        v = self.cfg.get(key)
        if v is None:
            return (0.0, math.inf)
        if not isinstance(v, (list, tuple)) or len(v) != 2:
            raise self.error(key, v, "a pair [lo, hi] of numbers")
        lo, hi = _number(v[0]), _number(v[1])
        if lo is None or hi is None:
            raise self.error(key, v, "a pair [lo, hi] of numbers")
        if math.isnan(hi) or not math.isfinite(lo) or not 0 <= lo <= hi:
            raise ValueError(f"{self.where}: field {self.name(key)!r} must be a pair [lo, hi] with "
                             f"0 <= lo <= hi and lo finite, got [{lo!r}, {hi!r}]")
        return (lo, hi)

    def only(self, key: str, allowed: tuple[Any, ...], default: Any) -> Any:
        """A field that may only take one of ``allowed`` values (absent: ``default``).

        Arguments:
            key: the field.
            allowed: the supported values.
            default: the value when absent.

        Returns:
            The value.

        Raises:
            ValueError: naming the supported values.
        """
        v = self.cfg.get(key, default)
        if isinstance(v, bool) or v not in allowed:
            shown = " or ".join(repr(a) for a in allowed)
            raise ValueError(f"{self.where}: field {self.name(key)!r} is {show(v)}; only {shown} is supported")
        return v

    def obj(self, key: str, required: bool = False) -> Fields:
        """A nested JSON object (absent or null: empty unless ``required``).

        Arguments:
            key: the field.
            required: refuse an absent or null object.

        Returns:
            A `Fields` over the object, naming its fields ``key.name``.

        Raises:
            ValueError: for a missing required object or a value that is not an object.
        """
        v = self.cfg.get(key)
        if v is None and not required:
            v = {}
        if not isinstance(v, Mapping):
            raise self.error(key, v, "an object")
        return Fields(v, self.where, self.name(key) + ".")


def check_pure_mamba(f: Fields) -> None:
    """Refuse a native config of a hybrid model (MLP blocks or attention layers).

    Arguments:
        f: the config's top-level fields.

    Raises:
        ValueError: naming the file and the field ``d_intermediate`` or ``attn_layer_idx``.
    """
    if f.nonneg_int("d_intermediate", 0):
        raise ValueError(f"{f.where}: field 'd_intermediate' = {f.raw('d_intermediate')}: hybrid models with MLP "
                         "blocks are not supported (only pure Mamba stacks)")
    attn = f.raw("attn_layer_idx")
    if attn is not None and not isinstance(attn, list):
        raise f.error("attn_layer_idx", attn, "a list of layer indices")
    if attn:
        raise ValueError(f"{f.where}: field 'attn_layer_idx' is non-empty: hybrid models with attention "
                         "layers are not supported")


def checked(where: str, layout: str, build: Callable[[], T]) -> T:
    """``build()`` (a config constructor), with a ValueError's message naming the file and the field.

    The dataclass checks speak of internal field names (``config field 'ngroups'``); the message
    gains the file name in front and the field's name in the file (``n_groups``) behind.

    Arguments:
        where: the file name.
        layout: ``"hf"`` or ``"native"``.
        build: the constructor call.

    Returns:
        What ``build`` returns.

    Raises:
        ValueError: the constructor's, reworded.
    """
    try:
        return build()
    except ValueError as exc:
        msg = str(exc)
        if msg.startswith(where):
            raise
        field = msg.split("'")[1] if msg.startswith("config field '") else None
        if field is not None and file_name_of(field, layout) != field:
            msg += f" (field {file_name_of(field, layout)!r} in this file)"
        raise ValueError(f"{where}: {msg}") from None
