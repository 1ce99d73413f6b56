"""Cost of the activation points when no hook is registered: forward time with and without the mechanism.

    python benchmarks/bench_hooks.py [--ref COMMIT]

"Without" is the package at ``--ref`` (default: the last commit before the points existed), checked out
into a temporary git worktree; "with" is the working tree. Both run the same timing code in fresh
processes, alternately, several rounds; the best time of each side is kept (minima resist noise) and
the ratio is reported. A second figure times the empty points alone (every point of the model called
once, in process) as a fraction of one forward pass. Writes ``benchmarks/results/bench_hooks.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
#: the last commit before the activation points
DEFAULT_REF = "9e4f752"

#: timing code run in a fresh process with PYTHONPATH set to one version of the package
_TIMER = r"""
import json, sys, time, torch
torch.set_num_threads(1)
import mamba_ode as mo
case = json.loads(sys.argv[1])
torch.manual_seed(0)
cfg = mo.MambaConfig(d_model=case["d_model"], n_layer=case["n_layer"], vocab_size=256, d_state=16)
model = mo.MambaLM(cfg).eval()
ids = torch.randint(0, 256, (1, case["L"]))
best = float("inf")
with torch.no_grad():
    model(ids)
    for _ in range(case["repeat"]):
        t0 = time.perf_counter(); model(ids); best = min(best, time.perf_counter() - t0)
print(json.dumps({"best_s": best}))
"""

CASES = [{"name": "small (embedded-sized)", "d_model": 64, "n_layer": 4, "L": 64, "repeat": 60},
         {"name": "130m-shaped, L = 64", "d_model": 768, "n_layer": 24, "L": 64, "repeat": 8}]


def _time(pythonpath: Path, case: dict) -> float:
    env = dict(os.environ, PYTHONPATH=str(pythonpath), OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", _TIMER, json.dumps(case)], env=env, capture_output=True, text=True,
                         check=True, cwd=tempfile.gettempdir()).stdout
    return float(json.loads(out.strip().splitlines()[-1])["best_s"])


def _empty_points_s() -> dict:
    import time

    import torch

    import mamba_ode as mo

    torch.set_num_threads(1)
    case = CASES[1]
    model = mo.MambaLM(mo.MambaConfig(d_model=case["d_model"], n_layer=case["n_layer"], vocab_size=256,
                                      d_state=16)).eval()
    points = list(model.hook_points().values())
    x = torch.zeros(1)
    best = float("inf")
    for _ in range(200):
        t0 = time.perf_counter()
        for p in points:
            p(x)
        best = min(best, time.perf_counter() - t0)
    return {"points": len(points), "all_points_s": best}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ref", default=DEFAULT_REF, help="commit without the activation points")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        ref_dir = Path(tmp) / "ref"
        subprocess.run(["git", "worktree", "add", "--detach", "-q", str(ref_dir), args.ref], cwd=ROOT, check=True)
        try:
            for case in CASES:
                with_s, without_s = [], []
                for _ in range(args.rounds):  # alternate, so that drifts of the machine hit both sides
                    without_s.append(_time(ref_dir, case))
                    with_s.append(_time(ROOT, case))
                row = {"case": case["name"], "d_model": case["d_model"], "n_layer": case["n_layer"], "L": case["L"],
                       "without_s": min(without_s), "with_s": min(with_s)}
                row["ratio"] = row["with_s"] / row["without_s"]
                rows.append(row)
                print(f"{case['name']:<28} without {row['without_s'] * 1e3:8.2f} ms   "
                      f"with {row['with_s'] * 1e3:8.2f} ms   ratio {row['ratio']:.3f}")
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(ref_dir)], cwd=ROOT, check=False)
    empty = _empty_points_s()
    empty["fraction_of_forward"] = empty["all_points_s"] / rows[1]["with_s"]
    print(f"{empty['points']} empty points called once: {empty['all_points_s'] * 1e6:.1f} µs "
          f"= {100 * empty['fraction_of_forward']:.3f} % of one 130m-shaped forward")
    RESULTS.mkdir(parents=True, exist_ok=True)
    import torch

    out = {"ref": args.ref, "threads": 1, "torch": torch.__version__, "rows": rows, "empty_points": empty}
    (RESULTS / "bench_hooks.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
