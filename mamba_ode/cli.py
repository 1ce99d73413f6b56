"""The ``mamba-ode`` command line (argument parsing and exit codes only; no numerics here).

Exit codes: 0 success, 2 bad arguments or input (one clear line, no traceback), 1 internal failure.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ._version import __version__
from .analysis.analyze import DEFAULT_PROMPT, analyze, load_analysis
from .analysis.budget import DEFAULT_MAX_TOKENS, check_prompt_budget
from .analysis.many import EXECUTORS, TOKEN_LABELS, analyze_many, read_prompts
from .analysis.many_report import write_many_report
from .analysis.output import check_report_dir
from .analysis.parallel import plan_workers
from .analysis.report import write_report
from .analysis.store import ANALYSIS_MARKER
from .analysis.summary import comparison_sentence
from .io.config import MambaConfig
from .io.hub import cached_model_ids
from .models import DEFAULT_MODEL, shipped_names
from .nn.lm import MambaLM, MambaLMBase
from .nn.load import load
from .nn.scan import BACKENDS, check_backend

__all__ = ["main"]


class UsageError(ValueError):
    """Bad arguments or input: reported in one line with exit code 2."""


class _Help(argparse.HelpFormatter):
    """Help text with each option's default, where it has a meaningful one not already stated."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default not in (None, False, argparse.SUPPRESS) and "default" not in text and action.option_strings:
            text += " (default: %(default)s)"
        return text


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2
        print(f"mamba-ode: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def _demo(args: argparse.Namespace) -> int:
    """Build a small random checkpoint, load it back, run the discrete model through the shared scan."""
    torch.manual_seed(args.seed)
    cfg = MambaConfig(d_model=32, n_layer=4, vocab_size=256, d_state=8)
    with tempfile.TemporaryDirectory() as d:
        MambaLM(cfg).save_pretrained(d)
        model = load(d)
        ids = torch.tensor([list(args.prompt.encode("utf-8"))[:64] or [0]])
        with torch.no_grad():
            out = model(ids, output_hidden_states=True, internals=True)
    print(f"model: {cfg.n_layer} layers, d_model {cfg.d_model}, d_inner {cfg.d_inner}, d_state {cfg.d_state}, "
          f"dt_rank {cfg.dt_rank} (random weights, transformers layout, reloaded from disk)")
    print(f"prompt: {args.prompt!r} → {ids.shape[1]} byte tokens")
    print(f"{'k':>3} {'|x^k| mean':>12} {'mean Δ':>15}")
    for k, x in enumerate(out.hidden_states or ()):
        extra = f"{float(out.internals[k].delta.mean()):>15.4f}" if k < cfg.n_layer else ""
        print(f"{k:>3} {float(x.norm(dim=-1).mean()):>12.4f} {extra}")
    it = out.internals[0]
    print(f"layer 0 S6 internals: u {tuple(it.u.shape)}, Δ {tuple(it.delta.shape)}, B {tuple(it.B.shape)}, "
          f"C {tuple(it.C.shape)}, y {tuple(it.y.shape)}")
    print(f"logits {tuple(out.logits.shape)}; next byte after the prompt: {int(out.logits[0, -1].argmax())}")
    return 0


def _number(text: str, low: float, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not (value > low and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a finite number > {what}, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    return _number(text, 0.0, "0")


def _factor(text: str) -> float:
    return _number(text, 1.0, "1")


def _workers(text: str) -> int | str:
    """'auto' or a positive int (argparse type of --workers)."""
    if text == "auto":
        return text
    try:
        return _positive_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"must be 'auto' or a whole number ≥ 1, got {text!r}") from None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be ≥ 1, got {text!r}")
    return value


def _read_prompt(args: argparse.Namespace) -> str | list[int]:
    if args.prompt_file is not None:
        try:
            text = Path(args.prompt_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            why = getattr(exc, "strerror", None) or exc
            raise UsageError(f"cannot read prompt file {args.prompt_file!r}: {why}") from None
        if not text:
            raise UsageError(f"prompt file {args.prompt_file!r} is empty")
        return text
    if args.prompt_ids is not None:
        return [int(t) for t in args.prompt_ids]
    if args.prompt is not None and not args.prompt:
        raise UsageError("argument --prompt: the prompt is empty")
    return args.prompt if args.prompt is not None else DEFAULT_PROMPT


def _load_for_cli(args: argparse.Namespace, say: Callable[[str], None]) -> MambaLMBase:
    if args.device == "cuda" and not torch.cuda.is_available():
        raise UsageError("argument --device: cuda requested but torch sees no CUDA device")
    dtype = {"float32": torch.float32, "float64": torch.float64}[args.dtype]
    say(f"loading {args.model or 'the embedded default model'}")
    try:
        model = load(args.model, dtype=dtype, device=args.device, tokenizer=args.tokenizer)
    except (ValueError, OSError, ImportError) as exc:  # FileNotFoundError and PermissionError are OSErrors
        raise UsageError(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None
    try:
        check_backend(args.backend, model.device)
    except (ValueError, ImportError) as exc:  # triton on the CPU, or not installed
        raise UsageError(f"argument --backend: {exc}") from None
    return model


def _check_prompt(model: MambaLMBase, prompt: str | list[int], args: argparse.Namespace,
                  source: str = "argument --prompt-ids") -> None:
    K, vocab = model.config.n_layer, model.config.vocab_size
    for k in args.layers or ():
        if not -K <= k < K:
            raise UsageError(f"argument --layers: layer index {k} outside [{-K}, {K}) for this {K}-layer model")
    if isinstance(prompt, list):
        if min(prompt) < 0 or max(prompt) >= vocab:
            raise UsageError(f"{source}: ids must lie in [0, {vocab})")
    elif model.tokenizer is None:
        raise UsageError(f"model {args.model!r} ships no tokenizer: give token ids with --prompt-ids, or a "
                         "tokenizer with --tokenizer")
    try:
        ids = model.encode(prompt)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    workers = 1
    if getattr(args, "prompts", None) is None:  # one prompt: its layers may be integrated by workers
        n_layers = len({k % K for k in args.layers}) if args.layers else K
        try:
            workers = plan_workers(model, ids.shape[1], n_layers, args.max_steps,
                                   "auto" if args.workers is None else args.workers)
        except ValueError as exc:
            raise UsageError(f"argument --workers: {exc}") from None
        args.workers = workers
    try:
        check_prompt_budget(model, ids.shape[1], max_tokens=args.max_tokens, max_steps=args.max_steps,
                            workers=workers)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _table(summary: dict) -> list[str]:
    """The per-layer table, every column aligned (numbers to the right)."""
    rows = [["layer", "eig +/-/0", "from parameters", "finite-time", "divergent", "bounded", "convergent",
             "undetermined", "first t*", "integrated to", "predictions vs trajectories"]]
    for rec in summary["layers"]:
        sp, c, t1 = rec["spectrum"], rec["trajectory"]["counts"], rec["trajectory"]["first_blowup"]
        rows.append([str(rec["layer"]), f"{sp['n_positive']}/{sp['n_negative']}/{sp['n_zero']}",
                     rec["parameter_regime"], *(str(c.get(k, 0)) for k in ("divergent-finite-time", "divergent",
                                                                          "bounded", "convergent", "undetermined")),
                     "-" if t1 is None else f"{t1:.4g}", f"{rec['integration_end']:.4g}", rec["agreement"]])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    left = {2, len(rows[0]) - 1}  # text columns
    return ["  ".join(cell.ljust(w) if i in left else cell.rjust(w) for i, (cell, w) in enumerate(zip(r, widths)))
            .rstrip() for r in rows]


def _analyze(args: argparse.Namespace) -> int:
    """Check the output place and the prompt, load, analyse, write the report, print the table."""
    show = not args.quiet and sys.stderr.isatty()
    say = (lambda msg: print(f"[mamba-ode] {msg}", file=sys.stderr, flush=True)) if show else (lambda msg: None)
    start = time.perf_counter()
    try:
        check_report_dir(args.out)  # before any work: a file, a foreign directory or no permission
    except ValueError as exc:
        raise UsageError(f"argument --out: {exc}") from None
    if args.save is not None:
        if args.prompts is not None:
            raise UsageError("argument --save: saves one prompt's analysis; not with --prompts")
        try:
            save = check_report_dir(args.save, marker=ANALYSIS_MARKER, what="saved analysis")
        except ValueError as exc:
            raise UsageError(f"argument --save: {exc}") from None
        out = Path(args.out).expanduser().absolute()
        if save == out or save in out.parents or out in save.parents:
            raise UsageError(f"argument --save: {args.save!r} and --out {args.out!r} must be separate directories")
    if args.prompts is not None:
        if args.workers is not None:
            raise UsageError("argument --workers: integrates the layers of one prompt side by side; with --prompts "
                             "use --executor")
        return _analyze_many(args, say, start)
    prompt = _read_prompt(args)
    model = _load_for_cli(args, say)
    _check_prompt(model, prompt, args)
    result = analyze(model, prompt, layers=args.layers, t_max=args.t_max, rtol=args.rtol, atol=args.atol,
                     max_steps=args.max_steps, blowup_factor=args.blowup_factor, backend=args.backend,
                     max_tokens=args.max_tokens, model_name=args.model or "tiny-shakespeare", progress=say,
                     workers=args.workers)  # resolved by _check_prompt
    say(f"writing the report to {args.out}")
    try:
        page = write_report(result, args.out, formats=("png", "svg") if args.svg else ("png",))
    except ValueError as exc:  # the directory changed under us
        raise UsageError(f"argument --out: {exc}") from None
    except OSError as exc:
        raise UsageError(f"cannot write the report to {args.out!r}: {exc.strerror or exc}") from None
    if args.save is not None:
        try:
            result.save(args.save)
        except (ValueError, OSError) as exc:
            raise UsageError(f"argument --save: {getattr(exc, 'strerror', None) or exc}") from None
    summary = result.summary()
    print("\n".join(_table(summary)))
    print(f"discrete network vs depth-time ODE: {comparison_sentence(summary['comparison'])}")
    print(f"report: {page}  ({time.perf_counter() - start:.1f} s)")
    return 0


def _analyze_many(args: argparse.Namespace, say: Callable[[str], None], start: float) -> int:
    """``analyze --prompts FILE``: the token dynamics of every prompt, statistics per layer, a report."""
    try:
        prompts = read_prompts(args.prompts)
    except (ValueError, OSError) as exc:
        raise UsageError(f"argument --prompts: {exc}") from None
    model = _load_for_cli(args, say)
    for i, prompt in enumerate(prompts):
        where = f"argument --prompts, prompt {i} (non-empty line {i + 1})"
        try:
            _check_prompt(model, prompt, args, source=where)
        except UsageError as exc:
            raise UsageError(str(exc) if str(exc).startswith(where) else f"{where}: {exc}") from None
    try:
        many = analyze_many(model, prompts, layers=args.layers, t_max=args.t_max, rtol=args.rtol, atol=args.atol,
                            max_steps=args.max_steps, blowup_factor=args.blowup_factor, backend=args.backend,
                            max_tokens=args.max_tokens, executor=args.executor,
                            model_name=args.model or "tiny-shakespeare", progress=say)
    except ImportError as exc:
        raise UsageError(f"argument --executor: {exc}") from None
    say(f"writing the report to {args.out}")
    try:
        page = write_many_report(many, args.out)
    except ValueError as exc:
        raise UsageError(f"argument --out: {exc}") from None
    except OSError as exc:
        raise UsageError(f"cannot write the report to {args.out!r}: {exc.strerror or exc}") from None
    rows = [["layer", "tokens"] + [str(lab) for lab in TOKEN_LABELS] + ["median t*"]]
    for st in many.stats:
        q = st.t_blowup_quantiles.get("q50")
        rows.append([str(st.layer), str(st.n_tokens)]
                    + [f"{st.label_fractions[str(lab)].value or 0:.3f}" for lab in TOKEN_LABELS]
                    + ["-" if q is None else f"{q:.4g}"])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    print("\n".join("  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in rows))
    print(f"{len(prompts)} prompts; fractions of tokens per label; report: {page}  "
          f"({time.perf_counter() - start:.1f} s)")
    return 0


def _report(args: argparse.Namespace) -> int:
    """``report SAVED``: render the report of a saved analysis."""
    try:
        check_report_dir(args.out)
        analysis = load_analysis(args.saved)
    except (ValueError, OSError) as exc:
        raise UsageError(str(exc)) from None
    try:
        page = write_report(analysis, args.out, formats=("png", "svg") if args.svg else ("png",))
    except ValueError as exc:
        raise UsageError(f"argument --out: {exc}") from None
    except OSError as exc:
        raise UsageError(f"cannot write the report to {args.out!r}: {exc.strerror or exc}") from None
    print(f"report: {page}")
    return 0


def _models(args: argparse.Namespace) -> int:
    """List the shipped models and the model checkpoints in the local Hugging Face cache."""
    print("shipped with mamba-ode (use the name):")
    for name in shipped_names():
        print(f"  {name}{'  (default)' if name == DEFAULT_MODEL else ''}")
    cached = cached_model_ids()
    print("in the local Hugging Face cache (use the id):" if cached else "no model in the local Hugging Face cache")
    for repo in cached:
        print(f"  {repo}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``mamba-ode``."""
    p = _Parser(prog="mamba-ode", description="Token dynamics of deep selective state-space models (Mamba).")
    p.add_argument("--version", action="version", version=f"mamba-ode {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    d = sub.add_parser("demo", help="load a small checkpoint and run it through the shared scan")
    d.add_argument("--prompt", default="To be, or not to be", help="text to run (byte tokens)")
    d.add_argument("--seed", type=int, default=0)
    d.set_defaults(func=_demo)
    m = sub.add_parser("models", help="list the shipped models and the cached Hugging Face checkpoints")
    m.set_defaults(func=_models)
    _analyze_parser(sub)
    r = sub.add_parser("report", help="render the report of a saved analysis (analyze --save) without recomputing",
                       formatter_class=_Help)
    r.add_argument("saved", metavar="SAVED", help="a directory written by `mamba-ode analyze --save`")
    r.add_argument("--out", default="mamba-ode-report", metavar="DIR",
                   help="output directory: new, empty, or a previous mamba-ode report (replaced)")
    r.add_argument("--svg", action="store_true", help="also write every figure as SVG")
    r.set_defaults(func=_report)
    return p


def _analyze_parser(sub: Any) -> None:
    a = sub.add_parser("analyze", help="classify every layer's token dynamics and write an HTML report",
                       formatter_class=_Help,
                       description="Run a prompt through the model, derive each layer's ODE, follow every token "
                                   "to its own event, classify and predict each token, compare the discrete "
                                   "network with its continuous limit, and write DIR/report.html, "
                                   "DIR/summary.json and the figures.")
    a.add_argument("model", nargs="?", default=None,
                   help="checkpoint directory, cached Hub id, or shipped model name "
                        f"({', '.join(shipped_names())}; `mamba-ode models` lists them); default: {DEFAULT_MODEL}")
    src = a.add_mutually_exclusive_group()
    src.add_argument("--prompt", default=None, help=f"prompt text (default: {DEFAULT_PROMPT!r})")
    src.add_argument("--prompt-file", default=None, metavar="F", help="read the prompt from a UTF-8 text file")
    src.add_argument("--prompt-ids", nargs="+", type=int, default=None, metavar="ID",
                     help="token ids, for models without a tokenizer")
    src.add_argument("--prompts", default=None, metavar="FILE",
                     help="many prompts: a text file (one per line) or JSONL with a 'text' or 'ids' field; writes "
                          "per-layer statistics over the prompts")
    a.add_argument("--executor", choices=EXECUTORS, default="batched",
                   help="with --prompts: one prompt after the other, forward passes batched by length, or Ray "
                        "tasks (local, or the cluster of RAY_ADDRESS)")
    a.add_argument("--workers", type=_workers, default=None, metavar="N",
                   help="worker processes integrating layers side by side, or 'auto' (default: one per CPU when "
                        "the layers are costly enough and memory allows, else none); the CPUs are shared out as torch "
                        "threads")
    a.add_argument("--save", default=None, metavar="DIR",
                   help="also save the analysis (trajectories, per-token results) to DIR; `mamba-ode report DIR` "
                        "renders it again")
    a.add_argument("--tokenizer", default=None, metavar="PATH_OR_HUB_ID",
                   help="tokenizer.json path, directory or Hub id, for checkpoints without one (default: the "
                        "checkpoint's own)")
    a.add_argument("--layers", nargs="+", type=int, default=None, metavar="K",
                   help="layers to integrate (default: all)")
    a.add_argument("--t-max", type=_positive_float, default=1e4, metavar="T",
                   help="horizon of every token's trajectory (default: 1e4)")
    a.add_argument("--rtol", type=_positive_float, default=1e-5, help="relative tolerance of the steps")
    a.add_argument("--atol", type=_positive_float, default=1e-8, help="absolute tolerance of the steps")
    a.add_argument("--max-steps", type=_positive_int, default=20_000, metavar="N",
                   help="step budget per layer (tokens still running then end undetermined)")
    a.add_argument("--blowup-factor", type=_factor, default=1e8, metavar="F",
                   help="norm growth at which a blow-up is resolved (default: 1e8)")
    a.add_argument("--backend", choices=BACKENDS, default="auto", help="selective-scan backend of the fields")
    a.add_argument("--max-tokens", type=_positive_int, default=DEFAULT_MAX_TOKENS, metavar="N",
                   help="longest prompt accepted (cost grows with tokens × layers × width)")
    a.add_argument("--out", default="mamba-ode-report", metavar="DIR",
                   help="output directory: new, empty, or a previous mamba-ode report (replaced)")
    a.add_argument("--svg", action="store_true", help="also write every figure as SVG (PNG is always written)")
    a.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where the model and the analysis run")
    a.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                   help="dtype of the weights and the discrete network; the layer trajectories are always "
                        "integrated in float64")
    a.add_argument("--quiet", action="store_true", help="no progress messages (none either when stderr is not "
                                                        "a terminal)")
    a.set_defaults(func=_analyze)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``mamba-ode``; returns the exit code.

    Arguments:
        argv: the arguments (default: ``sys.argv[1:]``).

    Returns:
        0 on success, 2 for bad arguments or input (one line on stderr), 1 for an internal failure.
    """
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, --version (0) or a usage error (2, already reported)
        return int(exc.code or 0)
    try:
        return int(args.func(args) or 0)
    except UsageError as exc:
        print(f"mamba-ode: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # internal failure
        print(f"mamba-ode: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
