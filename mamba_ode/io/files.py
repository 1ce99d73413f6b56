"""Reading the text files of a checkpoint (config.json, tokenizer files, refine.json) with one-line errors.

Bad content raises ``ValueError`` naming the file: bytes that are not UTF-8, invalid JSON, JSON
nested too deeply for the parser, integers too long to convert.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

__all__ = ["read_text", "read_json"]


def read_text(path: str | os.PathLike) -> str:
    """The UTF-8 text of a file (a leading byte-order mark is dropped).

    Arguments:
        path: the file.

    Returns:
        Its text.

    Raises:
        FileNotFoundError: when it does not exist.
        ValueError: when its bytes are not UTF-8, naming the file and the first bad byte.
    """
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
                         "save the file as UTF-8") from None


def read_json(path: str | os.PathLike) -> Any:
    """The parsed JSON of a UTF-8 file.

    Arguments:
        path: the file.

    Returns:
        The parsed value (any JSON type; callers check what they need).

    Raises:
        FileNotFoundError: when it does not exist.
        ValueError: naming the file, for bytes that are not UTF-8, invalid JSON, nesting deeper than
            the parser can follow, or an integer literal too long to convert.
    """
    text = read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    except RecursionError:
        raise ValueError(f"{path}: not readable JSON (nested deeper than about {sys.getrecursionlimit()} "
                         "levels)") from None
    except ValueError as exc:  # e.g. an integer literal over Python's digit limit
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ValueError(f"{path}: not readable JSON ({first})") from None
