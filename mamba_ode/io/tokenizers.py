"""Tokenizers carried by checkpoints: byte-level for the shipped models.

A checkpoint directory declares its tokenizer in ``tokenizer_config.json`` with
``{"tokenizer_class": "ByteTokenizer"}`` (mamba_ode's own byte-level tokenizer).
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["ByteTokenizer", "tokenizer_for", "TOKENIZER_FILE"]

TOKENIZER_FILE = "tokenizer_config.json"


class ByteTokenizer:
    """UTF-8 bytes as token ids 0..255.

    Examples:
        >>> tok = ByteTokenizer()
        >>> tok.decode(tok.encode("to be"))
        'to be'
    """

    vocab_size = 256

    def encode(self, text: str) -> list[int]:
        """Text → list of byte ids.

        Raises:
            TypeError: if text is not a str.
        """
        if not isinstance(text, str):
            raise TypeError(f"encode: argument 'text' must be str, got {type(text).__name__}")
        return list(text.encode("utf-8"))

    def decode(self, ids) -> str:
        """Ids → text (invalid UTF-8 sequences become U+FFFD).

        Raises:
            ValueError: for an id outside 0..255.
        """
        ids = [int(i) for i in ids]
        bad = [i for i in ids if not 0 <= i < 256]
        if bad:
            raise ValueError(f"decode: id {bad[0]} is outside the byte range 0..255")
        return bytes(ids).decode("utf-8", errors="replace")

    def save(self, directory: str | Path) -> None:
        """Write ``tokenizer_config.json`` into a checkpoint directory."""
        with open(Path(directory) / TOKENIZER_FILE, "w", encoding="utf-8") as f:
            json.dump({"tokenizer_class": "ByteTokenizer", "vocab_size": 256}, f, indent=2)

    def __repr__(self) -> str:
        return "ByteTokenizer(vocab_size=256)"


def tokenizer_for(directory: str | Path):
    """The tokenizer declared in a checkpoint directory, or None when it declares none we know."""
    path = Path(directory) / TOKENIZER_FILE
    if not path.is_file():
        return None
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    if isinstance(cfg, dict) and cfg.get("tokenizer_class") == "ByteTokenizer":
        return ByteTokenizer()
    return None
