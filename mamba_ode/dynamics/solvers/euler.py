"""Explicit Euler stepping on a fixed grid — with the depth-time field and h = 1, the discrete network."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from .checks import check_field, check_span, check_u0, positive, probe
from .solution import Outcome, Solution

__all__ = ["euler"]


# long function: over 80 lines with its docstring, which documents every argument
def euler(field: Callable[[Tensor, Tensor], Tensor], u0: Tensor, t_span: Sequence[float], h: float, *,
          blowup_threshold: float = 1e8) -> Solution:
    """Explicit Euler ``u_{i+1} = u_i + h f(t_i, u_i)`` on the grid ``t_i = t0 + i h`` (the discrete model).

    With the depth-time field of a network and h = 1 this is the network's residual stream.
    Grid times within 1e-9·h of one of the field's ``jump_times`` are snapped onto it, so the field
    is evaluated on the right side of each jump.

    Arguments:
        field: callable ``f(t, u)`` as for `solve`.
        u0: (B, L, E) initial states.
        t_span: (t0, t1) with (t1 - t0)/h a whole number (within 1e-9).
        h: step size > 0.
        blowup_threshold: a trajectory whose largest |u| exceeds this (or turns non-finite) stops
            with status BLOWUP (outcome ``THRESHOLD`` or ``NONFINITE``) at that step; later rows are NaN
            for it.

    Returns:
        A `Solution` with ``ts`` the n + 1 grid times and ``ys`` (n + 1, B, L, E);
        ``stats["nfev"] = n`` (per trajectory still running).

    Raises:
        TypeError: as for `solve`.
        ValueError: as for `solve`, and for h that is not positive or does not divide the span.
    """
    check_field(field)
    u0 = check_u0(u0)
    t0, t1 = check_span(t_span, False)
    h = positive(h, "h")
    blowup_threshold = positive(blowup_threshold, "blowup_threshold")
    n_f = (t1 - t0) / h
    n = round(n_f)
    if n < 1 or abs(n_f - n) > 1e-9 * max(1.0, n_f):
        raise ValueError(f"argument 'h': the span ({t0}, {t1}) must be a whole number of steps of h={h}, "
                         f"got {n_f:.12g} steps")
    probe(field, t0, u0)
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
    outcomes: list[Outcome | None] = [None] * nb
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
            finite = torch.isfinite(ya.flatten(1)).all(1).tolist()
            for k, b in enumerate(list(alive)):
                if bad[k]:
                    ys[i + 1, b] = math.nan
                    outcomes[b] = Outcome.THRESHOLD if finite[k] else Outcome.NONFINITE
                    t_blowup[b] = t_final[b] = ts[i + 1]
                    messages[b] = (f"blow-up: max|u| passed the threshold {blowup_threshold:.3g} (or turned "
                                   f"non-finite) at step {i + 1}, t={ts[i + 1]:.6g}")
            alive = [b for k, b in enumerate(alive) if not bad[k]]
    for b in range(nb):
        if outcomes[b] is None:
            outcomes[b], messages[b] = Outcome.SUCCESS, f"success: {n} Euler steps of h={h:.6g} to t={t1:.6g}"
    done = [o if o is not None else Outcome.SUCCESS for o in outcomes]
    return Solution(ts=torch.tensor(ts, dtype=torch.float64), ys=ys, status=[o.status for o in done],
                    outcomes=done, messages=messages, t_blowup=t_blowup, t_final=t_final,
                    stats={"nfev": nfev, "n_accepted": n, "n_rejected": 0, "n_steps": n},
                    method="euler", backend="euler", log_time=False)
