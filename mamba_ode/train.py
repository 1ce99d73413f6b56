"""The small training loop behind the experiments and the shipped models.

* `mamba_init_` — mamba-ssm / transformers style initialisation of a model.
* `fit` — AdamW, linear warm-up + cosine decay (`lr_at`), gradient clipping, seed
  control, checkpoints every N steps with exact resume, a tqdm bar, metrics to JSON.

Data, the experiment runs and the shipping of trained models live in ``experiments/`` (outside
the package). Shape letters as in `mamba_ode.shapes`.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
from torch import Tensor, nn
from tqdm import tqdm  # the text bar: tqdm.auto warns in notebooks without ipywidgets

from .nn.lm import MambaLMBase
from .nn.refine import Mamba1MixerLike

__all__ = ["mamba_init_", "TrainConfig", "lr_at", "fit", "TRAINER_STATE"]

TRAINER_STATE = "trainer_state.pt"

# ============================================================================ initialisation


def mamba_init_(model: MambaLMBase, *, dt_min: float = 1e-3, dt_max: float = 1e-1, dt_init_floor: float = 1e-4,
                dt_scale: float = 1.0, generator: torch.Generator | None = None) -> MambaLMBase:
    """Initialise a `MambaLM` in place as mamba-ssm / transformers do.

    ``dt_proj.weight ~ U(±dt_scale·R^-½)``; ``dt_proj.bias = softplus⁻¹(dt)`` with
    ``dt`` log-uniform in [dt_min, dt_max] (floored at dt_init_floor); ``A_log = log(1..N)``;
    ``D = 1``; embeddings ``N(0, 0.02²)``; linear biases 0; ``out_proj`` Kaiming-uniform
    rescaled by ``1/√K`` (prenorm residual rescaling); other linears keep PyTorch's default.

    Arguments:
        model: the model (parameters overwritten, also through a sign parametrisation's raw weight).
        dt_min, dt_max: range of the initial step sizes (0 < dt_min ≤ dt_max).
        dt_init_floor: lower clamp of the sampled dt.
        dt_scale: scale of the dt_proj weight range.
        generator: random generator (None: torch's global one).

    Returns:
        The model.

    Raises:
        ValueError: for a bad dt range.
    """
    if not 0 < dt_min <= dt_max:
        raise ValueError(f"mamba_init_: arguments 'dt_min', 'dt_max' must satisfy 0 < dt_min <= dt_max, "
                         f"got {dt_min}, {dt_max}")
    g = generator
    k = model.config.n_layer
    with torch.no_grad():
        emb = model.backbone.embeddings.weight
        emb.copy_(torch.randn(emb.shape, generator=g) * 0.02)
        for block in model.layers:
            mixer = block.mixer
            inner = cast(Mamba1MixerLike, getattr(mixer, "mixer", mixer))  # TokenReorder-wrapped
            for lin in (inner.in_proj, inner.out_proj):
                if lin.bias is not None:
                    lin.bias.zero_()
            r = inner.dt_proj.weight.shape[1]
            std = r ** -0.5 * dt_scale
            inner.dt_proj.weight.copy_((torch.rand(inner.dt_proj.weight.shape, generator=g) * 2 - 1) * std)
            e = inner.dt_proj.weight.shape[0]
            dt = torch.exp(torch.rand(e, generator=g) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
            dt = dt.clamp(min=dt_init_floor)
            inner.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))
            n = inner.A_log.shape[1]
            inner.A_log.copy_(torch.log(torch.arange(1, n + 1, dtype=torch.float32)).repeat(e, 1))
            inner.D.fill_(1.0)
            w = inner.out_proj.weight
            bound = 1.0 / math.sqrt(w.shape[1])  # kaiming_uniform(a=√5) bound
            w.copy_((torch.rand(w.shape, generator=g) * 2 - 1) * bound / math.sqrt(k))
    return model


# ============================================================================ the loop


@dataclass
class TrainConfig:
    """Options of `fit`.

    Attributes:
        steps: optimiser steps in total.
        lr: peak learning rate.
        warmup: linear warm-up steps.
        min_lr_ratio: final learning rate as a fraction of ``lr`` (cosine decay).
        weight_decay: AdamW decay on matrices (not on biases, norms, embeddings, ``A_log``, ``D``, K).
        grad_clip: max global gradient norm (0: off).
        seed: seed of the batch sampler (and of torch's global RNG).
        ckpt_every: write a resumable checkpoint every this many steps (0: only at the end).
        eval_every: call the evaluation every this many steps (0: only at the end).
        progress: show a tqdm bar.
    """

    steps: int
    lr: float = 3e-3
    warmup: int = 50
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    seed: int = 0
    ckpt_every: int = 0
    eval_every: int = 0
    progress: bool = True
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("steps",):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"TrainConfig: argument {name!r} must be a positive int, got {getattr(self, name)!r}")
        for name in ("warmup", "ckpt_every", "eval_every"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise ValueError(f"TrainConfig: argument {name!r} must be a non-negative int")
        if not self.lr > 0:
            raise ValueError(f"TrainConfig: argument 'lr' must be > 0, got {self.lr!r}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"TrainConfig: argument 'min_lr_ratio' must be in [0, 1], got {self.min_lr_ratio!r}")


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate of step ``step`` (0-based): linear warm-up, then cosine decay to ``min_lr_ratio·lr``.

    Arguments:
        step: the step index.
        cfg: the schedule's options.

    Returns:
        The learning rate.
    """
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    span = max(1, cfg.steps - cfg.warmup)
    progress = min(1.0, (step - cfg.warmup) / span)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: decay on matrices (raw parametrised weights included), none on the rest."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        plain = name.replace(".parametrizations.weight.original", ".weight")
        if p.dim() >= 2 and "embeddings" not in plain and not plain.endswith(("A_log", ".D")):
            decay.append(p)
        else:
            no_decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


# long function: over 80 lines with its docstring, which documents every argument
def fit(model: nn.Module, loss_fn: Callable[[nn.Module, Any], Tensor],
        sample_batch: Callable[[torch.Generator], Any], cfg: TrainConfig, *,
        out_dir: str | os.PathLike | None = None, evaluate: Callable[[nn.Module], dict] | None = None,
        save: Callable[[nn.Module, Path], Any] | None = None, resume: bool = True) -> dict:
    """Train with AdamW + warm-up/cosine schedule + clipping; checkpoint, resume, log.

    Files under ``out_dir`` (when given): ``trainer_state.pt`` (resumable: raw parameters,
    optimiser, step, sampler and RNG states, history) every ``cfg.ckpt_every`` steps and at the
    end; ``checkpoint/`` written by ``save(model, path)`` at the same times; ``metrics.json``.
    A run resumed from ``trainer_state.pt`` continues bit-for-bit as the uninterrupted run.

    Arguments:
        model: the model (trained in place).
        loss_fn: ``loss_fn(model, batch) -> scalar loss``.
        sample_batch: ``sample_batch(generator) -> batch`` (the generator is seeded by ``cfg.seed``).
        cfg: `TrainConfig`.
        out_dir: where checkpoints and metrics go (None: nothing written).
        evaluate: ``evaluate(model) -> dict`` of metrics, every ``cfg.eval_every`` steps and at the end.
        save: ``save(model, directory)`` writing a loadable checkpoint.
        resume: continue from ``out_dir/trainer_state.pt`` when present.

    Returns:
        Metrics: ``{"config", "history": [{step, loss, lr, grad_norm, time}], "evals": [{step, ...}],
        "final": {...}, "train_seconds"}``.

    Raises:
        ValueError: when the loss is not finite.
    """
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.AdamW(_param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.95))
    history: list[dict] = []
    evals: list[dict] = []
    start, elapsed = 0, 0.0
    out = Path(out_dir) if out_dir is not None else None
    state_path = out / TRAINER_STATE if out is not None else None
    if resume and state_path is not None and state_path.is_file():
        st = torch.load(state_path, weights_only=False)
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["optimizer"])
        gen.set_state(st["generator"])
        torch.set_rng_state(st["torch_rng"])
        start, history, evals, elapsed = st["step"], st["history"], st["evals"], st["elapsed"]

    def checkpoint(step: int) -> None:
        if out is None:
            return
        out.mkdir(parents=True, exist_ok=True)
        tmp = out / (TRAINER_STATE + ".tmp")
        torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "generator": gen.get_state(),
                    "torch_rng": torch.get_rng_state(), "step": step, "history": history, "evals": evals,
                    "elapsed": elapsed}, tmp)
        os.replace(tmp, out / TRAINER_STATE)
        if save is not None:
            save(model, out / "checkpoint")

    model.train()
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, disable=not cfg.progress,
               dynamic_ncols=True, mininterval=2.0)
    t0 = time.perf_counter()
    for step in bar:
        lr = lr_at(step, cfg)
        for group in opt.param_groups:
            group["lr"] = lr
        batch = sample_batch(gen)
        loss = loss_fn(model, batch)
        if not torch.isfinite(loss):
            raise ValueError(f"fit: loss is not finite at step {step} ({float(loss)})")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip if cfg.grad_clip > 0
                                                     else float("inf")))
        opt.step()
        now = time.perf_counter()
        loss_value = float(loss.detach())
        history.append({"step": step + 1, "loss": loss_value, "lr": lr, "grad_norm": gnorm,
                        "time": elapsed + now - t0})
        bar.set_postfix(loss=f"{loss_value:.3f}", refresh=False)
        done = step + 1
        if evaluate is not None and cfg.eval_every and done % cfg.eval_every == 0 and done < cfg.steps:
            evals.append({"step": done, **evaluate(model)})
            model.train()
        if cfg.ckpt_every and done % cfg.ckpt_every == 0 and done < cfg.steps:
            elapsed += time.perf_counter() - t0
            t0 = time.perf_counter()
            checkpoint(done)
    bar.close()
    elapsed += time.perf_counter() - t0
    final = evaluate(model) if evaluate is not None else {}
    if evaluate is not None and (not evals or evals[-1]["step"] != cfg.steps):
        evals.append({"step": cfg.steps, **final})
    metrics = {"config": asdict(cfg), "history": history, "evals": evals, "final": final, "train_seconds": elapsed}
    checkpoint(cfg.steps)
    if out is not None:
        (out / "metrics.json").write_text(json.dumps(metrics, indent=1), encoding="utf-8")
    return metrics
