"""Small pretrained models shipped inside the package (the embedded defaults).

Each sub-directory holding a ``config.json`` is a checkpoint in the transformers layout, with
its metadata (training command, data source, metrics) recorded beside it in ``meta.json``.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["DEFAULT_MODEL", "shipped_names", "shipped_model_dir"]

DEFAULT_MODEL = "tiny-shakespeare"
_HERE = Path(__file__).resolve().parent


def shipped_names() -> list[str]:
    """Names of the models shipped with this installation, sorted."""
    return sorted(p.name for p in _HERE.iterdir() if (p / "config.json").is_file())


def shipped_model_dir(name: str | None) -> Path:
    """Directory of a shipped model (``None`` gives the default).

    Raises:
        FileNotFoundError: when no shipped model has that name.
    """
    name = DEFAULT_MODEL if name is None else name
    path = _HERE / name
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"no shipped model named {name!r}; shipped: {', '.join(shipped_names()) or 'none'}")
    return path
