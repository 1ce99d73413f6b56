"""What an analysis of a prompt will cost, checked before any work: a bound on tokens and on memory.

`analysis_memory` estimates (from the config alone) the memory one `mamba_ode.analyze` run
needs beyond the weights, per prompt token: the integrator's states, stages and Krylov vectors
(``60·W`` numbers per token, W the field's token width), each layer's field input kept for the run
(``K·W``), the depth-time comparison (``30·Dm``), the recorded norms (one per step, ``max_steps``) and
the scan's chunked state (``E·N/2``), all float64; the token-mixing figure is limited to 64 tokens
(``64²·E``), so no (L, L, E) tensor grows with the prompt. With worker processes
(`mamba_ode.analysis.parallel`), each holds one integration and costs `WORKER_BYTES` itself, and
``workers="auto"`` takes no more of them than the memory allows (`affordable_workers`).
`check_prompt_budget` refuses a
prompt longer than ``max_tokens`` or one whose estimate exceeds the memory the device has left, with
both numbers and how to proceed.
"""

from __future__ import annotations

from ..io.machine import available_memory, format_bytes
from ..nn.lm import MambaLMBase

__all__ = ["DEFAULT_MAX_TOKENS", "ATTENTION_TOKENS", "WORKER_BYTES", "affordable_workers", "analysis_memory",
           "check_prompt_budget", "integration_memory"]

#: Longest prompt `mamba_ode.analyze` takes unless told otherwise (``max_tokens``, ``--max-tokens``).
DEFAULT_MAX_TOKENS = 2048
#: Tokens of the token-mixing ("hidden attention") figure: its (L, L, E) matrix never grows beyond this.
ATTENTION_TOKENS = 64
#: What a worker process costs beyond its integration: an interpreter with torch and mamba_ode imported.
WORKER_BYTES = 400 * 2 ** 20


def integration_memory(model: MambaLMBase, n_tokens: int, max_steps: int) -> int:
    """Estimated bytes of one layer's integration (held once per worker process; see the module text).

    Arguments:
        model: the model.
        n_tokens: L, the prompt's tokens.
        max_steps: the integrator's step budget per layer.

    Returns:
        Bytes: the integrator's states, stages and Krylov vectors, the recorded norms and the scan's
        chunked state, float64.
    """
    cfg = model.config
    w = model.layer_params(0).token_width
    return 8 * n_tokens * (60 * w + max_steps + cfg.d_inner * cfg.d_state // 2)


def analysis_memory(model: MambaLMBase, n_tokens: int, max_steps: int, workers: int = 1) -> int:
    """Estimated bytes an analysis of ``n_tokens`` tokens needs beyond the weights (see the module text).

    Arguments:
        model: the model.
        n_tokens: L, the prompt's tokens.
        max_steps: the integrator's step budget per layer.
        workers: layers integrated at once; each worker process holds one integration
            (`integration_memory`) and costs `WORKER_BYTES` itself.

    Returns:
        Bytes (float64 throughout).
    """
    cfg = model.config
    e, dm, k = cfg.d_inner, cfg.d_model, cfg.n_layer
    w = model.layer_params(0).token_width
    shared = 8 * (n_tokens * (k * w + 30 * dm) + ATTENTION_TOKENS ** 2 * e)
    processes = WORKER_BYTES * workers if workers > 1 else 0
    return shared + max(1, workers) * integration_memory(model, n_tokens, max_steps) + processes


def affordable_workers(model: MambaLMBase, n_tokens: int, max_steps: int, wanted: int) -> int:
    """The most workers, at most ``wanted``, whose analysis fits the memory available (at least 1).

    Arguments:
        model: the model (its device decides which memory is asked).
        n_tokens: L.
        max_steps: the integrator's step budget per layer.
        wanted: the workers asked for.

    Returns:
        An int in [1, max(1, wanted)].
    """
    have = available_memory(next(model.parameters()).device)
    n = max(1, wanted)
    while n > 1 and have is not None and analysis_memory(model, n_tokens, max_steps, n) > have:
        n -= 1
    return n


def check_prompt_budget(model: MambaLMBase, n_tokens: int, *, max_tokens: int, max_steps: int,
                        workers: int = 1) -> int:
    """Refuse a prompt the analysis cannot take within its limits, before any work.

    Arguments:
        model: the model (its device decides which memory is asked).
        n_tokens: L.
        max_tokens: the longest prompt accepted.
        max_steps: the integrator's step budget per layer.
        workers: layers integrated at once (each worker process holds one integration and costs
            `WORKER_BYTES`).

    Returns:
        The memory estimate in bytes.

    Raises:
        ValueError: when ``n_tokens`` exceeds ``max_tokens`` (saying how to raise it), or when the estimate
            exceeds the memory available on the model's device (with both numbers).
    """
    if n_tokens > max_tokens:
        raise ValueError(f"the prompt has {n_tokens} tokens, more than max_tokens={max_tokens}: every token of "
                         "every analysed layer is integrated (cost grows with tokens × layers × width); shorten "
                         "the prompt or raise the limit (max_tokens=..., CLI --max-tokens)")
    need = analysis_memory(model, n_tokens, max_steps, workers)
    device = next(model.parameters()).device
    have = available_memory(device)
    if have is not None and need > have:
        at_once = f" with {workers} layers integrated at once" if workers > 1 else ""
        fewer = "use fewer workers (workers=1, CLI --workers 1), " if workers > 1 else ""
        raise ValueError(f"analysing {n_tokens} tokens{at_once} needs about {format_bytes(need)} of memory and "
                         f"{device} has {format_bytes(have)} available: {fewer}shorten the prompt, analyse fewer "
                         "layers at a time on a larger machine, or lower max_steps")
    return need
