"""One evaluation of a layer's vector field, as the token integrator calls it: this package against an
earlier commit, each in fresh processes.

    python benchmarks/bench_field_eval.py [--ref COMMIT] [--threads 2] [--rounds 3]

The reference is the package as it was at ``--ref`` (default: the last commit before the scan's forward
ran without an autograd tape and reused its chunk buffers), extracted and imported as ``mamba_ode_ref``.
Each side loads the 130m-shaped random checkpoint of `bench_analyze` (24 layers, E = 1536, N = 16,
R = 48) with its own ``load``, as an analysis does, and evaluates the float64 S6 field of layer 5 at the
same real token states (prompt ids 100, 101, ...) under ``torch.no_grad()``, for prompt
prefixes of L tokens (the integrator's active prefixes shrink to a few tokens after events). Each side
runs in its own fresh process — the memory allocator's state is part of what is measured — and the two
alternate for ``--rounds`` rounds; per L and side the mean time of a call (a solver pays every call, so
a minimum would hide a cost paid on most calls) of the best round is kept, the ratio reported, and the
outputs of the two sides must be equal bit for bit. Writes ``benchmarks/results/bench_field_eval.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from timing import ROOT, checkpoint_130m, import_ref  # benchmarks/timing.py (on sys.path)

RESULTS = ROOT / "benchmarks" / "results"
#: the last commit before the tape-free forward and the reused chunk buffers
DEFAULT_REF = "1d13c4e"
LENGTHS = ((1, 2000), (2, 2000), (16, 600), (64, 200))  # (L, calls)
LAYER = 5


def _side(which: str, ref: str, threads: int, checkpoint: str) -> dict:
    """Time one side in this (fresh) process: {L: mean seconds per call}, and a digest of every output."""
    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        pkg = import_ref(ref, Path(tmp)) if which == "ref" else importlib.import_module("mamba_ode")
        model = pkg.load(checkpoint)  # the whole model, as an analysis holds it: the heap's history decides
        # how the allocator serves the scan's multi-megabyte temporaries
        ids = torch.arange(100, 100 + max(L for L, _ in LENGTHS))[None]
        u_all = model.field_starts(ids, [LAYER])[LAYER].double()
        field = pkg.layer_field(model, LAYER)
        digest, best = hashlib.sha256(), {}
        for L, calls in LENGTHS:
            u = u_all[:, :L].contiguous()
            digest.update(field(0.0, u).numpy().tobytes())
            t0 = time.perf_counter()
            for _ in range(calls):
                field(0.0, u)
            best[L] = (time.perf_counter() - t0) / calls  # the mean: a solver pays every call
    return {"best": best, "digest": digest.hexdigest()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ref", default=DEFAULT_REF, help="the commit to compare with")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--side", choices=("ref", "new"), help=argparse.SUPPRESS)  # one side, in a child process
    ap.add_argument("--checkpoint", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.side:
        print(json.dumps(_side(args.side, args.ref, args.threads, args.checkpoint)))
        return
    best: dict[str, dict[int, float]] = {"ref": {}, "new": {}}
    digests = set()
    with tempfile.TemporaryDirectory() as d:
        ckpt = checkpoint_130m(Path(d) / "m130")
        for _ in range(args.rounds):  # alternate fresh processes, so that drifts of the machine hit both sides
            for side in ("ref", "new"):
                res = subprocess.run([sys.executable, __file__, "--side", side, "--ref", args.ref, "--threads",
                                      str(args.threads), "--checkpoint", str(ckpt)], check=True,
                                     capture_output=True, text=True, cwd=ROOT)
                got = json.loads(res.stdout.strip().splitlines()[-1])
                digests.add(got["digest"])
                for L, sec in got["best"].items():
                    best[side][int(L)] = min(best[side].get(int(L), float("inf")), sec)
    if len(digests) != 1:
        raise SystemExit("the two sides computed different fields")
    rows = []
    for L, calls in LENGTHS:
        row = {"L": L, "calls": calls, "ref_s": best["ref"][L], "new_s": best["new"][L],
               "speedup": best["ref"][L] / best["new"][L]}
        rows.append(row)
        print(f"L = {L:3d}: {args.ref} {row['ref_s'] * 1e3:7.3f} ms   now {row['new_s'] * 1e3:7.3f} ms   "
              f"speed-up {row['speedup']:.2f}×", flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = {"benchmark": "bench_field_eval", "ref": args.ref, "rounds": args.rounds,
           "layer": {"layer": LAYER, "E": 1536, "N": 16, "R": 48, "dtype": "float64"},
           "machine": {"platform": platform.platform(), "threads": args.threads, "torch": torch.__version__},
           "rows": rows}
    (RESULTS / "bench_field_eval.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
