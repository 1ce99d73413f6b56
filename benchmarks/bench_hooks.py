"""Cost of the activation points when no hook is registered: forward time with and without the mechanism.

    python benchmarks/bench_hooks.py [--ref COMMIT]

"Without" is the package as it was at ``--ref`` (default: the last commit before the points existed),
extracted under the name ``mamba_ode_ref`` and imported beside the working tree's ``mamba_ode`` in the
same process. Both build the same model (same weights) and their forward passes are timed
alternately, one call each in turn, many times; the best time of each is kept (minima resist noise)
and the ratio reported. A second figure times the empty points alone (every point of the model
called once) as a fraction of one forward pass. Writes ``benchmarks/results/bench_hooks.json``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from timing import ROOT, import_ref  # benchmarks/timing.py (the script's directory is on sys.path)

RESULTS = ROOT / "benchmarks" / "results"
#: the last commit before the activation points
DEFAULT_REF = "9e4f752"

CASES = [{"name": "small (embedded-sized)", "d_model": 64, "n_layer": 4, "L": 64, "calls": 400},
         {"name": "130m-shaped, L = 64", "d_model": 768, "n_layer": 24, "L": 64, "calls": 40}]


def _pair(mo, ref, case: dict):
    cfg = dict(d_model=case["d_model"], n_layer=case["n_layer"], vocab_size=256, d_state=16)
    torch.manual_seed(0)
    new = mo.MambaLM(mo.MambaConfig(**cfg)).eval()
    old = ref.MambaLM(ref.MambaConfig(**cfg)).eval()
    old.load_state_dict(new.state_dict())
    return new, old


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ref", default=DEFAULT_REF, help="commit without the activation points")
    args = ap.parse_args()
    torch.set_num_threads(1)
    import mamba_ode as mo

    rows = []
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        ref = import_ref(args.ref, Path(tmp))
        for case in CASES:
            new, old = _pair(mo, ref, case)
            ids = torch.randint(0, 256, (1, case["L"]), generator=torch.Generator().manual_seed(1))
            assert torch.equal(new(ids).logits, old(ids).logits)  # the same network
            best = {"with": float("inf"), "without": float("inf")}
            for _ in range(case["calls"]):  # alternate, so that drifts of the machine hit both sides
                for side, model in (("without", old), ("with", new)):
                    t0 = time.perf_counter()
                    model(ids)
                    best[side] = min(best[side], time.perf_counter() - t0)
            row = {"case": case["name"], "d_model": case["d_model"], "n_layer": case["n_layer"], "L": case["L"],
                   "calls": case["calls"], "without_s": best["without"], "with_s": best["with"],
                   "ratio": best["with"] / best["without"]}
            rows.append(row)
            print(f"{case['name']:<28} without {row['without_s'] * 1e3:8.2f} ms   "
                  f"with {row['with_s'] * 1e3:8.2f} ms   ratio {row['ratio']:.3f}")
        model = _pair(mo, ref, CASES[1])[0]
        points = list(model.hook_points().values())
        x = torch.zeros(1)
        empty = float("inf")
        for _ in range(200):
            t0 = time.perf_counter()
            for p in points:
                p(x)
            empty = min(empty, time.perf_counter() - t0)
    out_empty = {"points": len(points), "all_points_s": empty, "fraction_of_forward": empty / rows[1]["with_s"]}
    print(f"{len(points)} empty points called once: {empty * 1e6:.1f} µs "
          f"= {100 * out_empty['fraction_of_forward']:.3f} % of one 130m-shaped forward")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = {"ref": args.ref, "threads": 1, "torch": torch.__version__, "rows": rows, "empty_points": out_empty}
    (RESULTS / "bench_hooks.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
