"""Vector fields: scan form vs matrix form, hidden attention, the 1-D system, the depth-time field.

Oracles written here from the formulas with plain loops (independent of the scan and of fields.py).
Tolerances: float64 1e-12 relative to the size of the output unless stated.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import mamba_ode
from mamba_ode.dynamics.fields import DepthField, MatrixS6Field, OneDimField, S6Field
from mamba_ode.nn.params_mamba1 import SSMParams, hidden_attention, matrix_s6

F64 = torch.float64



def p_oracle(p: SSMParams, u: torch.Tensor) -> torch.Tensor:
    """P[b, l, j, d] of the hidden attention, entry by entry."""
    bsz, length, e = u.shape
    delta = F.softplus(u @ p.S_delta.T + p.delta_bias)
    Bm, Cm = u @ p.S_B.T, u @ p.S_C.T
    P = torch.zeros(bsz, length, length, e, dtype=u.dtype)
    for b in range(bsz):
        for l in range(length):
            for j in range(l + 1):
                seg = delta[b, j + 1:l + 1].sum(0)  # (E,)
                P[b, l, j] = delta[b, j] * (Cm[b, l] * Bm[b, j] * torch.exp(p.A * seg[:, None])).sum(-1)
    return P


SIZES = [(2, 8, 3, 2, 1), (3, 11, 5, 4, 2), (2, 9, 6, 3, 3)]  # (B, L, E, N, R)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("use_D", [False, True])
def test_matrix_form_equals_scan_form(random_params, size, use_D):
    """Acceptance: Σ_j P_lj u_j (explicit matrix form) equals the scan form to 1e-12 in float64."""
    b, length, e, n, r = size
    p = random_params(e, n, r, seed=sum(size))
    u = torch.randn(b, length, e, dtype=F64, generator=torch.Generator().manual_seed(1))
    scan = S6Field(p, use_D=use_D)
    mat = scan.matrix_form(block=3)
    assert isinstance(mat, MatrixS6Field)
    y_scan, y_mat = scan(0.0, u), mat(0.0, u)
    assert y_scan.shape == (b, length, e)
    scale = max(1.0, y_scan.abs().max().item())
    assert (y_scan - y_mat).abs().max().item() <= 1e-12 * scale
    for backend in ("reference", "fast"):
        assert (S6Field(p, use_D=use_D, backend=backend)(0.0, u) - y_mat).abs().max().item() <= 1e-12 * scale
    # and the matrix form's pieces are the hidden attention
    P = p_oracle(p, u)
    assert (hidden_attention(p, u) - P).abs().max().item() <= 1e-12 * max(1.0, P.abs().max().item())
    y_oracle = torch.einsum("bljd,bjd->bld", P, u) + (p.D * u if use_D else 0.0)
    assert (y_mat - y_oracle).abs().max().item() <= 1e-12 * scale
    assert (mat.scan_form()(0.0, u) - y_scan).abs().max().item() <= 1e-12 * scale


def test_hidden_attention_causal_and_field_method(random_params):
    p = random_params(4, 3, 2, seed=5)
    u = torch.randn(2, 7, 4, dtype=F64)
    P = S6Field(p).hidden_attention(u)
    assert P.shape == (2, 7, 7, 4)
    upper = torch.triu(torch.ones(7, 7, dtype=torch.bool), 1)
    assert (P[:, upper] == 0).all()
    # causality of the field: changing a later token leaves earlier outputs untouched
    f = S6Field(p)
    u2 = u.clone()
    u2[:, 5:] += 1.0
    assert torch.equal(f(0, u)[:, :5], f(0, u2)[:, :5])


def test_matrix_s6_blocks_and_float32(random_params):
    p = random_params(5, 2, 2, seed=3)
    u = torch.randn(2, 10, 5, dtype=F64)
    ref = matrix_s6(p, u, block=64)
    for block in (1, 3, 10):
        assert (matrix_s6(p, u, block=block) - ref).abs().max() <= 1e-13
    f = S6Field(p)
    u32 = u.float()
    y32 = f(0, u32)
    assert y32.dtype == torch.float32
    assert (y32.double() - f(0, u)).abs().max() <= 1e-4


def one_dim_oracle(u: torch.Tensor, weights, rates, s: float, b: float) -> torch.Tensor:
    """1-D system: du_l/dt = u_l Σ_{j≤l} u_j² Δ_j g(Σ_{k=j+1..l} Δ_k), g(τ) = Σ_n w_n e^{-a_n τ}."""
    out = torch.zeros_like(u)
    bsz, length, _ = u.shape
    for bb in range(bsz):
        x = [float(v) for v in u[bb, :, 0]]
        dl = [math.log1p(math.exp(s * v + b)) for v in x]
        for l in range(length):
            acc = 0.0
            for j in range(l + 1):
                tau = sum(dl[j + 1:l + 1])
                g = sum(w * math.exp(-a * tau) for w, a in zip(weights, rates))
                acc += x[j] ** 2 * dl[j] * g
            out[bb, l, 0] = x[l] * acc
    return out


@pytest.mark.parametrize("mu,s,a,b", [(1.0, 1.0, 1.0, 0.0), (-1.0, 0.8, 1.0, 0.0), (0.7, -1.3, 0.4, 0.3)])
def test_one_dim_field_formula(mu, s, a, b):
    f = OneDimField(mu, s, a, b_delta=b)
    u = torch.tensor([[[0.5], [-0.3], [1.1], [0.2]], [[-0.9], [0.4], [0.0], [2.0]]], dtype=F64)
    want = one_dim_oracle(u, [mu], [a], s, b)
    assert (f(0.0, u) - want).abs().max() <= 1e-13
    assert f.mu == pytest.approx(mu)
    assert float(f.kernel(0.0)) == pytest.approx(mu)


def test_one_dim_from_states_n_rates():
    S_B, S_C, a = [0.5, -1.0, 2.0], [1.0, 0.3, 0.25], [0.2, 1.0, 3.0]
    f = OneDimField.from_states(S_B, S_C, a, s_delta=0.6, b_delta=-0.1)
    u = torch.tensor([[[0.5], [-0.3], [1.1], [0.2], [-0.7]]], dtype=F64)
    w = [x * y for x, y in zip(S_B, S_C)]
    assert (f(0.0, u) - one_dim_oracle(u, w, a, 0.6, -0.1)).abs().max() <= 1e-13
    assert f.mu == pytest.approx(sum(w))
    assert f.a.tolist() == pytest.approx(a)


@pytest.mark.parametrize("kwargs,match", [
    (dict(mu=float("nan"), s_delta=1.0), "mu"),
    (dict(mu=1.0, s_delta=float("inf")), "s_delta"),
    (dict(mu=1.0, s_delta=1.0, a=-1.0), "'a'"),
    (dict(mu=1.0, s_delta=1.0, a=[1.0, 2.0]), "from_states"),
])
def test_one_dim_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        OneDimField(**kwargs)


def test_one_dim_from_states_length_mismatch():
    with pytest.raises(ValueError, match="same length"):
        OneDimField.from_states([1.0, 2.0], [1.0], [1.0, 1.0], 1.0)


def test_field_bad_tokens(random_params):
    f = S6Field(random_params(4, 2, 1, seed=0))
    with pytest.raises(ValueError, match="'u'"):
        f(0.0, torch.zeros(2, 3, 5, dtype=F64))
    with pytest.raises(ValueError, match="empty"):
        f(0.0, torch.zeros(2, 0, 4, dtype=F64))
    with pytest.raises(ValueError, match="'u'"):
        f(0.0, torch.zeros(3, 4, dtype=F64))
    with pytest.raises(TypeError, match="params"):
        S6Field("not params")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="backend"):
        S6Field(random_params(4, 2, 1, seed=0), backend="gpu-magic")
    with pytest.raises(ValueError, match="block"):
        MatrixS6Field(random_params(4, 2, 1, seed=0), block=0)


# ---------------------------------------------------------------------------- from a loaded model

CFG = dict(vocab_size=29, hidden_size=12, state_size=3, num_hidden_layers=3, time_step_rank=2, conv_kernel=3,
           use_bias=True, tie_word_embeddings=False)


@pytest.fixture(scope="module")
def model64(hf_mamba, tmp_path_factory):
    _, d = hf_mamba(tmp_path_factory.mktemp("fields"), seed=3, **CFG)
    return mamba_ode.load(d, dtype=F64)


def test_s6_field_from_layer(model64):
    k = 1
    f = S6Field.from_layer(model64, k)
    e = model64.config.d_inner
    assert (f.d_inner, f.d_state) == (e, CFG["state_size"])
    u = torch.randn(2, 6, e, dtype=F64)
    p = model64.layers[k].ssm
    assert (f(0.0, u) - p.s6(u, use_D=False)).abs().max() <= 1e-13
    assert (S6Field.from_layer(model64, k, use_D=True)(0.0, u) - p.s6(u, use_D=True)).abs().max() <= 1e-13
    # the S6 layer really is the raw-weight recurrence: D term and matrix form from the checkpoint weights
    assert (f.matrix_form()(0.0, u) - f(0.0, u)).abs().max() <= 1e-12
    assert not f.params.A.requires_grad
    # from_layer takes a snapshot; detach=False follows the model's weights
    live = S6Field.from_layer(model64, k, detach=False)
    with torch.no_grad():
        before = f(0.0, u)
        w = model64.layers[k].mixer.x_proj.weight
        saved = w.clone()
        w.mul_(2.0)
        try:
            assert torch.equal(f(0.0, u), before)
            assert not torch.allclose(live(0.0, u), before)
        finally:
            w.copy_(saved)
    assert S6Field.from_layer(model64, -1).params.A.shape == (e, CFG["state_size"])
    with pytest.raises(ValueError, match="'k'"):
        S6Field.from_layer(model64, 3)
    with pytest.raises(TypeError, match="model"):
        S6Field.from_layer(object(), 0)  # type: ignore[arg-type]


def test_float32_parameters_take_float64_tokens(model64):
    """Δ, B, C of float32 weights at float64 tokens: the weights follow the tokens (as the Mamba-2 parameters do),
    equal to casting the parameters first."""
    p32 = model64.layers[1].ssm.to(torch.float32)
    u = torch.randn(2, 5, p32.d_inner, dtype=F64)
    ref = p32.to(F64)
    assert p32.delta(u).dtype == F64
    assert torch.equal(p32.delta(u), ref.delta(u))
    for got, want in zip(p32.selective_inputs(u), ref.selective_inputs(u)):
        assert torch.equal(got, want)
    assert ref.delta(u.float()).dtype == torch.float32  # and float32 tokens on float64 weights stay float32


def test_depth_field_layers_jumps_and_switches(model64):
    f = DepthField(model64)
    assert f.t_span == (0.0, 3.0)
    assert f.jump_times == (1.0, 2.0)
    assert [f.layer_at(t) for t in (0.0, 0.999, 1.0, 2.5, 3.0)] == [0, 0, 1, 2, 2]
    ids = torch.tensor([[1, 5, 7, 2, 0]])
    x = f.initial_state(ids)
    assert torch.equal(x, model64.backbone.embeddings(ids))
    blk = model64.layers[1]
    with torch.no_grad():
        assert torch.equal(f(1.5, x), blk.update(x))
        # ablations: no norm, no conv, no gate, each checked against the layer's pieces
        mixer = blk.mixer
        xi, z = mixer.in_proj(x).chunk(2, dim=-1)
        u = F.silu(xi)  # conv dropped
        y = mixer.ssm.s6(u, None, use_D=True)  # gate dropped
        want = mixer.out_proj(y)  # norm dropped
        got = DepthField(model64, norm=False, conv=False, gate=False)(1.5, x)
        assert (got - want).abs().max() <= 1e-12
        tied = DepthField(model64, tied_layer=2)
        assert tied.jump_times == ()
        assert torch.equal(tied(0.1, x), model64.layers[2].update(x))
    with pytest.raises(ValueError, match="tied_layer"):
        DepthField(model64, tied_layer=7)
    with pytest.raises(ValueError, match="dtype"):
        f(0.0, x.float())
    with pytest.raises(ValueError, match="'x'"):
        f(0.0, torch.zeros(1, 4, 5, dtype=F64))


def test_s6_field_cast_is_cached_follows_changes_and_never_holds_a_graph(random_params):
    """float32 parameters evaluated on float64 tokens: one cached cast (the same object each call); an
    in-place change of a weight or new parameters show up at once; with parameters that require a
    gradient, every call casts afresh and the gradient reaches them."""
    from dataclasses import replace

    p = random_params(5, 3, 2, seed=3, dtype=torch.float32)
    f = S6Field(p)
    u = torch.randn(1, 4, 5, generator=torch.Generator().manual_seed(1))
    assert f.params_like(u.double()) is f.params_like(u.double()) and f.params_like(u) is p
    with torch.no_grad():
        p.S_B.mul_(3.0)
    torch.testing.assert_close(f(0.0, u.double()), f(0.0, u).double(), rtol=1e-4, atol=1e-6)
    f.params = replace(p, S_C=torch.zeros_like(p.S_C))
    assert f(0.0, u.double()).abs().max() == 0
    g = S6Field(replace(p, S_B=p.S_B.clone().requires_grad_(True)))
    assert g.params_like(u.double()) is not g.params_like(u.double())
    g(0.0, u.double()).pow(2).sum().backward()
    assert g.params.S_B.grad is not None and g.params.S_B.grad.abs().max() > 0
