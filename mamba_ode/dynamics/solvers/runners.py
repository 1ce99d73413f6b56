"""One solver run over a group of trajectories on one smooth piece: torchdiffeq (batched) or scipy.

The run stops early, at the last accepted state, when a trajectory passes the norm threshold or
turns non-finite, when the step size collapses, or when the step budget runs out; the outputs
requested before the stop are recovered by replaying the run (the step sequence is deterministic).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm  # the text bar: tqdm.auto warns in notebooks without ipywidgets

__all__ = ["Stop", "Run", "run_torchdiffeq", "run_scipy", "ADAPTIVE"]

#: torchdiffeq's adaptive methods (the others step by ``options={"step_size": h}``, else on the output times).
ADAPTIVE = frozenset({"dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun"})


class Stop(Exception):  # noqa: N818 — control flow, not an error
    """Raised inside a solver run to end it at the last accepted state."""

    def __init__(self, kind: str, tau: float, y: Tensor, which: Tensor | None = None, detail: str = "") -> None:
        super().__init__(kind)
        self.kind, self.tau, self.y, self.which, self.detail = kind, tau, y, which, detail


@dataclass
class Run:
    """What one solver run over a group returned."""

    outputs: Tensor  # (n_done, G, L, E) at the first n_done requested times
    stop: Stop | None  # None: reached the end of the piece
    y_end: Tensor | None  # (G, L, E) at the end of the piece when stop is None
    hist: list[tuple[float, Tensor]]


class _Monitor:
    """The function handed to torchdiffeq: counts, remembers and stops (see the module docstring)."""

    def __init__(self, rhs: Callable, *, threshold: float, min_step_rel: float, budget: int, stats: dict,
                 hist: list[tuple[float, Tensor]], adaptive: bool, pbar: tqdm | None) -> None:
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
            raise Stop("threshold", tau, y0.detach().clone(), bad.cpu())
        if not (h > self.min_step_rel * abs(tau)) or not tau + h > tau:
            raise Stop("collapse", tau, y0.detach().clone(), detail=f"step size {h:.3g}")
        if self.stats["n_steps"] >= self.budget:
            raise Stop("max_steps", tau, y0.detach().clone())


def run_torchdiffeq(rhs: Callable, tau_a: float, tau_b: float, y0: Tensor, outs: list[float], *, method: str,
                     rtol: float, atol: float, options: dict, threshold: float, min_step_rel: float, budget: int,
                     stats: dict, hist: list[tuple[float, Tensor]], pbar: tqdm | None) -> Run:
    from torchdiffeq import odeint  # lazily: it imports scipy, a third of a second

    # the time grid lives with the state: torchdiffeq warns (and copies every step) otherwise
    dev = y0.device
    grid = torch.tensor([tau_a, *outs, tau_b], dtype=torch.float64, device=dev) if not outs or outs[-1] < tau_b \
        else torch.tensor([tau_a, *outs], dtype=torch.float64, device=dev)
    mon = _Monitor(rhs, threshold=threshold, min_step_rel=min_step_rel, budget=budget, stats=stats, hist=hist,
                   adaptive=method in ADAPTIVE, pbar=pbar)
    if method in ADAPTIVE:  # the last step lands on τ_b: no stage past the piece (its field may end or jump there)
        given = torch.as_tensor(options.get("step_t", []), dtype=torch.float64, device=dev).reshape(-1)
        ends = torch.cat([given, torch.tensor([tau_b], dtype=torch.float64, device=dev)])
        options = {**options, "step_t": torch.unique(ends)}
    try:
        with torch.no_grad():
            sol = odeint(mon, y0, grid, method=method, rtol=rtol, atol=atol, options=options)
    except Stop as stopped:
        stop = stopped
        done = [t for t in outs if t <= stop.tau]
        outputs = y0.new_empty((0, *y0.shape))
        if done:  # replay up to the stop: same steps, so the same states
            mon.armed = False
            stats["n_replays"] += 1
            with torch.no_grad():
                outputs = odeint(mon, y0, torch.tensor([tau_a, *done], dtype=torch.float64, device=dev), method=method,
                                 rtol=rtol, atol=atol, options=options)[1:]
        return Run(outputs, stop, None, list(mon.hist))
    except AssertionError as err:  # torchdiffeq's own guards (dt underflow, non-finite state)
        last_tau, last_y = mon.hist[-1] if mon.hist else (tau_a, y0)
        collapse = Stop("collapse", last_tau, last_y, detail=str(err).split(":")[0])
        stats["n_replays"] += 1
        done = [t for t in outs if t <= last_tau]
        outputs = y0.new_empty((0, *y0.shape))
        if done:
            mon.armed = False
            try:
                with torch.no_grad():
                    done_grid = torch.tensor([tau_a, *done], dtype=torch.float64, device=dev)
                    outputs = odeint(mon, y0, done_grid, method=method, rtol=rtol, atol=atol, options=options)[1:]
            except AssertionError:
                outputs = torch.full((len(done), *y0.shape), math.nan, dtype=y0.dtype, device=y0.device)
        return Run(outputs, collapse, None, list(mon.hist))
    return Run(sol[1:1 + len(outs)], None, sol[-1], list(mon.hist))


def run_scipy(rhs: Callable, tau_a: float, tau_b: float, y0: Tensor, outs: list[float], *, method: str,
               rtol: float, atol: float, options: dict, threshold: float, min_step_rel: float, budget: int,
               stats: dict, hist: list[tuple[float, Tensor]], pbar: tqdm | None) -> Run:
    """One trajectory through scipy's ``OdeSolver`` step by step (the classes behind ``solve_ivp``)."""
    shape, dtype, device = y0.shape, y0.dtype, y0.device
    if shape[0] != 1:
        raise RuntimeError("the scipy backend integrates one trajectory at a time")

    def fun(tau: float, y: np.ndarray) -> np.ndarray:
        yt = torch.as_tensor(y, dtype=torch.float64).reshape(shape)
        with torch.no_grad():
            return rhs(tau, yt).double().reshape(-1).cpu().numpy()

    def as_tensor(y: np.ndarray) -> Tensor:
        return torch.as_tensor(np.array(y, dtype=np.float64)).reshape(shape)

    import scipy.integrate as si  # lazily: a third of a second to import

    solver = getattr(si, method)(fun, tau_a, y0.detach().double().reshape(-1).cpu().numpy(), tau_b, rtol=rtol,
                                 atol=atol, **options)
    hist = list(hist)
    outputs: list[Tensor] = []
    k = 0  # next output
    stop: Stop | None = None
    nfev0 = 0
    while solver.status == "running":
        t_old = solver.t
        message = solver.step()
        stats["nfev"] += solver.nfev - nfev0
        nfev0 = solver.nfev
        if solver.status == "failed":
            stop = Stop("collapse", float(solver.t), as_tensor(solver.y), detail=str(message))
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
            stop = Stop("threshold", tau, y_now, torch.ones(1, dtype=torch.bool))
            break
        if solver.status == "running" and not tau - t_old > min_step_rel * abs(tau):
            stop = Stop("collapse", tau, y_now, detail=f"accepted step {tau - t_old:.3g}")
            break
        if stats["n_steps"] >= budget:
            stop = Stop("max_steps", tau, y_now)
            break
    out = torch.stack(outputs).to(dtype=dtype, device=device) if outputs else y0.new_empty((0, *shape))
    if stop is None:
        return Run(out, None, as_tensor(solver.y).to(dtype=dtype, device=device), hist)
    return Run(out, stop, None, hist)
