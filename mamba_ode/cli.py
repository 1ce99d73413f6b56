"""The ``mamba-ode`` command line (argument parsing and exit codes only; no numerics here).

Exit codes: 0 success, 2 bad arguments or input (one clear line, no traceback), 1 internal failure.
"""

from __future__ import annotations

import argparse
import sys
import tempfile

__all__ = ["main"]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2
        print(f"mamba-ode: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def _demo(args: argparse.Namespace) -> int:
    """Build a small random checkpoint, load it back, run the discrete model through the shared scan."""
    import torch  # noqa: PLC0415

    from . import MambaConfig, MambaLM, load  # noqa: PLC0415

    torch.manual_seed(args.seed)
    cfg = MambaConfig(d_model=32, n_layer=4, vocab_size=256, d_state=8)
    with tempfile.TemporaryDirectory() as d:
        MambaLM(cfg).save_pretrained(d)
        model = load(d)
        ids = torch.tensor([list(args.prompt.encode("utf-8"))[:64] or [0]])
        with torch.no_grad():
            out = model(ids, output_hidden_states=True, internals=[0])
    print(f"model: {cfg.n_layer} layers, d_model {cfg.d_model}, d_inner {cfg.d_inner}, d_state {cfg.d_state}, "
          f"dt_rank {cfg.dt_rank} (random weights, transformers layout, reloaded from disk)")
    print(f"prompt: {args.prompt!r} → {ids.shape[1]} byte tokens")
    print(f"{'k':>3} {'|x^k| mean':>12} {'mean Δ':>15}")
    for k, x in enumerate(out.hidden_states):
        extra = ""
        if k < cfg.n_layer:
            delta = out.internals[k].delta if k in out.internals else model.layers[k].ssm.detach().delta(
                torch.zeros(1, 1, cfg.d_inner))
            extra = f"{float(delta.mean()):>15.4f}"
        print(f"{k:>3} {float(x.norm(dim=-1).mean()):>12.4f} {extra}")
    it = out.internals[0]
    print(f"layer 0 S6 internals: u {tuple(it.u.shape)}, Δ {tuple(it.delta.shape)}, B {tuple(it.B.shape)}, "
          f"C {tuple(it.C.shape)}, y {tuple(it.y.shape)}")
    print(f"logits {tuple(out.logits.shape)}; next byte after the prompt: {int(out.logits[0, -1].argmax())}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``mamba-ode``."""
    p = _Parser(prog="mamba-ode", description="Token dynamics of deep selective state-space models (Mamba).")
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="load a small checkpoint and run it through the shared scan")
    d.add_argument("--prompt", default="To be, or not to be", help="text to run (byte tokens)")
    d.add_argument("--seed", type=int, default=0)
    d.set_defaults(func=_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``mamba-ode``; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, TypeError) as exc:
        print(f"mamba-ode: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # internal failure
        print(f"mamba-ode: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
