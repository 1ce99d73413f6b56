"""Integrating token trajectories: ``solve(field, u0, t_span, ...) → Solution``, and Euler stepping.

This module knows nothing about Mamba: a field is any callable ``f(t, u)`` mapping a time and a
batch of states (B, L, E) to their derivative (B, L, E), batched over the first axis (trajectory b's
derivative depends only on trajectory b). A field may list times where it jumps in
``field.jump_times``; the solvers land on them.

How :func:`solve` works (torchdiffeq backend):

* The span is cut at the field's jump times into pieces; on a piece [a, b] the field is evaluated
  with t clamped to [a, b) (its left limit at b), so each piece is smooth.
* A group of trajectories is integrated by ``torchdiffeq.odeint`` with a monitor attached through
  torchdiffeq's per-step callbacks: it counts accepted and rejected steps, keeps the last accepted
  states, and stops the run (by raising an internal exception) when a trajectory's largest
  ``|u|`` passes ``blowup_threshold`` or turns non-finite, when the proposed step falls below
  ``min_step_rel · |t|`` (step-size collapse), or after ``max_steps`` step attempts.
* The outputs before the stop are recovered by replaying the run up to the stop (the step
  sequence is deterministic and does not depend on the output times). The trajectories that
  caused a threshold stop get their status; after a step-size collapse in a group of several
  trajectories the group is split in halves, each continued from the last accepted state, until
  the culprit is alone. So one trajectory blowing up never stops or spoils the others.
* A lone trajectory whose step size collapsed is classified by its growth: with
  ``r(τ) = d ln‖u‖/dτ``, a finite-time singularity ``‖u‖ ~ (T - τ)^{-α}`` makes ``1/r`` linear in τ
  with zero at T. ``1/r`` extrapolated from the last accepted states gives ``t_blowup``; if it
  does not point to a nearby singularity the status is a step-size failure.
* ``log_time=True`` integrates in s = ln(1 + t), i.e. ``du/ds = (1 + t) f(t, u)``: algebraic and
  logarithmic dynamics become smooth on a scale of s, so t up to 1e12 costs a few hundred steps.

``backend="scipy"`` runs ``scipy.integrate.solve_ivp`` per trajectory on flattened float64 states,
with the same pieces, log time, threshold event and blow-up classification: for cross-checks.
"""

from __future__ import annotations

import enum
import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

__all__ = ["Status", "Solution", "solve", "euler", "TORCHDIFFEQ_METHODS", "SCIPY_METHODS"]

#: torchdiffeq method names accepted by :func:`solve` (adaptive ones first).
TORCHDIFFEQ_METHODS = ("dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun", "euler", "midpoint", "heun2",
                       "heun3", "rk4", "explicit_adams", "implicit_adams", "fixed_adams")
_ADAPTIVE = frozenset({"dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun"})
#: scipy ``solve_ivp`` methods accepted with ``backend="scipy"``.
SCIPY_METHODS = ("RK45", "RK23", "DOP853", "LSODA", "Radau", "BDF")
BACKENDS = ("torchdiffeq", "scipy")


class Status(enum.Enum):
    """Outcome of one trajectory."""

    SUCCESS = "success"
    BLOWUP = "blow-up"
    STEP_SIZE = "step-size failure"
    MAX_STEPS = "max-steps"

    @property
    def ok(self) -> bool:
        """True for a trajectory integrated over the whole span."""
        return self is Status.SUCCESS


@dataclass
class Solution:
    """Result of :func:`solve` and :func:`euler` (in the spirit of diffrax's ``Solution``).

    Attributes:
        ts: (T,) output times (float64).
        ys: (T, B, L, E) states, in u0's dtype; rows after a trajectory's failure are NaN for it.
        status: per trajectory (length B), a :class:`Status`.
        messages: per trajectory, a readable message.
        t_blowup: (B,) estimated blow-up time (float64), NaN where none.
        t_final: (B,) last time each trajectory reached (float64).
        stats: ``{"nfev": int, "n_accepted": int, "n_rejected": int | None, ...}`` over the whole solve.
        method: solver name; backend: ``"torchdiffeq"``, ``"scipy"`` or ``"euler"``.
        log_time: whether the integration ran in s = ln(1 + t).
    """

    ts: Tensor
    ys: Tensor
    status: list[Status]
    messages: list[str]
    t_blowup: Tensor
    t_final: Tensor
    stats: dict = field(default_factory=dict)
    method: str = ""
    backend: str = ""
    log_time: bool = False

    @property
    def ok(self) -> bool:
        """True when every trajectory succeeded."""
        return all(s.ok for s in self.status)

    @property
    def blew_up(self) -> Tensor:
        """(B,) bool: which trajectories blew up."""
        return torch.tensor([s is Status.BLOWUP for s in self.status], dtype=torch.bool)

    @property
    def message(self) -> str:
        """One readable line summarising the statuses."""
        counts: dict[str, int] = {}
        for s in self.status:
            counts[s.value] = counts.get(s.value, 0) + 1
        return ", ".join(f"{n} {k}" for k, n in counts.items())

    def __repr__(self) -> str:
        tb = [f"{t:.6g}" for t in self.t_blowup.tolist() if not math.isnan(t)]
        return (f"Solution(T={self.ts.numel()}, ys={tuple(self.ys.shape)}, status=[{self.message}], "
                f"t_blowup=[{', '.join(tb)}], stats={self.stats})")


# ============================================================================ validation


def _check_field(fn: object) -> None:
    if not callable(fn):
        raise TypeError(f"argument 'field' must be callable f(t, u), got {type(fn).__name__}")


def _check_u0(u0: object) -> Tensor:
    if not isinstance(u0, Tensor):
        raise TypeError(f"argument 'u0' must be a torch.Tensor (B, L, E), got {type(u0).__name__}")
    if u0.dim() != 3:
        raise ValueError(f"argument 'u0' must have shape (B, L, E), got {tuple(u0.shape)}")
    if u0.numel() == 0:
        raise ValueError(f"argument 'u0' is empty (shape {tuple(u0.shape)}): need B, L, E ≥ 1 "
                         "(an empty sequence cannot be integrated)")
    if not u0.is_floating_point():
        raise ValueError(f"argument 'u0' must be a floating tensor, got {u0.dtype}")
    if not torch.isfinite(u0).all():
        raise ValueError("argument 'u0' contains non-finite values (NaN or inf)")
    return u0.detach()


def _check_span(t_span: object, log_time: bool) -> tuple[float, float]:
    try:
        t0, t1 = (float(t) for t in t_span)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise ValueError(f"argument 't_span' must be a pair (t0, t1) of real numbers, got {t_span!r}") from None
    if not (math.isfinite(t0) and math.isfinite(t1)):
        raise ValueError(f"argument 't_span' must be finite, got ({t0}, {t1})")
    if not t1 > t0:
        raise ValueError(f"argument 't_span' must be increasing (t0 < t1), got ({t0}, {t1})")
    if log_time and t0 <= -1.0:
        raise ValueError(f"argument 't_span': log_time needs t0 > -1 (s = ln(1 + t)), got t0={t0}")
    return t0, t1


def _check_t_eval(t_eval: object, t0: float, t1: float) -> Tensor | None:
    if t_eval is None:
        return None
    try:
        te = torch.as_tensor(t_eval, dtype=torch.float64).detach().cpu()
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"argument 't_eval' must be a 1-D sequence of times, got {type(t_eval).__name__}") from None
    if te.dim() != 1 or te.numel() == 0:
        raise ValueError(f"argument 't_eval' must be a non-empty 1-D sequence of times, got shape {tuple(te.shape)}")
    if not torch.isfinite(te).all():
        raise ValueError("argument 't_eval' contains non-finite times")
    if te.numel() > 1 and not (te[1:] > te[:-1]).all():
        raise ValueError("argument 't_eval' must be strictly increasing")
    if te[0] < t0 or te[-1] > t1:
        raise ValueError(f"argument 't_eval' must lie inside t_span [{t0}, {t1}], got [{te[0].item()}, "
                         f"{te[-1].item()}]")
    return te


def _positive(x: object, name: str) -> float:
    try:
        v = float(x)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"argument {name!r} must be a positive number, got {x!r}") from None
    if not (math.isfinite(v) and v > 0):
        raise ValueError(f"argument {name!r} must be a positive finite number, got {x!r}")
    return v


def _jump_times(fn: object, t0: float, t1: float, extra: Sequence[float] | None) -> list[float]:
    jumps = [float(t) for t in getattr(fn, "jump_times", ())]
    if extra is not None:
        jumps += [float(t) for t in extra]
    return sorted({t for t in jumps if t0 < t < t1 and math.isfinite(t)})


def _probe(fn: Callable, t0: float, u0: Tensor) -> None:
    """Evaluate the field once so that a wrong width or dtype is reported against u0."""
    try:
        f0 = fn(torch.tensor(t0, dtype=torch.float64), u0)
    except ValueError as err:
        raise ValueError(f"argument 'u0' (shape {tuple(u0.shape)}, {u0.dtype}) does not fit the field: {err}") from err
    if not isinstance(f0, Tensor) or f0.shape != u0.shape:
        got = tuple(f0.shape) if isinstance(f0, Tensor) else type(f0).__name__
        raise ValueError(f"argument 'u0': the field returned {got} for u0 of shape {tuple(u0.shape)}")


# ============================================================================ time variable


class _Clock:
    """The integration variable τ: t itself, or s = ln(1 + t) with ``log_time``."""

    def __init__(self, log_time: bool) -> None:
        self.log = log_time

    def tau(self, t: float) -> float:
        return math.log1p(t) if self.log else t

    def t(self, tau: float) -> float:
        return math.expm1(tau) if self.log else tau

    def rhs(self, fn: Callable, t_lo: float, t_hi: float) -> Callable[[float, Tensor], Tensor]:
        """du/dτ on the piece [t_lo, t_hi] with t clamped to [t_lo, t_hi) (left limit at t_hi)."""
        t_top = math.nextafter(t_hi, -math.inf)

        def f(tau: float, y: Tensor) -> Tensor:
            t = min(max(self.t(tau), t_lo), t_top)
            dy = fn(torch.tensor(t, dtype=torch.float64), y)
            return dy * (1.0 + t) if self.log else dy

        return f


# ============================================================================ blow-up classification


def _rate(rhs: Callable, tau: float, y: Tensor) -> float:
    """d ln‖y‖/dτ = <y, f(y)> / ‖y‖² for one trajectory y (1, L, E)."""
    with torch.no_grad():
        f = rhs(tau, y)
    yy = float((y.double() * y.double()).sum())
    return float((y.double() * f.double()).sum()) / yy if yy > 0 else math.nan


def _singularity(rhs: Callable, hist: list[tuple[float, Tensor]]) -> float | None:
    """Blow-up time τ* extrapolated from the last accepted states of one trajectory, or None.

    With r = d ln‖y‖/dτ, ``‖y‖ ~ c (τ* - τ)^{-α}`` gives ``1/r = (τ* - τ)/α``: the zero of the line
    through the last two (τ, 1/r) is τ*. Accepted only when r > 0 at both, 1/r decreases, and τ*
    is within 100 times the span of the history (a singularity the steps were resolving).
    """
    if len(hist) < 2:
        return None
    (t1, y1), (t2, y2) = hist[-2], hist[-1]
    if not t2 > t1:
        return None
    r1, r2 = _rate(rhs, t1, y1), _rate(rhs, t2, y2)
    if not (math.isfinite(r1) and math.isfinite(r2) and r1 > 0 and r2 > 0):
        return None
    i1, i2 = 1.0 / r1, 1.0 / r2
    if not i2 < i1:
        return None
    tstar = t2 + i2 * (t2 - t1) / (i1 - i2)
    if not math.isfinite(tstar) or tstar - t2 > 100.0 * (t2 - hist[0][0]):
        return None
    return max(tstar, t2)


# ============================================================================ one group run


class _Stop(Exception):  # noqa: N818 — control flow, not an error
    """Raised inside a solver run to end it at the last accepted state."""

    def __init__(self, kind: str, tau: float, y: Tensor, which: Tensor | None = None, detail: str = "") -> None:
        super().__init__(kind)
        self.kind, self.tau, self.y, self.which, self.detail = kind, tau, y, which, detail


@dataclass
class _Run:
    """What one solver run over a group returned."""

    outputs: Tensor  # (n_done, G, L, E) at the first n_done requested times
    stop: _Stop | None  # None: reached the end of the piece
    y_end: Tensor | None  # (G, L, E) at the end of the piece when stop is None
    hist: list[tuple[float, Tensor]]


class _Monitor:
    """The function handed to torchdiffeq: counts, remembers and stops (see the module docstring)."""

    def __init__(self, rhs: Callable, *, threshold: float, min_step_rel: float, budget: int, stats: dict,
                 hist: list[tuple[float, Tensor]], adaptive: bool, pbar: object | None) -> None:
        self.rhs = rhs
        self.threshold, self.min_step_rel, self.budget = threshold, min_step_rel, budget
        self.stats = stats
        self.hist: deque[tuple[float, Tensor]] = deque(hist, maxlen=3)
        self.armed = True
        self.pbar = pbar
        if adaptive:  # fixed-grid solvers support only callback_step: do not offer the others
            self.callback_accept_step = self._accept
            self.callback_reject_step = self._reject

    def __call__(self, t: Tensor, y: Tensor) -> Tensor:
        self.stats["nfev"] += 1
        return self.rhs(float(t), y)

    def _accept(self, t0: Tensor, y0: Tensor, dt: Tensor) -> None:
        if self.armed:
            self.stats["n_accepted"] += 1

    def _reject(self, t0: Tensor, y0: Tensor, dt: Tensor) -> None:
        if self.armed:
            self.stats["n_rejected"] += 1

    def callback_step(self, t0: Tensor, y0: Tensor, dt: Tensor) -> None:
        tau, h = float(t0), float(dt)
        if not self.hist or tau > self.hist[-1][0]:
            if self.pbar is not None and self.hist:
                self.pbar.update(tau - self.hist[-1][0])
            self.hist.append((tau, y0.detach().clone()))
        if not self.armed:
            return
        self.stats["n_steps"] += 1
        big = y0.detach().abs().flatten(1).amax(1)
        bad = ~torch.isfinite(big) | (big > self.threshold)
        if bad.any():
            raise _Stop("threshold", tau, y0.detach().clone(), bad.cpu())
        if not (h > self.min_step_rel * abs(tau)) or not tau + h > tau:
            raise _Stop("collapse", tau, y0.detach().clone(), detail=f"step size {h:.3g}")
        if self.stats["n_steps"] >= self.budget:
            raise _Stop("max_steps", tau, y0.detach().clone())


def _run_torchdiffeq(rhs: Callable, tau_a: float, tau_b: float, y0: Tensor, outs: list[float], *, method: str,
                     rtol: float, atol: float, options: dict, threshold: float, min_step_rel: float, budget: int,
                     stats: dict, hist: list[tuple[float, Tensor]], pbar: object | None) -> _Run:
    from torchdiffeq import odeint

    grid = torch.tensor([tau_a, *outs, tau_b], dtype=torch.float64) if not outs or outs[-1] < tau_b else \
        torch.tensor([tau_a, *outs], dtype=torch.float64)
    mon = _Monitor(rhs, threshold=threshold, min_step_rel=min_step_rel, budget=budget, stats=stats, hist=hist,
                   adaptive=method in _ADAPTIVE, pbar=pbar)
    try:
        with torch.no_grad():
            sol = odeint(mon, y0, grid, method=method, rtol=rtol, atol=atol, options=options)
    except _Stop as stop:
        done = [t for t in outs if t <= stop.tau]
        outputs = y0.new_empty((0, *y0.shape))
        if done:  # replay up to the stop: same steps, so the same states
            mon.armed = False
            stats["n_replays"] += 1
            with torch.no_grad():
                outputs = odeint(mon, y0, torch.tensor([tau_a, *done], dtype=torch.float64), method=method,
                                 rtol=rtol, atol=atol, options=options)[1:]
        return _Run(outputs, stop, None, list(mon.hist))
    except AssertionError as err:  # torchdiffeq's own guards (dt underflow, non-finite state)
        last_tau, last_y = mon.hist[-1] if mon.hist else (tau_a, y0)
        stop = _Stop("collapse", last_tau, last_y, detail=str(err).split(":")[0])
        stats["n_replays"] += 1
        done = [t for t in outs if t <= last_tau]
        outputs = y0.new_empty((0, *y0.shape))
        if done:
            mon.armed = False
            try:
                with torch.no_grad():
                    outputs = odeint(mon, y0, torch.tensor([tau_a, *done], dtype=torch.float64), method=method,
                                     rtol=rtol, atol=atol, options=options)[1:]
            except AssertionError:
                outputs = torch.full((len(done), *y0.shape), math.nan, dtype=y0.dtype, device=y0.device)
        return _Run(outputs, stop, None, list(mon.hist))
    return _Run(sol[1:1 + len(outs)], None, sol[-1], list(mon.hist))


def _run_scipy(rhs: Callable, tau_a: float, tau_b: float, y0: Tensor, outs: list[float], *, method: str,
               rtol: float, atol: float, options: dict, threshold: float, min_step_rel: float, budget: int,
               stats: dict, hist: list[tuple[float, Tensor]], pbar: object | None) -> _Run:
    """One trajectory through scipy's ``OdeSolver`` step by step (the classes behind ``solve_ivp``)."""
    import scipy.integrate as si

    shape, dtype, device = y0.shape, y0.dtype, y0.device
    if shape[0] != 1:
        raise RuntimeError("the scipy backend integrates one trajectory at a time")

    def fun(tau: float, y: np.ndarray) -> np.ndarray:
        yt = torch.as_tensor(y, dtype=torch.float64).reshape(shape)
        with torch.no_grad():
            return rhs(tau, yt).double().reshape(-1).cpu().numpy()

    def as_tensor(y: np.ndarray) -> Tensor:
        return torch.as_tensor(np.array(y, dtype=np.float64)).reshape(shape)

    solver = getattr(si, method)(fun, tau_a, y0.detach().double().reshape(-1).cpu().numpy(), tau_b, rtol=rtol,
                                 atol=atol, **options)
    hist = list(hist)
    outputs: list[Tensor] = []
    k = 0  # next output
    stop: _Stop | None = None
    nfev0 = 0
    while solver.status == "running":
        t_old = solver.t
        message = solver.step()
        stats["nfev"] += solver.nfev - nfev0
        nfev0 = solver.nfev
        if solver.status == "failed":
            stop = _Stop("collapse", float(solver.t), as_tensor(solver.y), detail=str(message))
            break
        tau = float(solver.t)
        stats["n_accepted"] += 1
        stats["n_steps"] += 1
        if pbar is not None:
            pbar.update(tau - t_old)
        y_now = as_tensor(solver.y)
        if not hist or tau > hist[-1][0]:
            hist = [*hist, (tau, y_now)][-3:]
        if k < len(outs) and outs[k] <= tau:
            dense = solver.dense_output()
            while k < len(outs) and outs[k] <= tau:
                outputs.append(y_now if outs[k] == tau else as_tensor(dense(outs[k])))
                k += 1
        big = float(np.max(np.abs(solver.y)))
        if not math.isfinite(big) or big > threshold:
            stop = _Stop("threshold", tau, y_now, torch.ones(1, dtype=torch.bool))
            break
        if solver.status == "running" and not tau - t_old > min_step_rel * abs(tau):
            stop = _Stop("collapse", tau, y_now, detail=f"accepted step {tau - t_old:.3g}")
            break
        if stats["n_steps"] >= budget:
            stop = _Stop("max_steps", tau, y_now)
            break
    out = torch.stack(outputs).to(dtype=dtype, device=device) if outputs else y0.new_empty((0, *shape))
    if stop is None:
        return _Run(out, None, as_tensor(solver.y).to(dtype=dtype, device=device), hist)
    return _Run(out, stop, None, hist)


# ============================================================================ solve


def solve(field: Callable[[Tensor, Tensor], Tensor], u0: Tensor, t_span: Sequence[float], *,
          t_eval: Sequence[float] | Tensor | None = None, method: str = "dopri5", rtol: float = 1e-6,
          atol: float = 1e-8, backend: str = "torchdiffeq", log_time: bool = False, n_eval: int = 101,
          blowup_threshold: float = 1e8, max_steps: int = 100_000, min_step_rel: float = 1e-10,
          jump_times: Sequence[float] | None = None, options: dict | None = None,
          progress: bool = False) -> Solution:
    """Integrate ``du/dt = field(t, u)`` from ``u(t0) = u0`` over ``t_span``, trajectory by trajectory.

    Arguments:
        field: callable ``f(t, u)`` with t a 0-dim float64 tensor and u (G, L, E) for any G ≤ B,
            returning (G, L, E); each trajectory's derivative may depend only on itself. An
            attribute ``jump_times`` (times where f jumps in t) is honoured.
        u0: (B, L, E) initial states (B trajectories of L tokens of width E), finite.
        t_span: (t0, t1) with t0 < t1.
        t_eval: (T,) strictly increasing output times inside t_span; default ``n_eval`` times
            evenly spaced in t (in s = ln(1 + t) with ``log_time``).
        method: torchdiffeq method (:data:`TORCHDIFFEQ_METHODS`; adaptive: dopri5, dopri8, bosh3,
            fehlberg2, adaptive_heun; fixed-grid ones need ``options={"step_size": h}``) or, with
            ``backend="scipy"``, a ``solve_ivp`` method (:data:`SCIPY_METHODS`).
        rtol, atol: relative and absolute tolerances.
        backend: ``"torchdiffeq"`` (batched, any dtype/device) or ``"scipy"`` (float64, one
            trajectory at a time; for cross-checks on small systems).
        log_time: integrate in s = ln(1 + t) (needs t0 > -1): long horizons in few steps.
        n_eval: number of default output times when t_eval is None (≥ 2).
        blowup_threshold: a trajectory whose largest |u| exceeds this is stopped as blown up.
        max_steps: most step attempts over the whole solve; then the remaining trajectories stop
            with status MAX_STEPS.
        min_step_rel: a proposed step below ``min_step_rel · |τ|`` counts as step-size collapse.
        jump_times: extra times where the field jumps (added to ``field.jump_times``).
        options: extra options for the torchdiffeq solver or ``solve_ivp``.
        progress: show a tqdm progress bar over the integration variable.

    Returns:
        A :class:`Solution`: ``ts`` (T,), ``ys`` (T, B, L, E) (NaN after a trajectory stops),
        per-trajectory ``status``, ``messages``, ``t_blowup`` (B,) (NaN where none),
        ``t_final`` (B,) and ``stats``: ``nfev`` (field evaluations, including the probe and any
        replays), ``n_accepted``, ``n_rejected`` (None for scipy, which does not report them),
        ``n_steps`` (step attempts begun), ``n_runs`` (solver runs: pieces × groups) and
        ``n_replays``. No autograd graph is kept (the solve runs under ``torch.no_grad``).

    Raises:
        TypeError: if field is not callable or u0 not a tensor.
        ValueError: naming the argument, for a wrong shape of u0 (also when the field rejects it),
            non-finite u0, an empty sequence, an unknown method or backend, a t_span that is not
            increasing, t_eval outside t_span or not increasing, non-positive tolerances.
    """
    _check_field(field)
    u0 = _check_u0(u0)
    t0, t1 = _check_span(t_span, log_time)
    te = _check_t_eval(t_eval, t0, t1)
    if backend not in BACKENDS:
        raise ValueError(f"argument 'backend' must be one of {BACKENDS}, got {backend!r}")
    methods = TORCHDIFFEQ_METHODS if backend == "torchdiffeq" else SCIPY_METHODS
    if method not in methods:
        raise ValueError(f"argument 'method': unknown method {method!r} for backend {backend!r}; "
                         f"choose one of {methods}")
    rtol, atol = _positive(rtol, "rtol"), _positive(atol, "atol")
    blowup_threshold = _positive(blowup_threshold, "blowup_threshold")
    min_step_rel = _positive(min_step_rel, "min_step_rel")
    if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1:
        raise ValueError(f"argument 'max_steps' must be a positive int, got {max_steps!r}")
    if isinstance(n_eval, bool) or not isinstance(n_eval, int) or n_eval < 2:
        raise ValueError(f"argument 'n_eval' must be an int ≥ 2, got {n_eval!r}")
    if options is not None and not isinstance(options, dict):
        raise ValueError(f"argument 'options' must be a dict, got {type(options).__name__}")
    options = dict(options or {})
    _probe(field, t0, u0.double() if backend == "scipy" else u0)

    clock = _Clock(log_time)
    tau0, tau1 = clock.tau(t0), clock.tau(t1)
    if te is None:
        taus_out = torch.linspace(tau0, tau1, n_eval, dtype=torch.float64)
        te = torch.tensor([clock.t(float(s)) for s in taus_out], dtype=torch.float64)
        te[0], te[-1] = t0, t1
        taus_out[0], taus_out[-1] = tau0, tau1
    else:
        taus_out = torch.tensor([clock.tau(float(t)) for t in te], dtype=torch.float64)
    out_list = taus_out.tolist()

    nb = u0.shape[0]
    ys = torch.full((len(out_list), *u0.shape), math.nan, dtype=u0.dtype, device=u0.device)
    for i, tau in enumerate(out_list):
        if tau <= tau0:
            ys[i] = u0
    status: list[Status | None] = [None] * nb
    messages = [""] * nb
    t_blowup = torch.full((nb,), math.nan, dtype=torch.float64)
    t_final = torch.full((nb,), t0, dtype=torch.float64)
    stats = {"nfev": 1, "n_accepted": 0, "n_rejected": 0 if backend == "torchdiffeq" else None, "n_steps": 0,
             "n_runs": 0, "n_replays": 0}
    run = _run_torchdiffeq if backend == "torchdiffeq" else _run_scipy
    if backend == "scipy":
        stats["n_rejected"] = 0  # counted as 0 by the runner's bookkeeping; reset to None at the end

    breaks = [t0, *_jump_times(field, t0, t1, jump_times), t1]
    state = u0.clone()
    pbar = None
    if progress:
        from tqdm.auto import tqdm

        pbar = tqdm(total=tau1 - tau0, desc="solve", unit="s" if log_time else "t", leave=False)

    def finish(b: int, st: Status, tau: float, msg: str, tb: float = math.nan) -> None:
        status[b], messages[b] = st, msg
        t_final[b], t_blowup[b] = clock.t(tau), tb

    try:
        for t_lo, t_hi in zip(breaks[:-1], breaks[1:]):
            tau_a, tau_b = clock.tau(t_lo), clock.tau(t_hi)
            rhs = clock.rhs(field, t_lo, t_hi)
            alive = [b for b in range(nb) if status[b] is None]
            if not alive:
                break
            groups = [[b] for b in alive] if backend == "scipy" else [alive]
            queue: list[tuple[list[int], float, Tensor, list]] = [(g, tau_a, state[g], []) for g in groups]
            while queue:
                idx, ta, y, hist = queue.pop(0)
                outs_i = [i for i, s in enumerate(out_list) if ta < s <= tau_b]
                if ta >= tau_b:  # stopped exactly at the end of the piece: nothing left to integrate
                    state[idx] = y.to(state.dtype)
                    continue
                budget = max_steps - stats["n_steps"]
                if budget <= 0:
                    for b in idx:
                        finish(b, Status.MAX_STEPS, ta, f"max-steps: max_steps={max_steps} step attempts used up "
                                                        f"at t={clock.t(ta):.6g}")
                    continue
                stats["n_runs"] += 1
                res = run(rhs, ta, tau_b, y, [out_list[i] for i in outs_i], method=method, rtol=rtol, atol=atol,
                          options=options, threshold=blowup_threshold, min_step_rel=min_step_rel, budget=max_steps,
                          stats=stats, hist=hist, pbar=pbar)
                n_done = res.outputs.shape[0]
                if n_done:
                    ys[outs_i[:n_done], :] = _scatter(ys[outs_i[:n_done]], idx, res.outputs)
                stop = res.stop
                if stop is None:
                    state[idx] = res.y_end.to(state.dtype)
                    for b in idx:
                        t_final[b] = t_hi
                    continue
                y_stop = stop.y.to(u0.dtype)
                if stop.kind == "max_steps":
                    for b in idx:
                        finish(b, Status.MAX_STEPS, stop.tau, f"max-steps: max_steps={max_steps} step attempts "
                                                              f"used up at t={clock.t(stop.tau):.6g}")
                    continue
                if stop.kind == "threshold":
                    which = stop.which.tolist()
                    rest = [i for i, w in enumerate(which) if not w]
                    for i, w in enumerate(which):
                        if w:
                            _classify_threshold(idx[i], i, stop, res.hist, rhs, clock, blowup_threshold, finish)
                    if rest:
                        queue.append(([idx[i] for i in rest], stop.tau, y_stop[rest], _slice(res.hist, rest)))
                    continue
                # step-size collapse: split the group until the culprit is alone
                if len(idx) > 1:
                    half = len(idx) // 2
                    lo, hi = list(range(half)), list(range(half, len(idx)))
                    queue.append(([idx[i] for i in lo], stop.tau, y_stop[lo], _slice(res.hist, lo)))
                    queue.append(([idx[i] for i in hi], stop.tau, y_stop[hi], _slice(res.hist, hi)))
                    continue
                tstar = _singularity(rhs, res.hist)
                b = idx[0]
                if tstar is not None:
                    tb = clock.t(tstar)
                    finish(b, Status.BLOWUP, stop.tau,
                           f"blow-up: the step size collapsed ({stop.detail}) at t={clock.t(stop.tau):.10g} while "
                           f"max|u|={_maxabs(y_stop):.3g} grew without bound; estimated blow-up time "
                           f"t*={tb:.10g}", tb)
                else:
                    finish(b, Status.STEP_SIZE, stop.tau,
                           f"step-size failure: the step size collapsed ({stop.detail}) at t={clock.t(stop.tau):.10g} "
                           f"(max|u|={_maxabs(y_stop):.3g}) without a blow-up signature: stiff or non-smooth "
                           "field, or non-finite values")
            for b in range(nb):
                if status[b] is None:
                    t_final[b] = t_hi
    finally:
        if pbar is not None:
            pbar.close()

    for b in range(nb):
        if status[b] is None:
            status[b], messages[b] = Status.SUCCESS, f"success: integrated to t={t1:.6g}"
    if backend == "scipy":
        stats["n_rejected"] = None
    return Solution(ts=te, ys=ys, status=status, messages=messages, t_blowup=t_blowup,  # type: ignore[arg-type]
                    t_final=t_final, stats=stats, method=method, backend=backend, log_time=log_time)


def _scatter(block: Tensor, idx: list[int], values: Tensor) -> Tensor:
    block = block.clone()
    block[:, idx] = values.to(block.dtype)
    return block


def _slice(hist: list[tuple[float, Tensor]], rows: list[int]) -> list[tuple[float, Tensor]]:
    return [(t, y[rows]) for t, y in hist]


def _maxabs(y: Tensor) -> float:
    return float(y.abs().max())


def _classify_threshold(b: int, i: int, stop: _Stop, hist: list, rhs: Callable, clock: _Clock, threshold: float,
                        finish: Callable) -> None:
    """Status of trajectory b (row i of the group) that passed the norm threshold (or turned non-finite)."""
    yi = stop.y[i:i + 1]
    if not torch.isfinite(yi).all():
        finish(b, Status.BLOWUP, stop.tau, f"blow-up: non-finite state at t={clock.t(stop.tau):.10g}",
               clock.t(stop.tau))
        return
    own = _slice(hist, [i])
    tstar = _singularity(rhs, own)
    if tstar is None:
        tstar = stop.tau
        if len(own) >= 2:  # interpolate ln max|u| between the last two accepted states to the threshold
            (ta, ya), (tb, yb) = own[-2], own[-1]
            la, lb = math.log(max(_maxabs(ya), 1e-300)), math.log(max(_maxabs(yb), 1e-300))
            if lb > la and la < math.log(threshold) <= lb:
                tstar = ta + (math.log(threshold) - la) / (lb - la) * (tb - ta)
        tb = clock.t(tstar)
        finish(b, Status.BLOWUP, stop.tau, f"blow-up: max|u| passed the threshold {threshold:.3g} at "
                                            f"t≈{tb:.10g} (no finite-time singularity signature)", tb)
        return
    tb = clock.t(tstar)
    finish(b, Status.BLOWUP, stop.tau, f"blow-up: max|u|={_maxabs(yi):.3g} passed the threshold {threshold:.3g} "
                                        f"at t={clock.t(stop.tau):.10g}; estimated blow-up time t*={tb:.10g}", tb)


# ============================================================================ Euler stepping


def euler(field: Callable[[Tensor, Tensor], Tensor], u0: Tensor, t_span: Sequence[float], h: float, *,
          blowup_threshold: float = 1e8) -> Solution:
    """Explicit Euler ``u_{i+1} = u_i + h f(t_i, u_i)`` on the grid ``t_i = t0 + i h`` (the discrete model).

    With the depth-time field of a network and h = 1 this is the network's residual stream.
    Grid times within 1e-9·h of one of the field's ``jump_times`` are snapped onto it, so the field
    is evaluated on the right side of each jump.

    Arguments:
        field: callable ``f(t, u)`` as for :func:`solve`.
        u0: (B, L, E) initial states.
        t_span: (t0, t1) with (t1 - t0)/h a whole number (within 1e-9).
        h: step size > 0.
        blowup_threshold: a trajectory whose largest |u| exceeds this (or turns non-finite) stops
            with status BLOWUP at that step; later rows are NaN for it.

    Returns:
        A :class:`Solution` with ``ts`` the n + 1 grid times and ``ys`` (n + 1, B, L, E);
        ``stats["nfev"] = n`` (per trajectory still running).

    Raises:
        TypeError: as for :func:`solve`.
        ValueError: as for :func:`solve`, and for h that is not positive or does not divide the span.
    """
    _check_field(field)
    u0 = _check_u0(u0)
    t0, t1 = _check_span(t_span, False)
    h = _positive(h, "h")
    blowup_threshold = _positive(blowup_threshold, "blowup_threshold")
    n_f = (t1 - t0) / h
    n = round(n_f)
    if n < 1 or abs(n_f - n) > 1e-9 * max(1.0, n_f):
        raise ValueError(f"argument 'h': the span ({t0}, {t1}) must be a whole number of steps of h={h}, "
                         f"got {n_f:.12g} steps")
    _probe(field, t0, u0)
    jumps = [float(t) for t in getattr(field, "jump_times", ())]
    ts = []
    for i in range(n + 1):
        t = t0 + i * h if i < n else t1
        for j in jumps:
            if abs(t - j) <= 1e-9 * h:
                t = j
        ts.append(t)
    nb = u0.shape[0]
    ys = torch.full((n + 1, *u0.shape), math.nan, dtype=u0.dtype, device=u0.device)
    ys[0] = u0
    status: list[Status | None] = [None] * nb
    messages = [""] * nb
    t_blowup = torch.full((nb,), math.nan, dtype=torch.float64)
    t_final = torch.full((nb,), t1, dtype=torch.float64)
    alive = list(range(nb))
    y = u0.clone()
    nfev = 1
    with torch.no_grad():
        for i in range(n):
            if not alive:
                break
            ya = y[alive]
            ya = ya + h * field(torch.tensor(ts[i], dtype=torch.float64), ya)
            nfev += 1
            big = ya.abs().flatten(1).amax(1)
            bad = (~torch.isfinite(big) | (big > blowup_threshold)).tolist()
            y[alive] = torch.where(torch.isfinite(ya), ya, torch.zeros((), dtype=ya.dtype))
            ys[i + 1, alive] = ya
            for k, b in enumerate(list(alive)):
                if bad[k]:
                    ys[i + 1, b] = math.nan
                    status[b] = Status.BLOWUP
                    t_blowup[b] = t_final[b] = ts[i + 1]
                    messages[b] = (f"blow-up: max|u| passed the threshold {blowup_threshold:.3g} (or turned "
                                   f"non-finite) at step {i + 1}, t={ts[i + 1]:.6g}")
            alive = [b for k, b in enumerate(alive) if not bad[k]]
    for b in range(nb):
        if status[b] is None:
            status[b], messages[b] = Status.SUCCESS, f"success: {n} Euler steps of h={h:.6g} to t={t1:.6g}"
    return Solution(ts=torch.tensor(ts, dtype=torch.float64), ys=ys, status=status,  # type: ignore[arg-type]
                    messages=messages, t_blowup=t_blowup, t_final=t_final,
                    stats={"nfev": nfev, "n_accepted": n, "n_rejected": 0, "n_steps": n},
                    method="euler", backend="euler", log_time=False)
