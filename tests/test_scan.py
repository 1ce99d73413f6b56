"""The shared selective scan: backends agree on outputs, last state and gradients; causality; errors."""

from __future__ import annotations

import warnings

import pytest
import torch

from mamba_ode.nn import scan as scan_mod
from mamba_ode.nn.scan import cuda_kernel_available, selective_scan, triton_available

# relative tolerance between backends, per dtype
REL = {torch.float32: 1e-5, torch.float64: 1e-12}


def _inputs(b, e, n, length, groups=1, dtype=torch.float64, seed=0, device="cpu", b_kind=None, c_kind=None):
    """Random scan inputs. B and C are (B, N, L) (groups=1) or (B, G, N, L); ``b_kind`` / ``c_kind``
    override each: "const" (E, N), "var" (B, N, L) or "G<k>" (B, k, N, L)."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape, scale=1.0):
        return (scale * torch.randn(*shape, generator=g, dtype=torch.float64)).to(dtype).to(device)

    def io(kind):
        if kind == "const":
            return r(e, n)
        if kind == "var":
            return r(b, n, length)
        return r(b, int(kind[1:]), n, length)

    default = "var" if groups == 1 else f"G{groups}"
    return dict(
        u=r(b, e, length),
        delta=r(b, e, length, scale=0.5),
        A=(-torch.rand(e, n, generator=g, dtype=torch.float64) * 2 - 0.05).to(dtype).to(device),
        B=io(b_kind or default),
        C=io(c_kind or default),
        D=r(e),
        z=r(b, e, length),
        delta_bias=r(e, scale=0.3),
    )


def _plain_recurrence(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """The discrete recurrence written out per channel and token in float64, independent of the scan.

    B and C: (E, N) constant, (B, N, L), or (B, G, N, L), each on its own.
    """
    u, delta, A, B, C = (t.double() for t in (u, delta, A, B, C))
    b, e, length = u.shape
    n = A.shape[1]

    def coefficient(X, bi, d, t):  # the N-vector of B or C for channel d at token t
        if X.dim() == 2:
            return X[d]
        if X.dim() == 3:
            return X[bi, :, t]
        return X[bi, d // (e // X.shape[1]), :, t]

    if delta_bias is not None:
        delta = delta + delta_bias.double()[None, :, None]
    if delta_softplus:
        delta = torch.log1p(torch.exp(delta))
    y = torch.zeros(b, e, length, dtype=torch.float64)
    hlast = torch.zeros(b, e, n, dtype=torch.float64)
    for bi in range(b):
        for d in range(e):
            h = torch.zeros(n, dtype=torch.float64)
            for t in range(length):
                h = torch.exp(delta[bi, d, t] * A[d]) * h + delta[bi, d, t] * u[bi, d, t] * coefficient(B, bi, d, t)
                y[bi, d, t] = (h * coefficient(C, bi, d, t)).sum()
            hlast[bi, d] = h
    if D is not None:
        y = y + D.double()[None, :, None] * u
    if z is not None:
        y = y * z.double() * torch.sigmoid(z.double())
    return y, hlast


@pytest.mark.parametrize("backend", ["reference", "fast"])
@pytest.mark.parametrize("b,e,n,length,groups", [(1, 1, 1, 1, 1), (2, 3, 4, 9, 1), (2, 4, 3, 17, 2)])
def test_scan_matches_plain_recurrence_float64(backend, b, e, n, length, groups):
    x = _inputs(b, e, n, length, groups)
    y, h = selective_scan(**x, delta_softplus=True, return_last_state=True, backend=backend, chunk_size=4)
    y0, h0 = _plain_recurrence(**x, delta_softplus=True)
    torch.testing.assert_close(y, y0, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(h, h0, rtol=1e-12, atol=1e-12)


def _rel(a, b):
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


@pytest.mark.parametrize("length", [1, 2, 7, 64, 1000, 4096])
@pytest.mark.parametrize("options", ["plain", "full"])
def test_fast_equals_reference_float32_values_state_grads(length, options):
    """≤ 1e-5 relative in float32, outputs, last state and every gradient."""
    b, e, n = (2, 3, 4) if length <= 1000 else (1, 2, 3)
    x = _inputs(b, e, n, length, dtype=torch.float32, seed=length)
    kw = dict(delta_softplus=True) if options == "full" else {}
    if options == "plain":
        for k in ("D", "z", "delta_bias"):
            x.pop(k)
    results = {}
    for backend in ("reference", "fast"):
        leaves = {k: v.clone().requires_grad_(True) for k, v in x.items()}
        y, h = selective_scan(**leaves, return_last_state=True, backend=backend, **kw)
        g = torch.Generator().manual_seed(7)
        wy = torch.randn(y.shape, generator=g)
        wh = torch.randn(h.shape, generator=g)
        ((y * wy).sum() + (h * wh).sum()).backward()
        results[backend] = (y.detach(), h.detach(), {k: v.grad for k, v in leaves.items()})
    (yr, hr, gr), (yf, hf, gf) = results["reference"], results["fast"]
    assert _rel(yf, yr) <= REL[torch.float32]
    assert _rel(hf, hr) <= REL[torch.float32]
    for k in gr:
        assert _rel(gf[k], gr[k]) <= REL[torch.float32], k


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("e,n,groups,chunk", [(4, 2, 1, 3), (6, 5, 3, 16), (8, 16, 2, 64)])
def test_fast_gradients_match_reference(dtype, e, n, groups, chunk):
    x = _inputs(2, e, n, 37, groups, dtype=dtype, seed=e + n)
    grads = {}
    for backend in ("reference", "fast"):
        leaves = {k: v.clone().requires_grad_(True) for k, v in x.items()}
        y, h = selective_scan(**leaves, delta_softplus=True, return_last_state=True, backend=backend,
                              chunk_size=chunk)
        (y.pow(2).sum() + h.sin().sum()).backward()
        grads[backend] = {k: v.grad for k, v in leaves.items()}
    for k in grads["reference"]:
        assert _rel(grads["fast"][k], grads["reference"][k]) <= REL[dtype], k


def test_fast_gradcheck_float64():
    x = _inputs(1, 2, 2, 5, dtype=torch.float64, seed=3)
    args = tuple(x[k].clone().requires_grad_(True) for k in ("u", "delta", "A", "B", "C"))

    def f(u, delta, A, B, C):
        return selective_scan(u, delta, A, B, C, return_last_state=True, backend="fast", chunk_size=2)

    assert torch.autograd.gradcheck(f, args)


@pytest.mark.parametrize("backend", ["reference", "fast"])
def test_causality(backend):
    """Perturbing token j changes no output at positions < j."""
    x = _inputs(2, 5, 3, 20, dtype=torch.float64, seed=11)
    y = selective_scan(**x, delta_softplus=True, backend=backend, chunk_size=8)
    j = 13
    x2 = {k: v.clone() for k, v in x.items()}
    for k in ("u", "delta", "z"):
        x2[k][..., j] += 1.0
    x2["B"][..., j] += 1.0
    x2["C"][..., j] += 1.0
    y2 = selective_scan(**x2, delta_softplus=True, backend=backend, chunk_size=8)
    assert torch.equal(y[..., :j], y2[..., :j])
    assert (y[..., j:] - y2[..., j:]).abs().max() > 1e-3


def test_half_precision_inputs_compute_in_float32():
    x = _inputs(1, 3, 2, 11, dtype=torch.float32, seed=5)
    y32 = selective_scan(**x, delta_softplus=True)
    y16 = selective_scan(**{k: v.to(torch.bfloat16) for k, v in x.items()}, delta_softplus=True)
    assert y16.dtype == torch.bfloat16
    assert _rel(y16.float(), y32) < 0.05


@pytest.mark.parametrize(
    "change,arg",
    [
        (lambda x: x.update(u=x["u"][0]), "'u'"),
        (lambda x: x.update(delta=x["delta"][..., :-1]), "'delta'"),
        (lambda x: x.update(A=x["A"][:-1]), "'A'"),
        (lambda x: x.update(B=x["B"][..., :-1]), "'B'"),
        (lambda x: x.update(C=x["C"][:, :-1]), "'C'"),
        (lambda x: x.update(D=x["D"][:-1]), "'D'"),
        (lambda x: x.update(z=x["z"][..., :-1]), "'z'"),
        (lambda x: x.update(delta_bias=x["delta_bias"][None]), "'delta_bias'"),
        (lambda x: x.update(B=x["B"][:, None].expand(-1, 3, -1, -1)), "groups"),
        (lambda x: x.update(B=x["A"][:-1]), "'B'"),  # constant B must be (E, N)
        (lambda x: x.update(C=x["A"][:, :-1]), "'C'"),
        (lambda x: x.update(C=x["C"][0]), "'C'"),  # (N, L) is neither (E, N) nor (B, N, L)
    ],
)
def test_bad_shapes_name_the_argument(change, arg):
    x = _inputs(2, 4, 3, 6)
    change(x)
    with pytest.raises(ValueError, match=arg):
        selective_scan(**x)


def test_bad_backend_and_types():
    x = _inputs(1, 2, 2, 3)
    with pytest.raises(ValueError, match="backend"):
        selective_scan(**x, backend="tpu")
    with pytest.raises(ValueError, match="chunk_size"):
        selective_scan(**x, chunk_size=0)
    x["u"] = x["u"].numpy()
    with pytest.raises(TypeError, match="'u'"):
        selective_scan(**x)


def test_mamba_ssm_never_imported_at_import_time():
    import subprocess
    import sys

    code = "import sys, mamba_ode, mamba_ode.nn.scan, mamba_ode.nn.lm; print('mamba_ssm' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_cuda_backend_falls_back_with_one_warning(monkeypatch):
    """Without the kernel, backend='cuda' uses the fast scan and warns once, naming the install command."""
    monkeypatch.setattr(scan_mod, "cuda_kernel_available", lambda: False)
    monkeypatch.setattr(scan_mod, "_CUDA_WARNED", False)
    x = _inputs(1, 2, 2, 5)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        y1 = selective_scan(**x, backend="cuda")
        y2 = selective_scan(**x, backend="cuda")
    msgs = [str(w.message) for w in rec if issubclass(w.category, RuntimeWarning)]
    assert len(msgs) == 1 and "pip install" in msgs[0] and "mamba_ode[cuda]" in msgs[0]
    torch.testing.assert_close(y1, selective_scan(**x, backend="fast"))
    torch.testing.assert_close(y1, y2)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("length", [1, 7, 64, 1000, 4096])
def test_cuda_backends_agree(length):
    """reference vs fast vs (when importable) mamba-ssm's kernel on the GPU."""
    x = _inputs(2, 8, 4, length, dtype=torch.float32, seed=length, device="cuda")
    out = {}
    backends = ["reference", "fast"] + (["cuda"] if cuda_kernel_available() else []) + (
        ["triton"] if triton_available() else [])
    for backend in backends:
        leaves = {k: v.clone().requires_grad_(True) for k, v in x.items()}
        y, h = selective_scan(**leaves, delta_softplus=True, return_last_state=True, backend=backend)
        (y.pow(2).sum() + h.sum()).backward()
        out[backend] = (y.detach(), h.detach(), {k: v.grad for k, v in leaves.items()})
    ref = out["reference"]
    for backend in backends[1:]:
        y, h, g = out[backend]
        assert _rel(y, ref[0]) <= 1e-5 and _rel(h, ref[1]) <= 1e-5
        for k in g:
            assert _rel(g[k], ref[2][k]) <= 1e-4, (backend, k)


@pytest.mark.parametrize("b_kind,c_kind", [(None, None), ("const", "const")])
def test_fast_never_holds_a_whole_sequence_BELN_tensor(b_kind, c_kind):
    """The fast backend works in chunks: no op ever sees a (B, E, L, N)-sized tensor (profiler shapes)."""
    import math

    from torch.profiler import ProfilerActivity, profile

    b, e, n, length = 2, 8, 4, 256
    x = _inputs(b, e, n, length, dtype=torch.float32, b_kind=b_kind, c_kind=c_kind)
    leaves = {k: v.clone().requires_grad_(True) for k, v in x.items()}
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        y = selective_scan(**leaves, delta_softplus=True, backend="fast", chunk_size=16)
        y.sum().backward()
    biggest = max(math.prod(s) for ev in prof.events() for s in (ev.input_shapes or [])
                  if isinstance(s, (list, tuple)) and s and all(isinstance(v, int) for v in s))
    assert biggest <= b * e * length  # the size of u itself; (B, E, L, N) would be N times more
    # and the reference backend, which materialises per-step (B, E, N) slices, is not what ran
    assert biggest < b * e * length * n


# ----------------------------------------------------------------------------- mamba-ssm contract: constant
# and mixed B/C, independent group counts, half precision, complex A

IO_KINDS = [("const", "var"), ("var", "const"), ("const", "const"), ("const", "G2"), ("G2", "const"),
            ("G2", "var"), ("var", "G4"), ("G4", "G2")]


@pytest.mark.parametrize("backend", ["reference", "fast"])
@pytest.mark.parametrize("b_kind,c_kind", IO_KINDS)
@pytest.mark.parametrize("length,n", [(1, 1), (9, 3)])
def test_constant_and_mixed_B_C_match_plain_recurrence(backend, b_kind, c_kind, length, n):
    """B and C each constant (E, N), (B, N, L) or grouped, on their own: the plain float64 recurrence."""
    x = _inputs(2, 4, n, length, b_kind=b_kind, c_kind=c_kind, seed=length + n)
    y, h = selective_scan(**x, delta_softplus=True, return_last_state=True, backend=backend, chunk_size=4)
    y0, h0 = _plain_recurrence(**x, delta_softplus=True)
    torch.testing.assert_close(y, y0, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(h, h0, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("b_kind,c_kind", IO_KINDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fast_gradients_with_constant_and_mixed_B_C(b_kind, c_kind, dtype):
    """fast vs reference: every gradient (constant B/C summed over batch and tokens), state gradient in."""
    x = _inputs(2, 8, 3, 21, b_kind=b_kind, c_kind=c_kind, dtype=dtype, seed=5)
    grads = {}
    for backend in ("reference", "fast"):
        leaves = {k: v.clone().requires_grad_(True) for k, v in x.items()}
        y, h = selective_scan(**leaves, delta_softplus=True, return_last_state=True, backend=backend, chunk_size=4)
        (y.pow(2).sum() + h.sin().sum()).backward()
        grads[backend] = {k: v.grad for k, v in leaves.items()}
    for k in grads["reference"]:
        assert grads["fast"][k].shape == x[k].shape
        assert _rel(grads["fast"][k], grads["reference"][k]) <= REL[dtype], k


def test_fast_gradcheck_constant_B_and_C_float64():
    x = _inputs(2, 2, 2, 5, b_kind="const", c_kind="const", seed=4)
    args = tuple(x[k].clone().requires_grad_(True) for k in ("u", "delta", "A", "B", "C"))

    def f(u, delta, A, B, C):
        return selective_scan(u, delta, A, B, C, return_last_state=True, backend="fast", chunk_size=2)

    assert torch.autograd.gradcheck(f, args)


@pytest.mark.parametrize("backend", ["reference", "fast"])
@pytest.mark.parametrize("half", [torch.float16, torch.bfloat16])
def test_half_inputs_with_float32_parameters_follow_mamba_ssm(backend, half):
    """u, delta, B, C, z in half precision, A, D, delta_bias in float32 (mamba-ssm's usual call):
    y in u's dtype, last state float32, the bias added and the softplus taken in float32 — so the
    result is the float64 recurrence of the same (rounded) inputs up to the output rounding."""
    x = _inputs(2, 4, 3, 13, b_kind="var", c_kind="G2", dtype=torch.float32, seed=8)
    x.update({k: x[k].to(half) for k in ("u", "delta", "B", "C", "z")})
    x["delta_bias"] = x["delta_bias"] + 1e-3  # not representable in half precision
    y, h = selective_scan(**x, delta_softplus=True, return_last_state=True, backend=backend)
    assert y.dtype == half and h.dtype == torch.float32
    y0, h0 = _plain_recurrence(**x, delta_softplus=True)
    assert _rel(h.double(), h0) <= 1e-5
    assert _rel(y.double(), y0) <= {torch.float16: 1e-3, torch.bfloat16: 8e-3}[half]


@pytest.mark.parametrize("arg", ["u", "delta", "A", "B", "C", "D", "z", "delta_bias"])
@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.bool])
def test_integer_tensors_are_refused_naming_the_argument(arg, dtype):
    """An integer u gave an integer y: the scan's output truncated without a word."""
    x = _inputs(1, 2, 2, 3)
    selective_scan(**x)  # the floating arguments scan
    x[arg] = x[arg].to(dtype)
    with pytest.raises(TypeError, match=f"'{arg}' must be a floating tensor"):
        selective_scan(**x)


@pytest.mark.parametrize("flag", ["yes", 1, None])
def test_delta_softplus_must_be_a_bool(flag):
    x = _inputs(1, 2, 2, 3)
    with pytest.raises(TypeError, match="'delta_softplus' must be a bool"):
        selective_scan(**x, delta_softplus=flag)


@pytest.mark.skipif(not triton_available(), reason="triton is not installed")
def test_check_backend_refuses_triton_on_the_cpu_without_the_interpreter():
    from mamba_ode.nn.scan import _triton_module, check_backend

    check_backend("triton")  # the name alone is fine
    check_backend("fast", "cpu")
    check_backend("cuda", "cpu")  # falls back with a warning when it runs
    with pytest.raises(ValueError, match="unknown backend 'tpu'"):
        check_backend("tpu", "cpu")
    if _triton_module().interpreted():
        check_backend("triton", "cpu")
    else:
        with pytest.raises(ValueError, match="needs CUDA tensors, and these are on cpu"):
            check_backend("triton", "cpu")


def test_complex_A_is_refused_naming_A():
    x = _inputs(1, 2, 2, 3)
    x["A"] = x["A"].to(torch.complex128)
    with pytest.raises(TypeError, match="'A'"):
        selective_scan(**x)


def test_optional_arguments_may_be_None():
    """D, z and delta_bias are optional, one at a time as well as together."""
    x = _inputs(2, 3, 2, 7, seed=9)
    y0, _ = _plain_recurrence(x["u"], x["delta"], x["A"], x["B"], x["C"])
    for backend in ("reference", "fast"):
        y = selective_scan(x["u"], x["delta"], x["A"], x["B"], x["C"], None, None, None, False, False,
                           backend=backend)
        torch.testing.assert_close(y, y0, rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------- the forward without a tape


@pytest.mark.parametrize("b_kind,c_kind", [(None, None), ("const", "var"), ("G2", "const")])
@pytest.mark.parametrize("length,chunk", [(1, 16), (17, 16), (64, 8)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fast_forward_without_grad_equals_the_autograd_forward_bit_for_bit(b_kind, c_kind, length, chunk, dtype):
    """Without a tape (no_grad, or no input needing a gradient) the fast backend skips its autograd
    Function; it must compute the very same numbers, output and last state, in every layout."""
    x = _inputs(2, 4, 3, length, dtype=dtype, b_kind=b_kind, c_kind=c_kind)
    leaves = {k: v.clone().requires_grad_(True) for k, v in x.items()}
    y_tape, h_tape = selective_scan(**leaves, delta_softplus=True, return_last_state=True, backend="fast",
                                    chunk_size=chunk)
    assert y_tape.grad_fn is not None
    with torch.no_grad():
        y_ng, h_ng = selective_scan(**leaves, delta_softplus=True, return_last_state=True, backend="fast",
                                    chunk_size=chunk)
    y_plain, h_plain = selective_scan(**x, delta_softplus=True, return_last_state=True, backend="fast",
                                      chunk_size=chunk)
    for y, h in ((y_ng, h_ng), (y_plain, h_plain)):
        assert y.grad_fn is None
        assert torch.equal(y, y_tape.detach()) and torch.equal(h, h_tape.detach())


def test_fast_forward_reuses_its_chunk_buffers():
    """The (B, T, E, N) chunk tensors are written into two buffers reused from chunk to chunk: fresh
    multi-megabyte tensors per chunk can cost page faults, depending on the allocator's state (see
    benchmarks/bench_field_eval.py). Counted with the profiler: allocations of a chunk's size stay at two
    however many chunks there are."""
    from torch.profiler import ProfilerActivity, profile

    b, e, n, chunk = 1, 64, 32, 8  # a chunk's (B, T, E, N) outweighs every (B, L, E) tensor: T·N > L
    chunk_bytes = b * chunk * e * n * 8
    counts = []
    for length in (16, 128):
        x = _inputs(b, e, n, length, dtype=torch.float64)
        with torch.no_grad(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            selective_scan(**x, delta_softplus=True, backend="fast", chunk_size=chunk)
        counts.append(sum(1 for ev in prof.events() if ev.self_cpu_memory_usage >= chunk_bytes))
    assert counts[0] == counts[1] == 2, counts


@pytest.mark.parametrize("backend", ["reference", "fast"])
@pytest.mark.parametrize("which", ["D", "z", "delta_bias"])
def test_a_float64_optional_argument_makes_the_scan_float64(backend, which):
    """The working dtype follows every tensor argument: a float64 D, z or delta_bias beside float32 tokens
    gives a float64 state equal to the float64 recurrence (it was cast down to float32 before)."""
    x = _inputs(2, 3, 4, 9, dtype=torch.float32, seed=11)
    x[which] = x[which].double() + 1e-9 * torch.randn(x[which].shape, dtype=torch.float64,
                                                      generator=torch.Generator().manual_seed(2))
    y, h = selective_scan(**x, delta_softplus=True, return_last_state=True, backend=backend)
    y0, h0 = _plain_recurrence(**x, delta_softplus=True)
    assert h.dtype == torch.float64 and y.dtype == torch.float32
    torch.testing.assert_close(h, h0, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(y, y0.float(), rtol=2e-6, atol=1e-6)
