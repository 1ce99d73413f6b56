"""Helpers shared by the benchmark scripts (run as ``python benchmarks/bench_*.py``): timing, and an
earlier version of the package imported beside the working tree's for in-process comparisons."""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def import_ref(ref: str, tmp: Path) -> ModuleType:
    """The package at commit ``ref``, extracted into ``tmp`` and importable as ``mamba_ode_ref`` (the
    package uses relative imports only, so it runs under that name beside ``mamba_ode``)."""
    blob = subprocess.run(["git", "archive", "--format=tar", ref, "mamba_ode"], cwd=ROOT, check=True,
                          capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        tar.extractall(tmp, filter="data")
    (tmp / "mamba_ode").rename(tmp / "mamba_ode_ref")
    sys.path.insert(0, str(tmp))
    import mamba_ode_ref  # noqa: PLC0415

    return mamba_ode_ref


def best_time(fn: Callable[[], object], repeat: int) -> float:
    """Seconds of the fastest of ``repeat`` calls of ``fn``, after one warm-up call (minima resist noise)."""
    fn()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def checkpoint_130m(directory: Path) -> Path:
    """A 130m-shaped random transformers checkpoint (24 layers, d_model 768, state 16, vocab 50280, seed 0)
    saved to ``directory``: the model of `bench_analyze` and `bench_field_eval`."""
    import torch  # noqa: PLC0415
    import transformers  # noqa: PLC0415

    torch.manual_seed(0)
    cfg = transformers.MambaConfig(hidden_size=768, num_hidden_layers=24, state_size=16, vocab_size=50280)
    transformers.MambaForCausalLM(cfg).save_pretrained(directory)
    return directory
