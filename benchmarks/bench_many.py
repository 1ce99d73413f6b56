"""`analyze_many` on 50 prompts of the embedded model: serial, batched and Ray executors.

    python benchmarks/bench_many.py [--ray-cpus 2]

The 50 prompts are the 8-byte windows of tutorial 4; every layer, t_max = 100. Each executor runs once
in this process (Ray on a local instance limited to ``--ray-cpus`` CPUs, its start-up included in its
wall time and also given apart). The results of the three runs are checked equal (labels and t*).
Writes ``benchmarks/results/bench_many.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

import mamba_ode as mo

RESULTS = Path(__file__).resolve().parent / "results"
PASSAGE = ("To be, or not to be, that is the question: Whether 'tis nobler in the mind to suffer "
           "The slings and arrows of outrageous fortune, Or to take arms against a sea of troubles "
           "And by opposing end them. To die-to sleep, No more; and by a sleep to say we end "
           "The heart-ache and the thousand natural shocks That flesh is heir to")


def _labels(many: mo.ManyAnalysis) -> list:
    return [[[(t["label"], t["t_blowup"]) for t in rec["tokens"]] for rec in r.layers] for r in many.results]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ray-cpus", type=int, default=2)
    args = ap.parse_args()
    prompts = [PASSAGE[i:i + 8] for i in range(0, len(PASSAGE) - 8, len(PASSAGE) // 50)][:50]
    model = mo.load()
    rows, results = [], {}
    for executor in ("serial", "batched", "ray"):
        t0 = time.perf_counter()
        startup = 0.0
        if executor == "ray":
            import ray

            ray.init(num_cpus=args.ray_cpus, include_dashboard=False, log_to_driver=False, configure_logging=False)
            startup = time.perf_counter() - t0
        try:
            many = mo.analyze_many(model, prompts, t_max=100.0, executor=executor)
        finally:
            if executor == "ray":
                ray.shutdown()
        wall = time.perf_counter() - t0
        results[executor] = _labels(many)
        rows.append({"executor": executor, "wall_s": wall, "startup_s": startup})
        print(f"{executor:<8} {wall:7.1f} s" + (f"  (Ray start-up {startup:.1f} s)" if startup else ""))
    serial = rows[0]["wall_s"]
    for r in rows:
        r["speedup_vs_serial"] = serial / r["wall_s"]
    same = {ex: all(a[0] == b[0] and (a[1] is None or abs(a[1] - b[1]) <= 1e-6 * abs(a[1]))
                    for pa, pb in zip(results["serial"], results[ex]) for la, lb in zip(pa, pb) for a, b in zip(la, lb))
            for ex in results}
    print("results equal to serial:", same)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = {"n_prompts": len(prompts), "tokens_per_prompt": 8, "layers": model.config.n_layer, "t_max": 100.0,
           "cores": len(os.sched_getaffinity(0)), "ray_cpus": args.ray_cpus, "torch_threads": torch.get_num_threads(),
           "rows": rows, "equal_to_serial": same}
    (RESULTS / "bench_many.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
