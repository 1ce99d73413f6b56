"""Many prompts: per-prompt token outcomes and per-layer statistics with confidence intervals.

`analyze_many` runs the token-dynamics part of `mamba_ode.analyze` (every token of every chosen layer
to its own event, its label, its parameter-side prediction) on a list of prompts. The regime table
depends on the weights only and is computed once. Three executors give the same result:

* ``"serial"`` — one prompt after the other;
* ``"batched"`` — the discrete forward passes of prompts of equal length run as one batch (the
  integrations stay per prompt: each token has its own events);
* ``"ray"`` — one Ray task per prompt: a local Ray instance by default, the cluster named by
  ``RAY_ADDRESS`` when it is set (``pip install 'mamba-ode[distributed]'``). An instance started here
  is shut down at the end; one the caller started (``ray.init(num_cpus=2)``) is used as it is.

Statistics per layer (`LayerStats`): the fraction of tokens per label, quantiles of the blow-up times
t*, and how often each kind of prediction (theorem, indicator) agrees with the trajectories. Tokens of
one prompt are not independent, so the confidence intervals come from a bootstrap over prompts
(prompts resampled with replacement, ratios of sums; percentile intervals; a fixed seed).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..dynamics.fields import layer_field
from ..nn.lm import MambaLMBase
from ..regimes.labels import Label
from ..regimes.table import RegimeTable, regime_table
from .analyze import _analyse_layer, _chosen_layers, _token_records, check_settings, token_pieces
from .budget import DEFAULT_MAX_TOKENS, check_prompt_budget
from .parallel import integrate_layers

__all__ = ["analyze_many", "ManyAnalysis", "PromptResult", "LayerStats", "Interval", "read_prompts",
           "EXECUTORS", "TOKEN_LABELS"]

EXECUTORS = ("serial", "batched", "ray")
#: the labels a token's trajectory can get, in the order the statistics list them
TOKEN_LABELS = (Label.CONVERGENT, Label.FINITE, Label.DIVERGENT, Label.BOUNDED, Label.UNDETERMINED)
#: the quantiles of t* reported per layer
QUANTILES = (0.1, 0.5, 0.9)
#: the most prompts whose forward pass the batched executor runs at once
BATCH = 16


@dataclass
class Interval:
    """A rate with its bootstrap confidence interval (all None when nothing could be counted).

    Attributes:
        value: the ratio of sums over all prompts.
        low, high: the percentile interval of the bootstrap ratios (None when fewer than two prompts
            contribute: one prompt says nothing of the spread between prompts).
        n: the denominator (tokens, or compared predictions) summed over prompts.
    """

    value: float | None
    low: float | None
    high: float | None
    n: int


@dataclass
class PromptResult:
    """One prompt's token outcomes.

    Attributes:
        index: the prompt's position in the input list (0-based).
        prompt: its text (None when ids were given).
        ids: its token ids.
        tokens: decoded token pieces (None without a tokenizer).
        layers: per analysed layer ``{"layer", "tokens": [per-token records as in summary.json],
            "prediction_agreement": {...}, "integration_end", "stats"}``.
    """

    index: int
    prompt: str | None
    ids: list[int]
    tokens: list[str] | None
    layers: list[dict[str, Any]]

    def layer(self, k: int) -> dict[str, Any]:
        """The record of layer k. Raises KeyError when layer k was not analysed."""
        for rec in self.layers:
            if rec["layer"] == k:
                return rec
        raise KeyError(f"layer {k} was not analysed")


@dataclass
class LayerStats:
    """Statistics of one layer over all prompts.

    Attributes:
        layer: the layer index.
        n_prompts, n_tokens: prompts and tokens counted.
        label_fractions: label → `Interval` (fraction of tokens with that label).
        t_blowup_quantiles: ``{"n", "q10", "q50", "q90"}`` over the blow-up times of every
            ``divergent-finite-time`` token (None when there is none).
        agreement: prediction kind (``theorem``, ``indicator``) → `Interval` of agree / (agree + disagree).
    """

    layer: int
    n_prompts: int
    n_tokens: int
    label_fractions: dict[str, Interval]
    t_blowup_quantiles: dict[str, float | int | None]
    agreement: dict[str, Interval]


@dataclass
class ManyAnalysis:
    """Everything `analyze_many` computed.

    Attributes:
        model_name: how the model was named.
        architecture: ``"mamba"`` or ``"mamba2"``.
        table: the regime table (from the weights; the same for every prompt).
        results: one `PromptResult` per prompt, in input order.
        stats: one `LayerStats` per analysed layer.
        settings: the analysis settings (layers, t_max, tolerances, executor, confidence, ...).
        timings: seconds per stage.
    """

    model_name: str
    architecture: str
    table: RegimeTable
    results: list[PromptResult]
    stats: list[LayerStats]
    settings: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """A JSON-ready digest: settings, per-layer statistics and per-prompt token records."""
        return {"kind": "mamba-ode many-prompt analysis", "token_indexing": "0-based",
                "model": {"name": self.model_name, "architecture": self.architecture},
                "settings": dict(self.settings), "timings": {k: round(v, 4) for k, v in self.timings.items()},
                "stats": [asdict(s) for s in self.stats], "prompts": [asdict(r) for r in self.results]}

    def save_json(self, path: str | os.PathLike) -> Path:
        """Write `summary` to ``path`` (JSON, no NaN); returns the path."""
        path = Path(path)
        path.write_text(json.dumps(self.summary(), indent=1, allow_nan=False) + "\n", encoding="utf-8")
        return path


# ---------------------------------------------------------------------------------------------- prompts


def read_prompts(path: str | os.PathLike) -> list[str | list[int]]:
    """Prompts from a file: plain text (one prompt per non-empty line) or JSONL (``.jsonl``, or every line a
    JSON object) with a ``text`` or an ``ids`` field.

    Arguments:
        path: the file.

    Returns:
        The prompts, texts or id lists, in file order.

    Raises:
        FileNotFoundError: if the file does not exist.
        ValueError: for a file that is not UTF-8, holds no prompt, or a JSONL line that is not an object
            with ``text`` (a string) or ``ids`` (a list of ints) — naming the file and the line.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"prompts file {str(p)!r} not found")
    try:  # utf-8-sig: a byte-order mark is not part of the first prompt; lines end at "\n" only (not at
        # U+2028 or a form feed, which may sit inside a prompt or a JSON string)
        lines = [ln.removesuffix("\r") for ln in p.read_text(encoding="utf-8-sig").split("\n")]
    except UnicodeDecodeError as err:
        raise ValueError(f"prompts file {str(p)!r} is not UTF-8 text ({err.reason} at byte {err.start})") from None
    numbered = [(n, ln) for n, ln in enumerate(lines, 1) if ln.strip()]
    jsonl = p.suffix == ".jsonl" or (bool(numbered) and all(ln.lstrip().startswith("{") for _, ln in numbered))
    prompts: list[str | list[int]] = []
    for n, line in numbered:
        if not jsonl:
            prompts.append(line)
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"prompts file {str(p)!r}, line {n}: not JSON ({err.msg})") from None
        if isinstance(rec, dict) and isinstance(rec.get("text"), str):
            prompts.append(rec["text"])
        elif isinstance(rec, dict) and isinstance(rec.get("ids"), list) and rec["ids"] and all(
                isinstance(i, int) and not isinstance(i, bool) for i in rec["ids"]):
            prompts.append(list(rec["ids"]))
        else:
            raise ValueError(f"prompts file {str(p)!r}, line {n}: expected an object with 'text' (a string) or "
                             "'ids' (a non-empty list of ints)")
    if not prompts:
        raise ValueError(f"prompts file {str(p)!r} holds no prompt")
    return prompts


# ---------------------------------------------------------------------------------------------- one prompt


def _prompt_layers(model: MambaLMBase, starts: dict[int, Tensor], table: RegimeTable, chosen: list[int],
                   t_max: float, backend: str, opts: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    sols = integrate_layers([layer_field(model, k, backend=backend) for k in chosen], [starts[k] for k in chosen],
                            t_max, opts, workers=1)
    for k, sol in zip(chosen, sols):
        lay = _analyse_layer(model, k, starts[k], table, sol)
        out.append({"layer": k, "tokens": _token_records(lay), "prediction_agreement": lay.agreement,
                    "integration_end": float(lay.solution.integration_end)
                    if math.isfinite(lay.solution.integration_end) else None,
                    "stats": {n: int(v) for n, v in lay.solution.stats.items()}})
    return out


def _one_prompt(model: MambaLMBase, index: int, prompt: str | None, ids: Tensor, table: RegimeTable,
                chosen: list[int], t_max: float, backend: str, opts: dict[str, Any],
                starts: dict[int, Tensor] | None = None) -> PromptResult:
    if starts is None:
        starts = {k: u.detach().double() for k, u in model.field_starts(ids, chosen).items()}
    id_list = [int(i) for i in ids[0].tolist()]
    return PromptResult(index, prompt, id_list, token_pieces(model.tokenizer, id_list),
                        _prompt_layers(model, starts, table, chosen, t_max, backend, opts))


def _ray_prompt(model: MambaLMBase, index: int, prompt: str | None, ids: Tensor, table: RegimeTable,
                chosen: list[int], t_max: float, backend: str, opts: dict[str, Any]) -> PromptResult:
    torch.set_num_threads(1)  # one task per core
    return _one_prompt(model, index, prompt, ids, table, chosen, t_max, backend, opts)


# ---------------------------------------------------------------------------------------------- statistics


def _bootstrap(num: Sequence[float], den: Sequence[float], *, n_boot: int, confidence: float,
               gen: torch.Generator) -> Interval:
    """Ratio of sums with a percentile interval from resampling prompts (clusters) with replacement."""
    n_tot = int(sum(den))
    if n_tot == 0:
        return Interval(None, None, None, 0)
    if sum(d > 0 for d in den) < 2:  # one prompt says nothing of the spread between prompts
        return Interval(float(sum(num)) / n_tot, None, None, n_tot)
    a = torch.tensor(num, dtype=torch.float64)
    b = torch.tensor(den, dtype=torch.float64)
    value = float(a.sum() / b.sum())
    idx = torch.randint(0, len(a), (n_boot, len(a)), generator=gen)
    sa, sb = a[idx].sum(1), b[idx].sum(1)
    ratios = (sa / sb)[sb > 0]
    if ratios.numel() == 0:
        return Interval(value, None, None, n_tot)
    alpha = (1 - confidence) / 2
    lo, hi = torch.quantile(ratios, torch.tensor([alpha, 1 - alpha], dtype=torch.float64)).tolist()
    return Interval(value, lo, hi, n_tot)


def layer_stats(results: Sequence[PromptResult], k: int, *, n_boot: int = 1000, confidence: float = 0.95,
                seed: int = 0) -> LayerStats:
    """Statistics of layer k over the prompts (see `LayerStats`).

    Arguments:
        results: per-prompt results that analysed layer k.
        k: the layer.
        n_boot: bootstrap resamples.
        confidence: the interval's coverage, in (0, 1).
        seed: the bootstrap's random seed (results are reproducible).

    Returns:
        `LayerStats`.
    """
    gen = torch.Generator().manual_seed(seed + 7919 * k)
    recs = [r.layer(k) for r in results]
    n_tok = [len(rec["tokens"]) for rec in recs]
    present = {t["label"] for rec in recs for t in rec["tokens"]}
    labels = [str(lab) for lab in TOKEN_LABELS] + sorted(present - {str(lab) for lab in TOKEN_LABELS})
    fractions = {lab: _bootstrap([sum(t["label"] == lab for t in rec["tokens"]) for rec in recs], n_tok,
                                 n_boot=n_boot, confidence=confidence, gen=gen) for lab in labels}
    tbs = torch.tensor([t["t_blowup"] for rec in recs for t in rec["tokens"]
                        if t["label"] == str(Label.FINITE) and t["t_blowup"] is not None], dtype=torch.float64)
    quant: dict[str, float | int | None] = {"n": int(tbs.numel())}
    for q in QUANTILES:
        quant[f"q{round(100 * q)}"] = float(torch.quantile(tbs, q)) if tbs.numel() else None
    agreement = {}
    for kind in ("theorem", "indicator"):
        agree = [rec["prediction_agreement"].get(kind, {}).get("agree", 0) for rec in recs]
        compared = [a + rec["prediction_agreement"].get(kind, {}).get("disagree", 0) for a, rec in zip(agree, recs)]
        agreement[kind] = _bootstrap(agree, compared, n_boot=n_boot, confidence=confidence, gen=gen)
    return LayerStats(k, len(recs), sum(n_tok), fractions, quant, agreement)


# ---------------------------------------------------------------------------------------------- entry point


def _check_args(model: Any, prompts: Any, executor: str, confidence: float, n_boot: int) -> None:
    if not isinstance(model, MambaLMBase):
        raise TypeError(f"argument 'model' must be a mamba_ode.MambaLM or Mamba2LM, got {type(model).__name__}")
    if isinstance(prompts, (str, Tensor)) or not isinstance(prompts, Sequence):
        raise TypeError("argument 'prompts' must be a list of prompts (texts, id lists or id tensors)")
    if len(prompts) == 0:
        raise ValueError("argument 'prompts' is empty")
    if executor not in EXECUTORS:
        raise ValueError(f"argument 'executor' must be one of {EXECUTORS}, got {executor!r}")
    if isinstance(confidence, bool) or not isinstance(confidence, float) or not 0 < confidence < 1:
        raise ValueError(f"argument 'confidence' must be a float in (0, 1), got {confidence!r}")
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 1:
        raise ValueError(f"argument 'n_boot' must be a positive int, got {n_boot!r}")


# long function: over 80 lines with its docstring, which documents every argument
def analyze_many(model: MambaLMBase, prompts: Sequence[str | list[int] | Tensor], *,
                 layers: Sequence[int] | None = None, t_max: float = 1e4, rtol: float = 1e-5, atol: float = 1e-8,
                 max_steps: int = 20_000, blowup_factor: float = 1e8, backend: str = "auto",
                 max_tokens: int = DEFAULT_MAX_TOKENS, executor: str = "batched", confidence: float = 0.95,
                 n_boot: int = 1000, seed: int = 0, model_name: str | None = None,
                 progress: Callable[[str], None] | None = None) -> ManyAnalysis:
    """Token outcomes of many prompts, with per-layer statistics (see the module's description).

    Arguments:
        model: a loaded model of either generation.
        prompts: texts (need ``model.tokenizer``), id lists or id tensors (L,) / (1, L), one per prompt.
        layers: layer indices to integrate (default: all; negative indices count from the end).
        t_max, rtol, atol, max_steps, blowup_factor, backend, max_tokens: as in `mamba_ode.analyze`
            (max_tokens and the memory budget are checked for every prompt before any work).
        executor: ``"serial"``, ``"batched"`` or ``"ray"``.
        confidence: coverage of the bootstrap intervals.
        n_boot: bootstrap resamples.
        seed: the bootstrap's seed.
        model_name: name recorded in the summary (default: the checkpoint source).
        progress: called with a short message per prompt (the CLI prints it).

    Returns:
        `ManyAnalysis`. ``"serial"`` and ``"ray"`` give identical results; ``"batched"`` the same up to
        the rounding of batched matrix products in the forward pass (labels equal, t* to about 1e-9).

    Raises:
        TypeError: for a model that is not a mamba_ode model, or prompts that are not a list.
        ValueError: for an empty list, a bad prompt (naming its index), layer, setting or executor.
        ImportError: for ``executor="ray"`` without Ray installed.
    """
    _check_args(model, prompts, executor, confidence, n_boot)
    check_settings(t_max=t_max, rtol=rtol, atol=atol, blowup_factor=blowup_factor, backend=backend,
                   max_steps=max_steps, max_tokens=max_tokens, device=model.device)
    say = progress or (lambda msg: None)
    chosen = _chosen_layers(layers, model.config.n_layer)
    encoded: list[Tensor] = []
    for i, prompt in enumerate(prompts):
        try:
            ids = model.encode(prompt)
            if ids.shape[0] != 1:
                raise ValueError(f"holds {ids.shape[0]} sequences; give one sequence per prompt")
            check_prompt_budget(model, ids.shape[1], max_tokens=max_tokens, max_steps=max_steps)
        except (ValueError, TypeError) as err:
            raise type(err)(f"argument 'prompts', prompt {i}: {err}") from None
        encoded.append(ids)
    texts = [p if isinstance(p, str) else None for p in prompts]
    opts = {"rtol": rtol, "atol": atol, "max_steps": max_steps, "blowup_factor": blowup_factor}
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    table = regime_table(model)
    timings["regime_table"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    n = len(encoded)
    if executor == "ray":
        results = _run_ray(model, texts, encoded, table, chosen, float(t_max), backend, opts, say)
    else:
        # batched: one forward pass per group of at most BATCH prompts of equal length, each group
        # integrated before the next is formed (memory: one group's token states at a time)
        if executor == "batched":
            by_len: dict[int, list[int]] = {}
            for i, ids in enumerate(encoded):
                by_len.setdefault(ids.shape[1], []).append(i)
            groups = [idx[j:j + BATCH] for idx in by_len.values() for j in range(0, len(idx), BATCH)]
        else:
            groups = [[i] for i in range(n)]
        found: dict[int, PromptResult] = {}
        for idx in groups:
            starts: dict[int, dict[int, Tensor]] = {}
            if executor == "batched":
                got = model.field_starts(torch.cat([encoded[i] for i in idx]), chosen)
                starts = {i: {k: u[row:row + 1].detach().double() for k, u in got.items()} for row, i in enumerate(idx)}
                del got
            for i in idx:
                done = time.perf_counter() - t0
                eta = f", about {done / len(found) * (n - len(found)):.0f} s left" if found else ""
                say(f"prompt {len(found) + 1}/{n} ({encoded[i].shape[1]} tokens){eta}")
                found[i] = _one_prompt(model, i, texts[i], encoded[i], table, chosen, float(t_max), backend, opts,
                                       starts.pop(i, None))
        results = [found[i] for i in range(n)]
    timings["prompts"] = time.perf_counter() - t0
    stats = [layer_stats(results, k, n_boot=n_boot, confidence=confidence, seed=seed) for k in chosen]
    settings = {"layers": chosen, "t_max": float(t_max), "rtol": rtol, "atol": atol, "max_steps": int(max_steps),
                "blowup_factor": float(blowup_factor), "backend": backend, "executor": executor,
                "confidence": confidence, "n_boot": n_boot, "seed": seed, "n_prompts": n}
    name = model_name or (str(model.checkpoint.source) if model.checkpoint else "in-memory model")
    return ManyAnalysis(name, model.architecture, table, results, stats, settings, timings)


def _run_ray(model: MambaLMBase, texts: list[str | None], encoded: list[Tensor], table: RegimeTable,
             chosen: list[int], t_max: float, backend: str, opts: dict[str, Any],
             say: Callable[[str], None]) -> list[PromptResult]:
    try:
        import ray
    except ImportError as err:
        raise ImportError("executor='ray' needs Ray: pip install 'mamba-ode[distributed]'") from err
    started = not ray.is_initialized()
    if started:  # RAY_ADDRESS, when set, names a cluster; otherwise a local instance
        ray.init(address=os.environ.get("RAY_ADDRESS") or "local", include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
    try:
        task = ray.remote(num_cpus=1)(_ray_prompt)
        model_ref, table_ref = ray.put(model), ray.put(table)
        pending = {task.remote(model_ref, i, texts[i], encoded[i], table_ref, chosen, t_max, backend, opts): i
                   for i in range(len(encoded))}
        results: dict[int, PromptResult] = {}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            i = pending.pop(done[0])
            results[i] = ray.get(done[0])
            say(f"prompt {len(results)}/{len(encoded)} done (Ray)")
        return [results[i] for i in range(len(encoded))]
    finally:
        if started:
            ray.shutdown()
