"""Saved analyses on disk: `write_saved` writes the fields of an analysis, `read_saved` reads them back.

`mamba_ode.Analysis.save` and `mamba_ode.load_analysis` are the entry points; this module knows the
format only.

Layout of a saved analysis directory::

    analysis.json         the object tree: records, labels, settings, numbers (tensors by reference)
    tensors.safetensors   every tensor of the tree (trajectories, token states, spectra, matrices)
    summary.json          the same digest ``mamba-ode analyze`` writes, for reading without Python
    .mamba-ode-analysis   marker: this directory is a saved analysis

The tree is encoded field by field: records (dataclasses), labels (enums) and list types by their
qualified name, tensors by a key into ``tensors.safetensors``. Loading builds only the types of a
fixed list (`write_saved` refuses anything else), with exactly their declared fields (those of a short list,
added later with a default, may be absent: analyses saved by older versions load): no pickle, no
import by name. The model itself is not saved:
the loaded analysis carries a `SavedModel` with what the report needs (architecture, config,
checkpoint, token pieces).
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from .._version import __version__
from ..dynamics.compare import DiscreteComparison
from ..dynamics.solvers.solution import Outcome, Solution, Status
from ..dynamics.tokens import TokenEnd, TokenSolution
from ..io.checkpoints import Checkpoint
from ..io.config import Mamba2Config, MambaConfig
from ..regimes.labels import Definiteness, Label
from ..regimes.predict import PredictionKind, TokenPrediction
from ..regimes.table import RegimeTable, Verdict
from ..regimes.tokens import TokenClassification, TokenVerdict
from .output import check_report_dir, staged_dir

__all__ = ["write_saved", "read_saved", "SavedModel", "ANALYSIS_MARKER", "FORMAT_VERSION"]

ANALYSIS_MARKER = ".mamba-ode-analysis"
FORMAT_VERSION = 1


@dataclasses.dataclass
class SavedModel:
    """What a saved analysis keeps of its model: enough to summarise and draw, not to run.

    Attributes:
        architecture: ``"mamba"`` or ``"mamba2"``.
        config: the model's config.
        checkpoint: where it was loaded from (None for an in-memory model).
        pieces: token id → decoded piece for the prompt's ids (empty without a tokenizer).
    """

    architecture: str
    config: MambaConfig | Mamba2Config
    checkpoint: Checkpoint | None
    pieces: dict[int, str]

    @property
    def tokenizer(self) -> _Pieces | None:
        """A decoder for the saved pieces (None when the model had no tokenizer)."""
        return _Pieces(self.pieces) if self.pieces else None


class _Pieces:
    def __init__(self, pieces: dict[int, str]):
        self.pieces = pieces

    def decode_tokens(self, ids: list[int]) -> list[str]:
        return [self.pieces[int(i)] for i in ids]


# ---------------------------------------------------------------------------------------------- encoding


class _Encoder:
    def __init__(self, types: dict[str, type]) -> None:
        self.tensors: dict[str, Tensor] = {}
        self.types = types

    def __call__(self, obj: Any) -> Any:  # noqa: PLR0911 (one return per kind of value)
        if isinstance(obj, enum.Enum):  # first: a str-valued label is also a str
            return {"__enum__": _qualname(type(obj), self.types), "value": obj.value}
        if obj is None or isinstance(obj, (bool, int, str)):
            return obj
        if isinstance(obj, float):
            return obj if math.isfinite(obj) else {"__float__": repr(obj)}
        if isinstance(obj, Tensor):
            key = f"t{len(self.tensors)}"
            self.tensors[key] = obj.detach().cpu().contiguous().clone()  # own storage: views are saved apart
            return {"__tensor__": key}
        if isinstance(obj, Path):
            return {"__path__": str(obj)}
        if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            return {"__record__": _qualname(type(obj), self.types),
                    "fields": {f.name: self(getattr(obj, f.name)) for f in dataclasses.fields(obj)}}
        if isinstance(obj, tuple):
            return {"__tuple__": [self(x) for x in obj]}
        if isinstance(obj, list):
            if type(obj) is not list:  # a list type of mamba_ode (e.g. RegimeTable)
                return {"__list__": _qualname(type(obj), self.types), "items": [self(x) for x in obj]}
            return [self(x) for x in obj]
        if isinstance(obj, dict):
            if all(isinstance(k, str) for k in obj):
                return {"__dict__": {k: self(v) for k, v in obj.items()}}
            return {"__items__": [[self(k), self(v)] for k, v in obj.items()]}
        if isinstance(obj, (torch.dtype, torch.device)):
            return {"__str__": str(obj)}
        raise TypeError(f"cannot save a value of type {type(obj).__name__} in an analysis")


def _types(extra: tuple[type, ...] = ()) -> dict[str, type]:
    """The only types a saved analysis may hold, by ``module:qualname``: nothing else is ever built."""
    kinds = (Checkpoint, MambaConfig, Mamba2Config, SavedModel, DiscreteComparison, Solution, Status, Outcome,
             TokenSolution, TokenEnd, Label, Definiteness, PredictionKind, TokenPrediction, RegimeTable, Verdict,
             TokenClassification, TokenVerdict, *extra)
    return {f"{cls.__module__}:{cls.__qualname__}": cls for cls in kinds}


def _qualname(cls: type, types: dict[str, type]) -> str:
    name = f"{cls.__module__}:{cls.__qualname__}"
    if types.get(name) is not cls:
        raise TypeError(f"cannot save a {cls.__module__}.{cls.__qualname__} in an analysis")
    return name


def _resolve(name: Any, types: dict[str, type], kind: type | None, where: Path) -> type:
    cls = types.get(name) if isinstance(name, str) else None
    if cls is None:
        raise ValueError(f"{where}: unknown record type {name!r} (not one a saved analysis holds)")
    if kind is enum.Enum and not issubclass(cls, enum.Enum) or kind is list and not issubclass(cls, list) or \
            kind is None and not dataclasses.is_dataclass(cls):
        raise ValueError(f"{where}: {name!r} is not of the kind its entry says")
    return cls


class _Decoder:
    def __init__(self, tensors: dict[str, Tensor], types: dict[str, type], where: Path):
        self.tensors, self.types, self.where = tensors, types, where

    def __call__(self, obj: Any) -> Any:  # noqa: PLR0911
        if obj is None or isinstance(obj, (bool, int, float, str)):
            return obj
        if isinstance(obj, list):
            return [self(x) for x in obj]
        if not isinstance(obj, dict) or len(obj) not in (1, 2):
            raise ValueError(f"{self.where}: malformed entry {str(obj)[:80]!r}")
        if "__tensor__" in obj:
            try:
                return self.tensors[obj["__tensor__"]]
            except KeyError:
                raise ValueError(f"{self.where}: tensor {obj['__tensor__']!r} is missing from "
                                 "tensors.safetensors") from None
        if "__float__" in obj:
            return float(obj["__float__"])
        if "__enum__" in obj:
            return _resolve(obj["__enum__"], self.types, enum.Enum, self.where)(obj["value"])
        if "__record__" in obj:
            cls = _resolve(obj["__record__"], self.types, None, self.where)
            declared = {f.name: f for f in dataclasses.fields(cls)}
            optional = _ADDED_LATER.get(cls.__name__, set())  # absent from analyses saved by older versions
            if not isinstance(obj.get("fields"), dict) or not set(declared) - optional <= set(obj["fields"]) \
                    <= set(declared):
                got = sorted(obj["fields"]) if isinstance(obj.get("fields"), dict) else obj.get("fields")
                raise ValueError(f"{self.where}: a {cls.__name__} record needs the fields {sorted(declared)} "
                                 f"({sorted(optional)} may be absent), got {got}")
            fields = {k: self(v) for k, v in obj["fields"].items()}
            rec = cls(**{k: v for k, v in fields.items() if declared[k].init})
            for k, v in fields.items():  # fields set after construction (init=False)
                if not declared[k].init:
                    object.__setattr__(rec, k, v)
            return rec
        if "__list__" in obj:
            return _resolve(obj["__list__"], self.types, list, self.where)(self(x) for x in obj["items"])
        if "__tuple__" in obj:
            return tuple(self(x) for x in obj["__tuple__"])
        if "__dict__" in obj:
            return {k: self(v) for k, v in obj["__dict__"].items()}
        if "__items__" in obj:
            return {self(k): self(v) for k, v in obj["__items__"]}
        if "__path__" in obj:
            return Path(obj["__path__"])
        if "__str__" in obj:
            return obj["__str__"]
        raise ValueError(f"{self.where}: malformed entry {str(obj)[:80]!r}")


# ---------------------------------------------------------------------------------------------- public


#: Record fields added after the format's first version, with a default: they may be absent when loading.
_ADDED_LATER: dict[str, set[str]] = {"TokenSolution": {"end_exponent", "initial_speed"}}


def write_saved(fields: dict[str, Any], summary: dict[str, Any], directory: str | os.PathLike, *,
                extra_types: tuple[type, ...] = ()) -> Path:
    """Write an analysis's fields and summary to a directory, whole or not at all.

    Arguments:
        fields: field name → value (records, labels, tensors, containers of them; the model as a
            `SavedModel`).
        summary: the JSON digest (written as ``summary.json``).
        directory: where to write: new, empty, or an earlier saved analysis (replaced).
        extra_types: record types of the caller's layer that the tree may hold (besides this module's list).

    Returns:
        The directory (absolute).

    Raises:
        TypeError: for a value that is not a record, label, tensor, number, string or container of mamba_ode.
        ValueError: (`mamba_ode.analysis.output.ReportDirError`) for a directory that is a file, not
            writable, or a non-empty directory that is not a saved analysis.
        OSError: when the file system refuses a write.
    """
    target = check_report_dir(directory, marker=ANALYSIS_MARKER, what="saved analysis")
    enc = _Encoder(_types(extra_types))
    tree = {name: enc(value) for name, value in fields.items()}
    with staged_dir(target, version=__version__, marker=ANALYSIS_MARKER, what="saved analysis") as out:
        (out / "analysis.json").write_text(json.dumps({"format": FORMAT_VERSION, "version": __version__,
                                                       "analysis": tree}, allow_nan=False) + "\n", encoding="utf-8")
        save_file(enc.tensors, str(out / "tensors.safetensors"))
        (out / "summary.json").write_text(json.dumps(summary, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return target


def read_saved(directory: str | os.PathLike, *, extra_types: tuple[type, ...] = ()) -> dict[str, Any]:
    """The fields of a saved analysis. Only the record, label and list types of `write_saved` are built.

    Arguments:
        directory: a directory written by `write_saved`.
        extra_types: as for `write_saved`.

    Returns:
        field name → value, as written.

    Raises:
        FileNotFoundError: if the directory or one of its files is missing.
        ValueError: for a directory that is not a saved analysis, a format of another version, or
            malformed content (naming the file).
    """
    d = Path(directory)
    if not d.is_dir():
        raise FileNotFoundError(f"saved analysis {str(d)!r} not found (no such directory)")
    if not (d / ANALYSIS_MARKER).is_file():
        raise ValueError(f"{str(d)!r} is not a saved analysis (no {ANALYSIS_MARKER} marker; write one with "
                         "Analysis.save)")
    for name in ("analysis.json", "tensors.safetensors"):
        if not (d / name).is_file():
            raise FileNotFoundError(f"saved analysis {str(d)!r}: missing {name}")
    where = d / "analysis.json"
    try:
        doc = json.loads(where.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{where}: not valid JSON ({err})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("analysis"), dict):
        raise ValueError(f"{where}: not a saved analysis")
    if doc.get("format") != FORMAT_VERSION:
        raise ValueError(f"{where}: format {doc.get('format')!r}; this version of mamba-ode reads format "
                         f"{FORMAT_VERSION}")
    try:
        tensors = load_file(str(d / "tensors.safetensors"))
    except Exception as err:  # safetensors raises its own error types
        raise ValueError(f"{d / 'tensors.safetensors'}: cannot be read ({err})") from None
    dec = _Decoder(tensors, _types(extra_types), where)
    try:
        return {k: dec(v) for k, v in doc["analysis"].items()}
    except (TypeError, KeyError, AttributeError, IndexError) as err:  # a malformed entry, of whatever shape
        raise ValueError(f"{where}: malformed content ({type(err).__name__}: {err})") from None
