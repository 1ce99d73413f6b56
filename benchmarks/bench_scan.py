"""Scan benchmark: reference vs fast vs one bare torch.exp over (B, E, L, N).

Usage: python benchmarks/bench_scan.py [--lengths 256 1024 2048] [--repeat 3] [--out benchmarks/results/bench_scan.json]

Prints a table and writes JSON. Times are minima over repeats; ratios are computed within the run.
Memory: the largest tensor any op of the fast scan touches (from torch.profiler's recorded
shapes), compared with the size of one (B, E, L, N) float32 tensor.
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import torch
from timing import best_time  # benchmarks/timing.py (the script's directory is on sys.path)

from mamba_ode.nn.scan import DEFAULT_CHUNK, selective_scan


def largest_tensor_numel(fn) -> int:
    """Largest number of elements of any tensor passed to any op while fn runs (torch.profiler shapes)."""
    import math

    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        fn()
    biggest = 0
    for ev in prof.events():
        for shape in ev.input_shapes or []:
            if isinstance(shape, (list, tuple)) and shape and all(isinstance(x, int) for x in shape):
                biggest = max(biggest, math.prod(shape))
    return biggest


def _time_exp(b: int, e: int, length: int, n: int, repeat: int) -> float:
    """Time one bare torch.exp over a (B, E, L, N) tensor: the work no scan can avoid."""
    big = torch.randn(b, e, length, n)
    return best_time(lambda: torch.exp(big), repeat)


def bench_length(b: int, e: int, n: int, length: int, repeat: int, run_reference: bool = True) -> dict:
    """Time reference, fast and one bare exp over (B, E, L, N) at one length; return a result row."""
    u = torch.randn(b, e, length)
    delta = 0.5 * torch.randn(b, e, length)
    A = -torch.rand(e, n) - 0.1
    B = torch.randn(b, n, length)
    C = torch.randn(b, n, length)

    def fast():
        return selective_scan(u, delta, A, B, C, delta_softplus=True, backend="fast")

    def reference():
        return selective_scan(u, delta, A, B, C, delta_softplus=True, backend="reference")

    t_exp = _time_exp(b, e, length, n, repeat)
    t_fast = best_time(fast, repeat)
    t_ref = best_time(reference, 1) if run_reference else float("nan")
    full_bytes = b * e * length * n * 4
    largest = 4 * largest_tensor_numel(fast)
    return dict(L=length, reference_s=t_ref, fast_s=t_fast, exp_s=t_exp, speedup_vs_reference=t_ref / t_fast,
                fast_over_exp=t_fast / t_exp, fast_largest_tensor_bytes=largest, BELN_bytes=full_bytes,
                largest_over_BELN=largest / full_bytes)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--lengths", type=int, nargs="+", default=[256, 1024, 2048])
    p.add_argument("--E", type=int, default=1536)
    p.add_argument("--N", type=int, default=16)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--skip-reference-above", type=int, default=4096)
    p.add_argument("--out", default="benchmarks/results/bench_scan.json")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    rows = []
    b, e, n = 1, args.E, args.N
    for length in args.lengths:
        rows.append(bench_length(b, e, n, length, args.repeat, run_reference=length <= args.skip_reference_above))
    result = dict(benchmark="selective_scan", B=b, E=e, N=n, dtype="float32", chunk=DEFAULT_CHUNK,
                  torch=torch.__version__, threads=torch.get_num_threads(), machine=platform.machine(),
                  processor=platform.processor(), rows=rows)
    hdr = f"{'L':>6} {'reference':>10} {'fast':>9} {'exp':>9} {'ref/fast':>9} {'fast/exp':>9} {'max/BELN':>10}"
    print(f"selective_scan  B={b} E={e} N={n} float32  torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(hdr)
    for r in rows:
        print(f"{r['L']:>6} {r['reference_s'] * 1e3:>8.1f}ms {r['fast_s'] * 1e3:>7.1f}ms {r['exp_s'] * 1e3:>7.1f}ms "
              f"{r['speedup_vs_reference']:>9.1f} {r['fast_over_exp']:>9.2f} {r['largest_over_BELN']:>10.3f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
