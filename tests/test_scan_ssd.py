"""The selective scan with ``head_dim`` (Mamba-2's scalar-A heads, computed in SSD's chunked matrix form):
equal to the plain recurrence in values, last state and gradients; bad heads refused by name."""

from __future__ import annotations

import pytest
import torch

from mamba_ode.nn import scan_ssd
from mamba_ode.nn.scan import selective_scan
from tests.test_scan import _plain_recurrence, _rel

REL = {torch.float32: 2e-5, torch.float64: 1e-12}


def _heads(b, heads, p, g, n, length, dtype=torch.float64, seed=0, b_kind="var", c_kind="var"):
    """Scan inputs in Mamba-2's layout: Δ, its bias and a scalar A shared by the p channels of a head."""
    gen = torch.Generator().manual_seed(seed)

    def r(*shape, scale=1.0):
        return (scale * torch.randn(*shape, generator=gen, dtype=torch.float64)).to(dtype)

    e = heads * p
    a = -(torch.rand(heads, generator=gen, dtype=torch.float64) * 2 + 0.05)
    io = {"var": lambda: r(b, g, n, length), "const": lambda: r(e, n)}
    return dict(
        u=r(b, e, length),
        delta=r(b, heads, length, scale=0.5).repeat_interleave(p, dim=1),
        A=a.repeat_interleave(p)[:, None].expand(e, n).to(dtype),
        B=io[b_kind](),
        C=io[c_kind](),
        D=r(e),
        z=r(b, e, length),
        delta_bias=r(heads, scale=0.3).repeat_interleave(p),
    )


SHAPES = [  # b, H, P, G, N, L: one token, one chunk exactly, a partial second chunk, several chunks
    (1, 1, 1, 1, 1, 1),
    (2, 4, 3, 1, 5, 64),
    (1, 6, 2, 3, 4, 65),
    (2, 4, 2, 2, 3, 150),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("b,heads,p,g,n,length", SHAPES)
@pytest.mark.parametrize("options", ["plain", "full"])
def test_heads_match_the_plain_recurrence(dtype, b, heads, p, g, n, length, options):
    """Outputs and last state equal the per-channel recurrence (float64 oracle) to 1e-12 in float64."""
    x = _heads(b, heads, p, g, n, length, dtype=dtype, seed=length + n)
    kw = {"delta_softplus": True}
    if options == "plain":
        kw = {}
        for k in ("D", "z", "delta_bias"):
            x.pop(k)
    y, h = selective_scan(**x, **kw, return_last_state=True, backend="fast", head_dim=p)
    y0, h0 = _plain_recurrence(**x, **kw)
    assert y.dtype == dtype
    assert _rel(y.double(), y0) <= REL[dtype]
    assert _rel(h.double(), h0) <= REL[dtype]


def test_the_fast_backend_takes_the_matrix_form(monkeypatch):
    """With head_dim the fast backend calls the SSD form (once per scan); without it, it does not."""
    calls = []
    real = scan_ssd.ssd_scan

    def counting(*args, **kwargs):
        calls.append(args[0].shape)
        return real(*args, **kwargs)

    monkeypatch.setattr("mamba_ode.nn.scan.ssd_scan", counting)
    x = _heads(1, 4, 2, 2, 3, 20)
    selective_scan(**x, backend="fast", head_dim=2)
    assert len(calls) == 1
    selective_scan(**x, backend="fast")
    selective_scan(**x, backend="reference", head_dim=2)
    assert len(calls) == 1


@pytest.mark.parametrize("b_kind,c_kind,g", [("const", "var", 2), ("var", "const", 1), ("var", "var", 4)])
def test_layouts_outside_the_matrix_form_fall_back_to_the_recurrence(b_kind, c_kind, g, monkeypatch):
    """Constant B or C, or groups that split heads (4 groups over 2 heads): the general scan, same values."""
    monkeypatch.setattr("mamba_ode.nn.scan.ssd_scan", lambda *a, **k: pytest.fail("SSD form used"))
    x = _heads(2, 2, 4, g, 3, 19, b_kind=b_kind, c_kind=c_kind)
    y, h = selective_scan(**x, delta_softplus=True, return_last_state=True, backend="fast", head_dim=4)
    y0, h0 = _plain_recurrence(**x, delta_softplus=True)
    assert _rel(y, y0) <= 1e-12 and _rel(h, h0) <= 1e-12


def _head_sums(t, p):
    """Sum a gradient over the p channels (and states) of each head: (…, E, …) → per head."""
    if t.dim() == 1:
        return t.view(-1, p).sum(1)
    if t.dim() == 2:  # A (E, N)
        return t.reshape(-1, p * t.shape[1]).sum(1)
    return t.view(t.shape[0], -1, p, t.shape[-1]).sum(2)  # delta (B, E, L)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("length", [7, 130])
def test_gradients_match_the_reference_backend(dtype, length):
    """u, B, C, D, z: the same gradients. Δ, its bias and A are shared per head with head_dim, so their
    gradients are compared summed over each head (a per-head parameter expanded to channels gets
    exactly that sum)."""
    p = 3
    x = _heads(2, 4, p, 2, 5, length, dtype=dtype, seed=3)
    grads = {}
    for backend, hd in (("reference", None), ("fast", p)):
        leaves = {k: v.clone().requires_grad_(True) for k, v in x.items()}
        y, h = selective_scan(**leaves, delta_softplus=True, return_last_state=True, backend=backend, head_dim=hd)
        (y.pow(2).sum() + h.sin().sum()).backward()
        grads[backend] = {k: v.grad for k, v in leaves.items()}
    ref, ssd = grads["reference"], grads["fast"]
    for k in ("u", "B", "C", "D", "z"):
        assert _rel(ssd[k], ref[k]) <= REL[dtype], k
    for k in ("delta", "delta_bias", "A"):
        assert _rel(_head_sums(ssd[k], p), _head_sums(ref[k], p)) <= REL[dtype], k


def test_gradcheck_per_head_parameters_float64():
    """Second opinion on the gradients: finite differences through per-head Δ, bias and A."""
    b, heads, p, g, n, length = 1, 2, 2, 1, 3, 70
    gen = torch.Generator().manual_seed(5)
    u = torch.randn(b, heads * p, length, generator=gen, dtype=torch.float64, requires_grad=True)
    dth = (0.5 * torch.randn(b, heads, length, generator=gen, dtype=torch.float64)).requires_grad_(True)
    a = (-torch.rand(heads, generator=gen, dtype=torch.float64) - 0.1).requires_grad_(True)
    Bm = torch.randn(b, g, n, length, generator=gen, dtype=torch.float64, requires_grad=True)
    Cm = torch.randn(b, g, n, length, generator=gen, dtype=torch.float64, requires_grad=True)

    def f(u, dth, a, Bm, Cm):
        A = a.repeat_interleave(p)[:, None].expand(heads * p, n)
        return selective_scan(u, dth.repeat_interleave(p, dim=1), A, Bm, Cm, delta_softplus=True,
                              return_last_state=True, backend="fast", head_dim=p)

    assert torch.autograd.gradcheck(f, (u, dth, a, Bm, Cm))


def _bad(change):
    x = _heads(1, 2, 3, 1, 4, 5)
    if change == "A_in_head":
        A = x["A"].clone()
        A[1, 0] += 0.5
        x["A"] = A
    elif change == "A_over_states":
        A = x["A"].clone()
        A[0, 1] += 0.5
        x["A"] = A
    elif change == "delta":
        x["delta"] = x["delta"].clone()
        x["delta"][0, 2, 3] += 0.1
    elif change == "delta_bias":
        x["delta_bias"] = x["delta_bias"].clone()
        x["delta_bias"][4] += 0.1
    return x


@pytest.mark.parametrize("backend", ["reference", "fast"])
@pytest.mark.parametrize("change,arg", [("A_in_head", "A"), ("A_over_states", "A"), ("delta", "delta"),
                                        ("delta_bias", "delta_bias")])
def test_heads_that_do_not_share_delta_and_A_are_refused_by_name(backend, change, arg):
    with pytest.raises(ValueError, match=f"argument '{arg}'"):
        selective_scan(**_bad(change), backend=backend, head_dim=3)


@pytest.mark.parametrize("head_dim", [0, -1, 4, True, 2.0, "3"])
def test_bad_head_dim_is_refused_by_name(head_dim):
    with pytest.raises(ValueError, match="argument 'head_dim'"):
        selective_scan(**_heads(1, 2, 3, 1, 4, 5), backend="fast", head_dim=head_dim)


def test_non_finite_inputs_come_out_non_finite_not_as_an_error():
    """A solver's trial stage may overshoot to inf/NaN: the scan must pass that on (the step is then
    rejected), exactly as without head_dim, causally — NaN in a head's shared Δ is not 'unequal'."""
    x = _heads(1, 2, 3, 1, 4, 6)
    x["delta"] = x["delta"].clone()
    x["delta"][0, 0:3, 2] = float("nan")  # the whole first head at token 2
    x["u"] = x["u"].clone()
    x["u"][0, 4, 1] = float("inf")
    y = selective_scan(**x, delta_softplus=True, backend="fast", head_dim=3)
    y0 = selective_scan(**x, delta_softplus=True, backend="reference")
    assert torch.equal(y.isnan(), y0.isnan()) and torch.equal(y.isinf(), y0.isinf())
    assert torch.isfinite(y[0, :3, :2]).all() and y[0, :3, 2:].isnan().all()
    assert torch.allclose(y[y0.isfinite()], y0[y0.isfinite()], rtol=1e-12, atol=1e-12)


def test_float32_decay_of_a_large_step_then_small_ones_keeps_its_accuracy():
    """One huge Δ·|A| followed by small steps: the segment sums are summed directly, not as differences
    of cumulative sums, so float32 keeps the general scan's accuracy (a difference of cumulative sums
    loses the small steps: 2e-2 relative error here)."""
    x = _heads(1, 2, 2, 1, 3, 64, seed=9)
    x.pop("delta_bias")
    delta = torch.full((1, 4, 64), 1e-3, dtype=torch.float64)
    delta[:, :, 0] = 1e6
    x["delta"], x["A"] = delta, -torch.ones(4, 3, dtype=torch.float64)
    y0, _ = _plain_recurrence(**x)
    y = selective_scan(**{k: v.float() for k, v in x.items()}, backend="fast", head_dim=2)
    assert _rel(y.double(), y0) <= REL[torch.float32]


@pytest.mark.parametrize("rows", [None, slice(0, 5), slice(3, 9), slice(8, 9)])
def test_segment_sums_equal_exact_sums(rows):
    """Every entry equals the exactly rounded sum Σ_{k=j+1..l} x_k (math.fsum), 0 on and above the
    diagonal; a huge term followed by small ones keeps the small ones (float32 and float64)."""
    import math

    from mamba_ode.nn.scan_ssd import segment_sums

    x = torch.randn(2, 9, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    x[:, 2] = 1e7
    for dtype, tol in ((torch.float64, 1e-15), (torch.float32, 1e-6)):
        got = segment_sums(x.to(dtype), rows).double()
        r = rows or slice(0, 9)
        assert got.shape == (2, r.stop - r.start, r.stop, 3)
        for b in range(2):
            for i, l in enumerate(range(r.start, r.stop)):
                for j in range(r.stop):
                    for f in range(3):
                        want = math.fsum(float(x[b, k, f].to(dtype)) for k in range(j + 1, l + 1)) if j < l else 0.0
                        assert abs(float(got[b, i, j, f]) - want) <= tol * max(1.0, abs(want)), (b, l, j, f)


def test_matrix_forms_keep_small_decays_after_a_huge_step():
    """The explicit matrix forms (Mamba-1 hidden attention, Mamba-2 per-head matrix, the packed 1-D field)
    sum segments directly: after a token with a huge Δ the later tokens' outputs equal the scan's to 1e-13
    (differences of cumulative sums were off by ~1e-8 here)."""
    from mamba_ode.dynamics.fields.onedim import OneDimField, PackedOneDimField
    from mamba_ode.nn.params_mamba1 import SSMParams, matrix_s6

    d = torch.float64
    p = SSMParams(W_x=torch.ones(1, 1, dtype=d), W_dt=torch.ones(1, 1, dtype=d),
                  delta_bias=torch.tensor([-3.0], dtype=d), S_B=torch.ones(1, 1, dtype=d),
                  S_C=torch.ones(1, 1, dtype=d), A=-torch.full((1, 1), 8.0, dtype=d), D=torch.zeros(1, dtype=d))
    u = torch.tensor([[[1e7], [0.3], [0.2], [0.5], [0.4], [0.3]]], dtype=d)
    ys = p.s6(u, None, use_D=False, backend="reference")
    assert _rel(matrix_s6(p, u)[:, 1:], ys[:, 1:]) <= 1e-13
    one = OneDimField(1.0, 1.0, 8.0, -3.0)
    v = PackedOneDimField.pack(u, *(torch.full((1,), c, dtype=d) for c in (1.0, 1.0, 8.0, -3.0)))
    assert _rel(PackedOneDimField()(0.0, v)[:, 1:, 0], one(0.0, u)[:, 1:, 0]) <= 1e-13
    # Mamba-2: one head of 2 channels, one group of 3 states, huge Δ at token 0: per-head matrix vs scan
    from mamba_ode.nn.params_mamba2 import Mamba2Params

    z = torch.zeros(1, dtype=d)
    m2 = Mamba2Params(S_x=z, S_z=z, S_B=torch.zeros(1, 3, 1, dtype=d), S_C=z, S_dt=z, A=torch.tensor([-8.0], dtype=d),
                      dt_bias=z, D=z, head_dim=2)
    x = _heads(1, 1, 2, 1, 3, 6, seed=4)
    dh = torch.full((1, 6, 1), 1e-3, dtype=d)
    dh[0, 0] = 1e7
    Bm, Cm = x["B"].permute(0, 3, 1, 2), x["C"].permute(0, 3, 1, 2)  # (B, L, G, N)
    y = m2.ssd(x["u"].transpose(1, 2), dh, Bm, Cm, use_D=False, backend="reference")  # (B, L, E)
    P = m2.token_mixing_matrix(dh, Bm, Cm)  # (B, H, L, L)
    ym = (P[:, 0] @ x["u"].transpose(1, 2))  # one head: (B, L, P)
    assert _rel(ym[:, 1:], y[:, 1:]) <= 1e-13
