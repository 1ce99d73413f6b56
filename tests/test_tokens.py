"""Per-token outcomes by events (integrate_tokens) and their labels (classify_tokens).

Oracles: closed-form quadrature for the one-dimensional blow-up time, and scipy ``solve_ivp`` (Radau,
float64, tight tolerances, terminal norm events) on a numpy implementation of the token-mixing sum
(``y_l = Σ_{j≤l} P_lj u_j`` with P_lj written out entry by entry), restarted on the causal prefix after
each event — independent of the scan and of the integrator under test.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
from scipy.integrate import quad, solve_ivp

from mamba_ode import OneDimField, SSMParams
from mamba_ode.dynamics.fields import field_of_params
from mamba_ode.dynamics.tokens import TokenEnd, integrate_tokens
from mamba_ode.regimes.labels import Label
from mamba_ode.regimes.tokens import classify_tokens

T_STAR_RTOL = 1e-3  # the accuracy asked of every blow-up time


def _softplus(x: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, x)


def reference_field(p: SSMParams, u: np.ndarray) -> np.ndarray:
    """(m, E) ``Σ_{j≤l} P_lj u_j`` with ``P_lj^d = Δ_j^d Σ_n C_l[n] B_j[n] exp(A[d,n] Σ_{k=j+1..l} Δ_k^d)``."""
    s_delta = (p.W_dt @ p.W_x).numpy()
    delta = _softplus(u @ s_delta.T + p.delta_bias.numpy())
    B, C, A = u @ p.S_B.numpy().T, u @ p.S_C.numpy().T, p.A.numpy()
    cs = np.cumsum(delta, axis=0)
    out = np.zeros_like(u)
    for l in range(u.shape[0]):
        for j in range(l + 1):
            decay = np.exp(A * (cs[l] - cs[j])[:, None])  # (E, N)
            out[l] += delta[j] * (decay @ (C[l] * B[j])) * u[j]
    return out


def scipy_blowups(p: SSMParams, u0: np.ndarray, t_max: float, factor: float = 1e4) -> dict[int, float]:
    """{driver token: t*} — the first token to reach ``factor``·R0 in each prefix, prefix by prefix.

    At 1e4·R0 the time left to the singularity is below 1e-4·t* for any growth order ≥ 2. Should Radau's
    step size collapse first (it does near fast singularities), the token whose norm grew most (by 100×
    at least) is the driver and the collapse time its t*.
    """
    u, t, m, out = u0.copy(), 0.0, u0.shape[0], {}
    e = u0.shape[1]
    while m > 0:
        r0 = max(np.linalg.norm(u0[:m], axis=1).max(), np.linalg.norm(u[:m], axis=1).max())

        def rhs(_t, y, m=m):
            return reference_field(p, y.reshape(m, e)).ravel()

        events = []
        for l in range(m):
            def ev(_t, y, l=l, r0=r0):
                return np.linalg.norm(y[l * e:(l + 1) * e]) - factor * r0
            ev.terminal, ev.direction = True, 1
            events.append(ev)
        sol = solve_ivp(rhs, (t, t_max), u[:m].ravel(), method="Radau", rtol=1e-11, atol=1e-12, events=events)
        hits = [(float(te[0]), l) for l, te in enumerate(sol.t_events) if len(te)]
        if hits:
            t, j = min(hits)
            out[j] = t
            u, m = sol.y_events[j][0].reshape(m, e), j
            continue
        if sol.status != -1:
            return out
        growth = np.linalg.norm(sol.y[:, -1].reshape(m, e), axis=1) / np.linalg.norm(u[:m], axis=1)
        j = int(np.argmax(growth))
        assert growth[j] > 100, f"Radau failed at t={sol.t[-1]} without a singularity: {sol.message}"
        t = float(sol.t[-1])
        out[j] = t
        u, m = sol.y[:, -1].reshape(m, e), j
    return out


def small_layer(seed: int, e: int = 3, n: int = 2, scale: float = 1.0) -> SSMParams:
    """A small float64 Mamba-1 layer with a general diagonal A."""
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape: int, s: float = 1.0) -> torch.Tensor:
        return s * torch.randn(*shape, generator=g, dtype=torch.float64)

    return SSMParams(W_x=rnd(1, e, s=0.7), W_dt=rnd(e, 1, s=0.7), delta_bias=rnd(e, s=0.5),
                     S_B=rnd(n, e, s=scale), S_C=rnd(n, e, s=scale),
                     A=-(0.2 + torch.rand(e, n, generator=g, dtype=torch.float64)),
                     D=torch.zeros(e, dtype=torch.float64))


# ---------------------------------------------------------------------------------------------- blow-up times


@pytest.mark.parametrize("mu,s,u1", [(1.0, 1.0, 0.5), (2.0, 0.5, 1.3), (0.5, 3.0, -0.8)])
def test_one_dim_token1_blowup_time_matches_quadrature(mu, s, u1):
    """Token 1 of the 1-D system: ``T* = ∫_{|u|}^∞ dr / (μ r³ softplus(s·sign(u)·r))`` (float64 quadrature)."""
    sign = math.copysign(1.0, u1)
    if s * sign < 0:
        pytest.skip("no blow-up when s·u < 0")
    exact, _ = quad(lambda r: 1.0 / (mu * r ** 3 * float(np.logaddexp(0.0, s * sign * r))), abs(u1), math.inf,
                    epsabs=0, epsrel=1e-12, limit=200)
    f = OneDimField(mu, s, a=1.0)
    sol = integrate_tokens(f, torch.tensor([[[u1]]], dtype=torch.float64), 10 * exact, rtol=1e-8, atol=1e-10)
    assert sol.ends[0] is TokenEnd.BLOWUP, sol.messages[0]
    assert float(sol.t_blowup[0]) == pytest.approx(exact, rel=1e-6)


@pytest.mark.parametrize("seed", [1, 2, 5, 6])
def test_blowup_times_match_scipy_event_reference(seed):
    """Each driver token's t* against scipy Radau with a norm event, prefix by prefix (float64)."""
    p = small_layer(seed, scale=1.2)
    g = torch.Generator().manual_seed(100 + seed)
    u0 = torch.randn(5, 3, generator=g, dtype=torch.float64)
    sol = integrate_tokens(field_of_params(p), u0, 50.0, rtol=1e-8, atol=1e-10)
    ref = scipy_blowups(p, u0.numpy(), 50.0)
    assert ref, "this layer was chosen to blow up; the reference saw no blow-up"
    for j, t_ref in ref.items():
        assert sol.ends[j] is TokenEnd.BLOWUP, (j, sol.messages[j])
        assert float(sol.t_blowup[j]) == pytest.approx(t_ref, rel=T_STAR_RTOL), (j, sol.messages[j])
    # every token before the first driver is unaffected by it and keeps going
    first = min(ref)
    assert all(sol.ends[l] is not TokenEnd.DEPENDS or sol.driver[l] < first for l in range(first))
    # and every later token names the token it depends on
    for l in range(sol.n_tokens):
        if sol.ends[l] is TokenEnd.DEPENDS:
            assert sol.driver[l] is not None and sol.driver[l] < l and f"token {sol.driver[l]}" in sol.messages[l]


def test_tokens_before_a_blowup_continue_to_the_horizon():
    """A token that never blows up, placed before one that does, is integrated to t_max (not stopped)."""
    f = OneDimField(1.0, 1.0, a=1.0)
    u0 = torch.tensor([[[-0.5], [0.9]]], dtype=torch.float64)  # s·u_1 < 0: token 0 grows slowly, never blows up
    sol = integrate_tokens(f, u0, 1e6, rtol=1e-8, atol=1e-10)
    assert sol.ends[1] in (TokenEnd.BLOWUP, TokenEnd.GROWTH)
    assert sol.ends[0] is TokenEnd.HORIZON and float(sol.t_end[0]) == 1e6
    # token 0 alone: the same trajectory (causality)
    alone = integrate_tokens(f, u0[:, :1], 1e6, rtol=1e-8, atol=1e-10)
    assert float(sol.norms[-1, 0]) == pytest.approx(float(alone.norms[-1, 0]), rel=1e-5)


@pytest.mark.parametrize("case", ["blow-up", "stiff"])
def test_accepted_steps_are_the_steps_kept(case):
    """``n_accepted`` counts the steps whose states the solution keeps (one per recorded time after 0), across
    events and on a stiff layer: the step that crossed the horizon and the landing tries not kept count in
    ``nfev`` only (they used to inflate ``n_accepted`` by up to four per segment that reached the horizon)."""
    if case == "blow-up":
        f, u0 = OneDimField(1.0, 1.0, a=1.0), torch.tensor([[[-0.5], [0.9]]], dtype=torch.float64)
    else:
        f = field_of_params(stiff_convergent_layer())
        u0 = torch.randn(4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    sol = integrate_tokens(f, u0, 1e4, rtol=1e-6, atol=1e-9)
    assert any(e is TokenEnd.HORIZON for e in sol.ends)
    assert sol.stats["n_accepted"] == len(sol.ts) - 1
    assert sol.stats["n_events"] == (1 if case == "blow-up" else 0)


# ---------------------------------------------------------------------------------------------- grid independence


def _labels_for(field, u0, t_max):
    sol = integrate_tokens(field, u0, t_max, rtol=1e-7, atol=1e-10)
    return sol, classify_tokens(sol)


@pytest.mark.parametrize("seed", [0, 1, 2, 7])
def test_labels_and_blowup_times_do_not_depend_on_t_max(seed):
    """Labels decided for t_max 1e2, 1e3 and 1e4 are identical, and so are the blow-up times (to 1e-3)."""
    p = small_layer(seed, e=4, n=3, scale=0.9)
    u0 = torch.randn(6, 4, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    runs = [_labels_for(field_of_params(p), u0, t) for t in (1e2, 1e3, 1e4)]
    decided_everywhere = 0
    for l in range(6):
        labels = [c.tokens[l].label for _, c in runs]
        if Label.UNDETERMINED in labels:
            continue
        decided_everywhere += 1
        assert len(set(labels)) == 1, (l, labels, [c.tokens[l].reason for _, c in runs])
        tb = [c.tokens[l].t_blowup for _, c in runs]
        if tb[0] is not None:
            assert all(t is not None and t == pytest.approx(tb[0], rel=T_STAR_RTOL) for t in tb)
    assert decided_everywhere >= 1


def _driven_later(t, u):
    """Token 0 blows up at t* = 1000 (u' = u⁴/3000, u(0) = 1); token 1 decays like t^-1/2 (u' ≈ -u³ while
    small) until token 0 drives it (+1e-5 u_0⁹, negligible before t = 100) to the same blow-up; token 2
    starts at zero and stays there (its field vanishes at zero)."""
    x = u[0, :, 0]
    out = torch.empty_like(x)
    out[0] = x[0] ** 4 / 3000.0
    if x.shape[0] > 1:
        out[1] = -x[1] ** 3 / (1 + x[1] ** 2) + 1e-5 * x[0] ** 9
    if x.shape[0] > 2:
        out[2] = -x[2] ** 3 + 1e-5 * x[0] ** 2 * x[2]
    return out[None, :, None]


def test_a_reading_at_the_horizon_waits_for_the_tokens_before_it():
    """At t_max = 100, token 0 still accelerates (undetermined) and token 1 reads as convergent on its own,
    yet token 0 later drives it to a blow-up: its label stays undetermined until token 0 is decided, so
    the labels agree for every horizon. A token at exactly zero is bounded wherever it reaches the horizon."""
    u0 = torch.tensor([[1.0], [1.0], [0.0]], dtype=torch.float64)
    runs = {t: classify_tokens(integrate_tokens(_driven_later, u0, t)).tokens for t in (1e2, 3e2, 1e4)}
    short = runs[1e2]
    assert short[0].label is Label.UNDETERMINED
    assert short[1].label is Label.UNDETERMINED and short[1].decay_exponent is None
    assert "depends on token 0" in short[1].reason and "read alone: convergent" in short[1].reason
    long = runs[1e4]
    assert long[0].label is Label.FINITE and long[0].t_blowup == pytest.approx(1000.0, rel=T_STAR_RTOL)
    assert long[1].label is Label.FINITE
    for l in range(3):
        labels = {v[l].label for v in runs.values()} - {Label.UNDETERMINED}
        assert len(labels) <= 1, (l, [v[l].reason for v in runs.values()])
    assert runs[1e2][2].label is Label.BOUNDED and runs[3e2][2].label is Label.BOUNDED

def test_output_times_are_for_drawing_only():
    """The recorded steps are the solver's own; a later horizon extends them without changing the past."""
    f = OneDimField(-1.0, 1.0, a=1.0)
    u0 = torch.tensor([[[0.7], [-0.4], [1.1]]], dtype=torch.float64)
    short = integrate_tokens(f, u0, 1e2)
    long = integrate_tokens(f, u0, 1e4)
    n = len(short.ts) - 1  # the last recorded time is the horizon, where a shorter last step landed
    torch.testing.assert_close(long.ts[:n], short.ts[:n])
    torch.testing.assert_close(long.norms[:n], short.norms[:n])


# ---------------------------------------------------------------------------------------------- stiffness


def stiff_convergent_layer(e: int = 4) -> SSMParams:
    """M = -S_Bᵀ S_B negative definite (N = E), Δ from e^-8 to ~12 across channels: stiff and bounded."""
    g = torch.Generator().manual_seed(11)
    S_B = torch.eye(e, dtype=torch.float64) + 0.2 * torch.randn(e, e, generator=g, dtype=torch.float64)
    return SSMParams(W_x=torch.zeros(1, e, dtype=torch.float64), W_dt=torch.zeros(e, 1, dtype=torch.float64),
                     delta_bias=torch.linspace(-8.0, 12.0, e, dtype=torch.float64), S_B=S_B, S_C=-3.0 * S_B,
                     A=-torch.full((e, e), 0.5, dtype=torch.float64), D=torch.zeros(e, dtype=torch.float64))


def test_stiff_bounded_layer_is_not_a_blowup():
    """A stiff but bounded (convergent) layer: the stiff stepper takes over and nothing is called a blow-up."""
    p = stiff_convergent_layer()
    u0 = torch.randn(4, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    sol = integrate_tokens(field_of_params(p), u0, 1e4, rtol=1e-6, atol=1e-9)
    assert all(e is TokenEnd.HORIZON for e in sol.ends), sol.messages
    assert any(kind == "ros34pw2" for kind, _, _ in sol.methods), sol.methods
    labels = classify_tokens(sol).labels
    assert Label.FINITE not in labels and Label.DIVERGENT not in labels
    assert (sol.norms[-1] <= sol.norms[0] * (1 + 1e-9)).all()  # d‖u_1‖/dt ≤ 0 for token 1; all shrink here
    # what the switch buys: explicit steps alone stall on the stiff channels and give up tokens
    explicit = integrate_tokens(field_of_params(p), u0, 1e4, rtol=1e-6, atol=1e-9, stiff_switch=False)
    assert TokenEnd.FAILED in explicit.ends and explicit.stats["nfev"] > sol.stats["nfev"]


def _relaxing(lam: float):
    """Each token (x, z) relaxes at rate lam to the fixed point (x, 1 + sin x), x constant: stiff and bounded."""
    def field(t, u):
        out = torch.zeros_like(u)
        out[..., 1] = -lam * (u[..., 1] - torch.sin(u[..., 0]) - 1.0)
        return out
    return field


@pytest.mark.parametrize("lam", [1e2, 1e4])
def test_a_stiff_fixed_point_reads_bounded_at_every_horizon(lam):
    """Stiff tokens at rest on their fixed point: bounded for every horizon, and the state at the horizon is
    the fixed point. The exponents are read from the norms at the steps: read from the field at the final
    state, t times its radial rate magnified the steps' tolerated error (α up to 1e8 here), and a state
    interpolated inside the last stiff step was off by 60 %."""
    u0 = torch.tensor([[0.5, 0.0], [1.5, 3.0], [-0.7, 1.0]], dtype=torch.float64)
    rest = torch.stack([u0[:, 0], 1.0 + torch.sin(u0[:, 0])], -1)
    for t_max in (1e2, 1e3, 1e4):
        sol = integrate_tokens(_relaxing(lam), u0, t_max, rtol=1e-5, atol=1e-8)
        assert sol.methods[-1][0] == "ros34pw2"
        torch.testing.assert_close(sol.u_end, rest, rtol=1e-4, atol=1e-6)
        assert classify_tokens(sol).labels == [Label.BOUNDED] * 3, (t_max, classify_tokens(sol).tokens)
        assert sol.growth_exponent.abs().max() < 1e-3


def _decay_then_growth(t, u):
    """Token (a, b): b = 1e-12 t is a clock, and d ln a / d ln t ≈ -0.3 + t/500: a decays like t^-0.3, slower
    and slower, turns at t = 150 and grows like e^(t/500)."""
    a, b = u[..., 0], u[..., 1]
    s = b / 1e-12
    return torch.stack([a * (-0.3 + s / 500.0) / (1.0 + s), torch.full_like(b, 1e-12)], -1)


def test_a_slowing_decay_is_not_read_as_convergent():
    """At t = 100 the token still decays (exponent -0.18 over the last half decade, -0.22 over the decade) but
    visibly slower: undetermined, not convergent. By 3e4 it has grown past the resolution factor: divergent."""
    u0 = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    early = classify_tokens(integrate_tokens(_decay_then_growth, u0, 1e2, rtol=1e-8, atol=1e-12)).tokens[0]
    assert early.label is Label.UNDETERMINED and "slows down" in early.reason, early
    late = classify_tokens(integrate_tokens(_decay_then_growth, u0, 3e4, rtol=1e-8, atol=1e-12)).tokens[0]
    assert late.label is Label.DIVERGENT, late


# ---------------------------------------------------------------------------------------------- argument checks


@pytest.mark.parametrize("kwargs,match", [
    ({"t_max": 0.0}, "t_max"), ({"t_max": math.inf}, "t_max"), ({"rtol": -1.0}, "rtol"),
    ({"max_steps": 0}, "max_steps"), ({"blowup_factor": 1.0}, "blowup_factor"),
])
def test_bad_arguments_are_named(kwargs, match):
    args = {"t_max": 10.0} | kwargs
    with pytest.raises(ValueError, match=match):
        integrate_tokens(OneDimField(1.0, 1.0), torch.ones(1, 2, 1, dtype=torch.float64), **args)


def test_bad_u0_is_named():
    f = OneDimField(1.0, 1.0)
    with pytest.raises(ValueError, match="u0"):
        integrate_tokens(f, torch.tensor([[[math.nan]]], dtype=torch.float64), 1.0)
    with pytest.raises(ValueError, match="u0"):
        integrate_tokens(f, torch.ones(2, 2, 2, 1, dtype=torch.float64), 1.0)
    with pytest.raises(TypeError, match="u0"):
        integrate_tokens(f, [[1.0]], 1.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="field"):
        integrate_tokens(None, torch.ones(1, 1), 1.0)  # type: ignore[arg-type]


def test_step_budget_ends_tokens_failed_with_a_reason():
    sol = integrate_tokens(OneDimField(-1.0, 1.0), torch.ones(1, 3, 1, dtype=torch.float64), 1e6, max_steps=5)
    assert all(e is TokenEnd.FAILED for e in sol.ends)
    assert all("max_steps=5" in m for m in sol.messages)
    assert all(v.label is Label.UNDETERMINED and "max_steps" in v.reason for v in classify_tokens(sol).tokens)


# ---------------------------------------------------------------------------------------------- step-size control


def test_no_step_size_growth_right_after_a_rejection():
    """After a rejected step, the next accepted one may not grow the step however small its error
    (Hairer's rule in DOPRI5 and RADAU5): growing at once is what makes rejections come in pairs."""
    from mamba_ode.dynamics.stepping import Stepping

    for kind in ("dopri5", "ros34pw2"):
        s = Stepping(1e-6, 1e-9, True)
        s.kind = kind
        assert s.accepted(1e-8, 1.0) == 5.0  # a tiny error: the largest growth
        h = s.rejected(4.0, 5.0)
        assert 0 < h < 5.0
        assert s.accepted(1e-8, h) == h  # accepted, tiny error, and still no growth
        assert s.accepted(1e-8, h) > h  # growth again from the following step on
        assert s.rejected(0.5, 1.0) == 0.25 == s.rejected(math.nan, 1.0)  # refused for a non-finite state


def test_step_control_rejects_rarely_on_a_stiff_layer():
    """The controllers (PI for DP5, Gustafsson's predictive one for ROS34PW2) keep rejections rare on the
    stiff and bounded layer: under 1 % of the attempts over four initial states (the plain controller,
    the step factor from the last error alone, rejected 2.2 % there)."""
    p = stiff_convergent_layer()
    acc = rej = 0
    for seed in range(4):
        u0 = torch.randn(4, 4, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        sol = integrate_tokens(field_of_params(p), u0, 1e4, rtol=1e-6, atol=1e-9)
        assert all(e is TokenEnd.HORIZON for e in sol.ends)
        acc, rej = acc + sol.stats["n_accepted"], rej + sol.stats["n_rejected"]
    assert rej < 0.01 * (acc + rej), (acc, rej)


def test_rosenbrock_stage_solves_spend_no_product_on_a_guess():
    """GMRES minimises over the Krylov space of the right-hand side itself (started from zero): for a
    linear field whose I − γhJ has two distinct eigenvalues, each of the four stage solves converges with
    two products, so a step costs the three stage evaluations plus 4 × 2. (Started from the right-hand
    side as a guess, each solve first pays one product for the guess's residual: 17 here.)"""
    from mamba_ode.dynamics.solvers.steppers import ros34pw2_step

    d = torch.cat([torch.full((5,), -1.0), torch.full((5,), -1000.0)]).double()

    def field(y):
        return d * y

    y = torch.linspace(1.0, 2.0, 10, dtype=torch.float64)
    step = ros34pw2_step(field, y, field(y), 0.1, krylov_tol=1e-6)
    assert step.nfev == 3 + 4 * 2
    exact = torch.exp(0.1 * d) * y  # the step is accurate for the slow mode and damps the stiff one
    assert torch.allclose(step.y[:5], exact[:5], rtol=1e-4) and step.y[5:].abs().max() < 0.1 * y[5:].abs().min()



@pytest.mark.parametrize("zero_first", [False, True])
def test_a_token_at_zero_does_not_hide_a_stall(zero_first):
    """A token that stays exactly at zero (a zero embedding row, say) never doubles its norm: the steps still
    stall on a token spinning too fast to follow, instead of crawling through the whole step budget."""
    omega = 1e6

    def spin(t, u):  # each token rotates at angular speed omega; zero stays zero
        return torch.stack([-omega * u[..., 1], omega * u[..., 0]], -1)

    tokens = [[0.0, 0.0], [1.0, 0.0]] if zero_first else [[1.0, 0.0], [0.0, 0.0]]
    sol = integrate_tokens(spin, torch.tensor(tokens, dtype=torch.float64), 1e4, max_steps=20_000)
    spinning = 1 if zero_first else 0
    assert sol.stats["n_stalls"] == 1
    assert sol.stats["n_accepted"] + sol.stats["n_rejected"] < 2_000, sol.stats
    assert sol.ends[spinning] is TokenEnd.FAILED and "stalled" in sol.messages[spinning]
    assert sol.ends[1 - spinning] is (TokenEnd.HORIZON if zero_first else TokenEnd.DEPENDS)
    # the reason quotes the pace: following omega·t_max/(2π) ≈ 1.6e9 turns takes more steps than turns
    more = float(re.search(r"t_max=10000 is (\S+) steps away", sol.messages[spinning]).group(1))
    assert omega * 1e4 / (2 * math.pi) < more < 1e14


def _quadratic_then_driven(t, u):
    """Token 0: u' = 1e-3 u², u(0) = 1, a blow-up of order 2 at t* = 1000; token 1 decays until token 0
    drives it (+1e-5 u_0³) to the same t*."""
    x = u[0, :, 0]
    out = torch.empty_like(x)
    out[0] = 1e-3 * x[0] ** 2
    if x.shape[0] > 1:
        out[1] = -x[1] ** 3 / (1 + x[1] ** 2) + 1e-5 * x[0] ** 3
    return out[None, :, None]


@pytest.mark.parametrize("rtol", [1e-7, 1e-9])
def test_a_steady_approach_to_a_low_order_blowup_is_no_stall(rtol):
    """Near t* = 1000 the steps must resolve T − t ≪ t, so they advance log time by < 1e-3 each while the
    norm of an order-2 blow-up takes more than 20 steps to double. The steps still approach the singularity
    at a steady pace: both tokens blow up at the closed-form t*, and no token is given up as stalled."""
    u0 = torch.tensor([[1.0], [1.0]], dtype=torch.float64)
    sol = integrate_tokens(_quadratic_then_driven, u0, 1e4, rtol=rtol, atol=1e-3 * rtol)
    assert sol.ends == [TokenEnd.BLOWUP, TokenEnd.BLOWUP], sol.messages
    assert sol.stats["n_stalls"] == 0
    for l in range(2):
        assert float(sol.t_blowup[l]) == pytest.approx(1000.0, rel=T_STAR_RTOL)

# ---------------------------------------------------------------------------------------------- GMRES


@pytest.mark.parametrize("n,dtype,tol", [(5, torch.float64, 1e-12), (12, torch.float64, 1e-12),
                                         (12, torch.float32, 1e-4)])
def test_gmres_solves_a_system_and_its_ritz_values_are_the_eigenvalues(n, dtype, tol):
    """A full Krylov space (n ≤ max_iter): x equals LAPACK's solve, and the Ritz values are A's eigenvalues."""
    from mamba_ode.dynamics.solvers.steppers import gmres

    g = torch.Generator().manual_seed(n)
    A = torch.eye(n, dtype=torch.float64) + 0.3 * torch.randn(n, n, generator=g, dtype=torch.float64)
    b = torch.randn(n, generator=g, dtype=torch.float64)
    x, n_mv, ritz = gmres(lambda v: (A.to(dtype) @ v.reshape(-1)).reshape(v.shape), b.to(dtype),
                          torch.zeros(n, dtype=dtype), tol=1e-14, max_iter=n)
    assert n_mv <= n + 1
    ref = torch.linalg.solve(A, b)
    assert torch.allclose(x.double(), ref, rtol=tol, atol=tol * float(ref.abs().max()))
    expected = float((1.0 - torch.linalg.eigvals(A)).abs().max())
    assert ritz == pytest.approx(expected, rel=1e3 * tol)


def test_gmres_stops_early_and_reports_non_finite_products():
    from mamba_ode.dynamics.solvers.steppers import gmres

    b = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    x, n_mv, ritz = gmres(lambda v: 2.0 * v, b, torch.zeros(3, dtype=torch.float64), tol=1e-12)
    assert torch.allclose(x, b / 2.0, rtol=1e-15) and n_mv == 2 and ritz == pytest.approx(1.0)
    x, n_mv, ritz = gmres(lambda v: 2.0 * v, b, b / 2.0, tol=1e-12)  # the guess is the solution
    assert torch.equal(x, b / 2.0) and n_mv == 1 and ritz == 0.0
    bad = lambda v: v if float(v.abs().sum()) == 0 else v * float("nan")  # noqa: E731
    x, _, ritz = gmres(bad, b, torch.zeros(3, dtype=torch.float64))
    assert bool(torch.isnan(x).all()) and ritz == math.inf


def _levelling_off(t, u):
    """Token (a, b): b = 1e-12 t is a clock and a = 1 + 10 (1 − (1 + t)^-0.2): it grows ever more slowly
    towards 11, its ln-t slope falling."""
    s = u[..., 1] / 1e-12
    return torch.stack([2.0 * (1.0 + s) ** -1.2, torch.full_like(s, 1e-12)], -1)


def test_a_growth_that_levels_off_is_not_read_as_divergent():
    """At t = 1e3 the norm still grows (exponent 0.069 over the last half decade, 0.083 over the decade), but
    its ln-t slope falls (0.57 against 0.64 per unit ln t): it may level off, so undetermined. The paper's
    logarithmic divergence, whose slope stays constant, keeps its label (the slow-divergence tests)."""
    u0 = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    sol = integrate_tokens(_levelling_off, u0, 1e3, rtol=1e-9, atol=1e-12)
    a = 1.0 + 10.0 * (1.0 - (1.0 + torch.tensor([1e3, 1e3 / math.sqrt(10.0)], dtype=torch.float64)) ** -0.2)
    assert float(sol.log_slope[0]) == pytest.approx(float(a[0] - a[1]) / math.log(math.sqrt(10.0)), rel=1e-3)
    verdict = classify_tokens(sol).tokens[0]
    assert verdict.label is Label.UNDETERMINED and "slows down" in verdict.reason, verdict


# ---------------------------------------------------------------------------------------------- the horizon's reading


def _radial(rate):
    """A field moving each token along its own ray: d‖u‖/dt = rate(‖u‖), autonomous and causal (no mixing)."""
    def field(t, u):
        n = torch.linalg.vector_norm(u, dim=-1, keepdim=True)
        return rate(n) * u / n
    return field


#: ‖u‖² = 1 + t (from ‖u‖ = 1) until ‖u‖ nears 9 (t ≈ 80), where the growth stops sharply: bounded, ‖u‖ → 9.
_GROW_THEN_STOP = _radial(lambda n: 0.5 / n * (1.0 - (n / 9.0) ** 40))
#: ‖u‖² = 100 − t (from ‖u‖ = 10) until ‖u‖ nears √20 (t ≈ 80), where the decay stops sharply: bounded.
_DECAY_THEN_STOP = _radial(lambda n: -0.5 / n * (1.0 - (math.sqrt(20.0) / n) ** 40))
#: ‖u‖ = e^(−εt), ε = 5e-5: nearly level in ln t at t = 100 (exponent −0.003), yet convergent.
_SLOW_DRIFT = _radial(lambda n: -5e-5 * n)


@pytest.mark.parametrize("field,n0,early_why,late", [
    (_GROW_THEN_STOP, 1.0, "growth has stopped", Label.BOUNDED),
    (_DECAY_THEN_STOP, 10.0, "decay has stopped", Label.BOUNDED),
    (_SLOW_DRIFT, 1.0, "drifts", Label.CONVERGENT),
])
def test_a_reading_at_the_horizon_is_not_contradicted_by_a_longer_horizon(field, n0, early_why, late):
    """Seen on trained checkpoints: a norm that grew (or decayed) over the last decade and stopped just before
    t = 100 read divergent (convergent), and a slow drift ‖u‖ ≈ 1 − εt read bounded, while t = 1e4 said
    otherwise. The windows record where the token has been; the field's exponent at the horizon says where it
    is heading, and a drift is projected a decade ahead at its pace in t. The true asymptotics are known here
    (a norm stopped at its fixed point, an exponential decay): the early reading is undetermined, the late
    one right, and no two horizons disagree where both decide."""
    u0 = torch.tensor([[0.6 * n0, 0.8 * n0]], dtype=torch.float64)
    verdicts = {}
    for t_max in (1e2, 1e3, 1e4):
        sol = integrate_tokens(field, u0, t_max, rtol=1e-8, atol=1e-11)
        verdicts[t_max] = classify_tokens(sol).tokens[0]
    assert verdicts[1e2].label is Label.UNDETERMINED and early_why in verdicts[1e2].reason, verdicts[1e2]
    assert verdicts[1e4].label is late, verdicts[1e4]
    decided = {v.label for v in verdicts.values() if v.label is not Label.UNDETERMINED}
    assert decided == {late}, verdicts


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_a_token_with_no_time_to_move_is_not_bounded(sign):
    """du/dt = ±u‖u‖² from ‖u0‖ = 1e-3: its time scale ‖u‖/‖du/dt‖ = 1e6 (it blows up at t* = 5e5, or decays
    like t^-1/2 from t ≈ 1e6), so at t = 100 its norm is level only because it had no time to move: undetermined,
    not bounded. The same field from ‖u0‖ = 1 moves within the horizon and is read as it is; and a rotation, level
    at every speed, stays bounded."""
    def cubic(t, u):
        return sign * u * (u * u).sum(-1, keepdim=True)

    slow = integrate_tokens(cubic, torch.tensor([[6e-4, 8e-4]], dtype=torch.float64), 100.0, rtol=1e-8, atol=1e-14)
    assert slow.initial_speed is not None and float(slow.initial_speed[0]) == pytest.approx(1e-6, rel=1e-9)
    v = classify_tokens(slow).tokens[0]
    assert v.label is Label.UNDETERMINED and "no time to move" in v.reason, v
    fast = integrate_tokens(cubic, torch.tensor([[0.6, 0.8]], dtype=torch.float64), 100.0, rtol=1e-8, atol=1e-11)
    assert classify_tokens(fast).tokens[0].label is (Label.FINITE if sign > 0 else Label.CONVERGENT)

    def rotation(t, u):
        return 0.05 * torch.stack([-u[..., 1], u[..., 0]], dim=-1)

    turn = integrate_tokens(rotation, torch.tensor([[0.6, 0.8]], dtype=torch.float64), 100.0, rtol=1e-8, atol=1e-11)
    assert classify_tokens(turn).tokens[0].label is Label.BOUNDED


def test_a_token_slow_at_first_but_driven_is_read_as_it_moved():
    """Token 1 is nearly at rest at t = 0 (speed 1e-6) but, as token 0 decays, relaxes from ‖u‖ = 1 to its fixed
    point ‖u‖ = 2: it moved, so its level norm at the horizon reads bounded, not 'no time to move'."""
    def field(t, u):
        u0, u1 = u[:, 0], u[:, 1]
        n0, n1 = (u0 * u0).sum(-1, keepdim=True), torch.linalg.vector_norm(u1, dim=-1, keepdim=True)
        return torch.stack([-u0 * n0, -(1.0 - n0) * (n1 - 2.0) * u1 / n1], dim=1)

    a = math.sqrt(1.0 - 1e-6)
    sol = integrate_tokens(field, torch.tensor([[0.6 * a, 0.8 * a], [0.6, 0.8]], dtype=torch.float64), 100.0,
                           rtol=1e-8, atol=1e-11)
    assert float(sol.initial_speed[1]) == pytest.approx(1e-6, rel=1e-3)
    assert [v.label for v in classify_tokens(sol).tokens] == [Label.CONVERGENT, Label.BOUNDED]


def _rotations(omegas):
    """Each token turns in its plane at its own rate ω_l (no mixing): ‖u_l‖ is constant, and a fast turn ends the
    steps by the stall rule near t ≈ 200/ω (the pace in log time falls with t)."""
    w = torch.tensor(omegas, dtype=torch.float64)[:, None]

    def field(t, u):
        return w[: u.shape[1]] * torch.stack([-u[..., 1], u[..., 0]], dim=-1)
    return field


def test_a_stall_ends_the_token_limiting_the_steps_not_an_earlier_one():
    """Tokens turning at ω = 1 and 1.3: the faster one limits the steps and stalls them first (t ≈ 160). Token 0
    alone reaches t = 180, so it must do so beside token 1 too (causality: a later token cannot end it); the rule
    used to end the first token carrying 1 % of the error, token 0 (ω⁵ ratio 0.27), and token 1 with it."""
    u0 = torch.tensor([[0.6, 0.8], [0.8, -0.6]], dtype=torch.float64)
    alone = integrate_tokens(_rotations([1.0]), u0[:1], 180.0, rtol=1e-6, atol=1e-9)
    both = integrate_tokens(_rotations([1.0, 1.3]), u0, 180.0, rtol=1e-6, atol=1e-9)
    assert alone.ends == [TokenEnd.HORIZON]
    assert both.ends == [TokenEnd.HORIZON, TokenEnd.FAILED], both.messages
    assert both.driver[1] == 1 and "stalled on this token" in both.messages[1]
    assert classify_tokens(both).tokens[0].label is Label.BOUNDED


def test_the_exponent_at_the_horizon_is_the_fields():
    """du/dt = −u‖u‖² from ‖u‖ = 1: ‖u‖² = 1/(1 + 2t), so t d ln‖u‖/dt = −t/(1 + 2t) (closed form); NaN for a
    token that did not reach the horizon."""
    def cubic(t, u):
        return -u * (u * u).sum(-1, keepdim=True)

    u0 = torch.tensor([[0.6, 0.8], [0.0, 2.0]], dtype=torch.float64)
    sol = integrate_tokens(cubic, u0, 100.0, rtol=1e-9, atol=1e-12)
    assert sol.ends == [TokenEnd.HORIZON] * 2
    expected = [-100.0 / (1.0 + 200.0), -100.0 / (0.25 + 200.0)]
    torch.testing.assert_close(sol.end_exponent, torch.tensor(expected, dtype=torch.float64), rtol=1e-6, atol=0)
    blown = integrate_tokens(lambda t, u: u * (u * u).sum(-1, keepdim=True), u0[:1], 10.0)
    assert blown.ends == [TokenEnd.BLOWUP] and math.isnan(float(blown.end_exponent[0]))


@pytest.mark.parametrize("rtol", [1e-5, 1e-8])
def test_a_token_at_rest_on_a_stable_fixed_point_does_not_stall_at_tight_tolerances(rtol):
    """‖u‖ relaxes to √20 at rate 1 per unit t (stiff for t ≫ 1, so the steps are ROS34PW2's). The Krylov solves
    stopped at a residual of 1e-3 of their right-hand side, which the clock's entry dominates at a fixed point:
    at rtol 1e-8 that residual exceeded the step's tolerance, the steps shrank to Δt ≈ 2.6 and the token
    'stalled' at t ≈ 2.6e3. Tied to the step's error scale, the solves let it rest to the horizon."""
    u0 = torch.tensor([[6.0, 8.0]], dtype=torch.float64)
    sol = integrate_tokens(_DECAY_THEN_STOP, u0, 1e4, rtol=rtol, atol=rtol * 1e-3)
    assert sol.ends == [TokenEnd.HORIZON] and sol.stats["n_stalls"] == 0, sol.messages
    assert sol.methods[-1][0] == "ros34pw2"
    assert float(sol.norms[-1, 0]) == pytest.approx(math.sqrt(20.0), rel=10 * rtol)  # at rest on its fixed point
    assert classify_tokens(sol).labels == [Label.BOUNDED]


class _StiffCubic:
    """Token (a, b): b decays like (1 + 2t)^-1/2 (db/dt = −b³) and a relaxes to b at rate λ: stiff, convergent
    like t^-1/2. With ``diag``, the field offers its Jacobian's diagonal (the stiff steps' preconditioner)."""

    def __init__(self, lam: float, diag: bool) -> None:
        self.lam = lam
        if diag:
            self.jacobian_diagonal = lambda t, u: torch.stack([torch.full_like(u[..., 0], -lam),
                                                               -3 * u[..., 1] ** 2], -1)

    def __call__(self, t, u):
        a, b = u[..., 0], u[..., 1]
        return torch.stack([-self.lam * (a - b), -b ** 3], -1)


@pytest.mark.parametrize("lam,diag,rtol", [(1e5, True, 1e-5), (1e6, False, 1e-5), (1e6, False, 1e-6)])
def test_a_stiff_convergent_token_keeps_its_label(lam, diag, rtol):
    """After stiff steps t times the field's rate at the horizon magnifies the steps' tolerated error (it read
    +13 here, for a token decaying like t^-1/2, and vetoed its label). There the check reads the norms over the
    last eighth of a decade instead: convergent, with the decay exponent −1/2 (closed form)."""
    u0 = torch.tensor([[0.0, 1.0]], dtype=torch.float64)
    sol = integrate_tokens(_StiffCubic(lam, diag), u0, 1e4, rtol=rtol, atol=rtol * 1e-3)
    assert sol.methods[-1][0] == "ros34pw2" and math.isnan(float(sol.end_exponent[0]))
    verdict = classify_tokens(sol).tokens[0]
    assert verdict.label is Label.CONVERGENT, verdict
    assert verdict.decay_exponent == pytest.approx(-0.5, abs=2e-3)


def test_without_the_fields_exponent_the_norms_check_where_a_token_is_heading():
    """Without ``end_exponent`` (stiff steps landed, or an analysis saved before it existed: None) the check reads
    the norms over the last eighth of a decade: a steady decay e^(−5e-5 t) stays convergent, and the same record
    with its norms held level over that last eighth (a decay that stopped there) becomes undetermined."""
    u0 = torch.tensor([[0.6, 0.8]], dtype=torch.float64)
    sol = integrate_tokens(_SLOW_DRIFT, u0, 1e4, rtol=1e-8, atol=1e-11)
    sol.end_exponent = None
    assert classify_tokens(sol).labels == [Label.CONVERGENT]
    late = sol.ts >= 1e4 / 10 ** 0.125
    assert int(late.sum()) >= 2  # steps inside the last eighth of a decade
    first = int(torch.nonzero(late)[0])
    sol.norms[first:, 0] = sol.norms[first - 1, 0]  # level from the step before the last eighth on
    v = classify_tokens(sol).tokens[0]
    assert v.label is Label.UNDETERMINED and "last eighth of a decade" in v.reason and "stopped" in v.reason, v


def test_a_wild_trial_stage_is_rejected_not_an_overflow_error():
    """A trial stage far past any accepted state (1e200·R0) gets a NaN derivative, which rejects the step: the
    Sundman factor's cube of a finite 1e200 raised OverflowError in Python (inf ** 3 is inf)."""
    from mamba_ode.dynamics.tokens import _System

    system = _System(lambda t, u: u, 2, 1.0, 1.0)
    for big in (1e200, math.inf):
        out = system(torch.tensor([big, 0.0, 0.0], dtype=torch.float64))
        assert bool(torch.isnan(out).all())
    assert torch.isfinite(system(torch.tensor([1e7, 0.0, 0.0], dtype=torch.float64))).all()  # a blow-up's norms
