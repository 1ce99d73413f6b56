"""Per-token outcomes of a causal token system, decided by events — not by an output grid.

Token l's field depends only on tokens ≤ l (causality). So when a token j blows up at t*_j, the
tokens before it are unaffected: `integrate_tokens` records t*_j, ends token j (and every
later token, which depends on it), and keeps integrating the causal prefix of tokens < j, until every
token has ended or the horizon is reached. Every token gets its own `TokenEnd`:

* ``HORIZON`` — integrated to ``t_max`` (a last, shorter step lands there); its growth exponent
  ``α = d ln‖u_l‖/d ln t`` and its ln-t slope ``β = d‖u_l‖/d ln t`` are read from the norms at the steps, over
  the last half decade and over the last decade (not from the field at the final state: at a stiff fixed
  point, t times the field's radial rate magnifies the steps' tolerated error without bound); where explicit
  steps landed (no stiffness), that rate ``t d ln‖u_l‖/dt`` is kept as ``end_exponent``, a check of where the
  token is heading now (a norm that has just levelled off still shows growth over the windows);
* ``BLOWUP`` — its norm diverged at its own finite time ``t_blowup``;
* ``GROWTH`` — its norm grew by the resolution factor without a finite-time singularity signature;
* ``DEPENDS`` — a token before it (``driver``) blew up, grew without bound or could not be followed;
* ``FAILED`` — the steps stalled on this token (its dynamics too fast or too stiff to follow at a
  fixed pace), or the step budget ran out before it was decided.

How it integrates (one autonomous system in a variable σ, state ``(u, τ)``, ``τ = ln(1 + t/ts)``)::

    du/dσ = g(u) (ts + t) f(u),    dτ/dσ = g(u),    g(u) = 1 / (1 + (max_l ‖u_l‖ / (4 R0))³)

with ``ts = 1 / max(1, s0)``, s0 the largest initial relative speed ‖f_l‖/‖u_l‖ (the time scale of the
dynamics at t = 0, fixed for the whole integration), and R0 the largest initial token norm of the active
prefix. Log time makes algebraic and logarithmic dynamics smooth (t up to 1e12 in a few hundred
steps); the factor g slows the clock as a norm grows (a Sundman transformation), so a finite-time
singularity ``‖u‖ ~ (T − t)^{-1/(k-1)}`` becomes a smooth, at most exponential, growth in σ with
t(σ) → T. The solver follows the norm to ``blowup_factor·R0`` (1e8 by default), where ``T − t`` is far
below any tolerance, and reads T there (plus the local extrapolation ``1 / ((k − 1) r)``, r = d ln‖u‖/dt,
k the local growth order ``d ln r / d ln‖u‖ + 1``); every token past ``√blowup_factor·R0`` blows up
there too. A growth order up to 1.3 counts as exponential-like, no singularity: ``GROWTH`` (so a true
singularity of order k ≤ 1.3, ‖u‖ ~ (T − t)^{-1/(k-1)} with exponent ≥ 3.3, reads as growth, not blow-up).
A later token whose norm grew ten-fold while its driver blew up is driven to the same singularity
(``BLOWUP`` with the driver's t*); the other later tokens end ``DEPENDS``.

Steps are Dormand–Prince 5(4). When Hairer's stiffness indicator exceeds 3.25 on 15 steps (a run of 6 below
resetting the count) the segment switches to the linearly implicit ROS34PW2, a W-method: its stage matrix
holds the field's ``jacobian_diagonal`` (when it has one) and J on the tracked stiff subspace, rows and columns
(`solvers.krylov_w`: a few products per step); with more stiff modes than that subspace holds, or a field
autograd cannot differentiate, each stage is solved by matrix-free GMRES (stopped below a tenth of the step's
error scale, preconditioned by the diagonal; `steppers`). Back to DP5 when the estimate of ``h·|λ|max`` stays
below 2 for 10 steps (20, 40, … after each return); every switch is recorded in ``methods``.
Step sizes follow Hairer's PI control for the DP5 steps (β = 0.04) and Gustafsson's predictive control for the
ROS34PW2 steps, with no growth right after a rejected step.

When 20 accepted steps in a row advance τ by less than 0.02 while no token's norm doubles, the steps
have stalled. If a token at 10·R0 or more grew by half over those steps with a singularity signature
(its growth order puts T within 1e-3·t, or the clock stood still, Δt ≤ 1e-4·t, while it grew), it
blows up there. If instead a token grew by a fifth over those steps with a singularity signature, and the
steps covered a tenth of the time left to its predicted T, the steps are approaching a low-order blow-up
at a steady pace (small in log time only because T − t ≪ t): the integration goes on. Otherwise the token
carrying the largest error over those steps (the one limiting them) ends ``FAILED`` (with its dependents),
and the prefix before it continues (an earlier cause stalls it next). A prefix starts at the last segment's
pace in τ (or its own initial step, if larger) and with its stepper. These rules are fixed in t, so a
token's outcome does not depend on the horizon once the horizon is past its decision. Nothing here knows
about Mamba: ``field(t, u)`` is any causal field on (1, L, W) tokens, autonomous (the step-size control and
the stiffness switch are `mamba_ode.dynamics.stepping`'s).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

import torch
from torch import Tensor

from .._enums import StrEnum
from .readings import window_reading
from .solvers.checks import check_token_args
from .solvers.steppers import Step, error_norm, hermite
from .stepping import Stepping

__all__ = ["TokenEnd", "TokenSolution", "integrate_tokens"]

_G_SCALE, _G_POWER, _STALL_STEPS, _STALL_TAU = 4.0, 3.0, 20, 0.02  # the Sundman factor; the stall rule
_LANDING_STEPS = 4  # most steps tried to land on the horizon
_DRIVEN = 10.0  # a later token whose norm grew this much as its driver blew up blows up with it
_NEAR_T = 1e-3  # at a stall, a singularity is read when T - t is below this fraction of t
_APPROACH_GROWTH, _APPROACH_PACE = 1.2, 0.1  # steps that approach a singularity steadily are no stall


class TokenEnd(StrEnum):
    """How one token's integration ended (see `mamba_ode.dynamics.tokens`)."""

    HORIZON = "horizon"
    BLOWUP = "blow-up"
    GROWTH = "growth"
    DEPENDS = "depends"
    FAILED = "failed"


@dataclass
class TokenSolution:
    """Per-token outcomes of `integrate_tokens`, and the token norms along the way.

    Attributes:
        ts: (T,) times of the accepted steps (float64), from 0; for drawing.
        norms: (T, L) ‖u_l‖ at those times; NaN once token l has ended.
        ends: per token, a `TokenEnd`.
        t_end: (L,) the time each token's integration ended (its blow-up time for ``BLOWUP``).
        t_blowup: (L,) the token's own blow-up time, NaN unless ``BLOWUP``.
        driver: per token, the index of the token whose event ended it (itself for ``BLOWUP``, ``GROWTH``
            and a stalled ``FAILED``), else None.
        messages: per token, one readable line.
        u_end: (L, W) each token's last state (at ``t_end``).
        growth_exponent: (L,) ``α = (ln‖u(t)‖ − ln‖u(t/√10)‖)/ln √10`` over the last half decade (``HORIZON``
            tokens; NaN else).
        log_slope: (L,) ``β = (‖u(t)‖ − ‖u(t/√10)‖)/ln √10`` over the last half decade.
        decade_exponent: (L,) ``(ln‖u(t)‖ − ln‖u(t/10)‖)/ln 10`` over the last decade (NaN if unavailable).
        decade_slope: (L,) ``(‖u(t)‖ − ‖u(t/10)‖)/ln 10`` over the last decade.
        growth_order: (L,) the local growth order k at the stop of a ``BLOWUP``/``GROWTH`` token.
        end_exponent: (L,) ``t d ln‖u_l‖/dt`` from the field at the horizon when explicit steps landed there (else
            NaN: after stiff steps t·rate magnifies the tolerated error), beside the windows (None in old saves).
        initial_speed: (L,) ``‖f_l(u0)‖ / ‖u0_l‖``, the inverse of each token's time scale at t = 0 (NaN for a zero
            token; None in old saves).
        t_max: the horizon asked for.
        methods: ``[(stepper, t_from, t_to)]`` segments, ``"dopri5"`` or ``"ros34pw2"`` (stiff stretches).
        stats: ``nfev``, ``n_accepted``, ``n_rejected``, ``n_events`` (blow-ups and growth stops),
            ``n_stalls`` (tokens ended because the steps stalled on them) and ``n_vjp`` (reverse-mode products
            ``Jᵀv`` of the stiff steps, each a backward pass beyond the evaluation ``nfev`` counts for it).
            ``n_accepted`` counts the steps kept (one per time in ``ts`` after 0): the step that crossed the
            horizon and the landing tries not kept count in ``nfev`` only.
    """

    ts: Tensor
    norms: Tensor
    ends: list[TokenEnd]
    t_end: Tensor
    t_blowup: Tensor
    driver: list[int | None]
    messages: list[str]
    u_end: Tensor
    growth_exponent: Tensor
    log_slope: Tensor
    decade_exponent: Tensor
    decade_slope: Tensor
    growth_order: Tensor
    t_max: float
    methods: list[tuple[str, float, float]] = field(default_factory=list)
    stats: dict = field(default_factory=dict)
    end_exponent: Tensor | None = None
    initial_speed: Tensor | None = None

    @property
    def n_tokens(self) -> int:
        """L."""
        return len(self.ends)

    @property
    def integration_end(self) -> float:
        """The last time any token reached."""
        finite = self.t_end[torch.isfinite(self.t_end)]
        return float(finite.max()) if finite.numel() else 0.0


class _System:
    """The rescaled autonomous system on the active prefix, flattened: y = (u.flatten(), τ)."""

    def __init__(self, field: Callable[[Tensor, Tensor], Tensor], width: int, r0: float, ts: float) -> None:
        self.field, self.width, self.r0, self.ts = field, width, r0, ts
        self.nfev = self.n_vjp = 0
        self.last_fu: Tensor | None = None  # du/dt at the last evaluated state

    def jdiag(self, y: Tensor) -> Tensor | None:
        """An approximation of dF/dy's diagonal, from the field's ``jacobian_diagonal`` (None without one)."""
        jd = getattr(self.field, "jacobian_diagonal", None)
        if jd is None:
            return None
        u, tau = self.split(y)
        t = self.ts * math.expm1(min(tau, 700.0))
        g = self.sundman(float(torch.linalg.vector_norm(u, dim=-1).max()))
        d = jd(torch.tensor(t, dtype=torch.float64), u[None])[0]
        return torch.cat([(g * (self.ts + t)) * d.reshape(-1), y.new_zeros(1)])

    def sundman(self, n_max: float) -> float:
        """g = 1 / (1 + (n_max / (4 R0))³); NaN past 1e100·R0, a wild trial stage (accepted states stay below
        ``blowup_factor``·R0), which the step then rejects (its cube would raise OverflowError in Python)."""
        ratio = n_max / (_G_SCALE * self.r0)
        return 1.0 / (1.0 + ratio ** _G_POWER) if ratio < 1e100 else math.nan

    def split(self, y: Tensor) -> tuple[Tensor, float]:
        return y[:-1].view(-1, self.width), float(y[-1])

    def __call__(self, y: Tensor) -> Tensor:
        u, tau = self.split(y)
        t = self.ts * math.expm1(min(tau, 700.0))  # a trial stage may overshoot τ wildly; it is then rejected
        self.nfev += 1
        fu = self.field(torch.tensor(t, dtype=torch.float64), u[None])[0]
        self.last_fu = fu
        n_max = float(torch.linalg.vector_norm(u, dim=-1).max())
        g = self.sundman(n_max)
        return torch.cat([(g * (self.ts + t)) * fu.reshape(-1), y.new_tensor([g])])

    def vjp(self, y: Tensor, V: Tensor) -> Tensor | None:
        """(n, p) ``J(y)ᵀ V`` for V (n, p), by reverse mode through the field (one evaluation and p backward
        passes; the same system as ``__call__``, written with tensors so that autograd sees the clock and the
        Sundman factor); None when the field's output is outside autograd. A field that detaches part of its
        computation gives a partial product, which `StiffSubspace.solver` detects and leaves to GMRES."""
        try:
            with torch.enable_grad():
                yy = y.detach().clone().requires_grad_(True)
                u, tau = yy[:-1].view(-1, self.width), yy[-1]
                t = self.ts * torch.expm1(tau.clamp(max=700.0))
                self.nfev += 1
                fu = self.field(t, u[None])[0]
                if not fu.requires_grad:  # computed outside autograd (numpy, say): no reverse mode
                    return None
                g = 1.0 / (1.0 + (torch.linalg.vector_norm(u, dim=-1).max() / (_G_SCALE * self.r0)) ** _G_POWER)
                out = torch.cat([(g * (self.ts + t)) * fu.reshape(-1), g.reshape(1)])
                # the gradient of the scalar v·out: an explicit grad_outputs tensor would make torch import
                # sympy (0.4 s) at the first product of each process
                cols = [torch.autograd.grad((out * V[:, i]).sum(), yy, retain_graph=i + 1 < V.shape[1])[0]
                        for i in range(V.shape[1])]
                self.n_vjp += len(cols)
        except RuntimeError:  # a field computed outside autograd (no graph to differentiate)
            return None
        return torch.stack(cols, 1) if cols else V.clone()


def _rates(u: Tensor, fu: Tensor) -> tuple[Tensor, Tensor]:
    """(‖u_l‖, d ln‖u_l‖/dt) per token."""
    u, fu = u.double(), fu.double()
    n, dot = torch.linalg.vector_norm(u, dim=-1), (u * fu).sum(-1)
    return n, torch.where(n > 0, dot / n.clamp_min(1e-300) ** 2, torch.zeros_like(n))


class _Integrator:
    """The state of one `integrate_tokens` call (see the module docstring)."""

    def __init__(self, field: Callable[[Tensor, Tensor], Tensor], u0: Tensor, t_max: float, *, rtol: float,
                 atol: float, max_steps: int, blowup_factor: float, stiff_switch: bool, krylov_w: bool) -> None:
        self.field, self.t_max = field, t_max
        # the time scale of log time: the initial relative speed of the fastest token (at least 1 per unit t)
        with torch.no_grad():
            f0 = field(torch.tensor(0.0, dtype=torch.float64), u0[None])[0]
        n0 = torch.linalg.vector_norm(u0.double(), dim=-1).cpu()
        speed = torch.where(n0 > 0, torch.linalg.vector_norm(f0.double(), dim=-1).cpu() / n0, math.nan)  # NaN at 0
        self.t_scale, self.initial_speed = 1.0 / max(1.0, float(speed.nan_to_num(0.0).max())), speed
        self.tau_max = self.tau(t_max)
        self.rtol, self.atol, self.max_steps = rtol, atol, max_steps
        self.blowup_factor, self.stiff_switch, self.krylov_w = blowup_factor, stiff_switch, krylov_w
        L, W = u0.shape
        self.L, self.W, self.u0 = L, W, u0
        self.u0_norms = n0
        self.ends: list[TokenEnd | None] = [None] * L
        self.t_end, self.t_blowup, self.order, self.end_exponent = (torch.full((L,), math.nan, dtype=torch.float64)
                                                                    for _ in range(4))
        self.driver: list[int | None] = [None] * L
        self.messages = [""] * L
        self.u_end = torch.full((L, W), math.nan, dtype=u0.dtype, device=u0.device)
        self.ts: list[float] = []
        self.norms: list[Tensor] = []
        self.methods: list[tuple[str, float, float]] = []
        self.carry: tuple[float, str] | None = None  # (next step in τ, stepper) at the last accepted step
        self.stats = {"nfev": 0, "n_accepted": 0, "n_rejected": 0, "n_events": 0, "n_stalls": 0,
                      "n_vjp": 0}

    # ------------------------------------------------------------------ bookkeeping

    def tau(self, t: float) -> float:
        """τ = ln(1 + t/ts)."""
        return math.log1p(t / self.t_scale)

    def t_of(self, tau: float) -> float:
        """t = ts (e^τ − 1)."""
        return self.t_scale * math.expm1(tau)

    def record(self, t: float, u: Tensor) -> None:
        norms = torch.full((self.L,), math.nan, dtype=torch.float64)
        norms[: u.shape[0]] = torch.linalg.vector_norm(u.double(), dim=-1).cpu()
        self.ts.append(t)
        self.norms.append(norms)

    def end(self, l: int, kind: TokenEnd, t: float, u_l: Tensor, msg: str, driver: int | None = None) -> None:
        self.ends[l], self.t_end[l], self.messages[l], self.driver[l] = kind, t, msg, driver
        self.u_end[l] = u_l

    def end_all(self, u: Tensor, t: float, kind: TokenEnd, msg: str) -> None:
        for l in range(u.shape[0]):
            self.end(l, kind, t, u[l], msg)

    def budget_left(self) -> bool:
        return self.stats["n_accepted"] + self.stats["n_rejected"] < self.max_steps

    # ------------------------------------------------------------------ main loop

    def run(self) -> None:
        u, t = self.u0.clone(), 0.0
        self.record(0.0, u)
        m = self.L
        while m > 0:
            r0 = float(torch.linalg.vector_norm(self.u0[:m], dim=-1).max())
            if r0 == 0.0:  # every remaining token is zero: a fixed point
                self.record(self.t_max, u[:m])
                self.end_all(u[:m], self.t_max, TokenEnd.HORIZON, f"integrated to t={self.t_max:.6g} (static)")
                return
            out = self.segment(u[:m], t, r0)
            if out is None:  # the segment reached the horizon or ran out of steps
                return
            u, t, m = out

    def segment(self, u: Tensor, t: float, r0: float) -> tuple[Tensor, float, int] | None:
        """Integrate the prefix u (m, W) from t; return the new prefix after an event, or None when done."""
        sys = _System(self.field, self.W, r0, self.t_scale)
        y = torch.cat([u.reshape(-1), u.new_tensor([self.tau(t)])])
        f = sys(y)
        h, stepping, t_seg = self._initial_step(y, f), Stepping(self.rtol, self.atol, self.stiff_switch,
                                                                        self.krylov_w), t
        if self.carry is not None:  # the prefix of the last segment: its pace (in τ) carries over
            h_tau, kind = self.carry
            h = max(h, h_tau / float(f[-1])) if float(f[-1]) > 0 else h  # dτ/dσ = g, this system's own
            if kind == "ros34pw2" and self.stiff_switch and h_tau > 0:
                stepping.start_stiff()
        prev: tuple[Tensor, Tensor] | None = None  # (norms, rates) at the previous accepted step
        window: deque[tuple[float, float, Tensor, Tensor, Tensor]] = deque(maxlen=_STALL_STEPS)
        # (τ, ln‖u‖, token errors, norms, rates) of the last accepted steps
        try:
            while True:
                if not self.budget_left():
                    u_now, tau = sys.split(y)
                    self.end_all(u_now, self.t_of(tau), TokenEnd.FAILED, f"the step budget (max_steps="
                                 f"{self.max_steps}) ran out at t={self.t_of(tau):.6g}")
                    return None
                step = stepping.step(sys, y, f, h)
                err = error_norm(step.err, y, step.y, self.rtol, self.atol)
                if not (math.isfinite(err) and err <= 1.0 and torch.isfinite(step.y).all()):
                    self.stats["n_rejected"] += 1
                    h = stepping.rejected(err, h)
                    continue
                y_old, f_old, h_old = y, f, h
                y, f = step.y, (step.f if step.f is not None else sys(step.y))
                h = stepping.accepted(err, h)
                self.carry = (h * float(f[-1]), stepping.kind)
                t_now = self.t_of(float(y[-1]))
                if float(y[-1]) >= self.tau_max:  # land with the method that took this step
                    self._finish_horizon(sys, stepping, y_old, f_old, y, f, h_old)  # replaces this step
                    self.methods.append((stepping.kind, t_seg, self.t_max))
                    return None
                self.stats["n_accepted"] += 1
                if stepping.switch_after(step):
                    other = "dopri5" if stepping.kind == "ros34pw2" else "ros34pw2"
                    self.methods.append((other, t_seg, t_now))
                    t_seg = t_now
                u_now, _ = sys.split(y)
                self.record(t_now, u_now)
                norms, rates = _rates(u_now, sys.last_fu if sys.last_fu is not None else torch.zeros_like(u_now))
                total = float(norms.max())
                if total >= self.blowup_factor * r0:
                    self.methods.append((stepping.kind, t_seg, t_now))
                    big = norms >= min(math.sqrt(self.blowup_factor) * r0, total)
                    stars = {l: self._singularity(l, t_now, norms, rates, prev)
                             for l in torch.nonzero(big).flatten().tolist()}
                    return self._resolve(u_now, t_now, norms, stars)
                window.append((float(y[-1]), math.log(max(total, 1e-300)), self._token_errors(step, y_old, y), norms,
                               rates))
                if self._stalled(window):
                    stars = self._singular_now(t_now, norms, rates, window, r0)
                    if stars:  # the clock froze on a token in a finite-time singularity
                        self.methods.append((stepping.kind, t_seg, t_now))
                        return self._resolve(u_now, t_now, norms, stars)
                    if not self._approaching(window):
                        self.methods.append((stepping.kind, t_seg, t_now))
                        return self._stall(u_now, t_now, norms, window)
                prev = (norms, rates)
        finally:
            self.krylov_w = self.krylov_w and stepping.krylov_w  # a field autograd cannot differentiate: GMRES
            self.stats["nfev"] += sys.nfev
            self.stats["n_vjp"] += sys.n_vjp

    # ------------------------------------------------------------------ pieces

    def _initial_step(self, y: Tensor, f: Tensor) -> float:
        scale = self.atol + self.rtol * y.abs()
        d0 = float(torch.sqrt(torch.mean((y / scale) ** 2)))
        d1 = float(torch.sqrt(torch.mean((f / scale) ** 2)))
        return 0.01 * d0 / d1 if d0 > 1e-5 and d1 > 1e-5 else 1e-6

    def _token_errors(self, step: Step, y0: Tensor, y1: Tensor) -> Tensor:
        """(m,) each token's scaled squared error of an accepted step."""
        scale = self.atol + self.rtol * torch.maximum(y0[:-1].abs(), y1[:-1].abs())
        return ((step.err[:-1] / scale) ** 2).view(-1, self.W).sum(-1).double().cpu()

    @staticmethod
    def _stalled(window: deque[tuple[float, float, Tensor, Tensor, Tensor]]) -> bool:
        if len(window) < _STALL_STEPS or window[-1][0] - window[0][0] >= _STALL_TAU:
            return False
        n0, n1 = window[0][3], window[-1][3]
        # no token's norm doubled: no progress towards an event (a token that stays at zero makes none)
        return not bool(((n1 >= 2.0 * n0) & (n1 > 0)).any())

    def _approaching(self, window: deque[tuple[float, float, Tensor, Tensor, Tensor]]) -> bool:
        """Whether the steps advance towards a finite-time singularity at a steady pace: some token grew by
        _APPROACH_GROWTH over the window with a singularity signature (`_singularity` gives a blow-up time
        T), and the steps covered at least _APPROACH_PACE of the time that was left to T. Such steps are
        small in log time only because T − t is small against t (a low-order blow-up resolved at a tight
        tolerance): not a stall."""
        (tau0, _, _, n0, r0), (tau1, _, _, n1, r1) = window[0], window[-1]
        t0, t1 = self.t_of(tau0), self.t_of(tau1)
        for l in torch.nonzero((n0 > 0) & (n1 >= _APPROACH_GROWTH * n0)).flatten().tolist():
            _, t_star = self._singularity(l, t1, n1, r1, (n0, r0))
            if t_star is not None and t1 - t0 >= _APPROACH_PACE * (t_star - t0):
                return True
        return False

    def _stall(self, u: Tensor, t: float, norms: Tensor,
               window: deque[tuple[float, float, Tensor, Tensor, Tensor]]) -> tuple[Tensor, float, int]:
        """The steps stalled: end the token limiting them, and its dependents; return the prefix."""
        self.stats["n_stalls"] += 1
        errs = torch.stack([w[2] for w in window]).sum(0)
        c = int(torch.argmax(errs))  # the token limiting the steps (an earlier cause stalls its prefix next)
        n, span, nc = len(window) - 1, t - self.t_of(window[0][0]), float(norms[c])  # n steps covered span
        more = (self.t_max - t) * n / span if span > 0 else math.inf
        self.end(c, TokenEnd.FAILED, t, u[c], f"the steps stalled on this token at t={t:.8g} (norm {nc:.3g}"
                 f"): its dynamics is too fast or too stiff to follow (the last {n} steps advanced t by {span:.3g}; at "
                 f"that pace t_max={self.t_max:.6g} is {more:.2g} steps away)", c)
        for l in range(c + 1, u.shape[0]):
            self.end(l, TokenEnd.DEPENDS, t, u[l], f"depends on token {c}, on which the steps stalled at "
                                                   f"t={t:.6g}", c)
        return u[:c].clone(), t, c

    def _singular_now(self, t: float, norms: Tensor, rates: Tensor, window: deque[tuple[float, float, Tensor, Tensor,
                      Tensor]], r0: float) -> dict[int, tuple[float, float | None]]:
        """Tokens caught in a finite-time singularity when the steps stall, with (growth order, t*).

        A token qualifies when its norm is 10·R0 or more, grew by half over the stalled steps, and either
        its growth order gives ``T − t ≤ 1e-3·t`` or the clock stood still (Δt ≤ 1e-4·t over the steps)
        while it grew: then ``t* = t`` to well within 1e-3.
        """
        (_, _, _, n0, r_0), dt = window[0], t - self.t_of(window[0][0])
        out: dict[int, tuple[float, float | None]] = {}
        for l in torch.nonzero((norms >= 10.0 * r0) & (norms >= 1.5 * n0)).flatten().tolist():
            order, t_star = self._singularity(l, t, norms, rates, (n0, r_0))
            if t_star is not None and t_star - t <= _NEAR_T * t:
                out[l] = (order, t_star)
            elif dt <= 0.1 * _NEAR_T * t:  # the clock stood still: no growth order to read
                out[l] = (math.nan, t)
        return out

    def _resolve(self, u: Tensor, t: float, norms: Tensor,
                 stars: dict[int, tuple[float, float | None]]) -> tuple[Tensor, float, int]:
        """Tokens in ``stars`` diverge (with their growth order and t* or None): end the first of them (the
        driver) and every token after it; return the prefix before the driver."""
        self.stats["n_events"] += 1
        j = min(stars)
        for l in range(j, u.shape[0]):
            order, t_star = stars.get(l, (math.nan, None))
            if l in stars and t_star is not None:
                self.t_blowup[l], self.order[l] = t_star, order
                how = f"local growth order {order:.3g}" if math.isfinite(order) else "while the clock stood still"
                self.end(l, TokenEnd.BLOWUP, t_star, u[l], f"blows up at t*={t_star:.10g} (norm grew past "
                                                              f"{norms[l]:.3g}, {how})", l)
            elif l in stars:
                self.order[l] = order
                self.end(l, TokenEnd.GROWTH, t, u[l], f"grew past {norms[l]:.3g} by t={t:.6g} without a "
                                                      f"finite-time singularity signature (growth order {order:.3g})",
                         l)
            elif self.ends[j] is TokenEnd.BLOWUP and norms[l] >= _DRIVEN * float(self.u0_norms[l]) > 0:
                tj = float(self.t_blowup[j])  # driven: its norm grew with token j's, to the same singularity
                self.t_blowup[l] = tj
                self.end(l, TokenEnd.BLOWUP, tj, u[l], f"blows up with token {j} at t*={tj:.10g} (driven by it: "
                                                       f"its norm grew {float(norms[l] / self.u0_norms[l]):.3g}-fold)",
                         j)
            else:
                why = "blows up" if self.ends[j] is TokenEnd.BLOWUP else "grows without bound"
                tj = float(self.t_end[j])
                self.end(l, TokenEnd.DEPENDS, tj, u[l], f"depends on token {j}, which {why} at t={tj:.6g}", j)
        return u[:j].clone(), t, j

    @staticmethod
    def _singularity(l: int, t: float, norms: Tensor, rates: Tensor,
                     prev: tuple[Tensor, Tensor] | None) -> tuple[float, float | None]:
        """(local growth order k, blow-up time or None) of token l from its last two accepted steps."""
        if prev is None:
            return math.nan, None
        n1, r1 = float(prev[0][l]), float(prev[1][l])
        n2, r2 = float(norms[l]), float(rates[l])
        if not (0 < r1 < math.inf and 0 < r2 < math.inf and math.inf > n2 > n1 > 0):
            return math.nan, None
        km1 = (math.log(r2) - math.log(r1)) / (math.log(n2) - math.log(n1))
        if not km1 > 0.3:  # exponential-like growth: no singularity (documented above: orders ≤ 1.3)
            return 1.0 + km1, None
        return 1.0 + km1, t + 1.0 / (km1 * r2)

    def _finish_horizon(self, sys: _System, stepping: Stepping, y0: Tensor, f0: Tensor, y1: Tensor, f1: Tensor,
                        h: float) -> None:
        """The step from y0 crossed τ_max: land on it with shorter steps of the same method (the clock's
        interpolant gives the first fraction, secant updates the next), end every active token there (and read
        ``end_exponent``). An interpolated state (the fallback) would sit off the slow manifold after a stiff step."""
        lo, hi = 0.0, 1.0
        for _ in range(60):  # τ(θ) is monotone: bisection on the Hermite interpolant
            mid = 0.5 * (lo + hi)
            if float(hermite(y0[-1:], f0[-1:], y1[-1:], f1[-1:], h, mid)) < self.tau_max:
                lo = mid
            else:
                hi = mid
        u, _ = sys.split(hermite(y0, f0, y1, f1, h, hi))
        tau0, h_try, miss = float(y0[-1]), hi * h, math.inf
        for _ in range(_LANDING_STEPS):  # the closest landing wins (the Krylov solves make τ(h) a bit noisy)
            step = stepping.step(sys, y0, f0, h_try)
            err = error_norm(step.err, y0, step.y, self.rtol, self.atol)
            if not (math.isfinite(err) and err <= 1.0 and torch.isfinite(step.y).all()):
                break
            tau = float(step.y[-1])
            if abs(tau - self.tau_max) < min(miss, self.atol + self.rtol * self.tau_max):  # close enough to t_max
                (u, _), miss = sys.split(step.y), abs(tau - self.tau_max)
            if miss <= 1e-12 * max(1.0, self.tau_max) or not tau > tau0:
                break
            h_try *= (self.tau_max - tau0) / (tau - tau0)
        self.stats["n_accepted"] += math.isfinite(miss)  # the landing kept; the other tries count in nfev only
        if stepping.kind == "dopri5" and math.isfinite(miss):  # stiff steps: t·rate magnifies the error (NaN)
            sys(torch.cat([u.reshape(-1), u.new_tensor([self.tau_max])]))
            now = self.t_max * _rates(u, cast(Tensor, sys.last_fu))[1].cpu()  # from the field at the landing
            self.end_exponent[: u.shape[0]] = torch.where(torch.isfinite(now), now, math.nan)
        self.record(self.t_max, u)
        self.end_all(u, self.t_max, TokenEnd.HORIZON, f"integrated to t={self.t_max:.6g}")

    # ------------------------------------------------------------------ result

    def solution(self) -> TokenSolution:
        L = self.L
        ts, norms = torch.tensor(self.ts, dtype=torch.float64), torch.stack(self.norms)
        alpha, beta = (torch.full((L,), math.nan, dtype=torch.float64) for _ in range(2))
        dexp, dslope = (torch.full((L,), math.nan, dtype=torch.float64) for _ in range(2))
        for l in range(L):
            if self.ends[l] is TokenEnd.HORIZON:
                t1 = float(self.t_end[l])
                alpha[l], beta[l] = window_reading(ts, norms[:, l], t1, math.sqrt(10.0))
                dexp[l], dslope[l] = window_reading(ts, norms[:, l], t1, 10.0)
        ends = [e if e is not None else TokenEnd.FAILED for e in self.ends]
        return TokenSolution(ts=ts, norms=norms, ends=ends, t_end=self.t_end, t_blowup=self.t_blowup,
                             driver=self.driver, messages=self.messages, u_end=self.u_end, growth_exponent=alpha,
                             log_slope=beta, decade_exponent=dexp, decade_slope=dslope, growth_order=self.order,
                             t_max=self.t_max, methods=self.methods, stats=self.stats, end_exponent=self.end_exponent,
                             initial_speed=self.initial_speed)


def integrate_tokens(field: Callable[[Tensor, Tensor], Tensor], u0: Tensor, t_max: float, *, rtol: float = 1e-6,
                     atol: float = 1e-9, max_steps: int = 20_000, blowup_factor: float = 1e8,
                     stiff_switch: bool = True, krylov_w: bool = True) -> TokenSolution:
    """Integrate a causal token system from t = 0 and decide every token by its own events.

    Arguments:
        field: ``f(t, u)`` on (1, L', W) tokens for any prefix length L' ≤ L, causal (token l depends only
            on tokens ≤ l) and autonomous (t is passed but may be ignored), e.g. `mamba_ode.S6Field`.
        u0: (1, L, W) or (L, W) initial tokens, finite (float64 recommended).
        t_max: the horizon, > 0.
        rtol, atol: tolerances of the adaptive steps (on u and τ = ln(1 + t)).
        max_steps: most step attempts over the whole integration; then the remaining tokens end ``FAILED``.
        blowup_factor: the norm growth (over the active prefix's scale R0) at which a singularity is
            resolved; T − t there is negligible for any growth order above 1.5.
        stiff_switch: switch to the implicit ROS34PW2 stepper on stiff stretches.
        krylov_w: solve the stiff steps' stages with the tracked stiff subspace (`solvers.krylov_w`: a few
            products per step, one of them reverse-mode through the field); False, or a field autograd cannot
            differentiate, solves every stage by GMRES (three or four products each).

    Returns:
        A `TokenSolution`.

    Raises:
        TypeError: if field is not callable or u0 not a tensor.
        ValueError: for a u0 that is not (1, L, W) / (L, W), empty, non-floating or non-finite, a t_max
            that is not a finite number > 0, non-positive tolerances, a max_steps < 1 or a
            blowup_factor ≤ 1.
    """
    u = check_token_args(field, u0, t_max, rtol, atol, max_steps, blowup_factor)
    with torch.no_grad():
        run = _Integrator(field, u.detach().clone(), float(t_max), rtol=float(rtol), atol=float(atol),
                          max_steps=max_steps, blowup_factor=float(blowup_factor), stiff_switch=stiff_switch,
                          krylov_w=krylov_w)
        run.run()
        return run.solution()
