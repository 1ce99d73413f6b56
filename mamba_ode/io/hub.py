"""Hugging Face Hub ids: resolved to a local snapshot directory, local cache first.

One resolution for checkpoints and tokenizers: the cache is read first (so a cached id works
offline); the network is tried only when ``HF_HUB_OFFLINE`` is not set. An id that can be found
neither way gives one line saying so and how to proceed.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import huggingface_hub
from huggingface_hub import constants as hub_constants
from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

__all__ = ["is_hub_id", "hub_directory", "cached_model_ids", "HUB_HINT"]

_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
#: How to proceed when an id is not cached.
HUB_HINT = "download it once with network access, or pass a local directory"


def is_hub_id(source: str) -> bool:
    """True for a string shaped like a Hub repository id (``owner/name``).

    Arguments:
        source: the string.

    Returns:
        Whether it looks like ``owner/name`` (not a relative or absolute path).
    """
    return bool(_HUB_ID.match(source)) and not source.startswith((".", "/", "~"))


def _offline() -> bool:
    env = os.environ.get("HF_HUB_OFFLINE", "0").strip().lower() in ("1", "true", "yes", "on")
    return env or bool(getattr(hub_constants, "HF_HUB_OFFLINE", False))


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[0] if lines else "no message"
    return f"{type(exc).__name__}: {text[:200]}"


def hub_directory(repo_id: str, patterns: list[str], label: str = "hub id") -> Path:
    """Resolve a Hub id to a local snapshot directory: the cache first, then the network unless offline.

    Arguments:
        repo_id: ``owner/name``.
        patterns: the file patterns to fetch (``allow_patterns`` of ``snapshot_download``).
        label: what the id is, for messages (``"hub id"``, ``"load: argument 'tokenizer': hub id"``).

    Returns:
        The snapshot directory.

    Raises:
        FileNotFoundError: in one line, for an id neither cached nor downloadable (offline, no
            network, no such repository), with the fix.
    """
    try:
        return Path(huggingface_hub.snapshot_download(repo_id, allow_patterns=patterns, local_files_only=True))
    except Exception:  # not cached (LocalEntryNotFoundError) or an id huggingface_hub refuses
        pass
    if _offline():
        raise FileNotFoundError(f"{label} {repo_id!r} is not in the local Hugging Face cache and HF_HUB_OFFLINE "
                                f"is set; {HUB_HINT}")
    try:
        return Path(huggingface_hub.snapshot_download(repo_id, allow_patterns=patterns))
    except (RepositoryNotFoundError, GatedRepoError) as exc:
        raise FileNotFoundError(f"{label} {repo_id!r} is not in the local Hugging Face cache and the Hub refused "
                                f"it ({_first_line(exc)}); check the id and your access, or pass a local "
                                "directory") from None
    except Exception as exc:
        raise FileNotFoundError(f"{label} {repo_id!r} is not in the local Hugging Face cache and could not be "
                                f"downloaded ({_first_line(exc)}); {HUB_HINT}") from None


def cached_model_ids() -> list[str]:
    """Model repositories in the local Hugging Face cache that hold a ``config.json`` (sorted).

    Returns:
        ``owner/name`` ids; empty when there is no cache or it cannot be read.
    """
    try:
        info = huggingface_hub.scan_cache_dir()
    except Exception:  # no cache directory yet, or an unreadable one: nothing cached
        return []
    out = set()
    for repo in info.repos:
        if repo.repo_type == "model" and any(f.file_name == "config.json" for rev in repo.revisions
                                             for f in rev.files):
            out.add(repo.repo_id)
    return sorted(out)
