"""Vector fields of the continuous-time token dynamics, one module per field, and ``layer_field``.

A field is a `VectorField` ``f(t, u)`` batched over sequences: tokens are (B, L, E) for the
Mamba-1 S6 fields, (B, L, Dm) for the Mamba-2 field and the depth-time field, (B, L, 1) in one
dimension. Nothing here knows about solvers.

`layer_field` builds the idealised field of any layer of any model from the layer's
parameters (``model.layer_params(k)``): the one place where a parameter type is matched with its field.
"""

from __future__ import annotations

from ...nn.lm import MambaLMBase
from ...nn.params_mamba1 import SSMParams
from ...nn.params_mamba2 import Mamba2Params
from .base import VectorField
from .depth import DepthField
from .mamba2 import Mamba2Field
from .onedim import OneDimField, PackedOneDimField
from .s6 import MatrixS6Field, S6Field

__all__ = ["VectorField", "S6Field", "MatrixS6Field", "Mamba2Field", "OneDimField", "PackedOneDimField",
           "DepthField", "field_of_params", "layer_field"]

#: The idealised field of each parameter type.
_FIELD_OF = {SSMParams: S6Field, Mamba2Params: Mamba2Field}


def field_of_params(params: SSMParams | Mamba2Params, *, use_D: bool = False, backend: str = "auto") -> VectorField:
    """The idealised field of one layer's parameters.

    Arguments:
        params: an `SSMParams` (→ `S6Field`, tokens (B, L, E)) or a
            `Mamba2Params` with ``W_out`` (→ `Mamba2Field`, tokens (B, L, Dm)).
        use_D: include the D skip term.
        backend: scan backend.

    Returns:
        The field.

    Raises:
        TypeError: for any other parameter type.
    """
    cls = _FIELD_OF.get(type(params))
    if cls is None:
        raise TypeError(f"argument 'params' must be SSMParams or Mamba2Params, got {type(params).__name__}")
    return cls(params, use_D=use_D, backend=backend)


def layer_field(model: MambaLMBase, k: int, *, use_D: bool = False, backend: str = "auto",
                detach: bool = True) -> VectorField:
    """The idealised field of layer k of a model of either generation ("the ODE from pretrained weights").

    Arguments:
        model: a model from `mamba_ode.load` (anything with ``layer_params(k)``).
        k: layer index in [-K, K).
        use_D: include the D term.
        backend: scan backend.
        detach: snapshot the weights (later changes to the model do not move the field); False keeps
            differentiable views.

    Returns:
        `S6Field` for a Mamba-1 layer, `Mamba2Field` for a Mamba-2 layer.

    Raises:
        TypeError: if model has no ``layer_params``.
        ValueError: for a bad layer index.
    """
    if not callable(getattr(model, "layer_params", None)):
        raise TypeError(f"argument 'model' must be a Mamba model (with layer_params), got {type(model).__name__}")
    params = model.layer_params(k)
    return field_of_params(params.snapshot() if detach else params, use_D=use_D, backend=backend)
