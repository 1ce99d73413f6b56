"""Where `mamba-ode analyze` spends its time on the 130m-shaped checkpoint: the token integrator's segments.

Usage: python benchmarks/bench_segments.py [--layers 0,5] [--out benchmarks/results/bench_segments.json]

`integrate_tokens` follows the active prefix of tokens in segments: from t = 0 with every token, then, after
each event (a blow-up, a growth stop, a stall), with the prefix before the token that ended. This script
integrates every layer of the 130m-shaped random checkpoint of `bench_analyze` (64 prompt ids, the settings
of `mamba-ode analyze`) in one process, one thread, and records per segment: the active tokens m, field
evaluations, accepted and rejected steps, seconds, how it ended (an event, a stall, the horizon or the
budget) and whether stiff (ROS34PW2) steps were taken. It reports the shares by prefix size and by kind of
segment: which part of the work a faster field evaluation, fewer steps or a different stall rule would reach.
The segment hook is the integrator's private ``_Integrator.segment``: a measurement, not an API.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch
from timing import checkpoint_130m  # benchmarks/timing.py (the script's directory is on sys.path)

import mamba_ode as mo
from mamba_ode.dynamics import tokens as tokens_module

#: Prefix sizes grouped as the table shows them (upper bounds, inclusive).
BUCKETS = ((1, "1"), (3, "2–3"), (9, "4–9"), (31, "10–31"), (63, "32–63"), (64, "64"))


def _record_segments(log: list[dict]) -> None:
    """Wrap the integrator's segment method so that each call appends its figures to ``log``."""
    original = tokens_module._Integrator.segment

    def segment(self, u, t, r0):  # noqa: ANN001, ANN202 — the private signature, wrapped as it is
        before = dict(self.stats)
        n_methods = len(self.methods)
        t0 = time.perf_counter()
        out = original(self, u, t, r0)
        seconds = time.perf_counter() - t0
        d = {k: self.stats[k] - before[k] for k in self.stats}
        ended = ("horizon or budget" if out is None else "stall" if d["n_stalls"] else "event")
        log.append({"m": int(u.shape[0]), "t_from": float(t), "t_to": float(out[1]) if out else None,
                    "nfev": d["nfev"], "accepted": d["n_accepted"], "rejected": d["n_rejected"],
                    "seconds": seconds, "ended": ended,
                    "stiff": any(k == "ros34pw2" for k, _, _ in self.methods[n_methods:])})
        return out

    tokens_module._Integrator.segment = segment


def _share(rows: list[dict], total_s: float, total_n: int) -> dict:
    s = sum(r["seconds"] for r in rows)
    n = sum(r["nfev"] for r in rows)
    return {"segments": len(rows), "nfev": n, "seconds": s, "time_share": s / total_s, "nfev_share": n / total_n,
            "ms_per_eval": 1e3 * s / n if n else float("nan")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", default=None, help="comma-separated layer indices (default: all 24)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "bench_segments.json"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    log: list[dict] = []
    _record_segments(log)
    ids = torch.arange(100, 164)[None]
    defaults = {"rtol": 1e-5, "atol": 1e-8, "max_steps": 20_000, "blowup_factor": 1e8, "t_max": 1e4}
    with tempfile.TemporaryDirectory() as d:
        model = mo.load(checkpoint_130m(Path(d) / "m130"))
        layers = [int(k) for k in args.layers.split(",")] if args.layers else list(range(len(model.layers)))
        starts = model.field_starts(ids, layers)
        per_layer = []
        for k in layers:
            first = len(log)
            t0 = time.perf_counter()
            sol = mo.integrate_tokens(mo.layer_field(model, k), starts[k].detach().double(), defaults["t_max"],
                                      rtol=defaults["rtol"], atol=defaults["atol"], max_steps=defaults["max_steps"],
                                      blowup_factor=defaults["blowup_factor"])
            for row in log[first:]:
                row["layer"] = k
            per_layer.append({"layer": k, "seconds": time.perf_counter() - t0, "stats": sol.stats})
            print(f"layer {k}: {per_layer[-1]['seconds']:.1f} s, {sol.stats}", flush=True)
    total_s = sum(r["seconds"] for r in log)
    total_n = sum(r["nfev"] for r in log)
    by_size = []
    low = 1
    for high, name in BUCKETS:
        by_size.append({"prefix": name, **_share([r for r in log if low <= r["m"] <= high], total_s, total_n)})
        low = high + 1
    kinds = {
        "first segment (every token, to the first event)": [r for r in log if r["t_from"] == 0.0],
        "segments ended by a stall": [r for r in log if r["ended"] == "stall"],
        "segments with stiff (ROS34PW2) steps": [r for r in log if r["stiff"]],
        "last segments (to the horizon)": [r for r in log if r["ended"] == "horizon or budget"],
    }
    result = {"benchmark": "bench_segments", "settings": defaults, "prompt_ids": "100..163", "layers": layers,
              "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__,
                          "threads": torch.get_num_threads()},
              "total_seconds": total_s, "total_nfev": total_n, "n_segments": len(log),
              "by_prefix": by_size, "by_kind": {k: _share(v, total_s, total_n) for k, v in kinds.items()},
              "per_layer": per_layer, "segments": log}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"{len(log)} segments, {total_n} evaluations, {total_s:.1f} s")
    for row in by_size:
        print(f"prefix {row['prefix']}: {row['time_share']:.0%} of the time, {row['nfev_share']:.0%} of the evals")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
