"""`mamba-ode analyze` benchmark: wall time of the bare command on the embedded model.

Usage: python benchmarks/bench_analyze.py [--repeat 2] [--out benchmarks/results/bench_analyze.json]

Runs ``python -m mamba_ode analyze --quiet --out <tmp>`` as a fresh process (imports, model load,
analysis, figures, report: what a user waits for), ``repeat`` times, and records the minimum and
each run's per-stage timings from its ``summary.json``. Target: under 60 s on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "bench_analyze.json"))
    args = ap.parse_args()
    runs = []
    for i in range(args.repeat):
        with tempfile.TemporaryDirectory() as d:
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "mamba_ode", "analyze", "--quiet", "--out", d], check=True,
                           capture_output=True, env=dict(os.environ, HF_HUB_OFFLINE="1"))
            wall = time.perf_counter() - t0
            summary = json.loads((Path(d) / "summary.json").read_text())
        runs.append({"wall_s": wall, "stages_s": summary["timings"],
                     "verdicts": [r["trajectory_regime"] for r in summary["layers"]]})
        print(f"run {i}: {wall:.1f} s  stages {summary['timings']}")
    result = {"benchmark": "bench_analyze", "command": "mamba-ode analyze (embedded model)",
              "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__,
                          "threads": torch.get_num_threads()},
              "runs": runs, "best_wall_s": min(r["wall_s"] for r in runs), "target_s": 60.0}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"best: {result['best_wall_s']:.1f} s (target < 60 s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
