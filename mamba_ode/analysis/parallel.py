"""Layers integrated side by side in worker processes (``analyze(..., workers=N)``, ``--workers``).

Each layer's token dynamics is independent of the others once its initial tokens are known, so
`analyze` can hand the per-layer `mamba_ode.integrate_tokens` calls to a pool of worker processes
(the standard library's ``ProcessPoolExecutor`` with the ``spawn`` start method, which is safe with
torch's thread pools). Each worker runs torch with one thread, so N workers use N cores.

Workers are started with ``spawn``: a script that calls ``analyze(..., workers=N)`` with N > 1 needs the
usual ``if __name__ == "__main__":`` guard around its top-level code, as any multiprocessing program
(notebooks and the ``mamba-ode`` command need nothing).

Results are deterministic for a given number of torch threads; a worker (one thread) reproduces a
serial run under ``torch.set_num_threads(1)`` exactly. Runs with different thread counts can differ in
the last digits (the order of floating-point sums differs), and a token whose outcome hangs on those
digits — typically several tokens blowing up at nearly the same instant — can then change label.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from multiprocessing import get_context
from typing import Any

import torch
from torch import Tensor

from ..dynamics.tokens import TokenSolution, integrate_tokens

__all__ = ["AUTO_WORK", "integrate_layers", "resolve_workers", "usable_cpus"]

#: ``workers="auto"`` starts processes only when one layer's field costs at least this many
#: state updates per evaluation (L·E·N): below it, starting workers costs more than it saves.
AUTO_WORK = 1 << 20


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask where the platform reports one)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


def resolve_workers(workers: int | str, n_layers: int, work: int, device: torch.device | str = "cpu") -> int:
    """The number of worker processes for ``n_layers`` layers (1: integrate in this process).

    Arguments:
        workers: a positive int, or ``"auto"``: one per usable CPU (at most one per layer) when the
            model is on the CPU, a layer's field costs at least `AUTO_WORK` state updates per
            evaluation, and there are two CPUs and two layers or more; else 1.
        n_layers: layers to integrate.
        work: L·E·N of one field evaluation (tokens × channels × state size).
        device: where the model is; worker processes are for CPU models only.

    Returns:
        An int in [1, max(1, n_layers)].

    Raises:
        ValueError: for a workers value that is not a positive int or "auto", or more than one worker
            for a model that is not on the CPU.
    """
    on_cpu = torch.device(device).type == "cpu"
    if workers == "auto":
        cpus = usable_cpus()
        return min(cpus, n_layers) if on_cpu and cpus >= 2 and n_layers >= 2 and work >= AUTO_WORK else 1
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"argument 'workers' must be a positive int or 'auto', got {workers!r}")
    if workers > 1 and not on_cpu:
        raise ValueError(f"argument 'workers': worker processes integrate CPU models only; this model is on "
                         f"{device} (use workers=1 there)")
    return max(1, min(workers, n_layers))


def _one_thread() -> None:
    """Worker initialiser: one torch thread per worker process."""
    torch.set_num_threads(1)


def integrate_layers(fields: Sequence[Callable[[Tensor, Tensor], Tensor]], starts: Sequence[Tensor], t_max: float,
                     opts: dict[str, Any], workers: int,
                     on_done: Callable[[int], None] | None = None) -> list[TokenSolution]:
    """`mamba_ode.integrate_tokens` for each (field, initial tokens) pair, in this process or in workers.

    Arguments:
        fields: one vector field per layer (picklable: the fields of `mamba_ode.layer_field` are).
        starts: the matching initial tokens, each (1, L, W).
        t_max: the horizon.
        opts: further keyword arguments of `mamba_ode.integrate_tokens` (rtol, atol, ...).
        workers: 1 integrates here, one layer after the other; N > 1 uses N worker processes.
        on_done: called with a layer's position in ``fields`` when it is done (in order of completion).

    Returns:
        The `TokenSolution` of each layer, in the order of ``fields``.

    Raises:
        ValueError: if fields and starts differ in length, or workers < 1.
    """
    if len(fields) != len(starts):
        raise ValueError(f"{len(fields)} fields but {len(starts)} initial states")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"argument 'workers' must be a positive int, got {workers!r}")
    done = on_done or (lambda i: None)
    if workers == 1 or len(fields) < 2:
        out = []
        for i, (f, u0) in enumerate(zip(fields, starts)):
            out.append(integrate_tokens(f, u0, t_max, **opts))
            done(i)
        return out
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"), initializer=_one_thread) as pool:
        futures: list[Future[TokenSolution]] = [pool.submit(integrate_tokens, f, u0, t_max, **opts)
                                                for f, u0 in zip(fields, starts)]
        index = {id(fu): i for i, fu in enumerate(futures)}
        for fu in futures:
            fu.add_done_callback(lambda fu: done(index[id(fu)]))
        try:
            return [fu.result() for fu in futures]
        except BaseException:  # an error or an interrupt: drop the layers not started yet
            pool.shutdown(wait=True, cancel_futures=True)
            raise
