"""Named activation points of the discrete network: read (cache) or replace (patch) activations.

Every model has the same named points, per layer ``k`` (shapes for the Mamba-1 / Mamba-2 layout):

====================================  =================================================================
name                                  tensor
====================================  =================================================================
``layers.{k}.resid_pre``              x^k (B, L, Dm), the residual stream entering layer k
``layers.{k}.mixer_in``               Norm_k(x^k) (B, L, Dm), the mixer input
``layers.{k}.mixer.conv``             causal-convolution output before SiLU: (B, L, E) / (B, L, E+2GN)
``layers.{k}.mixer.u``                SSM input u (B, L, E)
``layers.{k}.mixer.delta``            step sizes Δ: (B, L, E) / (B, L, H)
``layers.{k}.mixer.B``                input matrices: (B, L, N) / (B, L, G, N)
``layers.{k}.mixer.C``                output matrices: (B, L, N) / (B, L, G, N)
``layers.{k}.mixer.z``                gate input (B, L, E)
``layers.{k}.mixer.y``                SSM output with the D term, before the gate (B, L, E)
``layers.{k}.mixer_out``              the update F_k(x^k) (B, L, Dm)
``layers.{k}.resid_post``             x^{k+1} (B, L, Dm)
====================================  =================================================================

A hook is a function ``fn(activation, name)`` returning None (read only) or a tensor of the same shape
that replaces the activation downstream (patching). A point without hooks costs one attribute test.
``MambaLMBase.hooks`` registers hooks for the duration of a ``with`` block; ``run_with_cache`` runs the
model once and returns the activations asked for as an `ActivationCache`; the SSM state after chosen
positions is computed from the cached u, Δ, B, C by the shared selective scan (``states_at``).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterator, Mapping, Sequence

from torch import Tensor

__all__ = ["HookPoint", "HookFn", "ActivationCache", "MIXER_POINTS", "LAYER_POINTS", "select_names"]

#: A hook: ``fn(activation, name)`` → None (keep) or a replacement of the same shape.
HookFn = Callable[[Tensor, str], "Tensor | None"]

#: Points inside each mixer (prefixed ``layers.{k}.mixer.``), in the order the forward pass reaches them.
MIXER_POINTS = ("conv", "u", "B", "C", "delta", "z", "y")
#: Points of each residual block (prefixed ``layers.{k}.``), in forward order (mixer points between
#: ``mixer_in`` and ``mixer_out``).
LAYER_POINTS = ("resid_pre", "mixer_in", "mixer_out", "resid_post")


class HookPoint:
    """One named activation point; calling it applies its hooks in registration order.

    Attributes:
        name: the full name (``layers.3.mixer.delta``).
        fns: the registered hooks (empty: the point returns its input unchanged).
    """

    __slots__ = ("name", "fns")

    def __init__(self, name: str):
        self.name = name
        self.fns: list[HookFn] = []

    @property
    def active(self) -> bool:
        """Whether any hook is registered."""
        return bool(self.fns)

    def __call__(self, x: Tensor) -> Tensor:
        """Apply the hooks to ``x`` (any shape); a hook's replacement must keep the shape.

        Raises:
            TypeError: if a hook returns something other than None or a tensor.
            ValueError: if a replacement has another shape than the activation.
        """
        if not self.fns:
            return x
        for fn in self.fns:
            out = fn(x, self.name)
            if out is None:
                continue
            if not isinstance(out, Tensor):
                raise TypeError(f"hook on '{self.name}' returned {type(out).__name__}; return None or a tensor")
            if out.shape != x.shape:
                raise ValueError(f"hook on '{self.name}' returned shape {tuple(out.shape)}; the activation has "
                                 f"shape {tuple(x.shape)}")
            x = out
        return x

    def __repr__(self) -> str:
        return f"HookPoint({self.name!r}, hooks={len(self.fns)})"


class ActivationCache(Mapping[str, Tensor]):
    """Activations of one forward pass keyed by point name (a read-only mapping).

    Arguments:
        data: name → tensor.
    """

    def __init__(self, data: Mapping[str, Tensor]):
        self._data = dict(data)

    def __getitem__(self, name: str) -> Tensor:
        try:
            return self._data[name]
        except KeyError:
            close = sorted(n for n in self._data if n.split(".")[-1] == name.rsplit(".", maxsplit=1)[-1])[:5]
            hint = f"; cached names ending alike: {close}" if close else f"; {len(self._data)} names cached"
            raise KeyError(f"no activation '{name}' in this cache{hint}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def layer(self, k: int) -> dict[str, Tensor]:
        """The activations of layer k, keyed by the name without the ``layers.{k}.`` prefix."""
        prefix = f"layers.{k}."
        return {n[len(prefix):]: t for n, t in self._data.items() if n.startswith(prefix)}

    def __repr__(self) -> str:
        return f"ActivationCache({len(self._data)} activations)"


def select_names(all_names: list[str], names: str | Sequence[str] | Callable[[str], bool] | None,
                 *, argument: str = "names") -> list[str]:
    """The point names that ``names`` selects among ``all_names``.

    Arguments:
        all_names: every point name of a model.
        names: None (all), one name or glob pattern (``"layers.*.mixer.delta"``), a list of them, or a
            predicate on the name.
        argument: the argument's name in error messages.

    Returns:
        The selected names, in ``all_names`` order.

    Raises:
        ValueError: if a name or pattern matches no point (the message lists a few valid names).
        TypeError: for any other type.
    """
    if names is None:
        return list(all_names)
    if callable(names):
        return [n for n in all_names if names(n)]
    if isinstance(names, str):
        names = [names]
    if not isinstance(names, Sequence) or not all(isinstance(n, str) for n in names):
        raise TypeError(f"argument '{argument}' must be None, a name, a list of names or a predicate")
    chosen: set[str] = set()
    for pattern in names:
        hits = fnmatch.filter(all_names, pattern)
        if not hits:
            raise ValueError(f"argument '{argument}': '{pattern}' names no activation point; points are e.g. "
                             f"{all_names[:3] + [n for n in all_names if '.mixer.' in n][:7]}")
        chosen.update(hits)
    return [n for n in all_names if n in chosen]
