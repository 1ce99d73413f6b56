"""Stiff steps: the W of a tracked stiff subspace against GMRES at every stage, in one process.

Usage: python benchmarks/bench_stiff.py [--layers 0,5,12,23] [--rounds 1] [--out benchmarks/results/bench_stiff.json]

`integrate_tokens` solves the stages of its ROS34PW2 steps with ``W = I − γh·J_W``, J_W holding the field's
Jacobian on a tracked stiff subspace (rows and columns; `mamba_ode.dynamics.solvers.krylov_w`), or, with
``krylov_w=False``, by GMRES with finite-difference products at every stage. This script integrates layers of
the 130m-shaped random checkpoint of `bench_analyze` (64 prompt ids) and every layer of the embedded model (its
default prompt) both ways, alternated in one process, one thread, with the settings of `mamba-ode analyze`, and
records wall time, field evaluations, reverse-mode products, steps and whether the per-token labels and
blow-up times agree.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import tempfile
import time
from pathlib import Path

import torch
from timing import checkpoint_130m  # benchmarks/timing.py (the script's directory is on sys.path)

import mamba_ode as mo
from mamba_ode.analysis.analyze import DEFAULT_PROMPT

SETTINGS = {"rtol": 1e-5, "atol": 1e-8, "max_steps": 20_000, "blowup_factor": 1e8, "t_max": 1e4}


def _run(field, u0: torch.Tensor, krylov_w: bool) -> dict:
    t0 = time.perf_counter()
    sol = mo.integrate_tokens(field, u0, SETTINGS["t_max"], rtol=SETTINGS["rtol"], atol=SETTINGS["atol"],
                              max_steps=SETTINGS["max_steps"], blowup_factor=SETTINGS["blowup_factor"],
                              krylov_w=krylov_w)
    wall = time.perf_counter() - t0
    return {"wall_s": wall, **{k: int(v) for k, v in sol.stats.items()},
            "labels": [str(v.label) for v in mo.classify_tokens(sol).tokens],
            "t_blowup": [float(x) for x in sol.t_blowup]}


def _case(name: str, field, u0: torch.Tensor, rounds: int) -> dict:
    runs: dict[bool, list[dict]] = {False: [], True: []}
    for _ in range(rounds):
        for kw in (False, True):
            runs[kw].append(_run(field, u0, kw))
    old, new = runs[False][-1], runs[True][-1]
    same_labels = sum(a == b for a, b in zip(old["labels"], new["labels"]))
    both = [(a, b) for a, b in zip(old["t_blowup"], new["t_blowup"]) if math.isfinite(a) and math.isfinite(b)]
    row = {"case": name, "tokens": len(old["labels"]),
           "gmres_s": min(r["wall_s"] for r in runs[False]), "subspace_s": min(r["wall_s"] for r in runs[True]),
           "gmres": {k: v for k, v in old.items() if k not in ("labels", "t_blowup")},
           "subspace": {k: v for k, v in new.items() if k not in ("labels", "t_blowup")},
           "same_labels": same_labels, "changed": [(i, a, b) for i, (a, b) in enumerate(zip(old["labels"],
                                                                                           new["labels"])) if a != b],
           "t_blowup_max_rel_diff": max((abs(a - b) / abs(a) for a, b in both), default=0.0)}
    print(f"{name}: GMRES {row['gmres_s']:.1f} s, {old['nfev']} evaluations | subspace {row['subspace_s']:.1f} s, "
          f"{new['nfev']} evaluations + {new['n_vjp']} reverse-mode | labels equal {same_labels}/{row['tokens']}",
          flush=True)
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", default="0,5,12,23", help="layers of the 130m-shaped checkpoint")
    ap.add_argument("--rounds", type=int, default=1, help="alternated runs of each side (the best is kept)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "bench_stiff.json"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows = []
    emb = mo.load()
    ids = emb.encode(DEFAULT_PROMPT)
    starts = emb.field_starts(ids, list(range(len(emb.layers))))
    for k in range(len(emb.layers)):
        rows.append(_case(f"embedded model, layer {k}", mo.layer_field(emb, k), starts[k].detach().double(),
                          args.rounds))
    with tempfile.TemporaryDirectory() as d:
        model = mo.load(checkpoint_130m(Path(d) / "m130"))
        layers = [int(k) for k in args.layers.split(",")]
        starts = model.field_starts(torch.arange(100, 164)[None], layers)
        for k in layers:
            rows.append(_case(f"130m-shaped, layer {k}", mo.layer_field(model, k), starts[k].detach().double(),
                              args.rounds))
    total = {side: {"wall_s": sum(r[f"{side}_s"] for r in rows),
                    "nfev": sum(r[side]["nfev"] for r in rows), "n_vjp": sum(r[side]["n_vjp"] for r in rows)}
             for side in ("gmres", "subspace")}
    result = {"benchmark": "bench_stiff", "settings": SETTINGS, "rounds": args.rounds,
              "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__,
                          "threads": torch.get_num_threads()},
              "rows": rows, "total": total}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    g, s = total["gmres"], total["subspace"]
    print(f"total: GMRES {g['wall_s']:.1f} s, {g['nfev']} evaluations | subspace {s['wall_s']:.1f} s, {s['nfev']} "
          f"evaluations + {s['n_vjp']} reverse-mode ({s['wall_s'] / g['wall_s']:.2f}× the time)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
