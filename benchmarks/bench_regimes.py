"""Regime benchmark: spectrum of Sym(M) from low-rank factors vs dense eigvalsh, and the 24-layer table.

Usage: python benchmarks/bench_regimes.py [--repeat 5] [--out benchmarks/results/bench_regimes.json]

Times are minima over repeats (seconds). The model is a randomly initialised mamba-130m-shaped
MambaLM (24 layers, d_model 768, E 1536, N 16, R 48; a small vocabulary, which the table does not read).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
from timing import best_time  # benchmarks/timing.py (the script's directory is on sys.path)

from mamba_ode import MambaConfig, MambaLM
from mamba_ode.regimes import regime_table, sym_spectrum


def bench_spectrum(e: int, n: int, repeat: int, dtype: torch.dtype) -> dict:
    """Low-rank spectrum vs dense eigvalsh of Sym(M) at one size; max abs difference of the spectra."""
    g = torch.Generator().manual_seed(0)
    S_B = torch.randn(n, e, generator=g, dtype=torch.float64).to(dtype)
    S_C = torch.randn(n, e, generator=g, dtype=torch.float64).to(dtype)

    def dense():
        M = S_C.T @ S_B
        return torch.linalg.eigvalsh(0.5 * (M + M.T))

    t_low = best_time(lambda: sym_spectrum(S_B, S_C), repeat)
    t_dense = best_time(dense, max(1, repeat // 2))
    diff = float((sym_spectrum(S_B, S_C).full() - dense()).abs().max())
    return {"E": e, "N": n, "dtype": str(dtype).replace("torch.", ""), "low_rank_s": t_low, "dense_eigvalsh_s": t_dense,
            "speedup": t_dense / t_low, "max_abs_diff": diff}


def bench_table(repeat: int) -> dict:
    """Build a random mamba-130m-shaped model and time regime_table on it."""
    torch.manual_seed(0)
    t0 = time.perf_counter()
    model = MambaLM(MambaConfig(d_model=768, n_layer=24, vocab_size=256, d_state=16))
    build = time.perf_counter() - t0
    t_table = best_time(lambda: regime_table(model), repeat)
    table = regime_table(model)
    return {"n_layer": 24, "d_inner": 1536, "d_state": 16, "dt_rank": model.config.dt_rank,
            "dtype": "float32 weights, float64 spectra", "model_build_s": build, "table_s": t_table,
            "labels": sorted({r.label for r in table}), "first_row": table[0].to_dict()}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--out", default="benchmarks/results/bench_regimes.json")
    args = ap.parse_args(argv)
    result = {
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "torch": torch.__version__, "threads": torch.get_num_threads()},
        "spectrum": [bench_spectrum(1536, 16, args.repeat, torch.float32),
                     bench_spectrum(1536, 16, args.repeat, torch.float64),
                     bench_spectrum(64, 16, args.repeat, torch.float64)],
        "table": bench_table(args.repeat),
    }
    print(f"{'E':>5} {'N':>3} {'dtype':>8} {'low-rank s':>11} {'dense s':>9} {'speedup':>8} {'max|diff|':>10}")
    for r in result["spectrum"]:
        print(f"{r['E']:>5} {r['N']:>3} {r['dtype']:>8} {r['low_rank_s']:>11.2e} {r['dense_eigvalsh_s']:>9.2e} "
              f"{r['speedup']:>8.0f} {r['max_abs_diff']:>10.1e}")
    t = result["table"]
    print(f"24-layer table (E=1536, N=16): {t['table_s']:.3f} s (model build {t['model_build_s']:.1f} s)")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
