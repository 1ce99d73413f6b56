"""``solve(field, u0, t_span, ...) → Solution``: adaptive integration with blow-up detection.

Nothing here knows about Mamba: a field is any callable ``f(t, u)`` mapping a time and a batch of
states (B, L, E) to their derivative, batched over the first axis (trajectory b's derivative depends
only on trajectory b). A field may list times where it jumps in ``field.jump_times``; the solvers
land on them.

How `solve` works (torchdiffeq backend):

* The span is cut at the field's jump times into pieces; on a piece [a, b] the field is evaluated
  with t clamped to [a, b) (its left limit at b), so each piece is smooth, and the adaptive steps land
  on b (torchdiffeq's ``step_t``), so no stage passes it: a field may end or jump at b.
* A group of trajectories is integrated by ``torchdiffeq.odeint`` with a monitor attached through
  torchdiffeq's per-step callbacks (`mamba_ode.dynamics.solvers.runners`): it counts steps, keeps
  the last accepted states, and stops the run when a trajectory's largest ``|u|`` passes
  ``blowup_threshold`` or turns non-finite, when the step size collapses, or when the budget runs out.
* The trajectories that caused a threshold stop get their `Outcome`; after a step-size
  collapse in a group the group is split in halves, each continued from the last accepted state,
  until the culprit is alone. So one trajectory blowing up never stops or spoils the others.
* A stop is read by `mamba_ode.dynamics.solvers.blowup`: with ``r(t) = d ln‖u‖/dt``, a
  finite-time singularity ``‖u‖ ~ (T - t)^{-α}`` makes ``1/r`` linear in t with zero at T (read in t
  also under ``log_time``).
* ``log_time=True`` integrates in s = ln(1 + t), i.e. ``du/ds = (1 + t) f(t, u)``: algebraic and
  logarithmic dynamics become smooth on a scale of s, so t up to 1e12 costs a few hundred steps.

``backend="scipy"`` runs scipy's ``OdeSolver`` classes per trajectory on flattened float64 states,
with the same pieces, log time, threshold and blow-up reading: for cross-checks.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor
from tqdm import tqdm  # the text bar: tqdm.auto warns in notebooks without ipywidgets

from .blowup import maxabs, singularity, threshold_outcome
from .checks import check_field, check_span, check_t_eval, check_u0, positive, probe
from .checks import jump_times as field_jump_times
from .clock import Clock
from .runners import Stop, run_scipy, run_torchdiffeq
from .solution import Outcome, Solution

__all__ = ["solve", "TORCHDIFFEQ_METHODS", "SCIPY_METHODS", "BACKENDS"]

#: torchdiffeq method names accepted by `solve` (adaptive ones first).
TORCHDIFFEQ_METHODS = ("dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun", "euler", "midpoint", "heun2",
                       "heun3", "rk4", "explicit_adams", "implicit_adams", "fixed_adams")
#: scipy ``solve_ivp`` methods accepted with ``backend="scipy"``.
SCIPY_METHODS = ("RK45", "RK23", "DOP853", "LSODA", "Radau", "BDF")
BACKENDS = ("torchdiffeq", "scipy")

History = list[tuple[float, Tensor]]


def _scatter(block: Tensor, idx: list[int], values: Tensor) -> Tensor:
    block = block.clone()
    block[:, idx] = values.to(block.dtype)
    return block


def _slice(hist: History, rows: list[int]) -> History:
    return [(t, y[rows]) for t, y in hist]


class _Integration:
    """The bookkeeping of one `solve` call: per-trajectory results and the work queue of each piece."""

    def __init__(self, field: Callable, u0: Tensor, t0: float, out_taus: list[float], te: Tensor, clock: Clock, *,
                 backend: str, settings: dict, max_steps: int, threshold: float, pbar: tqdm | None) -> None:
        nb = u0.shape[0]
        self.field, self.clock, self.backend, self.settings = field, clock, backend, settings
        self.max_steps, self.threshold, self.pbar = max_steps, threshold, pbar
        self.out_taus, self.te = out_taus, te
        self.u0, self.state = u0, u0.clone()
        self.ys = torch.full((len(out_taus), *u0.shape), math.nan, dtype=u0.dtype, device=u0.device)
        tau0 = clock.tau(t0)
        for i, tau in enumerate(out_taus):
            if tau <= tau0:
                self.ys[i] = u0
        self.outcomes: list[Outcome | None] = [None] * nb
        self.messages = [""] * nb
        self.t_blowup = torch.full((nb,), math.nan, dtype=torch.float64)
        self.t_final = torch.full((nb,), t0, dtype=torch.float64)
        self.stats: dict[str, Any] = {"nfev": 1, "n_accepted": 0, "n_rejected": 0, "n_steps": 0, "n_runs": 0,
                                      "n_replays": 0}
        self.run = run_torchdiffeq if backend == "torchdiffeq" else run_scipy

    def finish(self, b: int, outcome: Outcome, tau: float, msg: str, tb: float = math.nan) -> None:
        self.outcomes[b], self.messages[b] = outcome, msg
        self.t_final[b], self.t_blowup[b] = self.clock.t(tau), tb

    def piece(self, t_lo: float, t_hi: float) -> None:
        """Integrate every live trajectory over [t_lo, t_hi]."""
        clock = self.clock
        tau_a, tau_b = clock.tau(t_lo), clock.tau(t_hi)
        rhs = clock.rhs(self.field, t_lo, t_hi)
        alive = [b for b, o in enumerate(self.outcomes) if o is None]
        groups = [[b] for b in alive] if self.backend == "scipy" else ([alive] if alive else [])
        queue: list[tuple[list[int], float, Tensor, History]] = [(g, tau_a, self.state[g], []) for g in groups]
        while queue:
            idx, ta, y, hist = queue.pop(0)
            if ta >= tau_b:  # stopped exactly at the end of the piece: nothing left to integrate
                self.state[idx] = y.to(self.state.dtype)
                continue
            if self.max_steps - self.stats["n_steps"] <= 0:
                for b in idx:
                    self._out_of_steps(b, ta)
                continue
            outs_i = [i for i, s in enumerate(self.out_taus) if ta < s <= tau_b]
            self.stats["n_runs"] += 1
            res = self.run(rhs, ta, tau_b, y, [self.out_taus[i] for i in outs_i], threshold=self.threshold,
                           budget=self.max_steps, stats=self.stats, hist=hist, pbar=self.pbar, **self.settings)
            n_done = res.outputs.shape[0]
            if n_done:
                self.ys[outs_i[:n_done], :] = _scatter(self.ys[outs_i[:n_done]], idx, res.outputs)
            if res.stop is None:
                if res.y_end is not None:
                    self.state[idx] = res.y_end.to(self.state.dtype)
                self.t_final[idx] = t_hi
                continue
            queue.extend(self._after_stop(idx, res.stop, res.hist, rhs))
        for b, o in enumerate(self.outcomes):
            if o is None:
                self.t_final[b] = t_hi

    def _out_of_steps(self, b: int, tau: float) -> None:
        self.finish(b, Outcome.MAX_STEPS, tau, f"max-steps: max_steps={self.max_steps} step attempts used up at "
                                               f"t={self.clock.t(tau):.6g}")

    def _after_stop(self, idx: list[int], stop: Stop, hist: History, rhs: Callable
                    ) -> list[tuple[list[int], float, Tensor, History]]:
        """Record the outcomes a stop decides; return the groups to continue."""
        y_stop = stop.y.to(self.u0.dtype)
        clock = self.clock
        if stop.kind == "max_steps":
            for b in idx:
                self._out_of_steps(b, stop.tau)
            return []
        if stop.kind == "threshold":
            which = (stop.which if stop.which is not None else torch.ones(len(idx), dtype=torch.bool)).tolist()
            for i, w in enumerate(which):
                if w:
                    outcome, tb, msg = threshold_outcome(stop.y[i:i + 1], _slice(hist, [i]), stop.tau, rhs, clock,
                                                         self.threshold)
                    self.finish(idx[i], outcome, stop.tau, msg, tb)
            rest = [i for i, w in enumerate(which) if not w]
            return [([idx[i] for i in rest], stop.tau, y_stop[rest], _slice(hist, rest))] if rest else []
        if len(idx) > 1:  # step-size collapse: split the group until the culprit is alone
            half = len(idx) // 2
            parts = [list(range(half)), list(range(half, len(idx)))]
            return [([idx[i] for i in p], stop.tau, y_stop[p], _slice(hist, p)) for p in parts]
        t_star = singularity(rhs, hist, clock)
        t_stop = clock.t(stop.tau)
        if t_star is not None:
            self.finish(idx[0], Outcome.BLOWUP, stop.tau,
                        f"blow-up: the step size collapsed ({stop.detail}) at t={t_stop:.10g} while max|u|="
                        f"{maxabs(y_stop):.3g} grew without bound; estimated blow-up time t*={t_star:.10g}", t_star)
        else:
            self.finish(idx[0], Outcome.STEP_SIZE, stop.tau,
                        f"step-size failure: the step size collapsed ({stop.detail}) at t={t_stop:.10g} "
                        f"(max|u|={maxabs(y_stop):.3g}) without a blow-up signature: stiff or non-smooth "
                        "field, or non-finite values")
        return []

    def solution(self, t1: float, method: str, log_time: bool) -> Solution:
        outcomes = [o if o is not None else Outcome.SUCCESS for o in self.outcomes]
        messages = [m if o is not None else f"success: integrated to t={t1:.6g}"
                    for o, m in zip(self.outcomes, self.messages)]
        stats = dict(self.stats)
        if self.backend == "scipy":
            stats["n_rejected"] = None  # scipy's OdeSolver does not report rejected steps
        return Solution(ts=self.te, ys=self.ys, status=[o.status for o in outcomes], messages=messages,
                        t_blowup=self.t_blowup, t_final=self.t_final, stats=stats, method=method,
                        backend=self.backend, log_time=log_time, outcomes=outcomes)


def _output_times(t_eval: Tensor | None, t0: float, t1: float, n_eval: int, clock: Clock) -> tuple[Tensor, list[float]]:
    """(output times t (T,) float64, the same in τ)."""
    tau0, tau1 = clock.tau(t0), clock.tau(t1)
    if t_eval is None:
        taus = torch.linspace(tau0, tau1, n_eval, dtype=torch.float64)
        te = torch.tensor([clock.t(float(s)) for s in taus], dtype=torch.float64)
        te[0], te[-1] = t0, t1
        taus[0], taus[-1] = tau0, tau1
    else:
        te = t_eval
        taus = torch.tensor([clock.tau(float(t)) for t in te], dtype=torch.float64)
    return te, taus.tolist()


# long function: over 80 lines with its docstring, which documents every argument
def solve(field: Callable[[Tensor, Tensor], Tensor], u0: Tensor, t_span: Sequence[float], *,
          t_eval: Sequence[float] | Tensor | None = None, method: str | None = None, rtol: float = 1e-6,
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
        method: torchdiffeq method (`TORCHDIFFEQ_METHODS`; adaptive: dopri5, dopri8, bosh3,
            fehlberg2, adaptive_heun; fixed-grid ones step by ``options={"step_size": h}``, or without
            it from output time to output time, as in torchdiffeq) or, with
            ``backend="scipy"``, a ``solve_ivp`` method (`SCIPY_METHODS`). None: each backend's own
            default, ``"dopri5"`` (as torchdiffeq's ``odeint``) or ``"RK45"`` (as ``solve_ivp``).
        rtol, atol: relative and absolute tolerances.
        backend: ``"torchdiffeq"`` (batched, any dtype/device) or ``"scipy"`` (float64, one
            trajectory at a time; for cross-checks on small systems).
        log_time: integrate in s = ln(1 + t) (needs t0 > -1): long horizons in few steps.
        n_eval: number of default output times when t_eval is None (≥ 2).
        blowup_threshold: a trajectory whose largest |u| exceeds this is stopped (outcome
            ``BLOWUP`` with a singularity signature, else ``THRESHOLD``).
        max_steps: most step attempts over the whole solve; then the remaining trajectories stop
            with outcome ``MAX_STEPS``.
        min_step_rel: a proposed step below ``min_step_rel · |τ|`` counts as step-size collapse.
        jump_times: extra times where the field jumps (added to ``field.jump_times``).
        options: extra options for the torchdiffeq solver or ``solve_ivp``.
        progress: show a tqdm progress bar over the integration variable.

    Returns:
        A `Solution`: ``ts`` (T,), ``ys`` (T, B, L, E) (NaN after a trajectory stops),
        per-trajectory ``status``, ``outcomes``, ``messages``, ``t_blowup`` (B,) (NaN where none),
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
    check_field(field)
    u0 = check_u0(u0)
    t0, t1 = check_span(t_span, log_time)
    te = check_t_eval(t_eval, t0, t1)
    if backend not in BACKENDS:
        raise ValueError(f"argument 'backend' must be one of {BACKENDS}, got {backend!r}")
    methods = TORCHDIFFEQ_METHODS if backend == "torchdiffeq" else SCIPY_METHODS
    if method is None:  # each library's own default: odeint's dopri5, solve_ivp's RK45
        method = methods[0]
    if method not in methods:
        raise ValueError(f"argument 'method': unknown method {method!r} for backend {backend!r}; "
                         f"choose one of {methods}")
    rtol, atol = positive(rtol, "rtol"), positive(atol, "atol")
    blowup_threshold = positive(blowup_threshold, "blowup_threshold")
    min_step_rel = positive(min_step_rel, "min_step_rel")
    if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1:
        raise ValueError(f"argument 'max_steps' must be a positive int, got {max_steps!r}")
    if isinstance(n_eval, bool) or not isinstance(n_eval, int) or n_eval < 2:
        raise ValueError(f"argument 'n_eval' must be an int ≥ 2, got {n_eval!r}")
    if options is not None and not isinstance(options, dict):
        raise ValueError(f"argument 'options' must be a dict, got {type(options).__name__}")
    probe(field, t0, u0.double() if backend == "scipy" else u0)

    clock = Clock(log_time)
    te, out_taus = _output_times(te, t0, t1, n_eval, clock)
    pbar = None
    if progress:
        pbar = tqdm(total=clock.tau(t1) - clock.tau(t0), desc="solve", unit="s" if log_time else "t", leave=False)
    settings = {"method": method, "rtol": rtol, "atol": atol, "options": dict(options or {}),
                "min_step_rel": min_step_rel}
    work = _Integration(field, u0, t0, out_taus, te, clock, backend=backend, settings=settings, max_steps=max_steps,
                        threshold=blowup_threshold, pbar=pbar)
    breaks = [t0, *field_jump_times(field, t0, t1, jump_times), t1]
    try:
        for t_lo, t_hi in zip(breaks[:-1], breaks[1:]):
            if all(o is not None for o in work.outcomes):
                break
            work.piece(t_lo, t_hi)
    finally:
        if pbar is not None:
            pbar.close()
    return work.solution(t1, method, log_time)
