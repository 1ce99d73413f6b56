"""`StrEnum`: the one base of the package's text-valued enums (labels, outcomes, token ends)."""

from __future__ import annotations

import enum

__all__ = ["StrEnum"]


class StrEnum(str, enum.Enum):
    """A ``str`` enum that prints, formats and serialises (JSON) as its value."""

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)
