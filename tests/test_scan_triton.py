"""The Triton backend of the selective scan against the reference backend.

On the CPU the kernels run through triton's interpreter. ``TRITON_INTERPRET=1`` must be set before
triton builds its kernels, and it switches every kernel of the process to the interpreter; so the
interpreter cases run in ONE subprocess with the variable set (this file run as a script), and the
pytest worker itself never runs triton interpreted (on a GPU machine its other tests use the
compiled kernels). Each case compares outputs, last state, every gradient and the output dtypes
with the ``"reference"`` backend on the same inputs.

Tolerances (max |triton − reference| / max |reference|): float32 1e-5, float64 1e-12; float16 3e-3
(an output or gradient rounding of 2^-11 plus float32 accumulation-order differences); bfloat16
1.6e-2, two bfloat16 ulps: triton's interpreter converts float32 → bfloat16 by truncation (one ulp,
2^-7; compiled kernels round to nearest), and the two backends' float32 values may straddle a
rounding boundary.

GPU tests (marker ``gpu``): the compiled kernels against the reference on CUDA, and a 130m-shaped
``MambaLM`` in float32 on the GPU (backend ``"triton"``, TF32 off) against a float64 CPU run.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch

from mamba_ode.nn import scan as scan_mod
from mamba_ode.nn.scan import selective_scan

ROOT = Path(__file__).resolve().parents[1]
DTYPES = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16, "bfloat16": torch.bfloat16}
TOL = {"float32": 1e-5, "float64": 1e-12, "float16": 3e-3, "bfloat16": 1.6e-2}

_BASE = dict(b=2, e=4, n=4, L=9, B="var", C="var", dtype="float32", D=True, z=True, bias=True, softplus=True,
             out="both", chunk=4, noncontig=False, force_atomic=False)


def _case(**kw) -> dict:
    return {**_BASE, **kw}


_OFF = dict(D=False, z=False, bias=False, softplus=False)
#: interpreter cases: shapes (L not a multiple of the chunk, L = 1, N = 1, odd E), flags, groups,
#: constant and mixed B/C, which outputs carry a gradient, dtypes, strides
CASES = {
    "full": _case(),
    "plain": _case(**_OFF),
    "D-only": _case(**{**_OFF, "D": True}),
    "z-only": _case(**{**_OFF, "z": True}),
    "bias-only": _case(**{**_OFF, "bias": True}),
    "softplus-only": _case(**{**_OFF, "softplus": True}),
    "L1": _case(L=1),
    "L1-E1-N1": _case(b=1, e=1, n=1, L=1),
    "N1": _case(n=1, L=7),
    "E3-L16": _case(e=3, n=3, L=16),
    "many-chunks": _case(b=1, e=6, n=3, L=37, chunk=8),
    "default-chunk": _case(b=1, e=4, n=3, L=37, chunk=16),
    "chunk-5": _case(L=11, chunk=5),
    "grouped-G2": _case(e=8, B="G2", C="G2"),
    "grouped-G3": _case(e=6, n=3, B="G3", C="G3"),
    "grouped-G4": _case(e=4, B="G4", C="G4"),
    "const-B": _case(B="const"),
    "const-C": _case(C="const"),
    "const-both": _case(B="const", C="const", n=5),
    "const-B-grouped-C": _case(e=8, B="const", C="G2"),
    "grouped-B-var-C": _case(e=8, B="G2", C="var"),
    "last-state-only": _case(out="last"),
    "y-only": _case(out="y"),
    "float16": _case(dtype="float16"),
    "bfloat16": _case(dtype="bfloat16"),
    "bfloat16-const-C": _case(dtype="bfloat16", C="const", B="G2", e=8),
    "float64": _case(dtype="float64"),
    "non-contiguous": _case(noncontig=True, B="G2", e=8),
    # token-varying gB / gC by atomic adds into (B, G, N, L) instead of per-block partial sums
    "atomic-grouped": _case(e=8, B="G2", C="var", force_atomic=True),
    "atomic-float64": _case(e=8, B="const", C="G4", dtype="float64", force_atomic=True),
    # a large N (Mamba-2): shorter chunk and smaller channel block to fit the tile budget, atomic adds
    "N64": _case(b=1, e=2, n=64, L=20, chunk=16),
}


def make_inputs(c: dict, device: str = "cpu") -> dict:
    """Random inputs of a case; half-precision cases keep A, D and delta_bias in float32 (as mamba-ssm)."""
    g = torch.Generator().manual_seed(c["b"] * 1000 + c["e"] * 100 + c["n"] * 10 + c["L"])
    b, e, n, length = c["b"], c["e"], c["n"], c["L"]
    dt = DTYPES[c["dtype"]]
    pd = torch.float64 if dt == torch.float64 else torch.float32

    def r(*shape, scale=1.0, dtype=dt):
        return (scale * torch.randn(*shape, generator=g, dtype=torch.float64)).to(dtype).to(device)

    def io(kind):
        if kind == "const":
            return r(e, n, dtype=pd)
        if kind == "var":
            return r(b, n, length)
        return r(b, int(kind[1:]), n, length)

    x = dict(u=r(b, e, length), delta=r(b, e, length, scale=0.5),
             A=(-(torch.rand(e, n, generator=g, dtype=torch.float64) * 2 + 0.05)).to(pd).to(device),
             B=io(c["B"]), C=io(c["C"]), D=r(e, dtype=pd), z=r(b, e, length), delta_bias=r(e, scale=0.3, dtype=pd))
    for k in ("D", "z"):
        if not c[k]:
            x.pop(k)
    if not c["bias"]:
        x.pop("delta_bias")
    if c["noncontig"]:  # the same values through transposed storage
        for k in ("u", "delta", "z"):
            x[k] = x[k].transpose(1, 2).contiguous().transpose(1, 2)
        x["B"] = x["B"].transpose(-1, -2).contiguous().transpose(-1, -2)
        assert not x["u"].is_contiguous()
    return x


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


def run_case(c: dict, backend: str, device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Outputs, last state and gradients of one backend on one case (fixed random output weights)."""
    leaves = {k: v.detach().clone().requires_grad_(True) for k, v in make_inputs(c, device).items()}
    y, h = selective_scan(**leaves, delta_softplus=c["softplus"], return_last_state=True, backend=backend,
                          chunk_size=c["chunk"])
    g = torch.Generator().manual_seed(99)
    wy = torch.randn(y.shape, generator=g, dtype=torch.float64).to(y.dtype).to(device)
    wh = torch.randn(h.shape, generator=g, dtype=torch.float64).to(h.dtype).to(device)
    loss = {"both": (y * wy).sum() + (h * wh).sum(), "y": (y * wy).sum(), "last": (h * wh).sum()}[c["out"]]
    loss.backward()
    # an input the loss does not reach (C, D, z when only the last state is used) has no autograd
    # gradient in the reference backend: zeros
    return y.detach(), h.detach(), {k: v.grad if v.grad is not None else torch.zeros_like(v) for k, v in
                                    leaves.items()}


def compare_case(c: dict, device: str = "cpu") -> dict:
    """Relative errors of the triton backend against the reference one, and dtype checks."""
    kernels = importlib.import_module("mamba_ode.nn.scan_triton")
    ratio = kernels.PARTIAL_MAX_RATIO
    t0 = time.perf_counter()
    try:
        if c["force_atomic"]:
            kernels.PARTIAL_MAX_RATIO = -1
        yt, ht, gt = run_case(c, "triton", device)
    finally:
        kernels.PARTIAL_MAX_RATIO = ratio
    seconds = time.perf_counter() - t0
    yr, hr, gr = run_case(c, "reference", device)
    x = make_inputs(c)
    errs = {"y": _rel(yt, yr), "last": _rel(ht, hr)}
    errs.update({f"grad_{k}": _rel(gt[k], gr[k]) for k in gr})
    want_last = torch.float64 if c["dtype"] == "float64" else torch.float32
    dtype_ok = {"y": yt.dtype == x["u"].dtype, "last": ht.dtype == want_last == hr.dtype}
    dtype_ok.update({f"grad_{k}": gt[k].dtype == x[k].dtype and gt[k].shape == x[k].shape for k in gr})
    return {"errors": errs, "dtypes_ok": dtype_ok, "seconds": seconds}


def _child_main() -> None:
    """Run every interpreter case (this process has TRITON_INTERPRET=1) and print one JSON line."""
    torch.set_num_threads(1)
    out = {}
    for name, c in CASES.items():
        try:
            out[name] = compare_case(c)
        except Exception as exc:  # reported per case by the parent's tests
            out[name] = {"error": f"{type(exc).__name__}: {exc}"}
    print("RESULTS " + json.dumps(out))


@pytest.fixture(scope="module")
def interpreter_results() -> dict:
    pytest.importorskip("triton")
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get(
        "PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--interpreter-cases"], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=600, check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULTS ")]
    assert proc.returncode == 0 and lines, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(lines[-1][len("RESULTS "):])


@pytest.mark.parametrize("name", list(CASES))
def test_triton_interpreter_matches_reference(name, interpreter_results):
    """Outputs, last state, all gradients and dtypes of backend='triton' (interpreted) vs 'reference'."""
    res = interpreter_results[name]
    assert "error" not in res, res.get("error")
    tol = TOL[CASES[name]["dtype"]]
    bad = {k: v for k, v in res["errors"].items() if not v <= tol}
    assert not bad, f"relative errors above {tol}: {bad}"
    assert all(res["dtypes_ok"].values()), res["dtypes_ok"]


# ----------------------------------------------------------------------------- routing, import, errors


def test_triton_on_cpu_without_interpreter_names_the_fix():
    pytest.importorskip("triton")
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        pytest.skip("this process runs triton interpreted")
    x = make_inputs(_case())
    with pytest.raises(ValueError, match="TRITON_INTERPRET"):
        selective_scan(**x, backend="triton")


def test_triton_missing_raises_import_error(monkeypatch):
    monkeypatch.setattr(scan_mod, "triton_available", lambda: False)
    with pytest.raises(ImportError, match="pip install triton"):
        selective_scan(**make_inputs(_case()), backend="triton")


def test_package_imports_and_scans_without_triton():
    """With triton unimportable: mamba_ode imports, CPU scans run, triton_available() is False."""
    code = ("import sys; sys.modules['triton'] = None\n"
            "import torch, mamba_ode\n"
            "from mamba_ode.nn.scan import selective_scan, triton_available\n"
            "x = torch.randn(1, 2, 5)\n"
            "y = selective_scan(x, x, -torch.ones(2, 3), torch.randn(1, 3, 5), torch.randn(2, 3))\n"
            "print(triton_available(), tuple(y.shape), 'mamba_ode.nn.scan_triton' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.split() == ["False", "(1,", "2,", "5)", "False"]


def test_triton_not_imported_at_package_import():
    code = "import sys, mamba_ode, mamba_ode.nn.lm; print('mamba_ode.nn.scan_triton' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "False"


class _OnCuda:
    """Stands for a CUDA tensor in the routing logic (is_cuda, requires_grad)."""

    is_cuda = True

    def __init__(self, requires_grad: bool = False):
        self.requires_grad = requires_grad


@pytest.mark.parametrize("mamba_ssm,accepts,triton,last_grad,want,warns", [
    (True, True, True, False, "cuda", False),
    (True, False, True, False, "triton", False),  # dtypes mamba-ssm's kernel refuses (e.g. float64)
    (True, True, True, True, "triton", False),  # mamba-ssm ignores a gradient into the last state
    (False, True, True, False, "triton", False),
    (False, True, False, False, "fast", True),
])
def test_auto_routing_for_cuda_tensors(monkeypatch, mamba_ssm, accepts, triton, last_grad, want, warns):
    monkeypatch.setattr(scan_mod, "cuda_kernel_available", lambda: mamba_ssm)
    monkeypatch.setattr(scan_mod, "_cuda_kernel_accepts", lambda *a: accepts)
    monkeypatch.setattr(scan_mod, "triton_available", lambda: triton)
    monkeypatch.setattr(scan_mod, "_GPU_WARNED", False)
    u = _OnCuda(requires_grad=last_grad)
    args = (u, u, u, u, u, None, None, None)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        got = scan_mod._choose_backend("auto", *args, return_last_state=last_grad)
        scan_mod._choose_backend("auto", *args, return_last_state=last_grad)  # one warning, not two
    assert got == want
    assert sum(issubclass(w.category, RuntimeWarning) for w in rec) == (1 if warns else 0)


def test_cuda_backend_without_kernel_uses_triton_on_cuda(monkeypatch):
    monkeypatch.setattr(scan_mod, "cuda_kernel_available", lambda: False)
    monkeypatch.setattr(scan_mod, "triton_available", lambda: True)
    monkeypatch.setattr(scan_mod, "_CUDA_WARNED", False)
    u = _OnCuda()
    with pytest.warns(RuntimeWarning, match="'triton'"):
        assert scan_mod._choose_backend("cuda", u, u, u, u, u, None, None, None, False) == "triton"


def test_cpu_tensors_route_to_fast(monkeypatch):
    monkeypatch.setattr(scan_mod, "triton_available", lambda: True)
    x = make_inputs(_case(dtype="float64"))
    assert scan_mod._choose_backend("auto", *(x[k] for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")),
                                    False) == "fast"


# ----------------------------------------------------------------------------- GPU

gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _compiled_triton_or_skip() -> None:
    pytest.importorskip("triton")
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        pytest.skip("TRITON_INTERPRET is set: the kernels would not be compiled")

GPU_CASES = ["full", "plain", "L1", "N1", "many-chunks", "grouped-G2", "const-B-grouped-C", "grouped-B-var-C",
             "last-state-only", "float16", "bfloat16", "float64", "non-contiguous"]


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("name", GPU_CASES)
def test_compiled_triton_matches_reference_on_cuda(name):
    _compiled_triton_or_skip()
    res = compare_case(CASES[name], device="cuda")
    tol = TOL[CASES[name]["dtype"]]
    bad = {k: v for k, v in res["errors"].items() if not v <= tol}
    assert not bad, bad
    assert all(res["dtypes_ok"].values()), res["dtypes_ok"]


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("length", [1000, 4096])
def test_compiled_triton_long_sequences_on_cuda(length):
    _compiled_triton_or_skip()
    res = compare_case(_case(b=2, e=64, n=16, L=length, chunk=16), device="cuda")
    assert max(res["errors"].values()) <= 1e-4, res["errors"]


@pytest.mark.gpu
@gpu
def test_130m_shaped_model_float32_gpu_matches_float64_cpu():
    """24 layers, d_model 768, d_state 16, vocab 50280, random init; L = 512 float32 logits on the GPU
    (backend 'triton', TF32 off for matmuls and cuDNN) against float64 on the CPU: ≤ 1e-4 relative.

    L = 512 rather than 2048 keeps the float64 CPU run (the oracle) to seconds.
    """
    _compiled_triton_or_skip()
    import copy

    import mamba_ode

    torch.manual_seed(0)
    cfg = mamba_ode.MambaConfig(d_model=768, n_layer=24, vocab_size=50280, d_state=16, residual_in_fp32=False)
    model = mamba_ode.MambaLM(cfg).eval()
    ids = torch.randint(0, cfg.vocab_size, (1, 512))
    threads = torch.get_num_threads()
    tf32 = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    try:
        torch.set_num_threads(os.cpu_count() or 1)
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        with torch.no_grad():
            ref = copy.deepcopy(model).double()(ids).logits
            got = model.cuda()(ids.cuda(), backend="triton").logits.cpu()
    finally:
        torch.set_num_threads(threads)
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
    assert got.dtype == torch.float32
    assert _rel(got, ref) <= 1e-4


if __name__ == "__main__" and "--interpreter-cases" in sys.argv:
    _child_main()
