"""Run Experiment A (input–output matrix sign) and Experiment B (token reordering) → raw JSON.

Each run is one ``python experiments/training.py {lm,digits}`` process with one torch thread;
``--jobs`` of them (default 1) run side by side. A finished run's raw results go to
``experiments/results/exp_a/<variant>_seed<s>.json`` / ``exp_b/<arm>_seed<s>.json``; run
directories (checkpoints, logs, resumable trainer state) stay outside the repository, under
``--runs-dir``. Re-running skips finished runs and resumes interrupted ones.

Usage::

    python experiments/run_experiments.py                 # both experiments, default seeds
    python experiments/run_experiments.py --only a --ship # A only, then install the seed-0 LMs
    python experiments/run_experiments.py --only b --arms-b reorder-hard  # B's extra hard-permutation arm
    python experiments/make_report.py                     # raw JSON → docs/results.md + plots
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "experiments" / "results"
sys.path.insert(0, str(ROOT))

sys.path.insert(0, str(ROOT / "experiments"))

from training import CACHE_DIR, DIGITS_DEFAULTS, LM_DEFAULTS, SHIPPED_VARIANTS, shakespeare_corpus, ship_run  # noqa: E402

from mamba_ode import load, sym_spectrum  # noqa: E402

VARIANTS = ("baseline", "positive", "negative", "mixed")
ARMS_B = ("baseline", "reorder", "reorder-hard")


def layer_spectra(model, rel_tol: float = 1e-6) -> list[dict]:
    """Per layer: the non-zero eigenvalues of Sym(M), M = S_Cᵀ S_B, and the sign label.

    Computed by the library's `mamba_ode.sym_spectrum` from the low-rank factors; eigenvalues
    with |λ| ≤ rel_tol·max|λ| count as zero.
    """
    out = []
    for k, block in enumerate(model.layers):
        spec = sym_spectrum(block.ssm.detach(), rtol=rel_tol)
        full = spec.full()
        nz = spec.eigenvalues[spec.eigenvalues.abs() > spec.tol]
        out.append({"layer": k, "n_positive": spec.n_pos, "n_negative": spec.n_neg, "label": str(spec.label),
                    "eig_max": float(full.max()), "eig_min": float(full.min()),
                    "nonzero_eigenvalues": [round(float(v), 6) for v in nz]})
    return out


def _subsample(history: list[dict], every: int) -> list[dict]:
    return [h for h in history if h["step"] % every == 0 or h["step"] == history[-1]["step"]]


def run_job(kind: str, arm: str, seed: int, steps: int, runs_dir: Path) -> dict:
    """Run one training process (or resume it) and write its raw result JSON."""
    res_path = RESULTS / f"exp_{kind}" / f"{arm}_seed{seed}.json"
    if res_path.is_file():
        return json.loads(res_path.read_text())
    run_dir = runs_dir / f"exp_{kind}" / f"{arm}_seed{seed}"
    run_dir.mkdir(parents=True, exist_ok=True)
    if kind == "a":
        cmd = [sys.executable, str(ROOT / "experiments" / "training.py"), "lm", "--variant", arm, "--seed", str(seed),
               "--out", str(run_dir), "--steps", str(steps)]
    else:
        cmd = [sys.executable, str(ROOT / "experiments" / "training.py"), "digits", "--seed", str(seed),
               "--out", str(run_dir),
               "--steps", str(steps)] + (["--reorder"] if arm.startswith("reorder") else []) + (
                   ["--hard"] if arm == "reorder-hard" else [])
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TQDM_DISABLE="1",
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    t0 = time.time()
    with open(run_dir / "log.txt", "a") as log:
        subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    wall = time.time() - t0
    metrics = json.loads((run_dir / "metrics.json").read_text())
    meta = json.loads((run_dir / "checkpoint" / "meta.json").read_text())
    result = {"experiment": kind.upper(), "arm": arm, "seed": seed, "run": meta["run"],
              "command": " ".join(["python"] + cmd[1:]).replace(str(run_dir), f"<runs>/exp_{kind}/{arm}_seed{seed}"),
              "final": metrics["final"], "evals": metrics["evals"], "train_seconds": metrics["train_seconds"],
              "wall_seconds_last_invocation": wall,
              "history": _subsample(metrics["history"], 10 if kind == "a" else 5)}
    if kind == "a":
        result["spectra"] = layer_spectra(load(run_dir / "checkpoint"))
    res_path.parent.mkdir(parents=True, exist_ok=True)
    res_path.write_text(json.dumps(result, indent=1))
    print(f"[{time.strftime('%H:%M:%S')}] done {kind} {arm} seed {seed}: {metrics['final']} "
          f"({metrics['train_seconds']:.0f} s)", flush=True)
    return result


def hardware() -> dict:
    """A description of the machine the runs used."""
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "gpu": None, "python": platform.python_version(),
            "torch": torch.__version__, "platform": platform.platform()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--only", choices=("a", "b", "all"), default="all")
    p.add_argument("--seeds-a", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--seeds-b", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    p.add_argument("--arms-b", nargs="+", default=["baseline", "reorder"], choices=ARMS_B,
                   help="reorder: soft SoftSort (the paper's); reorder-hard: straight-through hard permutation")
    p.add_argument("--steps-a", type=int, default=None, help="default: LM_DEFAULTS['steps']")
    p.add_argument("--steps-b", type=int, default=None, help="default: DIGITS_DEFAULTS['steps']")
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--runs-dir", default=str(CACHE_DIR / "runs"))
    p.add_argument("--ship", action="store_true", help="install the seed-0 LMs as the shipped models")
    args = p.parse_args(argv)
    steps_a = args.steps_a or LM_DEFAULTS["steps"]
    steps_b = args.steps_b or DIGITS_DEFAULTS["steps"]
    runs_dir = Path(args.runs_dir)
    jobs = []
    if args.only in ("a", "all"):
        jobs += [("a", v, s, steps_a) for s in args.seeds_a for v in args.variants]
    if args.only in ("b", "all"):
        jobs += [("b", arm, s, steps_b) for s in args.seeds_b for arm in args.arms_b]
    n_new = sum(not (RESULTS / f"exp_{k}" / f"{arm}_seed{s}.json").is_file() for k, arm, s, _ in jobs)
    t0 = time.time()
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = [pool.submit(run_job, k, arm, s, n, runs_dir) for k, arm, s, n in jobs]
        for f in futures:
            f.result()
    wall = time.time() - t0
    if n_new:  # a re-run that only skipped finished runs keeps the recorded timing
        timing_path = RESULTS / "timing.json"
        timing = json.loads(timing_path.read_text()) if timing_path.is_file() else {}
        timing[" ".join(argv if argv is not None else sys.argv[1:]) or "(defaults)"] = {
            "wall_seconds": wall, "jobs": args.jobs, "n_runs": len(jobs), "n_new_runs": n_new,
            "command": "python experiments/run_experiments.py " + " ".join(argv or sys.argv[1:]),
            "hardware": hardware(), "finished": time.strftime("%Y-%m-%d %H:%M:%S")}
        timing_path.parent.mkdir(parents=True, exist_ok=True)
        timing_path.write_text(json.dumps(timing, indent=1))
    if args.ship and args.only in ("a", "all") and 0 in args.seeds_a:
        corpus = shakespeare_corpus()
        for v in args.variants:
            d = ship_run(runs_dir / "exp_a" / f"{v}_seed0", SHIPPED_VARIANTS[v], corpus=corpus,
                         command="python experiments/run_experiments.py --only a --ship")
            print("shipped", d)
    print(f"all done in {wall / 60:.1f} min")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
