"""Tokenizers carried by checkpoints: the package's byte tokenizer and Hugging Face ``tokenizer.json`` files.

A checkpoint directory declares its tokenizer in one of two ways, read in this order:

* ``tokenizer.json`` (a Hugging Face fast tokenizer, as the transformers checkpoints ship): read with
  the ``tokenizers`` library (an optional dependency, imported only here) into `HFTokenizer`;
* ``tokenizer_config.json`` with ``{"tokenizer_class": "ByteTokenizer"}``: mamba_ode's own byte-level
  tokenizer (`ByteTokenizer`, the shipped models).

Both answer ``encode(text) -> list[int]``, ``decode(ids) -> str``, ``decode_tokens(ids) -> list[str]``,
``vocab_size`` and ``save(directory)``. `load_tokenizer` picks the checkpoint's own tokenizer
or one the user names (a directory, a ``tokenizer.json`` file, a Hub id, an object) and refuses a
vocabulary larger than the model's.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ._fields import show
from .files import read_json, read_text
from .hub import hub_directory, is_hub_id

__all__ = ["ByteTokenizer", "HFTokenizer", "tokenizer_for", "load_tokenizer", "check_tokenizer_arg",
           "check_tokenizer_vocab",
           "TOKENIZER_FILE", "TOKENIZER_JSON"]

TOKENIZER_FILE = "tokenizer_config.json"
TOKENIZER_JSON = "tokenizer.json"
#: The files a Hub id is resolved to when only its tokenizer is wanted.
TOKENIZER_PATTERNS = [TOKENIZER_JSON, TOKENIZER_FILE, "special_tokens_map.json"]
_ARG = "load: argument 'tokenizer'"


def _check_ids(ids: Iterable[Any], vocab_size: int) -> list[int]:
    """Token ids as ints in [0, vocab_size); a ValueError/TypeError naming 'ids' otherwise."""
    out = []
    for i in ids:
        if isinstance(i, bool) or not isinstance(i, int):
            try:
                i = int(i.item() if hasattr(i, "item") else i)
            except (TypeError, ValueError, RuntimeError):
                raise TypeError(f"decode: argument 'ids' must hold integer token ids, got {show(i)}") from None
        if not 0 <= i < vocab_size:
            raise ValueError(f"decode: id {i} in argument 'ids' is outside the vocabulary 0..{vocab_size - 1}")
        out.append(i)
    return out


class ByteTokenizer:
    """UTF-8 bytes as token ids 0..255 (no special tokens).

    Examples:
        >>> tok = ByteTokenizer()
        >>> tok.decode(tok.encode("to be"))
        'to be'
    """

    vocab_size = 256

    def encode(self, text: str) -> list[int]:
        """Text → list of byte ids.

        Arguments:
            text: the text.

        Returns:
            One id per UTF-8 byte.

        Raises:
            TypeError: if text is not a str.
        """
        if not isinstance(text, str):
            raise TypeError(f"encode: argument 'text' must be str, got {type(text).__name__}")
        return list(text.encode("utf-8"))

    def decode(self, ids: Iterable[Any]) -> str:
        """Ids → text (invalid UTF-8 sequences become U+FFFD).

        Arguments:
            ids: byte ids.

        Returns:
            The text.

        Raises:
            ValueError: for an id outside 0..255.
        """
        ids = [int(i) for i in ids]
        bad = [i for i in ids if not 0 <= i < 256]
        if bad:
            raise ValueError(f"decode: id {bad[0]} is outside the byte range 0..255")
        return bytes(ids).decode("utf-8", errors="replace")

    def decode_tokens(self, ids: Iterable[Any]) -> list[str]:
        """The decoded piece of each token (a byte that is part of a multi-byte character gives U+FFFD).

        Arguments:
            ids: byte ids.

        Returns:
            One string per id.

        Raises:
            ValueError: for an id outside 0..255.
        """
        return [self.decode([i]) for i in ids]

    def save(self, directory: str | Path) -> None:
        """Write ``tokenizer_config.json`` into a checkpoint directory.

        Arguments:
            directory: an existing directory.
        """
        with open(Path(directory) / TOKENIZER_FILE, "w", encoding="utf-8") as f:
            json.dump({"tokenizer_class": "ByteTokenizer", "vocab_size": 256}, f, indent=2)

    def __repr__(self) -> str:
        return "ByteTokenizer(vocab_size=256)"


class HFTokenizer:
    """A Hugging Face fast tokenizer (``tokenizer.json``) behind the `ByteTokenizer` interface.

    Special tokens: like transformers' ``tokenizer.encode(text)`` (``add_special_tokens=True``), the
    post-processor stored in ``tokenizer.json`` decides what is added (a BOS token for tokenizers
    whose template adds one, nothing for GPT-NeoX's, which the Mamba checkpoints use); pass
    ``add_special_tokens=False`` for the bare ids. ``tokenizer_config.json`` flags such as
    ``add_bos_token`` are not read. ``decode`` keeps special tokens, as transformers' default.

    Arguments:
        tokenizer: a ``tokenizers.Tokenizer``.
        add_special_tokens: let the post-processor add its special tokens in `encode`.
        config: the ``tokenizer_config.json`` read beside it, written back by `save`.
        path: where it was read from (for messages).
    """

    def __init__(self, tokenizer: Any, add_special_tokens: bool = True, config: dict | None = None,
                 path: str | None = None) -> None:
        if not isinstance(add_special_tokens, bool):
            raise TypeError("HFTokenizer: argument 'add_special_tokens' must be a bool, "
                            f"got {show(add_special_tokens)}")
        self._tok = tokenizer
        self.add_special_tokens = add_special_tokens
        self.config = config
        self.path = path
        vocab = tokenizer.get_vocab(with_added_tokens=True)
        self.vocab_size: int = max(vocab.values()) + 1 if vocab else 0

    @classmethod
    def from_file(cls, path: str | os.PathLike, add_special_tokens: bool = True) -> HFTokenizer:
        """Read a ``tokenizer.json`` (and the ``tokenizer_config.json`` beside it, when there is one).

        Arguments:
            path: the ``tokenizer.json`` file.
            add_special_tokens: see the class.

        Returns:
            The tokenizer.

        Raises:
            ImportError: when the ``tokenizers`` library is not installed.
            FileNotFoundError: when the file does not exist.
            ValueError: naming the file, for bytes that are not UTF-8 or content the library refuses.
        """
        try:
            from tokenizers import Tokenizer
        except ImportError:
            raise ImportError(f"{path}: reading a tokenizer.json needs the 'tokenizers' library: "
                              "pip install tokenizers") from None
        text = read_text(path)
        try:
            tok = Tokenizer.from_str(text)
        except Exception as exc:  # the library raises a bare Exception for any bad content
            first = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
            raise ValueError(f"{path}: not a tokenizer the 'tokenizers' library can read ({first[:200]})") from None
        cfg_path = Path(path).parent / TOKENIZER_FILE
        cfg = read_json(cfg_path) if cfg_path.is_file() else None
        return cls(tok, add_special_tokens, cfg if isinstance(cfg, dict) else None, str(path))

    def encode(self, text: str) -> list[int]:
        """Text → token ids (with the special tokens of the post-processor when ``add_special_tokens``).

        Arguments:
            text: the text.

        Returns:
            The ids.

        Raises:
            TypeError: if text is not a str.
        """
        if not isinstance(text, str):
            raise TypeError(f"encode: argument 'text' must be str, got {type(text).__name__}")
        return list(self._tok.encode(text, add_special_tokens=self.add_special_tokens).ids)

    def decode(self, ids: Iterable[Any]) -> str:
        """Ids → text (special tokens kept).

        Arguments:
            ids: token ids.

        Returns:
            The text.

        Raises:
            ValueError: for an id outside the vocabulary.
            TypeError: for an id that is not an integer.
        """
        return str(self._tok.decode(_check_ids(ids, self.vocab_size), skip_special_tokens=False))

    def decode_tokens(self, ids: Iterable[Any]) -> list[str]:
        """The decoded piece of each token (as ``decode([id])``; a partial UTF-8 byte gives U+FFFD).

        Arguments:
            ids: token ids.

        Returns:
            One string per id.

        Raises:
            ValueError: for an id outside the vocabulary.
        """
        return [str(self._tok.decode([i], skip_special_tokens=False)) for i in _check_ids(ids, self.vocab_size)]

    def save(self, directory: str | Path) -> None:
        """Write ``tokenizer.json`` (and ``tokenizer_config.json``) into a checkpoint directory.

        Arguments:
            directory: an existing directory.
        """
        out = Path(directory)
        self._tok.save(str(out / TOKENIZER_JSON))
        cfg = self.config if self.config is not None else {"tokenizer_class": "PreTrainedTokenizerFast"}
        with open(out / TOKENIZER_FILE, "w", encoding="utf-8") as f:
            json.dump(cfg, f, indent=2)

    def __repr__(self) -> str:
        return f"HFTokenizer(vocab_size={self.vocab_size}, add_special_tokens={self.add_special_tokens})"


def _from_directory(directory: Path) -> tuple[Any, Path | None]:
    """The tokenizer a directory declares and the file declaring it, or ``(None, None)``."""
    if (directory / TOKENIZER_JSON).is_file():
        return HFTokenizer.from_file(directory / TOKENIZER_JSON), directory / TOKENIZER_JSON
    path = directory / TOKENIZER_FILE
    if not path.is_file():
        return None, None
    cfg = read_json(path)
    if isinstance(cfg, dict) and cfg.get("tokenizer_class") == "ByteTokenizer":
        return ByteTokenizer(), path
    return None, None


def tokenizer_for(directory: str | Path) -> Any:
    """The tokenizer a checkpoint directory declares, or None when it declares none this package reads.

    ``tokenizer.json`` first (when the ``tokenizers`` library is missing: a warning and None), then a
    ``tokenizer_config.json`` naming ``ByteTokenizer``.

    Arguments:
        directory: the checkpoint directory.

    Returns:
        A `HFTokenizer`, a `ByteTokenizer` or None.

    Raises:
        ValueError: naming the file, for a tokenizer file that is not UTF-8, not JSON, or not a tokenizer.
    """
    try:
        return _from_directory(Path(directory))[0]
    except ImportError as exc:
        warnings.warn(f"{exc}; the model is loaded without a tokenizer", stacklevel=2)
        return None


def _resolve(spec: str | os.PathLike) -> tuple[Any, str]:
    """A tokenizer named by a path or a Hub id, and the file it came from."""
    src = os.fspath(spec)
    if not isinstance(src, str) or not src.strip():
        raise ValueError(f"{_ARG} is an empty string; pass a directory, a tokenizer.json file, a Hub id "
                         "(owner/name) or a tokenizer object, or None for the checkpoint's own")
    path = Path(src).expanduser()
    try:
        exists, is_file = path.exists(), path.is_file()
    except (OSError, ValueError) as exc:
        raise ValueError(f"{_ARG} {src[:200]!r} is not a usable path ({exc})") from None
    if is_file:
        if path.name == TOKENIZER_FILE:
            path = path.parent
        elif path.suffix == ".json":
            return HFTokenizer.from_file(path), str(path)
        else:
            raise ValueError(f"{_ARG}: {path} is not a tokenizer.json file or a directory holding one")
    elif not exists:
        if not is_hub_id(src):
            raise FileNotFoundError(f"{_ARG}: no tokenizer at {src[:200]!r} (not an existing directory or "
                                    "tokenizer.json file, not a Hub id owner/name)")
        path = hub_directory(src, TOKENIZER_PATTERNS, label=f"{_ARG}: hub id")
    tok, where = _from_directory(path)
    if tok is None:
        raise FileNotFoundError(f"{_ARG}: {path} holds no tokenizer this package reads (expected {TOKENIZER_JSON}, "
                                f"or {TOKENIZER_FILE} naming ByteTokenizer)")
    return tok, str(where)


def check_tokenizer_vocab(tokenizer: Any, vocab_size: int, where: str) -> None:
    """Refuse a tokenizer whose ids could fall outside the model's embedding.

    Arguments:
        tokenizer: anything with an int ``vocab_size`` (and/or ``__len__``, as transformers' tokenizers);
            one without either is not checked here (ids are checked when encoded).
        vocab_size: the model's vocabulary size (rows of the embedding).
        where: the tokenizer's file or the argument, for the message.

    Raises:
        ValueError: naming both sizes.
    """
    sizes = [getattr(tokenizer, "vocab_size", None)]
    if hasattr(tokenizer, "__len__"):
        try:
            sizes.append(len(tokenizer))
        except TypeError:
            pass
    n = max((s for s in sizes if isinstance(s, int) and not isinstance(s, bool)), default=None)
    if n is not None and n > vocab_size:
        raise ValueError(f"{where}: the tokenizer has {n} tokens but the model's vocab_size is {vocab_size}: ids "
                         f"{vocab_size}…{n - 1} would be out of range; use the tokenizer the model was trained with")


def check_tokenizer_arg(spec: Any) -> None:
    """Refuse a ``tokenizer`` argument of a wrong type (before any file is read).

    Arguments:
        spec: None, a str or path, or an object with ``encode`` and ``decode`` methods.

    Raises:
        TypeError: for anything else (a class instead of an instance included), naming 'tokenizer'.
    """
    if spec is None or isinstance(spec, (str, os.PathLike)):
        return
    if isinstance(spec, type) or not (callable(getattr(spec, "encode", None))
                                      and callable(getattr(spec, "decode", None))):
        got = f"the class {spec.__name__} (pass an instance)" if isinstance(spec, type) else type(spec).__name__
        raise TypeError(f"{_ARG} must be None, a path, a Hub id or an object with encode() and decode(), "
                        f"got {got}")


def load_tokenizer(spec: Any, vocab_size: int, directory: str | os.PathLike) -> Any:
    """The tokenizer for a model: the checkpoint's own (``spec=None``) or the one ``spec`` names.

    Arguments:
        spec: None (the checkpoint's own), a directory or ``tokenizer.json`` path, a Hub id (cache first,
            then the network unless ``HF_HUB_OFFLINE``; the same resolution as checkpoints), or an object
            with ``encode`` and ``decode`` methods (used as it is). It overrides the checkpoint's own.
        vocab_size: the model's vocabulary size.
        directory: the checkpoint directory.

    Returns:
        The tokenizer, or None when ``spec`` is None and the checkpoint declares none.

    Raises:
        TypeError: for a ``spec`` of another type, or an object without ``encode``/``decode``.
        FileNotFoundError: for a path or Hub id that holds no tokenizer.
        ValueError: for a tokenizer file with bad content, an empty string, or a vocabulary larger
            than ``vocab_size`` — naming the file or the argument 'tokenizer'.
        ImportError: for a ``tokenizer.json`` named by ``spec`` without the ``tokenizers`` library.
    """
    if spec is None:
        try:
            tok, where = _from_directory(Path(directory))
        except ImportError as exc:
            warnings.warn(f"{exc}; the model is loaded without a tokenizer", stacklevel=2)
            return None
        if tok is not None:
            check_tokenizer_vocab(tok, vocab_size, str(where))
        return tok
    if isinstance(spec, (str, os.PathLike)):
        tok, where_s = _resolve(spec)
        check_tokenizer_vocab(tok, vocab_size, f"{_ARG} ({where_s})")
        return tok
    check_tokenizer_arg(spec)
    check_tokenizer_vocab(spec, vocab_size, _ARG)
    return spec
