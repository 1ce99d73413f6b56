"""Layers integrated side by side in worker processes (``analyze(..., workers=N)``, ``--workers``).

Each layer's token dynamics is independent of the others once its initial tokens are known, so
`analyze` can hand the per-layer `mamba_ode.integrate_tokens` calls to a pool of worker processes
(the standard library's ``ProcessPoolExecutor`` with the ``spawn`` start method, which is safe with
torch's thread pools). The usable CPUs are shared out: each worker runs torch with
``max(1, cpus // workers)`` threads. Layers and results travel as plain pickles (never through shared
memory, which containers often keep small). An error in a layer, an interrupt, or a worker that dies
(killed for lack of memory, say) stops every worker at once and is raised in the calling process; a
calling process killed outright takes its workers with it (each watches its parent).

Workers are started with ``spawn``: a script that calls ``analyze(..., workers=N)`` with N > 1 needs the
usual ``if __name__ == "__main__":`` guard around its top-level code, as any multiprocessing program
(notebooks and the ``mamba-ode`` command need nothing).

Results are deterministic for a given number of torch threads: a worker with T threads reproduces a
serial run under ``torch.set_num_threads(T)`` exactly. Runs with different thread counts can differ in
the last digits (the order of floating-point sums differs), and a token whose outcome hangs on those
digits — typically one of several tokens blowing up at nearly the same instant — can then change label.
"""

from __future__ import annotations

import os
import pickle
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from multiprocessing import get_context
from typing import Any

import torch
from torch import Tensor

from ..dynamics.tokens import TokenSolution, integrate_tokens
from ..nn.lm import MambaLMBase
from .budget import affordable_workers

__all__ = ["AUTO_WORK", "integrate_layers", "own_threads", "plan_workers", "resolve_workers", "threads_per_worker",
           "usable_cpus"]

#: ``workers="auto"`` starts processes only when one layer's field costs at least this many
#: state updates per evaluation (L·E·N): below it, starting workers costs more than it saves.
AUTO_WORK = 1 << 20


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask where the platform reports one)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


def threads_per_worker(workers: int) -> int:
    """Torch threads of each of ``workers`` worker processes: the usable CPUs shared out, at least 1."""
    return max(1, usable_cpus() // max(1, workers))


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


@contextmanager
def own_threads(model: MambaLMBase, n_tokens: int, workers: int) -> Iterator[int]:
    """Run the block with the torch threads that suit an analysis done in this process, then restore them.

    One thread when the layers are integrated here (``workers == 1``), the model is on the CPU and one field
    evaluation costs fewer than `AUTO_WORK` state updates (L·E·N): the tensors are then too small for
    torch's parallel loops to pay, while each such loop waits for every thread, so a busy core elsewhere on
    the machine (another process, a test worker) makes the whole analysis many times slower — 245 s instead
    of 13 s for the shipped model's analysis beside one busy process on a 2-core machine. Otherwise the
    current setting is kept.

    torch's setting is per thread (OpenMP's), so analyses overlapping in several Python threads each change
    and restore their own thread's setting, in any order.

    Arguments:
        model: the model analysed.
        n_tokens: L.
        workers: the worker processes the analysis uses (`plan_workers`).

    Yields:
        The torch threads in force inside the block.
    """
    before = torch.get_num_threads()
    work = n_tokens * model.config.d_inner * model.config.d_state
    on_cpu = next(model.parameters()).device.type == "cpu"
    inside = 1 if workers == 1 and on_cpu and work < AUTO_WORK else before
    torch.set_num_threads(inside)
    try:
        yield inside
    finally:
        torch.set_num_threads(before)


def plan_workers(model: MambaLMBase, n_tokens: int, n_layers: int, max_steps: int, workers: int | str) -> int:
    """The workers an analysis of ``n_layers`` layers on ``n_tokens`` tokens will use.

    `resolve_workers` for this model; with ``"auto"``, also no more than the memory available allows
    (`mamba_ode.analysis.budget.affordable_workers`). An explicit count is kept as asked (capped by the
    layers), and `mamba_ode.analysis.budget.check_prompt_budget` then refuses it if it does not fit.

    Arguments:
        model: the model.
        n_tokens: L.
        n_layers: layers to integrate.
        max_steps: the integrator's step budget per layer.
        workers: a positive int or ``"auto"``.

    Returns:
        An int ≥ 1.

    Raises:
        ValueError: as `resolve_workers`.
    """
    work = n_tokens * model.config.d_inner * model.config.d_state
    n = resolve_workers(workers, n_layers, work, next(model.parameters()).device)
    return affordable_workers(model, n_tokens, max_steps, n) if workers == "auto" else n


def _stop(pool: ProcessPoolExecutor) -> None:
    """Stop every worker at once (the layers still running are abandoned) and release the pool."""
    kill = getattr(pool, "terminate_workers", None)  # Python ≥ 3.14
    if kill is not None:
        kill()
        return
    for proc in list((getattr(pool, "_processes", None) or {}).values()):  # earlier Pythons: its processes
        proc.terminate()
    pool.shutdown(wait=False, cancel_futures=True)


def _exit_with(parent: int) -> None:
    """Watch the parent process; when it is gone (the worker is handed to another parent), exit at once."""
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(1)


def _start_worker(threads: int, parent: int) -> None:
    """Worker initialiser: its share of the CPUs as torch threads; Ctrl-C is the parent's to handle (it
    stops the workers); a parent killed outright (SIGKILL, SIGTERM) takes its workers with it, where the
    pool alone would leave them waiting, each holding its memory, until the machine restarts."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(threads)
    # the parent's pid comes from the parent: read here, after seconds of imports, it could already be init's
    threading.Thread(target=_exit_with, args=(parent,), daemon=True, name="exit-with-parent").start()


def _integrate_pickled(blob: bytes) -> bytes:
    """In a worker: unpickle (field, u0, t_max, opts), integrate, pickle the `TokenSolution`."""
    field, u0, t_max, opts = pickle.loads(blob)  # noqa: S301 (our own pickle, from the parent process)
    return pickle.dumps(integrate_tokens(field, u0, t_max, **opts), protocol=pickle.HIGHEST_PROTOCOL)


# long function: over 80 lines with its docstring, which documents every argument
def integrate_layers(fields: Sequence[Callable[[Tensor, Tensor], Tensor]], starts: Sequence[Tensor], t_max: float,
                     opts: dict[str, Any], workers: int,
                     on_done: Callable[[int], None] | None = None) -> list[TokenSolution]:
    """`mamba_ode.integrate_tokens` for each (field, initial tokens) pair, in this process or in workers.

    Arguments:
        fields: one vector field per layer (picklable: the fields of `mamba_ode.layer_field` are).
        starts: the matching initial tokens, each (1, L, W).
        t_max: the horizon.
        opts: further keyword arguments of `mamba_ode.integrate_tokens` (rtol, atol, ...).
        workers: 1 integrates here, one layer after the other; N > 1 uses N worker processes, each with
            `threads_per_worker` torch threads.
        on_done: called in this thread with a layer's position in ``fields`` when it has been
            integrated (in order of completion; never for a layer that failed).

    Returns:
        The `TokenSolution` of each layer, in the order of ``fields``.

    Raises:
        ValueError: if ``starts`` does not hold one state per field, or workers < 1.
        RuntimeError: when a worker process dies (the others are stopped).
        Exception: any error of a layer's integration, as soon as it happens (the other workers are stopped).
    """
    if len(fields) != len(starts):
        raise ValueError(f"argument 'starts' holds {len(starts)} initial states for {len(fields)} fields")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"argument 'workers' must be a positive int, got {workers!r}")
    done = on_done or (lambda i: None)
    out: list[TokenSolution | None] = [None] * len(fields)
    if workers == 1 or len(fields) < 2:
        for i, (f, u0) in enumerate(zip(fields, starts)):
            out[i] = integrate_tokens(f, u0, t_max, **opts)
            done(i)
        return [sol for sol in out if sol is not None]
    pool = ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=_start_worker,
                               initargs=(threads_per_worker(workers), os.getpid()))
    try:
        blobs = (pickle.dumps((f, u0, t_max, opts), protocol=pickle.HIGHEST_PROTOCOL) for f, u0 in zip(fields, starts))
        index = {pool.submit(_integrate_pickled, blob): i for i, blob in enumerate(blobs)}
        pending = set(index)
        while pending:  # a timeout keeps the wait interruptible (Ctrl-C)
            finished, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
            for fu in finished:
                exc = fu.exception()
                if isinstance(exc, BrokenProcessPool):
                    raise RuntimeError("a worker process ended abruptly (killed, perhaps for lack of memory); "
                                       "use fewer workers (workers=1, CLI --workers 1)") from exc
                if exc is not None:
                    raise exc
                out[index[fu]] = pickle.loads(fu.result())  # noqa: S301 (from our own worker)
                done(index[fu])
    except BaseException:
        _stop(pool)
        raise
    pool.shutdown(wait=True)
    return [sol for sol in out if sol is not None]
