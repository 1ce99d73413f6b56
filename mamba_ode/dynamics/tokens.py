"""Per-token outcomes of a causal token system, decided by events — not by an output grid.

Token l's field depends only on tokens ≤ l (causality). So when a token j blows up at t*_j, the
tokens before it are unaffected: :func:`integrate_tokens` records t*_j, ends token j (and every
later token, which depends on it), and keeps integrating the causal prefix of tokens < j, until every
token has ended or the horizon is reached. Every token gets its own :class:`TokenEnd`:

* ``HORIZON`` — integrated to ``t_max``; its growth exponent ``α = d ln‖u_l‖/d ln t`` and its ln-t
  slope ``β = d‖u_l‖/d ln t`` are read from the field at the final state and over the last decade;
* ``BLOWUP`` — its norm diverged at its own finite time ``t_blowup``;
* ``GROWTH`` — its norm grew by the resolution factor without a finite-time singularity signature;
* ``DEPENDS`` — a token before it (``driver``) blew up or grew without bound, ending the system for it;
* ``FAILED`` — the step budget ran out before the token was decided.

How it integrates (one autonomous system in a variable σ, state ``(u, τ)``, ``τ = ln(1 + t)``)::

    du/dσ = g(u) (1 + t) f(u),    dτ/dσ = g(u),    g(u) = 1 / (1 + (‖u‖ / (4 R0))³)

Log time makes algebraic and logarithmic dynamics smooth (t up to 1e12 in a few hundred steps); the
factor g slows the clock as the norm grows (a Sundman transformation), so a finite-time singularity
``‖u‖ ~ (T − t)^{-1/(k-1)}`` becomes a smooth, at most exponential, growth in σ with t(σ) → T: the
solver follows the norm to ``blowup_factor·R0`` (1e8 by default), where ``T − t`` is far below any
tolerance, and T is read there (plus the local extrapolation ``1 / ((k − 1) r)``, r = d ln‖u‖/dt, k
the local growth order d ln r / d ln‖u‖ + 1). A growth order near 1 (exponential growth) is no
singularity: ``GROWTH``. Steps are Dormand–Prince 5(4); when Hairer's stiffness indicator stays above
3.25 (or the step size collapses while nothing blows up), the rest of the segment switches to the
linearly implicit ROS2 with matrix-free Krylov solves (:mod:`~mamba_ode.dynamics.solvers.steppers`); the
switch is recorded in ``methods``. Nothing here knows about Mamba: ``field(t, u)`` is any causal field
on (1, L, W) tokens, autonomous in t.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from .solvers.steppers import dp5_step, error_norm, hermite, ros2_step

__all__ = ["TokenEnd", "TokenSolution", "integrate_tokens"]

#: Hairer's stiffness indicator threshold and how many accepted steps in a row must exceed it
_STIFF_RATIO, _STIFF_STEPS = 3.25, 15
_G_SCALE, _G_POWER = 4.0, 3.0


class TokenEnd(str, enum.Enum):
    """How one token's integration ended (see :mod:`mamba_ode.dynamics.tokens`)."""

    HORIZON = "horizon"
    BLOWUP = "blow-up"
    GROWTH = "growth"
    DEPENDS = "depends"
    FAILED = "failed"

    def __str__(self) -> str:
        return self.value


@dataclass
class TokenSolution:
    """Per-token outcomes of :func:`integrate_tokens`, and the token norms along the way.

    Attributes:
        ts: (T,) times of the accepted steps (float64), from 0; for drawing.
        norms: (T, L) ‖u_l‖ at those times; NaN once token l has ended.
        ends: per token, a :class:`TokenEnd`.
        t_end: (L,) the time each token's integration ended (its blow-up time for ``BLOWUP``).
        t_blowup: (L,) the token's own blow-up time, NaN unless ``BLOWUP``.
        driver: per token, the index of the token whose blow-up or growth ended it (itself for
            ``BLOWUP``/``GROWTH``), else None.
        messages: per token, one readable line.
        u_end: (L, W) each token's last state (at ``t_end``).
        growth_exponent: (L,) ``α = t⟨u_l, f_l⟩/‖u_l‖²`` at the end (``HORIZON`` tokens; NaN else).
        log_slope: (L,) ``β = t⟨u_l, f_l⟩/‖u_l‖`` at the end (``HORIZON`` tokens; NaN else).
        decade_exponent: (L,) ``(ln‖u(t)‖ − ln‖u(t/10)‖)/ln 10`` over the last decade (NaN if unavailable).
        decade_slope: (L,) ``(‖u(t)‖ − ‖u(t/10)‖)/ln 10`` over the last decade.
        growth_order: (L,) the local growth order k at the stop of a ``BLOWUP``/``GROWTH`` token.
        t_max: the horizon asked for.
        methods: ``[(stepper, t_from, t_to)]`` segments: ``"dopri5"`` or ``"ros2"`` (after a stiffness switch).
        stats: ``nfev``, ``n_accepted``, ``n_rejected``, ``n_events`` (blow-ups and growth stops resolved).
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

    @property
    def n_tokens(self) -> int:
        """L."""
        return len(self.ends)

    @property
    def integration_end(self) -> float:
        """The last time any token reached."""
        return float(self.t_end.max()) if self.t_end.numel() else 0.0


class _System:
    """The rescaled autonomous system on the active prefix, flattened: y = (u.flatten(), τ)."""

    def __init__(self, field: Callable[[Tensor, Tensor], Tensor], width: int, r0: float) -> None:
        self.field, self.width, self.r0 = field, width, r0
        self.nfev = 0
        self.last_fu: Tensor | None = None  # du/dt at the last evaluated state

    def split(self, y: Tensor) -> tuple[Tensor, float]:
        return y[:-1].view(-1, self.width), float(y[-1])

    def g(self, u: Tensor) -> float:
        return 1.0 / (1.0 + (float(torch.linalg.vector_norm(u)) / (_G_SCALE * self.r0)) ** _G_POWER)

    def __call__(self, y: Tensor) -> Tensor:
        u, tau = self.split(y)
        t = math.expm1(tau)
        self.nfev += 1
        fu = self.field(torch.tensor(t, dtype=torch.float64), u[None])[0]
        self.last_fu = fu
        g = self.g(u)
        return torch.cat([(g * (1.0 + t)) * fu.reshape(-1), y.new_tensor([g])])


@dataclass
class _Record:
    ts: list[float] = field(default_factory=list)
    norms: list[Tensor] = field(default_factory=list)


def _rates(u: Tensor, fu: Tensor) -> tuple[Tensor, Tensor]:
    """(‖u_l‖, d ln‖u_l‖/dt) per token."""
    n = torch.linalg.vector_norm(u, dim=-1)
    dot = (u * fu).sum(-1)
    return n, torch.where(n > 0, dot / n.clamp_min(1e-300) ** 2, torch.zeros_like(n))


class _Integrator:
    """The state of one :func:`integrate_tokens` call (see the module docstring)."""

    def __init__(self, field: Callable[[Tensor, Tensor], Tensor], u0: Tensor, t_max: float, *, rtol: float,
                 atol: float, max_steps: int, blowup_factor: float, stiff_switch: bool) -> None:
        self.field, self.t_max, self.tau_max = field, t_max, math.log1p(t_max)
        self.rtol, self.atol, self.max_steps = rtol, atol, max_steps
        self.blowup_factor, self.stiff_switch = blowup_factor, stiff_switch
        L, W = u0.shape
        self.L, self.W = L, W
        self.u0 = u0
        self.ends: list[TokenEnd | None] = [None] * L
        self.t_end = torch.full((L,), math.nan, dtype=torch.float64)
        self.t_blowup = torch.full((L,), math.nan, dtype=torch.float64)
        self.driver: list[int | None] = [None] * L
        self.messages = [""] * L
        self.u_end = torch.full((L, W), math.nan, dtype=u0.dtype, device=u0.device)
        self.order = torch.full((L,), math.nan, dtype=torch.float64)
        self.rec = _Record()
        self.methods: list[tuple[str, float, float]] = []
        self.stats = {"nfev": 0, "n_accepted": 0, "n_rejected": 0, "n_events": 0}

    # ------------------------------------------------------------------ bookkeeping

    def record(self, t: float, u: Tensor) -> None:
        norms = torch.full((self.L,), math.nan, dtype=torch.float64)
        norms[: u.shape[0]] = torch.linalg.vector_norm(u.double(), dim=-1).cpu()
        self.rec.ts.append(t)
        self.rec.norms.append(norms)

    def end(self, l: int, kind: TokenEnd, t: float, u_l: Tensor, msg: str, driver: int | None = None) -> None:
        self.ends[l], self.t_end[l], self.messages[l], self.driver[l] = kind, t, msg, driver
        self.u_end[l] = u_l

    # ------------------------------------------------------------------ main loop

    def run(self) -> None:
        u, t = self.u0.clone(), 0.0
        self.record(0.0, u)
        m = self.L
        while m > 0:
            r0 = max(float(torch.linalg.vector_norm(self.u0[:m])), float(torch.linalg.vector_norm(u[:m])))
            if r0 == 0.0:  # every remaining token is zero: a fixed point
                for l in range(m):
                    self.end(l, TokenEnd.HORIZON, self.t_max, u[l], f"integrated to t={self.t_max:.6g}")
                break
            out = self.segment(u[:m], t, r0)
            if out is None:  # the segment reached the horizon or ran out of steps
                break
            u, t, m = out

    def segment(self, u: Tensor, t: float, r0: float) -> tuple[Tensor, float, int] | None:
        """Integrate the prefix u (m, W) from t; return the new prefix after an event, or None when done."""
        sys = _System(self.field, self.W, r0)
        y = torch.cat([u.reshape(-1), u.new_tensor([math.log1p(t)])])
        f = sys(y)
        h = self._initial_step(y, f)
        stepper, t_seg, stiff_run = "dopri5", t, 0
        prev: tuple[Tensor, Tensor] | None = None  # (norms, rates) at the previous accepted step
        try:
            while True:
                if self.stats["n_accepted"] + self.stats["n_rejected"] >= self.max_steps:
                    self._out_of_steps(y, sys)
                    return None
                step = dp5_step(sys, y, f, h) if stepper == "dopri5" else ros2_step(sys, y, f, h)
                err = error_norm(step.err, y, step.y, self.rtol, self.atol)
                if not math.isfinite(err) or not torch.isfinite(step.y).all():
                    self.stats["n_rejected"] += 1
                    h *= 0.25
                    continue
                if err > 1.0:
                    self.stats["n_rejected"] += 1
                    h *= max(0.2, 0.9 * err ** (-1.0 / (5.0 if stepper == "dopri5" else 2.0)))
                    if h < 1e-14 * (1.0 + abs(float(y[-1]))):
                        if stepper == "dopri5" and self.stiff_switch:
                            stepper = self._switch(t_seg, math.expm1(float(y[-1])))
                            t_seg = math.expm1(float(y[-1]))
                            h = self._initial_step(y, f)
                            continue
                        self._collapse(y, sys)
                        return None
                    continue
                # accepted
                self.stats["n_accepted"] += 1
                y_old, f_old, h_old = y, f, h
                y, f = step.y, (step.f if step.f is not None else sys(step.y))
                h *= min(5.0, max(0.2, 0.9 * err ** (-1.0 / (5.0 if stepper == "dopri5" else 2.0)))) \
                    if err > 0 else 5.0
                if stepper == "dopri5" and self.stiff_switch:
                    stiff_run = stiff_run + 1 if step.stiffness > _STIFF_RATIO else 0
                    if stiff_run >= _STIFF_STEPS:
                        stepper = self._switch(t_seg, math.expm1(float(y[-1])))
                        t_seg = math.expm1(float(y[-1]))
                u_now, tau = sys.split(y)
                if tau >= self.tau_max:
                    self._finish_horizon(sys, y_old, f_old, y, f, h_old)
                    self.methods.append((stepper, t_seg, self.t_max))
                    return None
                t_now = math.expm1(tau)
                self.record(t_now, u_now)
                norms, rates = _rates(u_now, sys.last_fu if sys.last_fu is not None else u_now * 0)
                if float(torch.linalg.vector_norm(u_now)) >= self.blowup_factor * r0:
                    self.methods.append((stepper, t_seg, t_now))
                    return self._resolve(u_now, t_now, r0, norms, rates, prev)
                prev = (norms, rates)
        finally:
            self.stats["nfev"] += sys.nfev

    # ------------------------------------------------------------------ pieces

    def _initial_step(self, y: Tensor, f: Tensor) -> float:
        scale = self.atol + self.rtol * y.abs()
        d0 = float(torch.sqrt(torch.mean((y / scale) ** 2)))
        d1 = float(torch.sqrt(torch.mean((f / scale) ** 2)))
        return 0.01 * d0 / d1 if d0 > 1e-5 and d1 > 1e-5 else 1e-6

    def _switch(self, t_from: float, t_now: float) -> str:
        self.methods.append(("dopri5", t_from, t_now))
        return "ros2"

    def _resolve(self, u: Tensor, t: float, r0: float, norms: Tensor, rates: Tensor,
                 prev: tuple[Tensor, Tensor] | None) -> tuple[Tensor, float, int]:
        """A norm reached ``blowup_factor·R0``: end the driver and every token after it; return the prefix."""
        self.stats["n_events"] += 1
        big = norms >= math.sqrt(self.blowup_factor) * r0
        j = int(torch.nonzero(big)[0]) if big.any() else int(torch.argmax(norms))
        m = u.shape[0]
        for l in range(j, m):
            order, t_star = self._singularity(l, t, norms, rates, prev)
            if big[l] and t_star is not None:
                self.t_blowup[l], self.order[l] = t_star, order
                self.end(l, TokenEnd.BLOWUP, t_star, u[l], f"blows up at t*={t_star:.10g} (norm grew past "
                                                              f"{norms[l]:.3g}, local growth order {order:.3g})", l)
            elif big[l]:
                self.order[l] = order
                self.end(l, TokenEnd.GROWTH, t, u[l], f"grew past {norms[l]:.3g} by t={t:.6g} without a "
                                                      f"finite-time singularity signature (growth order {order:.3g})",
                         l)
            else:
                why = ("blows up" if self.ends[j] is TokenEnd.BLOWUP else "grows without bound")
                tj = float(self.t_end[j])
                self.end(l, TokenEnd.DEPENDS, tj, u[l], f"depends on token {j}, which {why} at t={tj:.6g}", j)
        return u[:j].clone(), t, j

    def _singularity(self, l: int, t: float, norms: Tensor, rates: Tensor,
                     prev: tuple[Tensor, Tensor] | None) -> tuple[float, float | None]:
        """(local growth order k, blow-up time or None) of token l from its last two accepted steps."""
        if prev is None:
            return math.nan, None
        n1, r1 = float(prev[0][l]), float(prev[1][l])
        n2, r2 = float(norms[l]), float(rates[l])
        if not (r1 > 0 and r2 > 0 and n2 > n1 > 0):
            return math.nan, None
        km1 = math.log(r2 / r1) / math.log(n2 / n1)
        if not km1 > 0.3:  # exponential-like growth: no singularity
            return 1.0 + km1, None
        return 1.0 + km1, t + 1.0 / (km1 * r2)

    def _finish_horizon(self, sys: _System, y0: Tensor, f0: Tensor, y1: Tensor, f1: Tensor, h: float) -> None:
        """The step crossed τ_max: interpolate the state there and end every active token at the horizon."""
        tau0, tau1 = float(y0[-1]), float(y1[-1])
        lo, hi = 0.0, 1.0
        for _ in range(60):  # τ(θ) is monotone: bisection on the Hermite interpolant
            mid = 0.5 * (lo + hi)
            if float(hermite(y0[-1:], f0[-1:], y1[-1:], f1[-1:], h, mid)) < self.tau_max:
                lo = mid
            else:
                hi = mid
        theta = hi if tau1 > tau0 else 1.0
        y = hermite(y0, f0, y1, f1, h, theta)
        u, _ = sys.split(y)
        self.record(self.t_max, u)
        for l in range(u.shape[0]):
            self.end(l, TokenEnd.HORIZON, self.t_max, u[l], f"integrated to t={self.t_max:.6g}")

    def _out_of_steps(self, y: Tensor, sys: _System) -> None:
        u, tau = sys.split(y)
        t = math.expm1(tau)
        for l in range(u.shape[0]):
            self.end(l, TokenEnd.FAILED, t, u[l], f"the step budget (max_steps={self.max_steps}) ran out at "
                                                  f"t={t:.6g}")

    def _collapse(self, y: Tensor, sys: _System) -> None:
        u, tau = sys.split(y)
        t = math.expm1(tau)
        for l in range(u.shape[0]):
            self.end(l, TokenEnd.FAILED, t, u[l], f"the step size collapsed at t={t:.6g} with the implicit "
                                                  "stepper too")

    # ------------------------------------------------------------------ result

    def evidence(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(α, β at the end; decade exponent and slope) for the ``HORIZON`` tokens."""
        L = self.L
        alpha = torch.full((L,), math.nan, dtype=torch.float64)
        beta = torch.full((L,), math.nan, dtype=torch.float64)
        horizon = [l for l in range(L) if self.ends[l] is TokenEnd.HORIZON]
        if horizon:
            m = max(horizon) + 1
            u = self.u_end[:m]
            with torch.no_grad():
                fu = self.field(torch.tensor(self.t_max, dtype=torch.float64), u[None])[0]
            self.stats["nfev"] += 1
            n, r = _rates(u.double(), fu.double())
            for l in horizon:
                if n[l] > 0:
                    alpha[l] = self.t_max * r[l]
                    beta[l] = self.t_max * r[l] * n[l]
                else:
                    alpha[l], beta[l] = 0.0, 0.0
        ts = torch.tensor(self.rec.ts, dtype=torch.float64)
        norms = torch.stack(self.rec.norms)
        dexp = torch.full((L,), math.nan, dtype=torch.float64)
        dslope = torch.full((L,), math.nan, dtype=torch.float64)
        for l in horizon:
            t1 = float(self.t_end[l])
            i0 = int(torch.searchsorted(ts, torch.tensor(t1 / 10.0, dtype=torch.float64)))
            if t1 / 10.0 <= 0 or i0 >= len(ts) or ts[i0] <= 0:
                continue
            # the norm at t1/10 by linear interpolation in ln t between accepted steps
            a = max(i0 - 1, 0)
            ta, tb = float(ts[a]), float(ts[i0])
            na, nb = float(norms[a, l]), float(norms[i0, l])
            if ta <= 0 or not (math.isfinite(na) and math.isfinite(nb)):
                continue
            w = (math.log(t1 / 10.0) - math.log(ta)) / (math.log(tb) - math.log(ta)) if tb > ta else 1.0
            n10 = na + w * (nb - na)
            n1 = float(norms[-1, l]) if math.isfinite(float(norms[-1, l])) else float("nan")
            if n10 > 0 and n1 > 0:
                dexp[l] = (math.log(n1) - math.log(n10)) / math.log(10.0)
                dslope[l] = (n1 - n10) / math.log(10.0)
        return alpha, beta, dexp, dslope

    def solution(self) -> TokenSolution:
        alpha, beta, dexp, dslope = self.evidence()
        ts = torch.tensor(self.rec.ts, dtype=torch.float64)
        norms = torch.stack(self.rec.norms)
        ends = [e if e is not None else TokenEnd.FAILED for e in self.ends]
        return TokenSolution(ts=ts, norms=norms, ends=ends, t_end=self.t_end, t_blowup=self.t_blowup,
                             driver=self.driver, messages=self.messages, u_end=self.u_end, growth_exponent=alpha,
                             log_slope=beta, decade_exponent=dexp, decade_slope=dslope, growth_order=self.order,
                             t_max=self.t_max, methods=self.methods, stats=self.stats)


def integrate_tokens(field: Callable[[Tensor, Tensor], Tensor], u0: Tensor, t_max: float, *, rtol: float = 1e-6,
                     atol: float = 1e-9, max_steps: int = 20_000, blowup_factor: float = 1e8,
                     stiff_switch: bool = True) -> TokenSolution:
    """Integrate a causal token system from t = 0 and decide every token by its own events.

    Arguments:
        field: ``f(t, u)`` on (1, L', W) tokens for any prefix length L' ≤ L, causal (token l depends only
            on tokens ≤ l) and autonomous (t is passed but may be ignored), e.g. :class:`mamba_ode.S6Field`.
        u0: (1, L, W) or (L, W) initial tokens, finite (float64 recommended).
        t_max: the horizon, > 0.
        rtol, atol: tolerances of the adaptive steps (on u and τ = ln(1 + t)).
        max_steps: most step attempts over the whole integration; then the remaining tokens end ``FAILED``.
        blowup_factor: the norm growth (over the active prefix's scale R0) at which a singularity is
            resolved; T − t there is negligible for any growth order above 1.5.
        stiff_switch: switch to the implicit ROS2 stepper when Hairer's stiffness test fires.

    Returns:
        A :class:`TokenSolution`.

    Raises:
        TypeError: if field is not callable or u0 not a tensor.
        ValueError: for a u0 that is not (1, L, W) / (L, W), empty, non-floating or non-finite, a t_max
            that is not a finite number > 0, non-positive tolerances, a max_steps < 1 or a
            blowup_factor ≤ 1.
    """
    if not callable(field):
        raise TypeError(f"argument 'field' must be callable f(t, u), got {type(field).__name__}")
    if not isinstance(u0, Tensor):
        raise TypeError(f"argument 'u0' must be a torch.Tensor (1, L, W), got {type(u0).__name__}")
    u = u0[0] if u0.dim() == 3 and u0.shape[0] == 1 else u0
    if u.dim() != 2 or u.numel() == 0 or not u.is_floating_point():
        raise ValueError(f"argument 'u0' must be a non-empty floating (1, L, W) or (L, W) tensor, got "
                         f"{u0.dtype} {tuple(u0.shape)}")
    if not torch.isfinite(u).all():
        raise ValueError("argument 'u0' contains non-finite values (NaN or inf)")
    for name, v in (("t_max", t_max), ("rtol", rtol), ("atol", atol)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not (math.isfinite(v) and v > 0):
            raise ValueError(f"argument {name!r} must be a finite number > 0, got {v!r}")
    if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1:
        raise ValueError(f"argument 'max_steps' must be a positive int, got {max_steps!r}")
    if not (isinstance(blowup_factor, (int, float)) and math.isfinite(blowup_factor) and blowup_factor > 1):
        raise ValueError(f"argument 'blowup_factor' must be a finite number > 1, got {blowup_factor!r}")
    with torch.no_grad():
        run = _Integrator(field, u.detach().clone(), float(t_max), rtol=float(rtol), atol=float(atol),
                          max_steps=max_steps, blowup_factor=float(blowup_factor), stiff_switch=stiff_switch)
        run.run()
        return run.solution()
