"""Regime classification: 1-D criteria, spectra from low-rank factors, trajectory labels, agreement."""

from __future__ import annotations

import math
import time

import pytest
import torch

from mamba_ode import PackedOneDimField, importance_scores, prefix_batch
from mamba_ode.dynamics.fields import OneDimField, S6Field
from mamba_ode.dynamics.solvers import Solution, Status, solve
from mamba_ode.nn.params_mamba1 import SSMParams
from mamba_ode.regimes import (
    EXPECTED_LABEL,
    blowup_time_1d,
    channel_reductions,
    classify_trajectory,
    compare_theory_numerics,
    criteria_1d,
    criteria_nd,
    regime_table,
    sym_spectrum,
    two_dim_params,
)

F64 = torch.float64



def _random_params(e: int, n: int, r: int = 4, seed: int = 0, dtype=F64) -> SSMParams:
    g = torch.Generator().manual_seed(seed)

    def rn(*s):
        return torch.randn(*s, generator=g, dtype=F64).to(dtype)

    return SSMParams(W_x=rn(r, e), W_dt=rn(e, r), delta_bias=rn(e), S_B=rn(n, e), S_C=rn(n, e),
                     A=-(torch.rand(e, n, generator=g, dtype=F64) + 0.1).to(dtype), D=rn(e))


# ============================================================================ 1-D criteria


def test_blowup_time_matches_spec_reference_and_closed_form():
    assert blowup_time_1d(1.0, 1.0, 0.5) == pytest.approx(1.676939, abs=1e-6)  # the 1-D theory
    # s = 0: Δ = softplus(b) constant, T = 1 / (2 μ softplus(b) r0²)
    b = 0.3
    assert blowup_time_1d(2.0, 0.0, 0.7, b) == pytest.approx(1 / (2 * 2.0 * math.log1p(math.exp(b)) * 0.49), rel=1e-10)
    with pytest.raises(ValueError, match="blow-up"):
        blowup_time_1d(1.0, -1.0, 0.5)


@pytest.mark.parametrize("mu,s,u0,expected", [
    (-1.0, 1.0, [0.5, -1.0, 0.3], ["convergent"] * 3),
    (0.0, 1.0, [0.5, -1.0], ["static", "static"]),
    (1.0, 1.0, [0.5, 0.0, 0.2], ["divergent-finite-time", "static", "divergent-finite-time"]),
    (1.0, -1.0, [0.5, 0.8], ["divergent-logarithmic"] * 2),
    # token 2 is slow on its own (s·u < 0) but inherits token 1's blow-up
    (1.0, 1.0, [0.5, -0.8], ["divergent-finite-time"] * 2),
    # token 1 slow, token 2 fast: blow-up from token 2 on
    (1.0, 1.0, [-0.5, 0.8, -0.1], ["divergent-logarithmic", "divergent-finite-time", "divergent-finite-time"]),
    (1.0, 0.0, [0.5, -0.8], ["divergent-finite-time"] * 2),  # s = 0: fast for both signs
])
def test_criteria_1d_rules(mu, s, u0, expected):
    c = criteria_1d(mu, s, 1.0, u0)
    assert c.regimes == [expected]
    assert bool(c.decided.all())
    t1 = float(c.t_blowup_token1[0])
    if expected[0] == "divergent-finite-time":
        assert t1 == pytest.approx(blowup_time_1d(mu, abs(s), abs(u0[0])), rel=1e-12)
        assert "exact" in c.reasons[0][0]
    else:
        assert math.isinf(t1)
    for l, r in enumerate(expected):
        if r == "divergent-finite-time" and l > 0:
            assert "upper bound" in c.reasons[0][l]
            assert math.isfinite(float(c.t_blowup_bound[0, l]))
        if r == "divergent-logarithmic":
            assert float(c.growth_slope_bound[0, l]) == pytest.approx(1 / abs(s))
    assert c.expected_labels[0] == [EXPECTED_LABEL[r] for r in expected]


def test_criteria_1d_convergent_amplitude_and_order():
    c = criteria_1d(-1.0, 1.0, 1.0, [0.5])
    assert float(c.decay_amplitude[0]) == pytest.approx(0.849, abs=1e-3)  # the 1-D theory
    c = criteria_1d(1.0, 1.0, 0.5, [[-0.5, 0.3, 1.2, -0.2]])
    # bounds are non-increasing in l; ties (token 4 inherits token 3's bound) go to the later token; slow last
    assert c.regimes[0] == ["divergent-logarithmic"] + ["divergent-finite-time"] * 3
    assert c.divergence_order()[0] == [3, 2, 1, 0]
    assert str(c).startswith("Criteria1D(")


@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(mu=float("nan"), s_delta=1.0, a=1.0, u0=[0.5]), ValueError, "'mu'"),
    (dict(mu=1.0, s_delta=float("inf"), a=1.0, u0=[0.5]), ValueError, "'s_delta'"),
    (dict(mu=1.0, s_delta=1.0, a=-1.0, u0=[0.5]), ValueError, "'a'"),
    (dict(mu=1.0, s_delta=1.0, a=[1.0, 2.0], u0=[0.5]), ValueError, "'a'"),
    (dict(mu=1.0, s_delta=1.0, a=1.0, u0=[[[0.5, 0.1]]]), ValueError, "'u0'"),
    (dict(mu=1.0, s_delta=1.0, a=1.0, u0=[0.5, float("nan")]), ValueError, "'u0'"),
    (dict(mu=1.0, s_delta=1.0, a=1.0, u0=[]), ValueError, "'u0'"),
    (dict(mu="x", s_delta=1.0, a=1.0, u0=[0.5]), TypeError, "'mu'"),
    (dict(mu="1", s_delta=1.0, a=1.0, u0=[0.5]), TypeError, "'mu'"),  # a numeric string was read as a number
    (dict(mu=1.0, s_delta=b"2", a=1.0, u0=[0.5]), TypeError, "'s_delta'"),
    (dict(mu=1.0, s_delta=1.0, a=bytearray(b"2"), u0=[0.5]), TypeError, "'a'"),
    (dict(mu=1.0, s_delta=1.0, a=1.0, u0=[0.5], b_delta=float("nan")), ValueError, "'b_delta'"),
])
def test_criteria_1d_bad_input(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        criteria_1d(**kwargs)


# ============================================================================ spectrum of Sym(M)


@pytest.mark.parametrize("e,n", [(1, 1), (2, 2), (3, 4), (16, 16), (33, 5), (64, 16), (64, 40)])
def test_spectrum_from_factors_matches_dense(e, n):
    g = torch.Generator().manual_seed(e * 100 + n)
    S_B, S_C = torch.randn(n, e, generator=g, dtype=F64), torch.randn(n, e, generator=g, dtype=F64)
    M = S_C.T @ S_B
    dense = torch.linalg.eigvalsh(0.5 * (M + M.T))
    spec = sym_spectrum(S_B, S_C)
    assert spec.full().shape == (e,)
    assert torch.allclose(spec.full(), dense, atol=1e-8, rtol=0)
    assert spec.n_pos == int((dense > spec.tol).sum()) and spec.n_neg == int((dense < -spec.tol).sum())
    assert spec.n_pos + spec.n_neg + spec.n_zero == e
    spec_v = sym_spectrum(S_B, S_C, eigenvectors=True)
    V = spec_v.eigenvectors
    assert torch.allclose(0.5 * (M + M.T) @ V, V * spec_v.eigenvalues, atol=1e-8)


def test_spectrum_labels_and_tolerance():
    g = torch.Generator().manual_seed(1)
    P = torch.randn(4, 32, generator=g, dtype=F64)
    c = torch.tensor([1.0, 2.0, 0.5, 3.0], dtype=F64)
    psd = sym_spectrum(c[:, None] * P, P)  # M = Pᵀ diag(c) P
    assert psd.label == "positive semi-definite" and psd.n_pos == 4 and psd.n_zero == 28 and not psd.definite
    nsd = sym_spectrum(-c[:, None] * P, P)
    assert nsd.label == "negative semi-definite" and nsd.n_neg == 4
    mixed = sym_spectrum(torch.tensor([1.0, 1.0, -1.0, -1.0], dtype=F64)[:, None] * P, P)
    assert mixed.label == "indefinite" and mixed.n_pos == 2 and mixed.n_neg == 2
    zero = sym_spectrum(torch.zeros(4, 8, dtype=F64), torch.randn(4, 8, dtype=F64))
    assert zero.label == "zero" and zero.n_zero == 8
    pd = sym_spectrum(two_dim_params([1.0, 2.0]))
    assert pd.definite and pd.label == "positive semi-definite"
    # a relative tolerance turns tiny eigenvalues into zeros
    tiny = sym_spectrum(torch.tensor([[1.0, 0.0], [0.0, 1e-9]], dtype=F64), torch.eye(2, dtype=F64), rtol=1e-6)
    assert tiny.n_pos == 1 and tiny.n_zero == 1
    assert set(psd.to_dict()) >= {"n_pos", "n_neg", "n_zero", "label", "eigenvalues"}


def test_spectrum_fast_at_mamba_130m_size():
    g = torch.Generator().manual_seed(0)
    S_B, S_C = torch.randn(16, 1536, generator=g), torch.randn(16, 1536, generator=g)
    sym_spectrum(S_B, S_C)
    best = math.inf
    for _ in range(3):
        t0 = time.perf_counter()
        spec = sym_spectrum(S_B, S_C)
        best = min(best, time.perf_counter() - t0)
    assert best < 0.25, f"low-rank spectrum took {best:.3f} s at E=1536, N=16"
    assert spec.eigenvalues.shape == (32,) and spec.n_zero >= 1536 - 32


@pytest.mark.parametrize("args,exc,match", [
    ((torch.randn(4, 8, dtype=F64), torch.randn(4, 9, dtype=F64)), ValueError, "same shape"),
    ((torch.randn(4, 8, dtype=F64), torch.full((4, 8), float("nan"), dtype=F64)), ValueError, "'S_C'"),
    ((torch.randn(8, dtype=F64), torch.randn(8, dtype=F64)), ValueError, "'S_B'"),
    (([[1.0]], torch.randn(1, 1, dtype=F64)), TypeError, "'S_B'"),
    ((torch.ones(2, 2, dtype=torch.int64), torch.ones(2, 2, dtype=torch.int64)), TypeError, "'S_B'"),
])
def test_spectrum_bad_input(args, exc, match):
    with pytest.raises(exc, match=match):
        sym_spectrum(*args)


def test_channel_reductions_match_dense_diagonals():
    p = _random_params(12, 3)
    ch = channel_reductions(p)
    assert torch.allclose(ch.mu, torch.diagonal(p.input_output_matrix()), atol=1e-12)
    assert torch.allclose(ch.s, torch.diagonal(p.S_delta), atol=1e-12)
    assert torch.equal(ch.b, p.delta_bias) and torch.equal(ch.a, -p.A)
    fr = ch.fractions()
    assert fr["frac_convergent"] + fr["frac_static"] + fr["frac_divergent"] == pytest.approx(1.0)
    assert fr["frac_convergent"] == pytest.approx(float((ch.mu < 0).float().mean()))
    bad = _random_params(4, 2)
    bad.S_B[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        channel_reductions(bad)
    with pytest.raises(TypeError, match="'params'"):
        channel_reductions("layer")


def test_regime_table_mamba_130m_shaped_layers():
    layers = [_random_params(1536, 16, r=48, seed=k, dtype=torch.float32) for k in range(24)]
    t0 = time.perf_counter()
    table = regime_table(layers)
    elapsed = time.perf_counter() - t0
    print(f"\n24-layer regime table (E=1536, N=16): {elapsed:.3f} s")
    assert len(table) == 24 and elapsed < 10
    rows = table.to_dicts()
    assert rows[0]["layer"] == 0 and rows[23]["layer"] == 23
    assert all(r["n_pos"] + r["n_neg"] + r["n_zero"] == 1536 for r in rows)
    assert all(r["label"] == "indefinite" for r in rows)  # random factors: 16 + and 16 - eigenvalues
    assert "layer" in str(table)
    try:
        import pandas  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="pandas"):
            table.to_dataframe()
    else:
        assert table.to_dataframe().shape[0] == 24


def test_regime_table_of_a_model():
    from mamba_ode.io.config import MambaConfig
    from mamba_ode.nn import MambaLM

    torch.manual_seed(0)
    model = MambaLM(MambaConfig(d_model=32, n_layer=3, vocab_size=16, d_state=4))
    table = regime_table(model)
    assert [r.layer for r in table] == [0, 1, 2] and table[0].width == 64 and table[0].d_state == 4
    with torch.no_grad():
        model.layers[1].mixer.x_proj.weight[-1, 0] = float("nan")
    with pytest.raises(ValueError, match="layer 1"):
        regime_table(model)
    with pytest.raises(TypeError, match="'model'"):
        regime_table(3)


# ============================================================================ trajectory classification


def _log_grid(t_end: float, per_decade: int = 10) -> torch.Tensor:
    n = int(round(math.log10(t_end))) * per_decade + 1
    return torch.cat([torch.zeros(1, dtype=F64), torch.logspace(0, math.log10(t_end), n, dtype=F64)])


def test_convergent_decay_exponent_is_minus_one_half():
    f = OneDimField(-1.0, 1.0, 1.0)
    u0 = torch.tensor([[[0.5], [-1.0], [0.3]], [[1.2], [0.4], [-0.7]]], dtype=F64)
    sol = solve(f, u0, (0.0, 1e6), t_eval=_log_grid(1e6), log_time=True, rtol=1e-9, atol=1e-12)
    cls = classify_trajectory(sol, window_decades=3.0)  # fit over t ∈ [1e3, 1e6]
    assert cls.labels == [["convergent"] * 3] * 2
    alpha = cls.decay_exponent[:, 0]
    print(f"\ntoken-1 decay exponents over [1e3, 1e6]: {alpha.tolist()}")
    assert torch.allclose(alpha, torch.full_like(alpha, -0.5), atol=0.02)
    amp = float(criteria_1d(-1.0, 1.0, 1.0, [0.5]).decay_amplitude[0])
    assert abs(float(sol.ys[-1, 0, 0, 0])) * 1e3 == pytest.approx(amp, rel=2e-3)


@pytest.mark.parametrize("mu,s,b,u1", [(1.0, 1.0, 0.0, 0.5), (0.7, -1.3, 0.0, -0.9), (1.5, 0.0, 0.4, 0.8),
                                        (0.4, 2.0, -0.5, 1.1)])
def test_token1_blowup_time_matches_solver(mu, s, b, u1):
    c = criteria_1d(mu, s, 0.8, [[u1]], b)
    t_pred = float(c.t_blowup_token1[0])
    sol = solve(OneDimField(mu, s, 0.8, b), torch.tensor([[[u1]]], dtype=F64), (0.0, 1e6), log_time=True,
                rtol=1e-8, atol=1e-11)
    assert sol.status[0] is Status.BLOWUP
    rel = abs(float(sol.t_blowup[0]) - t_pred) / t_pred
    assert rel < 1e-4, (t_pred, float(sol.t_blowup[0]))
    cls = classify_trajectory(sol)
    assert cls.labels == [["divergent-finite-time"]]


def test_slow_divergence_and_static():
    f = OneDimField(1.0, -1.0, 1.0)
    u0 = torch.tensor([[[0.5], [0.8], [0.3]]], dtype=F64)
    sol = solve(f, u0, (0.0, 1e8), log_time=True, rtol=1e-8, atol=1e-11)
    cls = classify_trajectory(sol)
    assert cls.labels == [["divergent"] * 3]
    assert float(cls.growth_slope[0, 0]) == pytest.approx(1.0, rel=0.3)  # |u_1| ≈ ln(t)/|s|
    assert cls.divergence_order()[0][-1] == 0  # token 1 grows slowest
    sol0 = solve(OneDimField(0.0, 1.0, 1.0), u0, (0.0, 1e6), log_time=True)
    assert classify_trajectory(sol0).labels == [["bounded"] * 3]
    solz = solve(OneDimField(1.0, 1.0, 1.0), torch.zeros(1, 2, 1, dtype=F64), (0.0, 1e6), log_time=True)
    lab = classify_trajectory(solz)
    assert lab.labels == [["bounded"] * 2] and "zero" in lab.reasons[0][0]


def _fake_solution(ys, status, t_blowup=None, messages=None):
    nb = ys.shape[1]
    return Solution(ts=torch.linspace(0, 1e4, ys.shape[0], dtype=F64), ys=ys, status=status,
                    messages=messages or [s.value for s in status],
                    t_blowup=torch.full((nb,), math.nan, dtype=F64) if t_blowup is None else t_blowup,
                    t_final=torch.full((nb,), 1e4, dtype=F64))


def test_failed_or_nan_solutions_are_undetermined_with_reason():
    ys = torch.ones(20, 3, 2, 1, dtype=F64)
    ys[10:, 0] = math.nan
    ys[5, 2, 1] = math.nan  # NaN inside a "successful" trajectory
    sol = _fake_solution(ys, [Status.STEP_SIZE, Status.MAX_STEPS, Status.SUCCESS],
                         messages=["step-size failure: collapsed", "max-steps: used up", "success"])
    cls = classify_trajectory(sol)
    assert cls.labels == [["undetermined"] * 2] * 3
    assert "step-size" in cls.reasons[0][0] and "max-steps" in cls.reasons[1][1] and "NaN" in cls.reasons[2][0]
    assert cls.confidence[0][0] == "none"
    # a real solve that runs out of steps
    sol = solve(OneDimField(-1.0, 1.0, 1.0), torch.ones(1, 2, 1, dtype=F64), (0.0, 1e6), log_time=True, max_steps=3)
    assert sol.status[0] is Status.MAX_STEPS
    assert classify_trajectory(sol).labels == [["undetermined"] * 2]
    # a horizon too short for power-law fits
    short = solve(OneDimField(-1.0, 1.0, 1.0), torch.ones(1, 1, 1, dtype=F64), (0.0, 5.0))
    cls = classify_trajectory(short)
    assert cls.labels == [["undetermined"]] and "horizon" in cls.reasons[0][0]


@pytest.mark.parametrize("bad,exc,match", [
    ("solution", TypeError, "'solution'"),
    (dict(ts=1), TypeError, "'solution'"),
])
def test_classify_rejects_non_solutions(bad, exc, match):
    with pytest.raises(exc, match=match):
        classify_trajectory(bad)


def test_classify_rejects_bad_thresholds_and_shapes():
    sol = _fake_solution(torch.ones(5, 1, 1, 1, dtype=F64), [Status.SUCCESS])
    with pytest.raises(ValueError, match="'min_points'"):
        classify_trajectory(sol, min_points=-1)
    with pytest.raises(ValueError, match="bounded_exponent_max"):
        classify_trajectory(sol, bounded_exponent_max=0.5)
    bad = _fake_solution(torch.ones(5, 1, 1, dtype=F64)[..., None], [Status.SUCCESS])
    bad.ys = torch.ones(5, 1, 1)
    with pytest.raises(ValueError, match="ys must be"):
        classify_trajectory(bad)
    bad = _fake_solution(torch.ones(5, 2, 1, 1, dtype=F64), [Status.SUCCESS])
    with pytest.raises(ValueError, match="statuses"):
        classify_trajectory(bad)


def test_blowup_driver_and_earlier_tokens():
    # token 1 slow, token 2 blows up: token 1 is cut short (undetermined), token 2 finite-time
    f = OneDimField(1.0, 1.0, 0.5)
    u0 = torch.tensor([[[-0.5], [0.9]]], dtype=F64)
    sol = solve(f, u0, (0.0, 1e6), log_time=True, rtol=1e-8, atol=1e-11)
    cls = classify_trajectory(sol)
    assert cls.labels[0] == ["undetermined", "divergent-finite-time"]
    assert "prefix" in cls.reasons[0][0]
    # the prefix batch decides token 1
    sol_p = solve(f, prefix_batch(u0), (0.0, 1e8), log_time=True, rtol=1e-8, atol=1e-11)
    cls_p = classify_trajectory(sol_p)
    assert cls_p.labels[0][0] == "divergent" and cls_p.labels[1][1] == "divergent-finite-time"
    t_bound = float(criteria_1d(1.0, 1.0, 0.5, u0).t_blowup_bound[0, 1])
    assert float(sol.t_blowup[0]) <= t_bound * (1 + 1e-4)


def test_prefix_batch_and_packed_field_match_toolkit_field():
    u0 = torch.randn(2, 4, 1, dtype=F64)
    pb = prefix_batch(u0)
    assert pb.shape == (8, 4, 1)
    assert torch.equal(pb[5, :2], u0[1, :2]) and (pb[5, 2:] == 0).all()
    with pytest.raises(ValueError, match="'u0'"):
        prefix_batch(torch.randn(4, 1, dtype=F64))
    for mu, s, a, b in [(1.3, -0.7, 0.4, 0.2), (-0.5, 1.1, 0.0, -0.3)]:
        v = PackedOneDimField.pack(pb, *(torch.full((8,), x, dtype=F64) for x in (mu, s, a, b)))
        got = PackedOneDimField()(0.0, v)
        want = OneDimField(mu, s, a, b)(0.0, pb)
        assert torch.allclose(got[..., :1], want, atol=1e-12, rtol=1e-10)
        assert (got[..., 1:] == 0).all()


# ============================================================================ theory vs numerics


def test_theory_vs_numerics_200_random_1d_systems():
    rep = compare_theory_numerics(200, seq_len=(1, 6), seed=0, t_end=1e6, rtol=1e-7, atol=1e-10)
    print("\n" + str(rep))
    assert len({c.system for c in rep.cases}) == 200
    mus = {c.system: c.params["mu"] for c in rep.cases}
    ss = {c.system: c.params["s_delta"] for c in rep.cases}
    assert min(mus.values()) < 0 < max(mus.values()) and min(ss.values()) < 0 < max(ss.values())
    assert rep.n_decided == len(rep.cases)
    assert rep.disagreements == [], str(rep)
    conf = rep.confusion
    assert {"convergent", "divergent-finite-time", "divergent-logarithmic"} <= set(conf)
    assert rep.token1_blowup and max(r[3] for r in rep.token1_blowup) < 1e-4


def test_theory_vs_numerics_toolkit_field_with_bias():
    rep = compare_theory_numerics(8, seq_len=(1, 3), seed=5, b_range=(-0.5, 0.5), pack=0, t_end=1e6,
                                  rtol=1e-7, atol=1e-10)
    print("\n" + str(rep))
    assert rep.disagreements == [], str(rep)


def test_agreement_report_validates_arguments():
    with pytest.raises(ValueError, match="'n_systems'"):
        compare_theory_numerics(0)
    with pytest.raises(ValueError, match="'seq_len'"):
        compare_theory_numerics(1, seq_len=(3, 1))
    with pytest.raises(ValueError, match="'eigenvalue_signs'"):
        compare_theory_numerics(1, dim=2, eigenvalue_signs=[1])


# ============================================================================ E = 2, after the paper's figure


def _two_dim(signs, equal_delta, seed=3):
    return compare_theory_numerics(1, dim=2, n_inits=20, seq_len=(2, 2), eigenvalue_signs=signs,
                                   equal_delta=equal_delta, t_end=1e6, rtol=1e-7, atol=1e-10, seed=seed)


CUT_SHORT = ("ends at T=", "passed the solver's norm threshold", "stopped when token")


@pytest.mark.parametrize("equal_delta", [True, False])
def test_two_dim_definite_spectra(equal_delta):
    pos = _two_dim((1, 1), equal_delta)
    neg = _two_dim((-1, -1), equal_delta)
    for name, rep in (("two positive", pos), ("two negative", neg)):
        print(f"\nE=2, {name}, equal_delta={equal_delta}: all tokens {rep.outcome_fractions()}; "
              f"token 1 {rep.outcome_fractions(0)}\n{rep}")
    assert pos.cases[0].params["label"] == "positive semi-definite"
    # two positive eigenvalues: no token converges or stays bounded; a token whose prefix run is ended by an
    # earlier token's blow-up (or the solver's norm threshold) cannot be followed further and is undetermined
    for c in pos.cases:
        assert c.observed in ("divergent", "divergent-finite-time") or (
            c.observed == "undetermined" and c.token > 0 and any(k in c.reason for k in CUT_SHORT)), c
    assert all(c.observed in ("divergent", "divergent-finite-time") for c in pos.cases if c.token == 0)
    assert all(c.observed == "convergent" for c in neg.cases), str(neg)


def test_two_dim_mixed_spectrum_depends_on_tokens():
    # equal Δ on both channels: token 1 keeps its direction and the sign of u_1ᵀ M u_1 decides (a theorem).
    # (With unequal Δ and an antisymmetric part, tokens can spiral outwards ever faster and the adaptive
    # solver crawls until max_steps: those runs are "undetermined" — too slow for this test.)
    rep = _two_dim((1, -1), True)
    frac = rep.outcome_fractions()
    print(f"\nE=2, one + one -, equal_delta=True: all tokens {frac}; token 1 {rep.outcome_fractions(0)}\n{rep}")
    assert rep.cases[0].params["label"] == "indefinite"
    assert frac["divergent"] + frac["divergent-finite-time"] > 0  # a divergent case is reproduced
    assert frac["convergent"] > 0  # and a convergent one: the outcome depends on the tokens
    tok1 = [c for c in rep.cases if c.token == 0]
    assert all(c.decided and c.agree for c in tok1), str(rep)
    assert {c.observed for c in tok1} == {"convergent", "divergent-finite-time"}
    # finding: unlike the 1-D dichotomy (all tokens → 0 or all → ∞), one sequence can mix outcomes —
    # token 1 converges (u_1ᵀ M u_1 < 0) while token 2 blows up in finite time
    pairs = [(rep.cases[i].observed, rep.cases[i + 1].observed) for i in range(0, len(rep.cases), 2)]
    mixed = sum(p == ("convergent", "divergent-finite-time") for p in pairs)
    print(f"sequences with token 1 convergent and token 2 blowing up: {mixed}/{len(pairs)}")
    assert mixed > 0
    assert rep.token1_blowup and max(r[3] for r in rep.token1_blowup) < 1e-4


def test_criteria_nd_equal_delta_blowup_time():
    params = two_dim_params([1.0, -0.5], antisym=0.3, b_delta=0.2, angle=0.4)
    u0 = torch.tensor([[[0.8, 0.3]]], dtype=F64)
    crit = criteria_nd(params, u0)
    assert crit.regimes == [["divergent-finite-time"]]
    sol = solve(S6Field(params), u0, (0.0, 1e6), log_time=True, rtol=1e-8, atol=1e-11)
    t_pred = float(crit.t_blowup_token1[0])
    assert abs(float(sol.t_blowup[0]) - t_pred) / t_pred < 1e-4
    with pytest.raises(ValueError, match="'u0'"):
        criteria_nd(params, torch.zeros(1, 2, 3, dtype=F64))


# ============================================================================ token ordering and importance


def test_importance_scores_match_dense_formula():
    p = _random_params(10, 3, r=2)
    u = torch.randn(2, 5, 10, dtype=F64)
    K = torch.randn(10, dtype=F64)
    want = (u @ p.S_delta.T + p.delta_bias) @ K
    assert torch.allclose(importance_scores(p, u, K), want, atol=1e-12)
    with pytest.raises(ValueError, match="'K'"):
        importance_scores(p, u, torch.randn(9, dtype=F64))
    with pytest.raises(ValueError, match="'u'"):
        importance_scores(p, torch.randn(2, 5, 9, dtype=F64), K)


def test_divergence_order_from_trajectories_matches_criteria():
    mu, s, a = 1.0, 1.0, 0.5
    u0 = torch.tensor([[[0.6], [-0.4], [0.9]]], dtype=F64)
    crit = criteria_1d(mu, s, a, u0)
    sol = solve(OneDimField(mu, s, a), prefix_batch(u0), (0.0, 1e6), log_time=True, rtol=1e-8, atol=1e-11)
    tb = sol.t_blowup.tolist()  # blow-up time of each prefix = the time its last token becomes unbounded
    print(f"\nprefix blow-up times {tb}; criteria bounds {crit.t_blowup_bound[0].tolist()}")
    assert all(t <= bd * (1 + 1e-4) for t, bd in zip(tb, crit.t_blowup_bound[0].tolist()))
    assert tb[0] >= tb[1] >= tb[2]  # later tokens blow up no later than earlier ones
    assert crit.divergence_order()[0] == [2, 1, 0]


def test_criteria_1d_reasons_name_the_driving_token_by_its_position():
    """Token 1 (position 1) inherits the blow-up of token 0 (position 0): the reason names j=0, the list index."""
    c = criteria_1d(1.0, 1.0, 1.0, [0.5, -0.8])
    assert "token j=0 ≤ l=1" in c.reasons[0][1]
    c = criteria_1d(1.0, 1.0, 1.0, [-0.5, 0.8, -0.1])  # position 1 is the fast one
    assert "token j=1 ≤ l=2" in c.reasons[0][2]
    assert "u_1" not in c.reasons[0][0] + c.reasons[0][1]


def test_packed_one_dim_systems_keep_their_float64_parameters():
    """The packed 1-D solve integrates the sampled float64 (μ, s, a, b), not float32 roundings of them:
    at tight tolerances token 1's blow-up time matches the closed form to 1e-11 relative (float32-rounded
    parameters put it ~1e-8 off), as the one-system-per-solve path does."""
    rep = compare_theory_numerics(6, seq_len=(1, 2), seed=3, rtol=1e-12, atol=1e-14)
    assert rep.token1_blowup, "the seed must give blow-ups to compare"
    assert max(rel for *_, rel in rep.token1_blowup) <= 1e-11
