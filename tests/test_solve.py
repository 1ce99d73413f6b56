"""solve(): the paper's 1-D theorems, blow-up times, per-trajectory statuses, backends, bad input.

Independent oracles: closed forms and asymptotes of the 1-D theory, scipy.integrate.quad for blow-up
times, scipy's own solve_ivp for the backend cross-check.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.integrate import quad, solve_ivp

from mamba_ode.dynamics.fields import OneDimField, S6Field
from mamba_ode.dynamics.solvers import Solution, Status, euler, solve

F64 = torch.float64



def softplus(x: float) -> float:
    return max(x, 0.0) + math.log1p(math.exp(-abs(x)))


def blowup_time_quad(mu: float, s: float, u0: float) -> float:
    """1-D theory: T* = ∫_{|u0|}^∞ dr / (μ r³ softplus(s·sign(u0)·r)), by scipy quad."""
    sg = math.copysign(1.0, u0)
    return quad(lambda r: 1.0 / (mu * r ** 3 * softplus(s * sg * r)), abs(u0), math.inf,
                epsabs=0.0, epsrel=1e-12, limit=200)[0]


def tokens(*vals: float) -> torch.Tensor:
    return torch.tensor(vals, dtype=F64).reshape(1, -1, 1)


# ---------------------------------------------------------------------------- the three 1-D scenarios


def test_convergent_scenario_rate_and_monotonicity():
    """μ = -1, s = 0.8, a = 1: u_1 √t → 1/sqrt(2 ln 2) (within 1e-3 at t = 1e6); |u| decreasing, signs kept."""
    f = OneDimField(-1.0, 0.8, 1.0)
    u0 = tokens(0.7, -0.4, 1.2, -1.5, 0.3)
    t_eval = torch.cat([torch.zeros(1, dtype=F64), torch.logspace(-3, 6, 120, dtype=F64)])
    sol = solve(f, u0, (0.0, 1e6), t_eval=t_eval, log_time=True, rtol=1e-9, atol=1e-12)
    assert sol.status == [Status.SUCCESS]
    assert sol.stats["n_steps"] < 500
    u = sol.ys[:, 0, :, 0]  # (T, L)
    assert abs(u[-1, 0].item() * math.sqrt(1e6) - 1 / math.sqrt(2 * math.log(2))) < 1e-3
    assert (torch.sign(u) == torch.sign(u0[0, :, 0])).all()
    assert (u.abs()[1:] <= u.abs()[:-1] + 1e-15).all()
    # later tokens decay like t^{-1/2} too: u_l √t stays bounded and away from 0 at the end
    tail = (u[-1].abs() * 1e3)
    assert ((tail > 0.05) & (tail < 5)).all()


@pytest.mark.parametrize("kwargs", [{}, dict(log_time=True), dict(method="dopri8"),
                                    dict(backend="scipy", method="DOP853"),
                                    dict(backend="scipy", method="RK45", log_time=True)])
def test_blowup_time_mu1_s1(kwargs):
    """μ = 1, s = 1, u_1(0) = 0.5: status blow-up, t_blowup within 1e-4 of quadrature 1.676939…"""
    tq = blowup_time_quad(1.0, 1.0, 0.5)
    assert tq == pytest.approx(1.676939, abs=1e-6)
    sol = solve(OneDimField(1.0, 1.0, 1.0), tokens(0.5), (0.0, 3.0), **kwargs)
    assert sol.status == [Status.BLOWUP]
    assert abs(sol.t_blowup[0].item() - tq) <= 1e-4 * tq
    assert "blow-up" in sol.messages[0] and "t*=" in sol.messages[0]
    # rows before the stop are finite and increasing; after t_blowup they are NaN
    before = sol.ts < sol.t_final[0]
    assert torch.isfinite(sol.ys[before]).all()
    assert torch.isnan(sol.ys[sol.ts > sol.t_blowup[0]]).all()
    assert not sol.ok and "1 blow-up" in sol.message


def test_blowup_time_20_random_parameters():
    """20 random (μ > 0, s, u_1(0)) with s·u_1(0) > 0: t_blowup within 1e-4 relative of quad."""
    rng = np.random.default_rng(20)
    worst = 0.0
    for _ in range(20):
        mu, s_abs, u_abs = rng.uniform(0.3, 3.0), rng.uniform(0.2, 3.0), rng.uniform(0.2, 2.0)
        sign = rng.choice([-1.0, 1.0])
        s, u0 = sign * s_abs, sign * u_abs
        tq = blowup_time_quad(mu, s, u0)
        sol = solve(OneDimField(mu, s, rng.uniform(0.0, 2.0)), tokens(u0), (0.0, 2 * tq), t_eval=[0.0, 2 * tq])
        assert sol.status == [Status.BLOWUP], sol.messages
        worst = max(worst, abs(sol.t_blowup[0].item() - tq) / tq)
    assert worst <= 1e-4


def test_slow_divergence_log_time_to_1e12():
    """μ = 1, s = -1, u_1(0) = 0.7: no blow-up to t = 1e12; |s|u − 3 ln u − ln(μ|s|t) small (≈ -0.11, -0.08)."""
    sol = solve(OneDimField(1.0, -1.0, 1.0), tokens(0.7), (0.0, 1e12), t_eval=[0.0, 1e9, 1e12], log_time=True,
                rtol=1e-8, atol=1e-10)
    assert sol.status == [Status.SUCCESS]
    assert math.isnan(sol.t_blowup[0].item())
    assert sol.stats["n_steps"] < 1000  # "a few hundred steps"
    res = []
    for i, t in ((1, 1e9), (2, 1e12)):
        u = sol.ys[i, 0, 0, 0].item()
        res.append(u - 3 * math.log(u) - math.log(t))
    assert abs(res[0]) < 0.2 and abs(res[1]) < 0.2
    assert res[0] == pytest.approx(-0.11, abs=0.01) and res[1] == pytest.approx(-0.08, abs=0.01)
    # growth like ln t: u(1e12) - u(1e9) ≈ ln(1e3) + 3 ln(u ratio), nothing like a power of t
    u9, u12 = sol.ys[1, 0, 0, 0].item(), sol.ys[2, 0, 0, 0].item()
    assert 6.0 < u12 - u9 < 9.0


def test_slow_divergence_against_scipy_in_t():
    """The log-time solution equals an independent solve_ivp run in plain t (to t = 1e4)."""
    mu, s = 1.0, -1.0

    def rhs(t, y):
        return [mu * y[0] ** 3 * softplus(s * y[0])]

    ref = solve_ivp(rhs, (0.0, 1e4), [0.7], method="DOP853", rtol=1e-12, atol=1e-12, t_eval=[1e2, 1e4])
    sol = solve(OneDimField(mu, s, 1.0), tokens(0.7), (0.0, 1e4), t_eval=[1e2, 1e4], log_time=True, rtol=1e-10,
                atol=1e-12)
    assert np.abs(sol.ys[:, 0, 0, 0].numpy() - ref.y[0]).max() < 1e-7


# ---------------------------------------------------------------------------- per-trajectory outcomes


def test_mixed_batch_statuses_and_values():
    """Blowing-up and surviving trajectories in one batch: each gets its own status and correct values."""
    f = OneDimField(1.0, 1.0, 1.0)
    u0 = torch.tensor([[[-0.5], [0.1]], [[0.5], [0.2]], [[-0.2], [-0.3]], [[0.4], [0.05]]], dtype=F64)
    t_eval = torch.linspace(0.0, 4.0, 41, dtype=F64)
    sol = solve(f, u0, (0.0, 4.0), t_eval=t_eval, rtol=1e-8, atol=1e-10)
    assert isinstance(sol, Solution)
    assert sol.ys.shape == (41, 4, 2, 1)
    assert [s.value for s in sol.status] == ["success", "blow-up", "success", "blow-up"]
    for b in range(4):
        alone = solve(f, u0[b:b + 1], (0.0, 4.0), t_eval=t_eval, rtol=1e-8, atol=1e-10)
        assert alone.status[0] is sol.status[b]
        finite = torch.isfinite(alone.ys[:, 0])
        assert torch.equal(finite, torch.isfinite(sol.ys[:, b]))
        assert (alone.ys[:, 0][finite] - sol.ys[:, b][finite]).abs().max() <= 1e-6
    for b in (1, 3):
        # token 1 alone decides the blow-up time when token 2 is small
        tq = blowup_time_quad(1.0, 1.0, u0[b, 0, 0].item())
        assert abs(sol.t_blowup[b].item() - tq) <= 1e-4 * tq
        assert sol.t_final[b] < sol.t_blowup[b] + 1e-9
    assert torch.isnan(sol.t_blowup[[0, 2]]).all()
    assert (sol.t_final[[0, 2]] == 4.0).all()


@pytest.mark.parametrize("kwargs", [{}, dict(backend="scipy", method="DOP853")])
def test_threshold_event_without_singularity(kwargs):
    """Exponential growth passes the norm threshold: blow-up at t = ln(threshold / u0), no singularity."""
    sol = solve(lambda t, u: u, torch.tensor([[[1.0]], [[-1e-6]]], dtype=F64), (0.0, 20.0), blowup_threshold=1e4,
                rtol=1e-10, atol=1e-12, **kwargs)
    assert sol.status == [Status.BLOWUP, Status.SUCCESS]
    assert sol.t_blowup[0].item() == pytest.approx(math.log(1e4), rel=1e-6)
    assert "threshold" in sol.messages[0]
    assert sol.ys[-1, 1, 0, 0].item() == pytest.approx(-1e-6 * math.exp(20.0), rel=1e-7)


@pytest.mark.parametrize("rate", [0.5, 3.0])
def test_exponential_growth_in_log_time_is_no_singularity(rate):
    """In s = ln(1 + t) an exponential has a decreasing 1/(d ln‖u‖/ds): the blow-up reading is made in t, where
    1/r is constant, so the threshold is reported at its crossing time ln(threshold)/rate, not a singularity."""
    sol = solve(lambda t, u: rate * u, tokens(1.0), (0.0, 200.0), log_time=True, rtol=1e-6, atol=1e-9)
    assert sol.status == [Status.BLOWUP]
    assert "no finite-time singularity" in sol.messages[0]
    assert sol.t_blowup[0].item() == pytest.approx(math.log(1e8) / rate, rel=1e-6)


@pytest.mark.parametrize("k", [1.1, 1.2, 1.5, 3.0])
@pytest.mark.parametrize("log_time", [False, True])
def test_low_order_singularity_time(k, log_time):
    """dy/dt = y^k from y0 = 1 blows up at t* = 1/(k - 1); read in t, log time included."""
    sol = solve(lambda t, u: u.abs() ** k, tokens(1.0), (0.0, 2.0 / (k - 1)), log_time=log_time, rtol=1e-8,
                atol=1e-12)
    assert sol.status == [Status.BLOWUP]
    assert "estimated blow-up time" in sol.messages[0]
    assert sol.t_blowup[0].item() == pytest.approx(1.0 / (k - 1), rel=1e-6)


@pytest.mark.parametrize("jumps", [None, [1.5]])
def test_time_dependent_field_is_accurate_at_the_end_of_each_piece(jumps):
    """du/dt = t³ on (1, 2), with or without a (harmless) declared jump at 1.5: DP5 integrates it exactly when its
    steps land on each piece's end; a last step past the end, its stages clamped to it, left u(2) off by 1e-8
    (2e-9 with the jump) at rtol 1e-10."""
    t_eval = [1.0, 1.5, 1.9, 2.0]
    sol = solve(lambda t, u: torch.ones_like(u) * float(t) ** 3, torch.zeros(1, 1, 1, dtype=F64), (1.0, 2.0),
                t_eval=t_eval, rtol=1e-10, atol=1e-12, jump_times=jumps)
    exact = np.array([(t ** 4 - 1) / 4 for t in t_eval])
    assert np.abs(sol.ys[:, 0, 0, 0].numpy() - exact).max() < 1e-12


@pytest.mark.parametrize("log_time", [False, True])
def test_a_field_that_ends_at_t1_is_never_evaluated_past_it(log_time):
    """du/dt = u·√(2 − t) on (0, 2) is NaN past t = 2: no stage may go there. u(2) = exp((2/3)·2^1.5)."""
    def f(t, u):
        assert float(t) <= 2.0, float(t)
        return u * math.sqrt(2.0 - float(t))

    sol = solve(f, tokens(1.0), (0.0, 2.0), t_eval=[0.0, 2.0], log_time=log_time, rtol=1e-9, atol=1e-12)
    assert sol.status == [Status.SUCCESS]
    assert sol.ys[-1, 0, 0, 0].item() == pytest.approx(math.exp(2.0 / 3.0 * 2.0 ** 1.5), rel=1e-6)


def test_default_method_follows_the_backend():
    """method=None: torchdiffeq's dopri5, or solve_ivp's RK45 with the scipy backend (as each library's default)."""
    for backend, method in (("torchdiffeq", "dopri5"), ("scipy", "RK45")):
        sol = solve(lambda t, u: -u, tokens(1.0), (0.0, 1.0), t_eval=[0.0, 1.0], backend=backend, rtol=1e-8,
                    atol=1e-10)
        assert sol.method == method
        assert sol.ys[-1, 0, 0, 0].item() == pytest.approx(math.exp(-1.0), rel=1e-6)


def test_non_finite_field_is_a_status_not_a_crash():
    def f(t, u):
        return u if float(t) < 1.0 else u * math.nan

    sol = solve(f, torch.ones(2, 3, 2, dtype=F64), (0.0, 2.0))
    assert sol.status == [Status.STEP_SIZE, Status.STEP_SIZE]
    assert "step-size failure" in sol.messages[0]
    assert (sol.t_final <= 1.0).all() and (sol.t_final > 0.5).all()
    before = sol.ts <= sol.t_final[0]
    assert torch.isnan(sol.ys[~before]).all()
    assert torch.allclose(sol.ys[before, 0, 0, 0], torch.exp(sol.ts[before]), rtol=1e-6)


def test_max_steps_status():
    sol = solve(OneDimField(-1.0, 0.8, 1.0), tokens(0.5, 0.2), (0.0, 1e3), max_steps=5)
    assert sol.status == [Status.MAX_STEPS]
    assert "max_steps=5" in sol.messages[0]


# ---------------------------------------------------------------------------- jumps, stats, methods


class PiecewiseConstant(torch.nn.Module):
    """du/dt = c_k on [k, k+1): exact solution piecewise linear; jumps at 1, 2."""

    jump_times = (1.0, 2.0)

    def __init__(self):
        super().__init__()
        self.c = [1.0, -3.0, 0.5]
        self.nfev = 0

    def forward(self, t, u):
        self.nfev += 1
        k = min(max(math.floor(float(t)), 0), 2)
        return torch.full_like(u, self.c[k]) * (1.0 + u.abs() * 0)


@pytest.mark.parametrize("backend,method", [("torchdiffeq", "dopri5"), ("torchdiffeq", "bosh3"),
                                            ("scipy", "RK45")])
def test_jumps_are_landed_on(backend, method):
    f = PiecewiseConstant()
    t_eval = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0]
    sol = solve(f, torch.zeros(1, 1, 1, dtype=F64), (0.0, 3.0), t_eval=t_eval, backend=backend, method=method)
    exact = [0.0, 0.5, 1.0, -0.5, -2.0, -1.5]
    assert np.abs(sol.ys[:, 0, 0, 0].numpy() - exact).max() < 1e-12
    assert sol.stats["nfev"] == f.nfev


def test_stats_counts_and_default_grid():
    f = OneDimField(-1.0, 0.8, 1.0)
    sol = solve(f, tokens(0.9, -0.3), (0.0, 5.0), progress=True)
    assert sol.ts.shape == (101,) and sol.ts[0] == 0.0 and sol.ts[-1] == 5.0
    assert sol.stats["nfev"] == f.nfev
    assert sol.stats["n_accepted"] + sol.stats["n_rejected"] == sol.stats["n_steps"]
    assert sol.stats["n_accepted"] > 0
    assert sol.method == "dopri5" and sol.backend == "torchdiffeq" and "success" in sol.message
    lt = solve(f, tokens(0.9), (0.0, 1e4), log_time=True, n_eval=5)
    assert np.allclose(np.log1p(lt.ts.numpy()), np.linspace(0, math.log1p(1e4), 5))
    assert lt.log_time


@pytest.mark.parametrize("method,options", [("dopri8", None), ("adaptive_heun", None), ("fehlberg2", None),
                                            ("rk4", {"step_size": 0.01})])
def test_other_torchdiffeq_methods(method, options):
    f = OneDimField(-1.0, 0.8, 1.0)
    ref = solve(f, tokens(0.9, -0.3), (0.0, 2.0), t_eval=[2.0], rtol=1e-11, atol=1e-12)
    sol = solve(f, tokens(0.9, -0.3), (0.0, 2.0), t_eval=[2.0], method=method, options=options, rtol=1e-6,
                atol=1e-8)
    assert sol.status == [Status.SUCCESS]
    assert (sol.ys - ref.ys).abs().max() < 1e-4


def test_fixed_grid_method_without_step_size_steps_on_the_output_times():
    """torchdiffeq's convention: rk4 with no step_size takes one step per output interval. On du/dt = -u one RK4
    step of size h multiplies u by the Taylor polynomial 1 - h + h²/2 - h³/6 + h⁴/24 (closed form)."""
    def decay(t, u):
        return -u

    u0 = torch.full((1, 2, 3), 0.7, dtype=torch.float64)
    sol = solve(decay, u0, (0.0, 1.5), t_eval=[0.0, 0.5, 1.5], method="rk4")
    factor = [1.0]
    for h in (0.5, 1.0):
        factor.append(factor[-1] * (1 - h + h ** 2 / 2 - h ** 3 / 6 + h ** 4 / 24))
    expected = 0.7 * torch.tensor(factor, dtype=torch.float64)
    assert sol.ok
    torch.testing.assert_close(sol.ys[:, 0, 0, 0], expected, rtol=1e-14, atol=0)
    assert abs(float(sol.ys[-1, 0, 0, 0]) - 0.7 * math.exp(-1.5)) > 1e-3  # coarse steps: far from the exact flow


def test_float32_state_keeps_dtype():
    f = OneDimField(-1.0, 0.8, 1.0)
    sol = solve(f, tokens(0.9, -0.3).float(), (0.0, 1.0), rtol=1e-5, atol=1e-7)
    assert sol.ys.dtype == torch.float32 and sol.ok


# ---------------------------------------------------------------------------- backends agree


@pytest.mark.parametrize("method", ["DOP853", "RK45", "LSODA", "Radau"])
def test_backends_agree_one_dim(method):
    f = OneDimField(1.0, -1.0, 0.5)  # slow divergence (s·u > 0 nowhere) and μ < 0 convergence in one batch
    u0 = torch.tensor([[[0.7], [0.2], [0.4]], [[0.3], [0.5], [0.1]]], dtype=F64)
    t_eval = torch.linspace(0.0, 5.0, 11, dtype=F64)
    a = solve(f, u0, (0.0, 5.0), t_eval=t_eval, rtol=1e-10, atol=1e-12)
    b = solve(f, u0, (0.0, 5.0), t_eval=t_eval, backend="scipy", method=method, rtol=1e-10, atol=1e-12)
    assert a.ok and b.ok and b.backend == "scipy" and b.stats["n_rejected"] is None
    assert (a.ys - b.ys).abs().max() <= 1e-6


@pytest.mark.parametrize("method", ["DOP853", "Radau"])
def test_backends_agree_multidimensional(random_params, method):
    p = random_params(3, 2, 2, seed=11)
    f = S6Field(p)
    u0 = 0.3 * torch.randn(2, 4, 3, dtype=F64, generator=torch.Generator().manual_seed(2))
    t_eval = torch.linspace(0.0, 2.0, 9, dtype=F64)
    a = solve(f, u0, (0.0, 2.0), t_eval=t_eval, rtol=1e-10, atol=1e-12)
    b = solve(f, u0, (0.0, 2.0), t_eval=t_eval, backend="scipy", method=method, rtol=1e-10, atol=1e-12)
    assert a.ok and b.ok
    assert (a.ys - b.ys).abs().max() <= 1e-6


def test_backends_agree_on_blowup_time():
    f = OneDimField(2.0, 0.5, 1.0)
    a = solve(f, tokens(0.8), (0.0, 5.0))
    b = solve(f, tokens(0.8), (0.0, 5.0), backend="scipy", method="DOP853")
    assert a.status == b.status == [Status.BLOWUP]
    assert abs(a.t_blowup[0] - b.t_blowup[0]).item() <= 1e-5 * b.t_blowup[0].item()


# ---------------------------------------------------------------------------- bad input


FIELD = OneDimField(1.0, 1.0, 1.0)
GOOD = tokens(0.5, 0.1)


@pytest.mark.parametrize("kwargs,match", [
    (dict(u0=torch.zeros(2, 1, dtype=F64)), "u0"),  # wrong rank
    (dict(u0=torch.zeros(1, 3, 2, dtype=F64)), "u0"),  # wrong width for the field
    (dict(u0=tokens(0.5, math.nan)), "u0"),  # non-finite
    (dict(u0=tokens(0.5, math.inf)), "u0"),
    (dict(u0=torch.zeros(1, 0, 1, dtype=F64)), "u0"),  # empty sequence
    (dict(u0=torch.zeros(0, 2, 1, dtype=F64)), "u0"),  # empty batch
    (dict(u0=torch.zeros(1, 2, 1, dtype=torch.int64)), "u0"),
    (dict(method="rk45"), "method"),
    (dict(method="RK45"), "method"),  # a scipy name with the torchdiffeq backend
    (dict(backend="scipy", method="dopri5"), "method"),
    (dict(backend="jax"), "backend"),
    (dict(t_span=(1.0, 0.0)), "t_span"),
    (dict(t_span=(1.0, 1.0)), "t_span"),
    (dict(t_span=(0.0, math.inf)), "t_span"),
    (dict(t_span=(0.0,)), "t_span"),
    (dict(t_span=(-2.0, 1.0), log_time=True), "t_span"),
    (dict(t_eval=[0.0, 1.5]), "t_eval"),  # outside
    (dict(t_eval=[-0.1, 0.5]), "t_eval"),
    (dict(t_eval=[0.5, 0.2]), "t_eval"),  # not increasing
    (dict(t_eval=[]), "t_eval"),
    (dict(rtol=-1.0), "rtol"),
    (dict(atol=0.0), "atol"),
    (dict(max_steps=0), "max_steps"),
    (dict(blowup_threshold=-1.0), "blowup_threshold"),
])
def test_bad_input_names_the_argument(kwargs, match):
    args = dict(u0=GOOD, t_span=(0.0, 1.0))
    args.update(kwargs)
    u0, t_span = args.pop("u0"), args.pop("t_span")
    with pytest.raises(ValueError, match=match):
        solve(FIELD, u0, t_span, **args)


def test_bad_types():
    with pytest.raises(TypeError, match="field"):
        solve("f", GOOD, (0.0, 1.0))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="u0"):
        solve(FIELD, [[0.5]], (0.0, 1.0))  # type: ignore[arg-type]


def test_euler_bad_step_and_blowup():
    with pytest.raises(ValueError, match="'h'"):
        euler(FIELD, GOOD, (0.0, 1.0), 0.3)
    with pytest.raises(ValueError, match="'h'"):
        euler(FIELD, GOOD, (0.0, 1.0), -1.0)
    sol = euler(lambda t, u: u ** 2, torch.tensor([[[1.0]], [[-0.5]]], dtype=F64), (0.0, 2.0), 0.25,
                blowup_threshold=1e3)
    assert sol.status == [Status.BLOWUP, Status.SUCCESS]
    assert torch.isfinite(sol.ys[:, 1]).all()
    assert sol.ys.shape == (9, 2, 1, 1)
