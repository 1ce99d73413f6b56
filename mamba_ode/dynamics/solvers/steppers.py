"""One step of an autonomous system ``dy/dσ = F(y)``: Dormand–Prince 5(4) (explicit) and ROS34PW2 (linearly
implicit, matrix-free), with their error estimates.

These steppers know nothing about Mamba or tokens: ``y`` is any floating tensor and ``F`` maps it to a
tensor of the same shape. `mamba_ode.dynamics.tokens` drives them.

* `dp5_step` — the Dormand–Prince pair behind ``dopri5``/``RK45`` (5th order, 4th-order error
  estimate, first-same-as-last), plus Hairer's stiffness indicator ``h·‖k7 − k6‖ / ‖y7 − y6‖``: values
  above 3.25 mean the step size is limited by stability, not accuracy.
* `ros34pw2_step` — the four-stage Rosenbrock–W method ROS34PW2 of Rang & Angermann (2005): order
  3 with an embedded order-2 solution, L-stable and stiffly accurate. Being a W-method, it keeps its
  order for *any* approximation of the Jacobian, which is what lets the linear systems
  ``(I − γ h J) u = r`` be solved inexactly by GMRES with finite-difference Jacobian–vector products: no
  Jacobian is ever formed (the systems here have L·E unknowns). Written in the transformed variables
  ``u_i = Σ_j Γ_ij k_j`` (Hairer & Wanner), so each stage costs one linear solve and no extra product.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from .krylov_w import jvp

__all__ = ["Step", "dp5_step", "ros34pw2_step", "gmres", "error_norm", "hermite"]

Field = Callable[[Tensor], Tensor]

# Dormand–Prince 5(4) tableau
_C = (0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0)
_A = (
    (),
    (1 / 5,),
    (3 / 40, 9 / 40),
    (44 / 45, -56 / 15, 32 / 9),
    (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
    (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
    (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84),
)
#: 5th-order weights minus 4th-order weights (the error estimate), over the seven stages
_E = (71 / 57600, 0.0, -71 / 16695, 71 / 1920, -17253 / 339200, 22 / 525, -1 / 40)
# ROS34PW2 (Rang & Angermann 2005): γ, α (strictly lower), Γ (lower, γ on the diagonal), b, b̂
_W_GAMMA = 0.43586652150845900
_W_ALPHA = [[0.0, 0.0, 0.0, 0.0],
            [0.87173304301691801, 0.0, 0.0, 0.0],
            [0.84457060015369423, -0.11299064236484185, 0.0, 0.0],
            [0.0, 0.0, 1.0, 0.0]]
_W_GAMMAS = [[_W_GAMMA, 0.0, 0.0, 0.0],
             [-0.87173304301691801, _W_GAMMA, 0.0, 0.0],
             [-0.90338057013044082, 0.054180672388095326, _W_GAMMA, 0.0],
             [0.24212380706095346, -1.2232505839045147, 0.54526025533510214, _W_GAMMA]]
_W_B = [0.24212380706095346, -1.2232505839045147, 1.5452602553351020, 0.43586652150845900]
_W_BHAT = [0.37810903145819369, -0.096042292212423178, 0.5, 0.21793326075422950]


def _transformed_tableau() -> tuple[list[list[float]], list[list[float]], list[float], list[float]]:
    """(A = αΓ⁻¹, C = diag(1/γ) − Γ⁻¹, m = bΓ⁻¹, m̂ = b̂Γ⁻¹) of ROS34PW2, computed once in float64."""
    G = torch.tensor(_W_GAMMAS, dtype=torch.float64)
    Gi = torch.linalg.inv(G)
    A = torch.tensor(_W_ALPHA, dtype=torch.float64) @ Gi
    C = torch.diag(1.0 / torch.diagonal(G)) - Gi
    m = torch.tensor(_W_B, dtype=torch.float64) @ Gi
    mh = torch.tensor(_W_BHAT, dtype=torch.float64) @ Gi
    return A.tolist(), C.tolist(), m.tolist(), mh.tolist()


_W_A, _W_C, _W_M, _W_MHAT = _transformed_tableau()


@dataclass
class Step:
    """The result of one step attempt.

    Attributes:
        y: the proposed new state.
        f: F at the new state (explicit: the FSAL stage; implicit: None).
        err: the (unscaled) local error estimate, shaped like y.
        nfev: field evaluations spent.
        stiffness: an estimate of ``h·|λ|max`` of the Jacobian: Hairer's indicator ``h‖k7 − k6‖/‖y7 − y6‖``
            for explicit steps, the Krylov (Ritz) estimate for ROS34PW2.
    """

    y: Tensor
    f: Tensor | None
    err: Tensor
    nfev: int
    stiffness: float = math.nan


def error_norm(err: Tensor, y0: Tensor, y1: Tensor, rtol: float, atol: float) -> float:
    """RMS of ``err / (atol + rtol·max(|y0|, |y1|))`` (Hairer's norm); ≤ 1 means accept."""
    scale = atol + rtol * torch.maximum(y0.abs(), y1.abs())
    return float(torch.sqrt(torch.mean((err / scale) ** 2)))


def dp5_step(F: Field, y: Tensor, f0: Tensor, h: float) -> Step:
    """One Dormand–Prince 5(4) step of size h from y, with ``f0 = F(y)`` given.

    Arguments:
        F: the autonomous field.
        y: the state (any shape).
        f0: F(y).
        h: step size.

    Returns:
        A `Step` (6 field evaluations; ``f`` is F at the new state, reusable as the next f0).
    """
    ks = [f0]
    stages = []
    for i in range(1, 7):
        yi = y.clone()
        for a, k in zip(_A[i], ks):
            if a:
                yi.add_(k, alpha=h * a)
        stages.append(yi)
        ks.append(F(yi))
    y_new, y6 = stages[-1], stages[-2]  # stage 7 is evaluated at the 5th-order solution itself
    err = torch.zeros_like(y)
    for e, k in zip(_E, ks):
        if e:
            err.add_(k, alpha=h * e)
    dy = float(torch.linalg.vector_norm(y_new - y6))
    dk = float(torch.linalg.vector_norm(ks[6] - ks[5]))
    stiff = h * dk / dy if dy > 0 else 0.0
    return Step(y=y_new, f=ks[6], err=err, nfev=6, stiffness=stiff)


def gmres(matvec: Callable[[Tensor], Tensor], b: Tensor, x0: Tensor, *, tol: float = 1e-6,
          max_iter: int = 30) -> tuple[Tensor, int, float]:
    """Solve ``A x = b`` by GMRES (one cycle; modified Gram–Schmidt, Givens rotations; vectors flattened).

    Arguments:
        matvec: v ↦ A v.
        b: right-hand side.
        x0: initial guess.
        tol: relative residual at which to stop.
        max_iter: most Krylov vectors (= matrix-vector products).

    Returns:
        ``(x, n_matvec, ritz)``: ritz is ``max |1 − μ|`` over the Ritz values μ of A found by the Arnoldi
        process (0 when none was built) — for ``A = I − γhJ``, ``ritz/γ`` estimates ``h·|λ|max`` of J.
        A non-finite product makes x non-finite (the caller rejects the step).
    """
    shape = b.shape
    r0 = (b - matvec(x0)).reshape(-1)
    n_mv = 1
    beta = float(torch.linalg.vector_norm(r0))
    bnorm = float(torch.linalg.vector_norm(b)) or 1.0
    if not math.isfinite(beta):
        return torch.full_like(x0, math.nan), n_mv, math.inf
    if beta <= tol * bnorm:
        return x0, n_mv, 0.0
    V = [r0 / beta]
    # the Arnoldi Hessenberg matrix (column k: H[k]) and its rotated, triangular factor, as Python floats:
    # entry-wise tensor indexing would cost more than the products themselves on small systems
    H: list[list[float]] = []
    R: list[list[float]] = []
    cs: list[float] = []
    sn: list[float] = []
    g = [beta]  # the rotated right-hand side; |g[k+1]| is the residual after k+1 vectors
    k_done = 0
    for k in range(max_iter):
        w = matvec(V[k].reshape(shape)).reshape(-1)
        n_mv += 1
        hk: list[float] = []
        for i in range(k + 1):
            hk.append(float(torch.dot(w, V[i])))
            w = w - hk[i] * V[i]
        w_norm = float(torch.linalg.vector_norm(w))
        hk.append(w_norm)
        if not all(math.isfinite(x) for x in hk):
            return torch.full_like(x0, math.nan), n_mv, math.inf
        H.append(hk)
        k_done = k + 1
        col = list(hk)
        for i in range(k):  # apply the earlier rotations to the new column
            col[i], col[i + 1] = cs[i] * col[i] + sn[i] * col[i + 1], -sn[i] * col[i] + cs[i] * col[i + 1]
        rho = math.hypot(col[k], col[k + 1])
        c, s_ = (col[k] / rho, col[k + 1] / rho) if rho > 0 else (1.0, 0.0)
        cs.append(c)
        sn.append(s_)
        col[k], col[k + 1] = rho, 0.0
        g.append(-s_ * g[k])
        g[k] = c * g[k]
        R.append(col[: k + 1])
        if abs(g[k + 1]) <= tol * bnorm or w_norm <= 1e-14 * beta:
            break
        V.append(w / w_norm)
    # the factors as slices of full-size matrices: the layout LAPACK sees decides its order of operations
    Rm = torch.zeros(max_iter, max_iter, dtype=torch.float64)
    Hm = torch.zeros(max_iter + 1, max_iter, dtype=torch.float64)
    for k in range(k_done):
        Rm[: k + 1, k] = torch.tensor(R[k], dtype=torch.float64)
        Hm[: k + 2, k] = torch.tensor(H[k], dtype=torch.float64)
    rhs = torch.tensor(g[:k_done], dtype=torch.float64)[:, None]
    coef = torch.linalg.solve_triangular(Rm[:k_done, :k_done], rhs, upper=True)[:, 0]
    x = x0.reshape(-1).clone()
    for i in range(k_done):
        x = x + float(coef[i]) * V[i].to(x.dtype)
    ritz = float((1.0 - torch.linalg.eigvals(Hm[:k_done, :k_done])).abs().max()) if k_done else 0.0
    return x.reshape(shape), n_mv, ritz


def hermite(y0: Tensor, f0: Tensor, y1: Tensor, f1: Tensor, h: float, theta: float) -> Tensor:
    """Cubic Hermite interpolation between two steps at the fraction ``theta`` of the step (3rd order)."""
    t = theta
    h00, h10 = 2 * t ** 3 - 3 * t ** 2 + 1, t ** 3 - 2 * t ** 2 + t
    h01, h11 = -2 * t ** 3 + 3 * t ** 2, t ** 3 - t ** 2
    return h00 * y0 + (h10 * h) * f0 + h01 * y1 + (h11 * h) * f1


def ros34pw2_step(F: Field, y: Tensor, f0: Tensor, h: float, *, jdiag: Tensor | None = None,
                  krylov_tol: float = 1e-3, krylov_iter: int = 40, tol_scale: Tensor | None = None,
                  krylov_share: float = 0.1, solve: Callable[[Tensor], Tensor] | None = None,
                  h_lambda: float = math.nan) -> Step:
    """One ROS34PW2 step of size h from y (``f0 = F(y)``), the Jacobian applied by finite differences
    inside GMRES, right-preconditioned by ``I − γh·diag(jdiag)`` when an approximate diagonal is given (the
    diagonal stiffness is then solved exactly, and the Krylov space only has to capture the rest).

    Stages in transformed variables: ``(I/(γh) − J) u_i = F(y + Σ_{j<i} A_ij u_j) + Σ_{j<i} (C_ij/h) u_j``;
    ``y1 = y + Σ m_i u_i``, error ``Σ (m_i − m̂_i) u_i`` (against the embedded order-2 solution). Each
    GMRES solve starts from zero, so its first Krylov vector is the right-hand side itself and no
    product is spent on the residual of a guess: a solve costs as many field evaluations as the
    Krylov space needs vectors (two for a linear field whose ``I − γhJ`` has two distinct eigenvalues).

    Arguments:
        F: the autonomous field.
        y: the state.
        f0: F(y).
        h: step size.
        jdiag: an approximation of the Jacobian's diagonal, shaped like y, or None.
        krylov_tol: relative residual of the GMRES solves.
        krylov_iter: most GMRES iterations per solve.
        tol_scale: the step's error scale ``atol + rtol·|y|``, shaped like y, or None. Given, a solve also
            goes on until its residual is below ``krylov_share`` of the scale's norm: a residual relative to the
            right-hand side alone could exceed the step's tolerance (the clock's entry dominates the
            right-hand side at a fixed point) and hold the steps down however still the token is.
        krylov_share: the share of the error scale a solve's residual may take.
        solve: ``r ↦ W⁻¹ r`` for an approximation ``W`` of ``I − γhJ`` (`krylov_w.StiffSubspace.solver`): the stages
            use it instead of GMRES (a W-method keeps its order for any W), and cost no product.
        h_lambda: with ``solve``, the estimate of ``h·|λ|max`` the step reports as its stiffness.

    Returns:
        A `Step` (``f`` is None).
    """
    scale = _W_GAMMA * h
    krylov = _KrylovStages(F, y, f0, scale, jdiag, krylov_iter)
    nfev = 0
    us: list[Tensor] = []
    ritz = 0.0
    floor = math.inf if tol_scale is None else krylov_share * float(torch.linalg.vector_norm(tol_scale))
    for i in range(4):
        if i == 0:
            fi = f0
        else:
            yi = y.clone()
            for j in range(i):
                if _W_A[i][j]:
                    yi.add_(us[j], alpha=_W_A[i][j])
            nfev += 1
            fi = F(yi)
        rhs = fi.clone()
        for j in range(i):
            if _W_C[i][j]:
                rhs.add_(us[j], alpha=_W_C[i][j] / h)
        rhs = scale * rhs  # (I − γhJ) u_i = γh · rhs_i
        bnorm = float(torch.linalg.vector_norm(rhs))
        tol = min(krylov_tol, floor / bnorm) if bnorm > 0 else krylov_tol
        ui, r = (solve(rhs), 0.0) if solve is not None else krylov.solve(rhs, tol)
        ritz = max(ritz, r)
        us.append(ui)
    y_new = y.clone()
    err = torch.zeros_like(y)
    for i in range(4):
        y_new.add_(us[i], alpha=_W_M[i])
        err.add_(us[i], alpha=_W_M[i] - _W_MHAT[i])
    if solve is not None:
        stiffness = h_lambda
    else:
        stiffness = ritz / _W_GAMMA if jdiag is None else max(ritz / _W_GAMMA, h * float(jdiag.abs().max()))
    return Step(y=y_new, f=None, err=err, nfev=nfev + krylov.nfev, stiffness=stiffness)


class _KrylovStages:
    """The stage solves ``(I − γhJ) u = r`` of one ROS34PW2 step by GMRES, J applied by forward differences,
    right-preconditioned by ``I − γh·diag(jdiag)`` when a diagonal is given."""

    def __init__(self, F: Field, y: Tensor, f0: Tensor, scale: float, jdiag: Tensor | None, max_iter: int) -> None:
        self.F, self.y, self.f0, self.scale, self.max_iter = F, y, f0, scale, max_iter
        self.ynorm = float(torch.linalg.vector_norm(y))
        self.pdiag = None if jdiag is None else 1.0 - scale * jdiag
        self.nfev = 0

    def matvec(self, v: Tensor) -> Tensor:
        """(I − γhJ) v."""
        if float(torch.linalg.vector_norm(v)) == 0.0:
            return v.clone()
        self.nfev += 1
        return v - self.scale * jvp(self.F, self.y, self.f0, v, self.ynorm)

    def solve(self, rhs: Tensor, tol: float) -> tuple[Tensor, float]:
        """(u, GMRES's Ritz estimate) for the relative residual tol."""
        pdiag = self.pdiag
        if pdiag is None:
            u, _, r = gmres(self.matvec, rhs, torch.zeros_like(rhs), tol=tol, max_iter=self.max_iter)
            return u, r
        # right preconditioning by the diagonal: solve (I − γhJ) P⁻¹ z = rhs, u = P⁻¹ z
        z, _, r = gmres(lambda v: self.matvec(v / pdiag), rhs, torch.zeros_like(rhs), tol=tol, max_iter=self.max_iter)
        return z / pdiag, r
