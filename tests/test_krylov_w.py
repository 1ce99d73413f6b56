"""The stiff steps' W matrix from a tracked stiff subspace (`mamba_ode.dynamics.solvers.krylov_w`).

Oracles: dense linear algebra on small explicit Jacobians (float64), and the matrix exponential of a linear
system for whole integrations.
"""

import math

import pytest
import torch

from mamba_ode import integrate_tokens
from mamba_ode.dynamics.solvers.krylov_w import StiffSubspace
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
