"""Mamba-2's scan in SSD's chunked matrix form (``selective_scan(..., head_dim=P)``) against the general
per-channel recurrence, on a mamba2-130m-shaped layer, in one process.

    python benchmarks/bench_ssd.py [--threads 2] [--rounds 5]

The layer: a random transformers Mamba-2 checkpoint shaped like mamba2-130m (d_model 768, E = 1536,
24 heads of P = 64 channels, one group, N = 128), loaded by `mamba_ode.load`. The scan inputs are those
of the layer's float64 idealised field (`mamba_ode.Mamba2Field`) at real token states (prompt ids
100, 101, ...), for prefixes of L tokens. Per L the two forms alternate for ``--rounds`` rounds and the
best mean time of a call is kept; their outputs must agree to 1e-12 relative. Also timed: the whole
field evaluation, and the SSD form with 32, 64 and 128 tokens per chunk (the choice of ``SSD_CHUNK``).
Writes ``benchmarks/results/bench_ssd.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch
from timing import ROOT  # benchmarks/timing.py (on sys.path)

import mamba_ode
from mamba_ode.nn import scan_ssd
from mamba_ode.nn.scan import selective_scan

RESULTS = ROOT / "benchmarks" / "results"
LENGTHS = ((1, 200), (2, 200), (16, 60), (64, 20), (256, 5))  # (L, calls)
CHUNKS = (32, 64, 128)


def _checkpoint(directory: Path) -> Path:
    """A mamba2-130m-shaped random transformers checkpoint (2 layers suffice for one layer's field)."""
    import transformers  # noqa: PLC0415

    torch.manual_seed(0)
    cfg = transformers.Mamba2Config(hidden_size=768, num_hidden_layers=2, state_size=128, vocab_size=50280,
                                    head_dim=64, num_heads=24, n_groups=1, expand=2)
    transformers.Mamba2ForCausalLM(cfg).save_pretrained(directory)
    return directory


def _mean(fn, calls: int) -> float:
    fn()
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - t0) / calls


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as d, torch.no_grad():
        model = mamba_ode.load(_checkpoint(Path(d) / "m2"))
        field = mamba_ode.layer_field(model, 1)
        p = field.params_like(torch.zeros((), dtype=torch.float64))
        hd = p.head_dim
        ids = torch.arange(100, 100 + max(L for L, _ in LENGTHS))[None]
        h_all = model.field_starts(ids, [1])[1].double()
        rows = []
        for L, calls in LENGTHS:
            h = h_all[:, :L].contiguous()
            x, delta, Bm, Cm = p.selective(h)
            args_ = (x.transpose(1, 2), delta.repeat_interleave(hd, dim=-1).transpose(1, 2), p.channel_A(),
                     Bm.permute(0, 2, 3, 1), Cm.permute(0, 2, 3, 1))
            y_gen = selective_scan(*args_, backend="fast")
            y_ssd = selective_scan(*args_, backend="fast", head_dim=hd)
            rel = float((y_ssd - y_gen).abs().max() / y_gen.abs().max())
            if not rel <= 1e-12:
                raise SystemExit(f"L={L}: the two forms differ by {rel:.2e} (relative)")
            calls_of = {
                "general": lambda a=args_: selective_scan(*a, backend="fast"),
                "ssd": lambda a=args_: selective_scan(*a, backend="fast", head_dim=hd),
                "field": lambda h=h: field(0.0, h),
            }
            xh = x.view(1, L, -1, hd)
            for c in CHUNKS:  # the SSD form alone, per chunk size
                calls_of[c] = lambda c=c, x=xh, dt=delta, Bm=Bm, Cm=Cm: scan_ssd.ssd_scan(x, dt, p.A, Bm, Cm, c,
                                                                                         last_state=False)
            best = {k: float("inf") for k in calls_of}
            for _ in range(args.rounds):
                for k, fn in calls_of.items():
                    best[k] = min(best[k], _mean(fn, calls))
            chunks = {c: best[c] for c in CHUNKS}
            row = {"L": L, "calls": calls, "general_s": best["general"], "ssd_s": best["ssd"],
                   "speedup": best["general"] / best["ssd"], "field_s": best["field"], "rel_diff": rel,
                   "chunk_s": {str(c): s for c, s in chunks.items()}}
            rows.append(row)
            print(f"L = {L:3d}: recurrence {row['general_s'] * 1e3:8.3f} ms   SSD {row['ssd_s'] * 1e3:7.3f} ms   "
                  f"speed-up {row['speedup']:5.1f}×   whole field {row['field_s'] * 1e3:7.3f} ms   chunks "
                  + "  ".join(f"{c}: {s * 1e3:.3f}" for c, s in chunks.items()), flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = {"benchmark": "bench_ssd", "rounds": args.rounds,
           "layer": {"d_model": 768, "E": 1536, "heads": 24, "P": 64, "G": 1, "N": 128, "dtype": "float64"},
           "ssd_chunk": scan_ssd.SSD_CHUNK,
           "machine": {"platform": platform.platform(), "threads": args.threads, "torch": torch.__version__},
           "rows": rows}
    (RESULTS / "bench_ssd.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
