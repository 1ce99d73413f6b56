"""The stiff steps' W matrix from a tracked stiff subspace (`mamba_ode.dynamics.solvers.krylov_w`).

Oracles: dense linear algebra on small explicit Jacobians (float64), and the matrix exponential of a linear
system for whole integrations.
"""

import math

import pytest
import torch

from mamba_ode import integrate_tokens
from mamba_ode.dynamics.solvers.krylov_w import StiffSubspace, _orth
from mamba_ode.dynamics.solvers.steppers import _W_GAMMA, error_norm, ros34pw2_step
from mamba_ode.dynamics.tokens import TokenEnd

N_DIM = 12


def _non_normal_stiff(lam: float = -1e5, lean: float = 30.0, seed: int = 0, angle: float = 0.0):
    """J = λ s ŵᵀ + N (n = 12): one stiff mode, its left eigenvector ŵ = s + lean·q (q ⊥ s, so ŵᵀs = 1),
    N small and non-stiff; ``angle`` turns s (and ŵ with it) in the (s, q) plane. Returns (J, s)."""
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(N_DIM, N_DIM, generator=g, dtype=torch.float64))
    s0, q0 = Q[:, 0], Q[:, 1]
    s = math.cos(angle) * s0 + math.sin(angle) * q0
    q = -math.sin(angle) * s0 + math.cos(angle) * q0
    N = 0.3 * torch.randn(N_DIM, N_DIM, generator=g, dtype=torch.float64) / math.sqrt(N_DIM)
    return lam * torch.outer(s, s + lean * q) + N, s


def _slow_start(J: torch.Tensor) -> torch.Tensor:
    """A state on the slow manifold: a random vector relaxed by implicit Euler steps."""
    y = torch.randn(N_DIM, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    eye = torch.eye(N_DIM, dtype=torch.float64)
    for _ in range(5):
        y = torch.linalg.solve(eye - 1e-2 * J, y)
    return y


def _prepared(J: torch.Tensor, h: float):
    F = lambda y: J @ y  # noqa: E731
    y = _slow_start(J)
    sub = StiffSubspace()
    sub.V = y.new_zeros(N_DIM, 0)
    assert sub.search(F, y, F(y), h, None, F(y)) is True
    return F, y, sub


def test_search_finds_a_non_normal_stiff_mode():
    """Arnoldi from F(y) finds the one mode with h·|λ| ≥ 1/2 (the non-stiff ones have h·|μ| ≈ 0.03)."""
    J, s = _non_normal_stiff()
    _, _, sub = _prepared(J, 0.1)
    assert sub.V.shape == (N_DIM, 1)
    assert float((sub.V[:, 0] @ s).abs()) == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("with_diagonal", [False, True])
def test_the_w_solve_is_the_two_sided_projection(with_diagonal):
    """W⁻¹r equals a dense solve with J_W = D + P(J − D) + (J − D)P − P(J − D)P, P = VVᵀ (the Woodbury identity,
    exact given the products: (J − D)V is the forward-difference Z, to its accuracy)."""
    J, _ = _non_normal_stiff()
    h = 0.1
    F, y, sub = _prepared(J, h)
    d = torch.linspace(-3.0, -1.0, N_DIM, dtype=torch.float64) if with_diagonal else None
    solve = sub.solver(F, y, F(y), h, _W_GAMMA, d, lambda y_, V: J.T @ V)
    V, Z = sub.V, sub.Z
    D = torch.diag(d) if d is not None else torch.zeros(N_DIM, N_DIM, dtype=torch.float64)
    K = J - D
    assert torch.allclose(Z, K @ V, rtol=1e-6, atol=1e-6 * float((K @ V).abs().max()))
    P = V @ V.T
    J_W = D + P @ K + Z @ V.T - P @ Z @ V.T  # P K + K P − P K P with K V = Z
    W = torch.eye(N_DIM, dtype=torch.float64) - _W_GAMMA * h * J_W
    r = torch.randn(N_DIM, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    x = solve(r)  # backward stable: W is ill-conditioned (cond ≈ 4e6), so the residual is the test
    assert float(torch.linalg.vector_norm(W @ x - r)) <= 1e-13 * float(torch.linalg.matrix_norm(W, 2)
                                                                      * torch.linalg.vector_norm(x))
    assert sub.h_lambda == pytest.approx(h * 1e5, rel=1e-4)  # the Ritz value, vᵀJv = λ + vᵀNv
    assert sub.solver(F, y, F(y), h, _W_GAMMA, d, lambda y_, V: None) is None  # no reverse mode: GMRES instead


def test_a_w_step_is_as_accurate_as_the_exact_jacobians_and_a_one_sided_one_is_not():
    """One ROS34PW2 step of y' = Jy against the matrix exponential: the two-sided W matches the exact Jacobian's
    error; W = I − γh·JP (one-sided) leaves the stiff coupling λ s q_ᵀ explicit, and its error is far larger."""
    J, _ = _non_normal_stiff()
    h = 0.05
    F, y, sub = _prepared(J, h)
    exact = torch.linalg.matrix_exp(h * J) @ y
    eye = torch.eye(N_DIM, dtype=torch.float64)
    ref = ros34pw2_step(F, y, F(y), h, solve=lambda r: torch.linalg.solve(eye - _W_GAMMA * h * J, r))
    w = ros34pw2_step(F, y, F(y), h, solve=sub.solver(F, y, F(y), h, _W_GAMMA, None, lambda y_, V: J.T @ V))
    P = sub.V @ sub.V.T
    one = ros34pw2_step(F, y, F(y), h, solve=lambda r: torch.linalg.solve(eye - _W_GAMMA * h * (J @ P), r))
    err = {k: float(torch.linalg.vector_norm(st.y - exact)) for k, st in (("ref", ref), ("w", w), ("one", one))}
    scale = float(torch.linalg.vector_norm(y))
    assert err["ref"] < 1e-5 * scale and err["w"] < 1e-5 * scale, err
    assert err["one"] > 30 * max(err["ref"], err["w"]), err
    est = {k: error_norm(st.err, y, st.y, 1e-6, 1e-9) for k, st in (("ref", ref), ("w", w), ("one", one))}
    assert est["w"] < 3 * est["ref"] and est["one"] > 30 * est["ref"], est


def test_the_subspace_follows_a_turning_mode():
    """After an accepted step (``track``) and one power step at the new state, V holds the turned mode."""
    J1, _ = _non_normal_stiff()
    F1, y, sub = _prepared(J1, 0.1)
    sub.solver(F1, y, F1(y), 0.1, _W_GAMMA, None, lambda y_, V: J1.T @ V)
    sub.track()
    J2, s2 = _non_normal_stiff(angle=0.02)
    F2 = lambda y_: J2 @ y_  # noqa: E731
    sub.solver(F2, y, F2(y), 0.1, _W_GAMMA, None, lambda y_, V: J2.T @ V)
    assert float((sub.V[:, 0] @ s2).abs()) == pytest.approx(1.0, abs=1e-9)


class _LinearToken:
    """One token (a, b, c) of a linear system: (b, c) decay slowly (``slow``, 2×2) and a relaxes at rate λ to
    40·(b + c): a stiff mode whose left eigenvector (1, −40, −40)/… is far from its right one e_a."""

    def __init__(self, lam: float, slow: tuple[float, float, float, float], differentiable: bool = True) -> None:
        self.J = torch.tensor([[-lam, 40 * lam, 40 * lam], [0.0, slow[0], slow[1]], [0.0, slow[2], slow[3]]],
                              dtype=torch.float64)
        self.differentiable = differentiable

    def __call__(self, t, u):
        if self.differentiable:
            return u @ self.J.T
        return torch.from_numpy(u.detach().numpy() @ self.J.numpy().T)  # outside autograd


_DECAY, _SPIRAL = (-0.1, 0.0, 0.0, -0.2), (-0.1, -0.05, 0.05, -0.1)


@pytest.mark.parametrize("slow,differentiable", [(_DECAY, True), (_DECAY, False), (_SPIRAL, True)])
def test_stiff_integration_with_the_subspace_matches_the_matrix_exponential(slow, differentiable):
    """The whole integration to t = 30 (stiff steps from early on) lands on exp(30 J) u0. On the plain decay, with
    and without the subspace: with it the steps spend reverse-mode products and half the evaluations of GMRES at
    every stage (whose inexact solves also cost accuracy here: 1e-5 against 2e-7); a field outside autograd
    falls back to GMRES after its first stiff step (no reverse-mode product, the same evaluations but for that
    step's search). On the slow spiral, with the subspace."""
    field = _LinearToken(1e4, slow, differentiable)
    u0 = torch.tensor([[0.5, 1.0, -0.3]], dtype=torch.float64)
    exact = torch.linalg.matrix_exp(30.0 * field.J) @ u0[0]
    modes = (True, False) if slow == _DECAY else (True,)
    sols = {kw: integrate_tokens(field, u0, 30.0, rtol=1e-6, atol=1e-9, krylov_w=kw) for kw in modes}
    for sol in sols.values():
        assert sol.ends == [TokenEnd.HORIZON], sol.messages
        assert any(kind == "ros34pw2" for kind, _, _ in sol.methods)
        assert float(torch.linalg.vector_norm(sol.u_end[0] - exact)) < 1e-4 * float(torch.linalg.vector_norm(exact))
    if slow == _SPIRAL:
        assert sols[True].stats["n_vjp"] > 0
        return
    assert sols[False].stats["n_vjp"] == 0
    if differentiable:
        assert sols[True].stats["n_vjp"] > 0
        assert sols[True].stats["nfev"] < 0.7 * sols[False].stats["nfev"], (sols[True].stats, sols[False].stats)
    else:  # the first stiff step's search and products, then GMRES: the same evaluations but for those
        assert sols[True].stats["n_vjp"] == 0
        assert abs(sols[True].stats["nfev"] - sols[False].stats["nfev"]) <= 16, (sols[True].stats, sols[False].stats)


def test_orth_keeps_a_new_direction_after_a_repeated_column():
    """[e1, e1, e2] spans a plane: a QR without pivoting put an arbitrary vector in the repeated column's slot and
    dropped e2 with it."""
    e = torch.eye(5, dtype=torch.float64)
    Q = _orth(torch.stack([e[0], e[0], e[1]], 1))
    assert Q.shape == (5, 2)
    assert float(torch.linalg.vector_norm(e[1] - Q @ (Q.T @ e[1]))) < 1e-12
    assert torch.allclose(Q.T @ Q, torch.eye(2, dtype=torch.float64), atol=1e-12)


def test_search_spans_a_stiff_conjugate_pair():
    """A damped stiff rotation (−1e3 ± 1e5 i) in a plane: the subspace is that plane (one vector per conjugate
    pair's real and imaginary part), not a tilted one (0.07–0.1 off with a QR that dropped a direction)."""
    g = torch.Generator().manual_seed(1)
    Q, _ = torch.linalg.qr(torch.randn(N_DIM, N_DIM, generator=g, dtype=torch.float64))
    J = 0.3 * torch.randn(N_DIM, N_DIM, generator=g, dtype=torch.float64) / math.sqrt(N_DIM)
    J += Q[:, :2] @ torch.tensor([[-1e3, 1e5], [-1e5, -1e3]], dtype=torch.float64) @ Q[:, :2].T
    F = lambda y: J @ y  # noqa: E731
    y = torch.randn(N_DIM, generator=g, dtype=torch.float64)
    sub = StiffSubspace()
    sub.V = y.new_zeros(N_DIM, 0)
    assert sub.search(F, y, F(y), 0.01, None, F(y)) is True
    assert sub.V.shape[1] == 2
    lam, vec = torch.linalg.eig(J)  # the invariant plane (tilted from Q's first two columns by ‖N‖/|λ| ≈ 3e-6)
    top = vec[:, int(torch.argmax(lam.abs()))]
    plane = _orth(torch.stack([top.real, top.imag], 1))
    assert float(torch.linalg.matrix_norm(plane - sub.V @ (sub.V.T @ plane))) < 1e-6


class _PartlyDetached(_LinearToken):
    """The plain-decay token with its stiff relaxation computed from detached inputs: the same numbers, but reverse
    mode sees only the slow part."""

    def __call__(self, t, u):
        slow = u @ torch.cat([torch.zeros(1, 3, dtype=u.dtype), self.J[1:]]).T
        fast = u.detach() @ torch.cat([self.J[:1], torch.zeros(2, 3, dtype=u.dtype)]).T
        return slow + fast


def test_a_partly_detached_field_falls_back_to_gmres():
    """Reverse mode misses the stiff row: VᵀZ (forward differences) and YᵀV (reverse mode) disagree, so the stages
    go to GMRES, and the integration lands on exp(30 J) u0 (with the partial product it stalled at relative
    error 13)."""
    field = _PartlyDetached(1e4, _DECAY)
    u0 = torch.tensor([[0.5, 1.0, -0.3]], dtype=torch.float64)
    exact = torch.linalg.matrix_exp(30.0 * field.J) @ u0[0]
    sol = integrate_tokens(field, u0, 30.0, rtol=1e-6, atol=1e-9)
    assert sol.ends == [TokenEnd.HORIZON], sol.messages
    assert float(torch.linalg.vector_norm(sol.u_end[0] - exact)) < 1e-4 * float(torch.linalg.vector_norm(exact))
    assert sol.stats["n_vjp"] <= 2  # one check, then GMRES for the rest of the integration



class _StiffThenSpin:
    """Token 0: the plain-decay stiff token; token 1: a rotation at ω = 30, too fast to follow to the horizon."""

    def __init__(self) -> None:
        self.stiff = _LinearToken(1e4, _DECAY)

    def __call__(self, t, u):
        out = torch.empty_like(u)
        out[:, :1] = self.stiff(t, u[:, :1])
        if u.shape[1] > 1:
            v = u[:, 1:]
            out[:, 1:] = torch.stack([-30.0 * v[..., 1], 30.0 * v[..., 0], torch.zeros_like(v[..., 2])], -1)
        return out


def test_the_prefix_after_a_stall_keeps_the_stiff_stepper():
    """The steps stall on the spinning token 1 while they are stiff (ROS34PW2, for token 0); token 0 goes on with
    that stepper from the stall on and lands on exp(30 J) u0. Restarted with explicit steps, it had to find the
    stiffness again at their stability limit, and 20 of those steps read as a stall of token 0 itself (t ≈ 0.38)."""
    field = _StiffThenSpin()
    u0 = torch.tensor([[0.5, 1.0, -0.3], [1.0, 0.0, 0.0]], dtype=torch.float64)
    sol = integrate_tokens(field, u0, 30.0, rtol=1e-6, atol=1e-9)
    assert sol.ends == [TokenEnd.HORIZON, TokenEnd.FAILED], sol.messages
    t_stall = float(sol.t_end[1])
    assert [kind for kind, t0, _ in sol.methods if t0 >= t_stall] == ["ros34pw2"], (t_stall, sol.methods)
    exact = torch.linalg.matrix_exp(30.0 * field.stiff.J) @ u0[0]
    assert float(torch.linalg.vector_norm(sol.u_end[0] - exact)) < 1e-4 * float(torch.linalg.vector_norm(exact))
