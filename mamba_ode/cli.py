"""The ``mamba-ode`` command line (argument parsing and exit codes only; no numerics here).

Exit codes: 0 success, 2 bad arguments or input (one clear line, no traceback), 1 internal failure.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

from .analysis.analyze import DEFAULT_PROMPT, analyze
from .analysis.report import write_report
from .analysis.summary import comparison_sentence
from .io.config import MambaConfig
from .nn.lm import MambaLM
from .nn.load import load

__all__ = ["main"]


class UsageError(ValueError):
    """Bad arguments or input: reported in one line with exit code 2."""


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


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not (value > 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}")
    return value


def _analyze(args: argparse.Namespace) -> int:
    """Load a model, analyse its token dynamics on a prompt, print a table, write the report."""
    prompt: str | list[int]
    if args.prompt_file is not None:
        try:
            prompt = Path(args.prompt_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            why = getattr(exc, "strerror", None) or exc
            raise UsageError(f"cannot read prompt file {args.prompt_file!r}: {why}") from None
    else:
        prompt = args.prompt if args.prompt is not None else DEFAULT_PROMPT
    if args.device == "cuda" and not torch.cuda.is_available():
        raise UsageError("argument --device: cuda requested but torch sees no CUDA device")
    dtype = {"float32": torch.float32, "float64": torch.float64}[args.dtype]
    say = (lambda msg: None) if args.quiet else (lambda msg: print(f"[mamba-ode] {msg}", file=sys.stderr, flush=True))
    start = time.perf_counter()
    say(f"loading {args.model or 'the embedded default model'}")
    try:
        model = load(args.model, dtype=dtype, device=args.device)
    except (ValueError, FileNotFoundError) as exc:
        raise UsageError(str(exc).splitlines()[0]) from None
    K = model.config.n_layer
    for k in args.layers or ():
        if not -K <= k < K:
            raise UsageError(f"argument --layers: layer index {k} outside [{-K}, {K}) for this {K}-layer model")
    if args.prompt_ids is not None:
        prompt = [int(t) for t in args.prompt_ids]
        if min(prompt) < 0 or max(prompt) >= model.config.vocab_size:
            raise UsageError(f"argument --prompt-ids: ids must lie in [0, {model.config.vocab_size})")
    elif model.tokenizer is None:
        raise UsageError(f"model {args.model!r} ships no tokenizer: give token ids with --prompt-ids")
    if isinstance(prompt, str) and not prompt:
        raise UsageError("the prompt is empty")
    result = analyze(model, prompt, layers=args.layers, t_max=args.t_max, model_name=args.model or "tiny-shakespeare",
                     progress=say)
    say(f"writing the report to {args.out}")
    page = write_report(result, args.out, formats=("png", "svg") if args.svg else ("png",))
    summary = result.summary()
    rows = [["layer", "eig +/-/0", "from parameters", "finite-time", "divergent", "bounded", "convergent",
             "undetermined", "first t*", "integrated to", "predictions vs trajectories"]]
    for rec in summary["layers"]:
        sp, c, t1 = rec["spectrum"], rec["trajectory"]["counts"], rec["trajectory"]["first_blowup"]
        rows.append([str(rec["layer"]), f"{sp['n_positive']}/{sp['n_negative']}/{sp['n_zero']}",
                     rec["parameter_regime"], *(str(c.get(k, 0)) for k in ("divergent-finite-time", "divergent",
                                                                          "bounded", "convergent", "undetermined")),
                     "-" if t1 is None else f"{t1:.4g}", f"{rec['integration_end']:.4g}", rec["agreement"]])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(cell.rjust(w) if i < len(r) - 1 else cell for i, (cell, w) in enumerate(zip(r, widths))))
    cmp_ = summary["comparison"]
    print(f"discrete network vs depth-time ODE: {comparison_sentence(cmp_)}")
    print(f"report: {page}  ({time.perf_counter() - start:.1f} s)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``mamba-ode``."""
    p = _Parser(prog="mamba-ode", description="Token dynamics of deep selective state-space models (Mamba).")
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="load a small checkpoint and run it through the shared scan")
    d.add_argument("--prompt", default="To be, or not to be", help="text to run (byte tokens)")
    d.add_argument("--seed", type=int, default=0)
    d.set_defaults(func=_demo)
    a = sub.add_parser("analyze", help="classify every layer's token dynamics and write an HTML report",
                       description="Run a prompt through the model, derive each layer's ODE, classify regimes from "
                                   "parameters and from integrated trajectories, compare the discrete network "
                                   "with its continuous limit, and write DIR/report.html, DIR/summary.json and "
                                   "the figures.")
    a.add_argument("model", nargs="?", default=None,
                   help="checkpoint directory, cached Hub id or shipped model name (default: the embedded model)")
    src = a.add_mutually_exclusive_group()
    src.add_argument("--prompt", default=None, help="prompt text")
    src.add_argument("--prompt-file", default=None, metavar="F", help="read the prompt from a UTF-8 text file")
    src.add_argument("--prompt-ids", nargs="+", type=int, default=None, metavar="ID",
                     help="token ids, for models without a tokenizer")
    a.add_argument("--layers", nargs="+", type=int, default=None, metavar="K",
                   help="layers to integrate (default: all)")
    a.add_argument("--t-max", type=_positive_float, default=1e4, metavar="T",
                   help="end time of the S6 trajectories (default 1e4)")
    a.add_argument("--out", default="mamba-ode-report", metavar="DIR", help="output directory")
    a.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    a.add_argument("--dtype", choices=("float32", "float64"), default="float32", help="dtype of the weights")
    a.add_argument("--svg", action="store_true", help="also write every figure as SVG (PNG is always written)")
    a.add_argument("--quiet", action="store_true", help="no progress messages")
    a.set_defaults(func=_analyze)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``mamba-ode``; returns the exit code."""
    args = build_parser().parse_args(argv)
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
