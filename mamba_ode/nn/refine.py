"""The paper's two refinements as drop-in PyTorch pieces (Section 5 of the paper).

1. **Sign-constrained input–output matrix** (`constrain_input_output`). A
   ``torch.nn.utils.parametrize`` parametrisation of ``x_proj.weight`` = ``[W_x; S_B; S_C]``
   (rows R, N, N) that makes the input–output matrix ``M = S_Cᵀ S_B`` (E×E, rank N)
   positive semi-definite, negative semi-definite or indefinite::

       P  = raw S_B rows (N, E);   P̃ = triu(P, 1) + I  (unit diagonal, so rank P̃ = N)
       w  = raw S_C rows (N, E);   c = f(w[:, 0])  (N,)
       S_C = P̃,  S_B = diag(c) P̃   ⇒   M = P̃ᵀ diag(c) P̃

   with ``f = softplus + 0.7`` ("positive"), ``-(softplus + 0.7)`` ("negative"), or
   ``±softplus`` ("mixed": first ⌈N/2⌉ states +, the rest −). By Sylvester's law of inertia
   the N non-zero eigenvalues of ``Sym(M) = M`` have the signs of c. ``W_x`` (the Δ rows) is
   passed through unchanged. Works on mamba_ode's `MambaMixer`, on
   transformers' ``MambaMixer`` and on mamba-ssm's ``Mamba`` (anything with an ``x_proj``
   linear layer and its Δ rank / state size), or on a whole model (every such mixer).

2. **Token reordering by importance with SoftSort** (`SoftSort`, `TokenReorder`).
   Scores ``s_l = Kᵀ(S_Δ u_l + b_Δ)`` (learned K ∈ R^E, before the softplus);
   ``P̂[k, l] = softmax_l(-|σ_k + s_l| / τ)`` with ``σ = sort_desc(-s)``; ``u ← P̂ u`` puts the
   tokens in order of increasing score (most important last in the causal scan); Δ, B, C are
   recomputed from the permuted u; the gate z is not permuted (as in the authors' code). The
   ``permute_back`` option (apply ``P̂ᵀ`` to the SSM output before the gate, so later layers see
   the original token order) is **not in the paper**; it is off by default.

Shape letters (B, L, Dm, E, N, R) are those of `mamba_ode.shapes`.
"""

from __future__ import annotations

from typing import Any, Literal, Protocol, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize

from .._checks import check_matrix
from .hooks import MIXER_POINTS, HookPoint
from .params_mamba1 import SSMParams

__all__ = [
    "SIGNS",
    "InputOutputSign",
    "constrain_input_output",
    "unconstrain_input_output",
    "input_output_sign_of",
    "find_mixers",
    "SoftSort",
    "TokenReorder",
    "reorder_first_block",
    "export_state",
    "importance_scores",
    "refinement_record",
    "apply_refinements",
]

SIGNS = ("positive", "negative", "mixed")
Sign = Literal["positive", "negative", "mixed"]

#: offset added to softplus for the definite variants (authors' code)
C_OFFSET = 0.7


# ============================================================================ 1. sign-constrained M


class InputOutputSign(nn.Module):
    """Parametrisation of ``x_proj.weight`` (R+2N, E) giving ``M = S_Cᵀ S_B`` a fixed sign structure.

    Arguments:
        dt_rank: R, rows of ``W_x`` (left unchanged).
        d_state: N, rows of each of S_B and S_C; must satisfy N ≤ E.
        sign: ``"positive"`` (M ⪰ 0, N positive eigenvalues), ``"negative"`` (M ⪯ 0, N negative),
            or ``"mixed"`` (⌈N/2⌉ positive, ⌊N/2⌋ negative).

    Raises:
        ValueError: for an unknown sign or non-positive sizes, naming the argument.
    """

    def __init__(self, dt_rank: int, d_state: int, sign: Sign):
        super().__init__()
        if sign not in SIGNS:
            raise ValueError(f"InputOutputSign: argument 'sign' must be one of {SIGNS}, got {sign!r}")
        if not isinstance(dt_rank, int) or dt_rank < 0:
            raise ValueError(f"InputOutputSign: argument 'dt_rank' must be a non-negative int, got {dt_rank!r}")
        if not isinstance(d_state, int) or d_state < 1:
            raise ValueError(f"InputOutputSign: argument 'd_state' must be a positive int, got {d_state!r}")
        self.dt_rank, self.d_state, self.sign = dt_rank, d_state, sign

    def coefficients(self, w0: Tensor) -> Tensor:
        """c (N,) from the first column of the raw C rows, w0 (N,)."""
        sp = F.softplus(w0)
        if self.sign == "positive":
            return sp + C_OFFSET
        if self.sign == "negative":
            return -(sp + C_OFFSET)
        half = (self.d_state + 1) // 2
        signs = torch.ones_like(sp)
        signs[half:] = -1.0
        return signs * sp

    def forward(self, weight: Tensor) -> Tensor:
        """Raw (R+2N, E) → constrained (R+2N, E) ``[W_x; diag(c) P̃; P̃]``.

        Raises:
            ValueError: if the weight is not (R+2N, E) with N ≤ E.
        """
        r, n = self.dt_rank, self.d_state
        if weight.dim() != 2 or weight.shape[0] != r + 2 * n or weight.shape[1] < n:
            raise ValueError(f"InputOutputSign: argument 'weight' must be (R+2N, E) = ({r + 2 * n}, E ≥ {n}), "
                             f"got {tuple(weight.shape)}")
        p = weight[r:r + n]
        w0 = weight[r + n:, 0]
        eye = torch.eye(n, weight.shape[1], dtype=weight.dtype, device=weight.device)
        p_tilde = torch.triu(p, diagonal=1) + eye
        c = self.coefficients(w0)
        return torch.cat([weight[:r], c[:, None] * p_tilde, p_tilde], dim=0)

    def extra_repr(self) -> str:
        return f"dt_rank={self.dt_rank}, d_state={self.d_state}, sign={self.sign!r}"


class Mamba1MixerLike(Protocol):
    """What the refinements read of a Mamba-1 mixer: mamba_ode's ``MambaMixer``, transformers'
    ``MambaMixer`` or mamba-ssm's ``Mamba`` (recognised by these attributes, never imported)."""

    in_proj: nn.Linear
    conv1d: nn.Conv1d
    x_proj: nn.Linear
    dt_proj: nn.Linear
    A_log: Tensor
    D: Tensor
    out_proj: nn.Linear


def _mixer_sizes(mixer: Mamba1MixerLike) -> tuple[int, int]:
    """(R, N) of a Mamba-1 mixer of any of the three known kinds."""
    r = getattr(mixer, "dt_rank", None) or getattr(mixer, "time_step_rank", None)
    n = getattr(mixer, "d_state", None) or getattr(mixer, "ssm_state_size", None)
    if r is None and hasattr(mixer, "dt_proj"):
        r = mixer.dt_proj.weight.shape[1]
    if n is None and hasattr(mixer, "A_log"):
        n = mixer.A_log.shape[-1]
    if not isinstance(r, int) or not isinstance(n, int):
        raise ValueError(f"argument 'mixer': cannot read the Δ rank and state size of {type(mixer).__name__}")
    return r, n


def _is_mixer(module: nn.Module) -> bool:
    x_proj = getattr(module, "x_proj", None)
    return isinstance(x_proj, nn.Linear) and hasattr(module, "dt_proj") and hasattr(module, "A_log")


def find_mixers(module: nn.Module) -> list[tuple[str, Mamba1MixerLike]]:
    """Every Mamba-1 mixer inside a module (itself included): ``[(qualified name, mixer)]``.

    A mixer is any module with an ``x_proj`` `torch.nn.Linear`, a ``dt_proj`` and an
    ``A_log`` — mamba_ode's ``MambaMixer``, transformers' ``MambaMixer``, mamba-ssm's ``Mamba``.

    Raises:
        TypeError: if ``module`` is not an ``nn.Module``.
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"find_mixers: argument 'module' must be an nn.Module, got {type(module).__name__}")
    return [(name, cast(Mamba1MixerLike, m)) for name, m in module.named_modules() if _is_mixer(m)]


def constrain_input_output(module: nn.Module, sign: Sign) -> nn.Module:
    """Register the `InputOutputSign` parametrisation on ``x_proj.weight`` of every mixer.

    The current weight becomes the raw parameter (``x_proj.parametrizations.weight.original``);
    ``x_proj.weight`` then returns the constrained weight on every access, so everything that
    reads it (mamba_ode's `MambaMixer.ssm`, transformers' forward, mamba-ssm's forward)
    sees ``M`` with the promised signs. mamba-ssm is never imported here: its ``Mamba`` modules
    are recognised by their attributes.

    Arguments:
        module: a mixer, a block, or a whole model (mamba_ode or transformers).
        sign: ``"positive"``, ``"negative"`` or ``"mixed"``.

    Returns:
        The same module (modified in place).

    Raises:
        TypeError: if ``module`` is not an ``nn.Module``.
        ValueError: for an unknown sign, a module with no Mamba-1 mixer, or a mixer already
            constrained.
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"constrain_input_output: argument 'module' must be an nn.Module, "
                        f"got {type(module).__name__}")
    if sign not in SIGNS:
        raise ValueError(f"constrain_input_output: argument 'sign' must be one of {SIGNS}, got {sign!r}")
    mixers = find_mixers(module)
    if not mixers:
        raise ValueError(f"constrain_input_output: argument 'module' ({type(module).__name__}) "
                         "contains no Mamba-1 mixer (x_proj, dt_proj, A_log)")
    for name, mixer in mixers:
        if parametrize.is_parametrized(mixer.x_proj, "weight"):
            raise ValueError(f"constrain_input_output: mixer {name or '<module>'!r} is already constrained")
        r, n = _mixer_sizes(mixer)
        parametrize.register_parametrization(mixer.x_proj, "weight", InputOutputSign(r, n, sign))
    return module


def unconstrain_input_output(module: nn.Module) -> nn.Module:
    """Remove the parametrisations, keeping the constrained (effective) weights as plain parameters.

    Arguments:
        module: a mixer, block or model (mixers without a constraint are left alone).

    Returns:
        The same module (modified in place).
    """
    for _, mixer in find_mixers(module):
        if parametrize.is_parametrized(mixer.x_proj, "weight"):
            parametrize.remove_parametrizations(mixer.x_proj, "weight", leave_parametrized=True)
    return module


def input_output_sign_of(module: nn.Module) -> str | None:
    """The sign constraint registered on a module's mixers.

    Arguments:
        module: a mixer, block or model.

    Returns:
        ``"positive"``, ``"negative"``, ``"mixed"``, or ``None`` when no mixer is constrained.

    Raises:
        ValueError: when the mixers carry different constraints (or only some are constrained).
    """
    found: set[str | None] = set()
    for _, mixer in find_mixers(module):
        if parametrize.is_parametrized(mixer.x_proj, "weight"):
            plist: Any = getattr(mixer.x_proj, "parametrizations").weight  # noqa: B009 (added by parametrize)
            found |= {p.sign for p in plist if isinstance(p, InputOutputSign)}
        else:
            found.add(None)
    if len(found) > 1:
        raise ValueError(f"input_output_sign_of: mixers carry different constraints {sorted(map(str, found))}")
    return found.pop() if found else None


# ============================================================================ 2. SoftSort reordering


class SoftSort(nn.Module):
    """SoftSort relaxation of the sorting permutation (Prillo & Eisenschlos, 2020).

    ``P[k, l] = softmax_l(-|sort_desc(x)_k - x_l| / τ)``: row k softly selects the token with the
    k-th largest value of x. Hard mode returns the exact permutation matrix of ``argsort`` in the
    forward pass with the soft matrix's gradient (straight-through).

    Arguments:
        tau: temperature τ > 0.
        hard: straight-through hard permutation.

    Raises:
        ValueError: for τ ≤ 0, naming the argument.
    """

    def __init__(self, tau: float = 1.0, hard: bool = False):
        super().__init__()
        if isinstance(tau, bool) or not isinstance(tau, (int, float)):
            raise TypeError(f"SoftSort: argument 'tau' must be a real number, got {type(tau).__name__}")
        if not float(tau) > 0:  # also rejects NaN
            raise ValueError(f"SoftSort: argument 'tau' must be > 0, got {tau!r}")
        self.tau, self.hard = float(tau), bool(hard)

    def forward(self, x: Tensor) -> Tensor:
        """Scores (B, L) → permutation matrices (B, L, L) sorting x in descending order.

        Raises:
            ValueError: if x is not (B, L).
        """
        if x.dim() != 2:
            raise ValueError(f"SoftSort: argument 'x' must be (B, L), got {tuple(x.shape)}")
        sorted_x, order = x.sort(dim=-1, descending=True, stable=True)
        soft = torch.softmax(-(sorted_x.unsqueeze(-1) - x.unsqueeze(-2)).abs() / self.tau, dim=-1)
        if not self.hard:
            return soft
        hard = torch.zeros_like(soft).scatter_(-1, order.unsqueeze(-1), 1.0)
        return hard + (soft - soft.detach())  # exact 0/1 values forward, soft gradient backward

    def extra_repr(self) -> str:
        return f"tau={self.tau}, hard={self.hard}"


class TokenReorder(nn.Module):
    """Wrap a Mamba-1 mixer so its SSM sees the tokens reordered by a learned importance score.

    Forward: ``(u, z) = conv/SiLU(in_proj(x))``; ``s = (S_Δ u + b_Δ) K`` (B, L);
    ``P̂ = SoftSort(-s)`` (B, L, L); ``y = S6(P̂ u)`` (Δ, B, C recomputed from the permuted
    tokens, through `SSMParams.s6`, i.e. the shared scan); with ``permute_back`` (not in
    the paper) ``y ← P̂ᵀ y``; ``out = out_proj(y ⊙ SiLU(z))`` with z not permuted.

    Works for mamba_ode's ``MambaMixer``, transformers' ``MambaMixer`` and mamba-ssm's ``Mamba``
    (read through their ``in_proj, conv1d, x_proj, dt_proj, A_log, D, out_proj`` attributes;
    a sign constraint on ``x_proj`` is honoured). Inference caches (``cache_params``) are not
    supported: the reordering needs the whole sequence.

    Arguments:
        mixer: the wrapped mixer (its parameters stay its own; the only new parameter is K).
        tau: SoftSort temperature.
        hard: straight-through hard permutation.
        permute_back: undo the permutation after the SSM (not in the paper).

    Attributes:
        K: (E,) learned score vector, initialised N(0, 1/E).

    Raises:
        TypeError: if ``mixer`` is not an ``nn.Module``.
        ValueError: if ``mixer`` is not a Mamba-1 mixer or τ ≤ 0.
    """

    def __init__(self, mixer: nn.Module, tau: float = 1.0, hard: bool = False, permute_back: bool = False):
        super().__init__()
        if not isinstance(mixer, nn.Module):
            raise TypeError(f"TokenReorder: argument 'mixer' must be an nn.Module, got {type(mixer).__name__}")
        if not _is_mixer(mixer):
            raise ValueError(f"TokenReorder: argument 'mixer' must be a Mamba-1 mixer, got {type(mixer).__name__}")
        self.mixer = mixer
        self.softsort = SoftSort(tau, hard)
        self.permute_back = bool(permute_back)
        e = self.inner.dt_proj.weight.shape[0]
        w = self.inner.x_proj.weight
        self.K = nn.Parameter(torch.randn(e, dtype=w.dtype, device=w.device) * e ** -0.5)
        self.last_permutation: Tensor | None = None
        #: activation points: the wrapped mixer's own (u, B, C, Δ, y of the reordered tokens)
        self.hp: dict[str, HookPoint] = getattr(mixer, "hp", None) or {n: HookPoint(f"mixer.{n}")
                                                                        for n in MIXER_POINTS}

    # ------------------------------------------------------------------ pieces

    @property
    def inner(self) -> Mamba1MixerLike:
        """The wrapped mixer, typed by what this wrapper reads of it."""
        return cast(Mamba1MixerLike, self.mixer)

    @property
    def ssm(self) -> SSMParams:
        """The wrapped mixer's SSM parameters (built from its current, possibly constrained, weights)."""
        m = self.inner
        return SSMParams.from_weights(m.x_proj.weight, m.dt_proj.weight, m.dt_proj.bias, m.A_log, m.D)

    def ssm_input(self, x: Tensor, conv: bool = True) -> tuple[Tensor, Tensor]:
        """The SSM input and gate input, as the wrapped mixer computes them.

        Arguments:
            x: (B, L, Dm) (normalised) residual states.
            conv: apply the causal convolution.

        Returns:
            ``(u, z)``, each (B, L, E).
        """
        m = self.inner
        if hasattr(m, "ssm_input"):
            return m.ssm_input(x, conv=conv)
        xz = m.in_proj(x)
        xi, z = xz.chunk(2, dim=-1)
        if conv:
            length = x.shape[1]
            xi = m.conv1d(xi.transpose(1, 2))[..., :length].transpose(1, 2)
        act = getattr(m, "act", None) or F.silu
        return act(xi), z

    def field_input(self, h: Tensor) -> Tensor:
        """The tokens the wrapped layer's S6 sees for mixer input h (B, L, Dm): the reordered u (B, L, E)."""
        u = self.ssm_input(h)[0]
        return self.permutation(u) @ u

    def scores(self, u: Tensor, ssm: SSMParams | None = None) -> Tensor:
        """Importance scores ``s = (S_Δ u + b_Δ) K``.

        Arguments:
            u: (B, L, E) tokens.
            ssm: the layer's parameters (default: the wrapped mixer's).

        Returns:
            (B, L) scores.
        """
        ssm = self.ssm if ssm is None else ssm
        pre, _, _ = ssm.selective_inputs(u)
        return (pre + ssm.delta_bias) @ self.K

    def permutation(self, u: Tensor, ssm: SSMParams | None = None) -> Tensor:
        """The soft (or hard) sorting matrix of the tokens by importance.

        Arguments:
            u: (B, L, E) tokens.
            ssm: the layer's parameters (default: the wrapped mixer's).

        Returns:
            P̂ (B, L, L): row k selects the token with the k-th smallest score (most important last).
        """
        return self.softsort(-self.scores(u, ssm))

    # ------------------------------------------------------------------ forward

    def forward(self, x: Tensor, *, conv: bool = True, gate: bool = True, use_D: bool = True,
                backend: str = "auto", cache_params=None, **_ignored):
        """Mixer output with reordered tokens.

        Arguments:
            x: (B, L, Dm) (normalised) residual states.
            conv, gate, use_D, backend: as `MambaMixer.forward`.
            cache_params: must be None (transformers' generation cache is not supported).

        Returns:
            (B, L, Dm) — in permuted token order unless ``permute_back``; the activation points
            ``u``, ``B``, ``C``, ``delta``, ``y`` see the permuted tokens.
            ``self.last_permutation`` holds P̂ (B, L, L) of the last call.

        Raises:
            ValueError: if x is not (B, L, Dm) or a generation cache is passed.
        """
        if cache_params is not None:
            raise ValueError("TokenReorder: argument 'cache_params' is not supported (needs the whole sequence)")
        if x.dim() != 3:
            raise ValueError(f"TokenReorder: argument 'x' must be (B, L, Dm), got {tuple(x.shape)}")
        ssm = self.ssm
        u, z = self.ssm_input(x, conv=conv)
        perm = self.permutation(u, ssm)
        self.last_permutation = perm
        u_p = perm @ u
        y = ssm.s6(u_p, None, use_D=use_D, backend=backend, hooks=self.hp)
        if self.permute_back:
            y = perm.transpose(-1, -2) @ y
        if gate:
            y = y * F.silu(self.hp["z"](z))
        out = self.inner.out_proj(y)
        return out

    def extra_repr(self) -> str:
        return f"permute_back={self.permute_back}"


def reorder_first_block(model: nn.Module, **kwargs) -> TokenReorder:
    """Wrap the first mixer of a model in `TokenReorder` (the paper's placement).

    Arguments:
        model: a mamba_ode ``MambaLM`` (or anything with ``backbone.layers[0].mixer``, e.g.
            transformers' ``MambaForCausalLM``).
        **kwargs: passed to `TokenReorder`.

    Returns:
        The wrapper (already installed in the model).

    Raises:
        ValueError: if the model has no ``backbone.layers[0].mixer``.
    """
    try:
        block: Any = getattr(model, "backbone").layers[0]  # noqa: B009 (any model with this layout)
    except (AttributeError, IndexError) as err:
        raise ValueError("reorder_first_block: argument 'model' has no backbone.layers[0]") from err
    if isinstance(block.mixer, TokenReorder):
        return block.mixer
    block.mixer = TokenReorder(block.mixer, **kwargs)
    return block.mixer


# ============================================================================ saving


def export_state(model: nn.Module) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """The plain checkpoint state of a refined model, and the refinement extras.

    Sign constraints are folded in (the **effective** ``x_proj.weight`` is stored, so a plain
    load reproduces the model) and `TokenReorder` wrappers are unwrapped (their inner
    mixer's keys come back to ``...mixer.*``); the score vectors K go to the extras. The model
    itself is not modified (no copy is made either: removing a parametrisation from a deep copy
    would also strip it from the original, whose dynamically created class the copy shares).

    Arguments:
        model: a (possibly constrained / reordered) model.

    Returns:
        ``(state, extras)``: state uses the unrefined model's key names; extras maps
        ``"<mixer path>.K"`` → (E,).

    Raises:
        TypeError: if ``model`` is not an ``nn.Module``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"export_state: argument 'model' must be an nn.Module, got {type(model).__name__}")
    raw = model.state_dict()
    state: dict[str, Tensor] = {}
    for key, value in raw.items():
        if ".parametrizations.weight." in key:
            continue  # replaced by the effective weight below
        state[key] = value.detach().clone()
    for name, mod in model.named_modules():
        if isinstance(mod, nn.Linear) and parametrize.is_parametrized(mod, "weight"):
            state[f"{name}.weight" if name else "weight"] = mod.weight.detach().clone()
    extras: dict[str, Tensor] = {}
    wrapped = sorted((name for name, mod in model.named_modules() if isinstance(mod, TokenReorder)),
                     key=len, reverse=True)
    for name in wrapped:
        extras[f"{name}.K"] = state.pop(f"{name}.K")
        prefix = f"{name}.mixer."
        state = {(f"{name}." + k[len(prefix):] if k.startswith(prefix) else k): v for k, v in state.items()}
    return state, extras


def refinement_record(model: nn.Module) -> tuple[dict[str, Tensor], dict | None]:
    """The plain checkpoint state of a model and the record of its refinements (None when it has none).

    Arguments:
        model: a (possibly constrained / reordered) model.

    Returns:
        ``(state, record)``: state as `export_state`; record ``{"input_output_sign": sign or
        None, "token_reorder": {path: {tau, hard, permute_back}}, "K": {path + ".K": list}}``.
    """
    state, extras = export_state(model)
    sign = input_output_sign_of(model)
    reorders = {name: {"tau": m.softsort.tau, "hard": m.softsort.hard, "permute_back": m.permute_back}
                for name, m in model.named_modules() if isinstance(m, TokenReorder)}
    if sign is None and not reorders:
        return state, None
    return state, {"input_output_sign": sign, "token_reorder": reorders,
                   "K": {k: v.tolist() for k, v in extras.items()}}


def apply_refinements(model: nn.Module, record: dict) -> nn.Module:
    """Re-install the token reorderings (with their K) of a record written by `refinement_record`.

    The sign constraint is not re-registered: the stored weight already is the constrained one.

    Arguments:
        model: the plainly loaded model (modified in place).
        record: the refinement record.

    Returns:
        The model.

    Raises:
        ValueError: when the record names a module the model does not have, or misses a K vector.
    """
    for name, opts in (record.get("token_reorder") or {}).items():
        parent_name, _, attr = name.rpartition(".")
        try:
            parent = model.get_submodule(parent_name)
            inner = getattr(parent, attr)
        except AttributeError:
            raise ValueError(f"refinement record: the model has no module {name!r} to reorder") from None
        key = f"{name}.K"
        if key not in (record.get("K") or {}):
            raise ValueError(f"refinement record: missing score vector {key!r}")
        wrapper = TokenReorder(inner, **opts)
        with torch.no_grad():
            wrapper.K.copy_(torch.tensor(record["K"][key], dtype=wrapper.K.dtype))
        setattr(parent, attr, wrapper)
    return model


def importance_scores(params: SSMParams, u: Tensor, K: Tensor) -> Tensor:
    """The refinement's importance score ``s_l = Kᵀ(S_Δ u_l + b_Δ)`` per token, without forming S_Δ.

    Arguments:
        params: layer parameters (S_Δ = W_dt W_x, b_Δ).
        u: (B, L, E) tokens.
        K: (E,) score vector.

    Returns:
        (B, L) scores (a larger score means a more important token, placed later by SoftSort).

    Raises:
        TypeError: for non-tensor arguments.
        ValueError: for shapes that do not match E.
    """
    if not isinstance(params, SSMParams):
        raise TypeError(f"argument 'params' must be an SSMParams, got {type(params).__name__}")
    check_matrix(u, "u", ndim=3)
    check_matrix(K, "K", ndim=1)
    e = params.d_inner
    if u.shape[-1] != e:
        raise ValueError(f"argument 'u' must be (B, L, E) with E={e}, got {tuple(u.shape)}")
    if K.shape[0] != e:
        raise ValueError(f"argument 'K' must be (E,) with E={e}, got {tuple(K.shape)}")
    p = params.to(dtype=u.dtype)
    K = K.to(u.dtype)
    kw = K @ p.W_dt  # (R,)
    return (u @ p.W_x.transpose(0, 1)) @ kw + K @ p.delta_bias
