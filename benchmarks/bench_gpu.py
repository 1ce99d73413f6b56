"""GPU benchmark: the selective scan's backends, a 130m-shaped model and `mamba-ode analyze` on CUDA.

Usage: python benchmarks/bench_gpu.py [--repeat 5] [--analyze-timeout 100] [--skip-analyze]
                                      [--out benchmarks/results/bench_gpu.json]

Measured (float32 unless stated), each time the minimum over ``repeat`` runs after one warm-up,
with CUDA events around the work and ``torch.cuda.synchronize``:

* the scan (``delta_softplus=True``) at B×E×L×N = 1×1536×2048×16, 8×1536×2048×16, 1×1536×16384×16,
  forward and forward+backward, for ``triton``, ``fast`` and mamba-ssm's kernel (``cuda``) when it
  imports; one bare ``torch.exp`` over a (B, E, L, N) tensor; and the memory-traffic bound: the
  bytes of u, Δ, y (B, E, L) and B, C (B, N, L) in float32 at 4.3 TB/s (H200 HBM) for the
  forward, plus those of dy, du, dΔ (B, E, L) and dB, dC (B, N, L) for the backward;
* a 130m-shaped ``MambaLM`` (24 layers, d_model 768, d_state 16, vocab 50280, random init) forward
  at L = 2048 in float32 and bfloat16 (backend ``auto``);
* ``mamba-ode analyze`` (a fresh process: wall time) on a 130m-shaped random checkpoint in the
  transformers layout, 64 prompt ids, ``--device cuda`` against ``--device cpu``.

Prints a table and writes JSON. Without a CUDA device it prints "no CUDA device: nothing measured"
and exits 0: GPU figures are measured, never estimated.
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
from collections.abc import Callable
from pathlib import Path

import torch

from mamba_ode import MambaConfig, MambaLM
from mamba_ode.nn.scan import cuda_kernel_available, selective_scan, triton_available

HBM_BYTES_PER_S = 4.3e12
DEVICE = "cuda"
SCAN_SHAPES = [(1, 1536, 2048, 16), (8, 1536, 2048, 16), (1, 1536, 16384, 16)]
CFG_130M = dict(d_model=768, n_layer=24, vocab_size=50280, d_state=16)


def cuda_time(fn: Callable[[], object], repeat: int) -> float:
    """Seconds of the fastest of ``repeat`` calls of ``fn`` on the GPU (CUDA events), after a warm-up."""
    fn()
    torch.cuda.synchronize()
    best = float("inf")
    for _ in range(repeat):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        best = min(best, start.elapsed_time(end) / 1e3)
    return best


def traffic_bound_s(b: int, e: int, length: int, n: int) -> tuple[float, float]:
    """(forward, forward+backward) seconds to move the scan's unavoidable float32 bytes at 4.3 TB/s."""
    fwd = 4 * (3 * b * e * length + 2 * b * n * length)  # read u, Δ, B, C; write y
    bwd = 4 * (5 * b * e * length + 4 * b * n * length)  # read u, Δ, dy, B, C; write du, dΔ, dB, dC
    return fwd / HBM_BYTES_PER_S, (fwd + bwd) / HBM_BYTES_PER_S


def _measure(fn: Callable[[], object], repeat: int) -> float | str:
    try:
        return cuda_time(fn, repeat)
    except Exception as exc:  # e.g. out of memory: reported, the run goes on
        torch.cuda.empty_cache()
        return f"error: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}"


def bench_scan(b: int, e: int, length: int, n: int, repeat: int) -> dict:
    """Forward and forward+backward times of each available backend at one shape."""
    dev = DEVICE
    g = torch.Generator(device=dev).manual_seed(0)
    u = torch.randn(b, e, length, device=dev, generator=g)
    delta = 0.5 * torch.randn(b, e, length, device=dev, generator=g)
    A = -torch.rand(e, n, device=dev, generator=g) - 0.1
    B = torch.randn(b, n, length, device=dev, generator=g)
    C = torch.randn(b, n, length, device=dev, generator=g)
    gy = torch.randn(b, e, length, device=dev, generator=g)
    backends = (["triton"] if triton_available() else []) + ["fast"] + (["cuda"] if cuda_kernel_available() else [])
    row: dict = {"shape": [b, e, length, n]}
    for backend in backends:
        leaves = [t.clone().requires_grad_(True) for t in (u, delta, A, B, C)]

        def forward(backend=backend):
            with torch.no_grad():
                return selective_scan(u, delta, A, B, C, delta_softplus=True, backend=backend)

        def forward_backward(backend=backend, leaves=leaves):
            for t in leaves:
                t.grad = None
            y = selective_scan(*leaves, delta_softplus=True, backend=backend)
            y.backward(gy)

        row[backend] = {"fwd_s": _measure(forward, repeat), "fwd_bwd_s": _measure(forward_backward, repeat)}
        del leaves
        torch.cuda.empty_cache()
    big = torch.randn(b, e, length, n, device=dev, generator=g)
    row["exp_BELN_s"] = _measure(lambda big=big: torch.exp(big), repeat)
    del big
    torch.cuda.empty_cache()
    row["bound_fwd_s"], row["bound_fwd_bwd_s"] = traffic_bound_s(b, e, length, n)
    return row


def bench_model(length: int, repeat: int) -> dict:
    """130m-shaped MambaLM forward at one length, float32 and bfloat16 (backend auto)."""
    torch.manual_seed(0)
    model = MambaLM(MambaConfig(**CFG_130M)).eval().to(DEVICE)
    ids = torch.randint(0, CFG_130M["vocab_size"], (1, length), device=DEVICE)
    out = {"L": length, "scan_backend": "cuda" if cuda_kernel_available() else
           ("triton" if triton_available() else "fast")}
    for name, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
        model = model.to(dtype)

        def forward(model=model):
            with torch.no_grad():
                return model(ids).logits

        out[f"{name}_s"] = _measure(forward, repeat)
    del model
    torch.cuda.empty_cache()
    return out


def bench_analyze(timeout: float) -> dict:
    """Wall time of ``mamba-ode analyze`` on a random 130m-shaped checkpoint, --device cuda and cpu."""
    torch.manual_seed(0)
    ids = [str(i) for i in torch.randint(0, CFG_130M["vocab_size"], (64,)).tolist()]
    out: dict = {"prompt_ids": 64, "timeout_s": timeout}
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = MambaLM(MambaConfig(**CFG_130M)).save_pretrained(Path(tmp) / "ckpt")
        for device in ("cuda", "cpu"):
            cmd = [sys.executable, "-m", "mamba_ode", "analyze", str(ckpt), "--prompt-ids", *ids, "--device", device,
                   "--quiet", "--out", str(Path(tmp) / f"report_{device}")]
            t0 = time.perf_counter()
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False,
                                      env=dict(os.environ, HF_HUB_OFFLINE="1"))
                wall: float | str = time.perf_counter() - t0
                if proc.returncode:
                    wall = f"error (exit {proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}"
            except subprocess.TimeoutExpired:
                wall = f"timed out after {timeout:.0f} s"
            out[f"{device}_wall_s"] = wall
    return out


def _fmt(v: float | str) -> str:
    return f"{v * 1e3:9.3f}" if isinstance(v, float) else f"{'n/a':>9}" if v is None else f"{'(' + v[:7] + ')':>9}"


def print_table(result: dict) -> None:
    print(f"GPU: {result['machine']['gpu']}  torch {result['machine']['torch']}  triton {result['machine']['triton']}")
    print("selective scan (float32, softplus), milliseconds")
    print(f"{'B x E x L x N':>20} {'backend':>8} {'fwd':>9} {'fwd+bwd':>9}")
    for row in result["scan"]:
        shape = "x".join(map(str, row["shape"]))
        for k in ("triton", "fast", "cuda"):
            if k in row:
                print(f"{shape:>20} {k:>8} {_fmt(row[k]['fwd_s'])} {_fmt(row[k]['fwd_bwd_s'])}")
        print(f"{shape:>20} {'exp':>8} {_fmt(row['exp_BELN_s'])} {'':>9}")
        print(f"{shape:>20} {'bound':>8} {_fmt(row['bound_fwd_s'])} {_fmt(row['bound_fwd_bwd_s'])}")
    m = result["model_130m"]
    print(f"130m-shaped forward L={m['L']} (scan {m['scan_backend']}): float32 {_fmt(m['float32_s'])} ms, "
          f"bfloat16 {_fmt(m['bfloat16_s'])} ms")
    a = result.get("analyze")
    if a:
        print("mamba-ode analyze (130m-shaped, 64 ids), wall seconds: "
              f"cuda {a['cuda_wall_s'] if isinstance(a['cuda_wall_s'], str) else round(a['cuda_wall_s'], 1)}, "
              f"cpu {a['cpu_wall_s'] if isinstance(a['cpu_wall_s'], str) else round(a['cpu_wall_s'], 1)}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--analyze-timeout", type=float, default=100.0)
    p.add_argument("--skip-analyze", action="store_true")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "bench_gpu.json"))
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("no CUDA device: nothing measured")
        return 0
    triton_version = None
    if triton_available():
        import triton

        triton_version = triton.__version__
    t0 = time.perf_counter()
    result: dict = {
        "benchmark": "bench_gpu",
        "machine": {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "cuda": torch.version.cuda,
                    "triton": triton_version, "mamba_ssm_kernel": cuda_kernel_available(),
                    "platform": platform.platform(), "cpus": os.cpu_count()},
        "hbm_bytes_per_s": HBM_BYTES_PER_S, "repeat": args.repeat,
        "scan": [bench_scan(*shape, repeat=args.repeat) for shape in SCAN_SHAPES],
        "model_130m": bench_model(2048, args.repeat),
    }
    if not args.skip_analyze:
        result["analyze"] = bench_analyze(args.analyze_timeout)
    result["total_s"] = time.perf_counter() - t0
    print_table(result)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out} ({result['total_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
