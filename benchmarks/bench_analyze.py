"""`mamba-ode analyze` benchmark: what a user waits for, on three cases.

Usage: python benchmarks/bench_analyze.py [--repeat 2] [--skip-130m] [--out benchmarks/results/bench_analyze.json]

1. ``mamba-ode analyze --quiet`` on the embedded model (fresh process: imports, load, analysis,
   figures, report). Target: under 10 s on a 2-core CPU.
2. ``mamba-ode analyze`` on a 130m-shaped random transformers checkpoint (24 layers, d_model 768,
   state 16, vocab 50280) with 64 prompt ids, all layers, with ``--workers 1`` (one layer after the
   other) and ``--workers auto`` (the default: one worker process per CPU). Target: under 60 s.
3. The README's per-token recipe (``integrate_tokens`` + ``classify_tokens`` + ``predict_tokens`` on
   layer 0) for a 113-token prompt of the embedded model, as a fresh process. Target: under 10 s.

Each case records the minimum wall time over ``repeat`` runs and the per-stage timings and per-layer
solver statistics of the last run.
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
from timing import checkpoint_130m  # benchmarks/timing.py (the script's directory is on sys.path)

ENV = dict(os.environ, HF_HUB_OFFLINE="1", TQDM_DISABLE="1", MPLBACKEND="Agg")
PROMPT_113 = ("ROMEO: But, soft! what light through yonder window breaks? It is the east, and Juliet is the "
              "sun. Arise, fair sun")
RECIPE = f"""
import mamba_ode as mo
model = mo.load()
u0 = model.token_states({PROMPT_113!r}, 0)
assert u0.shape[1] == 113, u0.shape
sol = mo.integrate_tokens(mo.layer_field(model, 0), u0.double(), 1e4)
labels = mo.classify_tokens(sol)
preds = mo.predict_tokens(model.layer_params(0), u0)
print(labels.counts(), mo.prediction_agreement(preds, labels.tokens)["indicator"]["rate"])
"""


def _timed(cmd: list[str]) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.perf_counter()
    res = subprocess.run(cmd, check=True, capture_output=True, text=True, env=ENV)
    return time.perf_counter() - t0, res


def _analyze_case(name: str, extra: list[str], repeat: int, target: float) -> dict:
    runs = []
    for i in range(repeat):
        with tempfile.TemporaryDirectory() as d:
            wall, _ = _timed([sys.executable, "-m", "mamba_ode", "analyze", *extra, "--quiet", "--out", d])
            summary = json.loads((Path(d) / "summary.json").read_text())
        layers = [{"layer": r["layer"], "counts": r["trajectory"]["counts"], "stats": r["trajectory"]["stats"],
                   "integration_end": r["integration_end"]} for r in summary["layers"]]
        runs.append({"wall_s": wall, "stages_s": summary["timings"], "layers": layers})
        print(f"{name} run {i}: {wall:.1f} s  stages {summary['timings']}", flush=True)
    return {"case": name, "runs": runs, "best_wall_s": min(r["wall_s"] for r in runs), "target_s": target}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--skip-130m", action="store_true", help="only the embedded model and the recipe")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "bench_analyze.json"))
    args = ap.parse_args()
    cases = [_analyze_case("embedded model", [], args.repeat, 10.0)]
    walls = []
    for i in range(args.repeat):
        wall, res = _timed([sys.executable, "-c", RECIPE])
        walls.append(wall)
        print(f"README recipe run {i}: {wall:.1f} s  {res.stdout.strip()}", flush=True)
    cases.append({"case": "README per-token recipe, 113 tokens", "runs": [{"wall_s": w} for w in walls],
                  "best_wall_s": min(walls), "target_s": 10.0})
    if not args.skip_130m:
        with tempfile.TemporaryDirectory() as d:
            src = checkpoint_130m(Path(d) / "m130")
            ids = [str(i) for i in range(100, 164)]
            for workers in ("1", "auto"):  # one layer after the other, then the default (a worker per CPU)
                cases.append(_analyze_case(f"130m-shaped random checkpoint, 64 ids, 24 layers, --workers {workers}",
                                           [str(src), "--prompt-ids", *ids, "--workers", workers], 1, 60.0))
    result = {"benchmark": "bench_analyze",
              "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__,
                          "threads": torch.get_num_threads()},
              "cases": cases}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    for c in cases:
        print(f"{c['case']}: best {c['best_wall_s']:.1f} s (target < {c['target_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
