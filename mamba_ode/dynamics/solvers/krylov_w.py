"""The approximate Jacobian of the stiff steps: a tracked low-rank stiff subspace (a Krylov–W method).

ROS34PW2 is a W-method: it keeps its order for *any* matrix ``W ≈ I − γhJ`` in its stage equations, and only its
stability needs W to hold J's stiff part (the modes with ``h·|λ| ≳ 1``). In the token systems stiffness lives in
a few directions (a fast-decaying mode of a token, say), so instead of solving ``(I − γhJ) u = r`` by GMRES at
each of the four stages (three or four products each) a step can use ``W = I − γh J_W`` with

    J_W = D + P (J − D) + (J − D) P − P (J − D) P,        P = V Vᵀ,

D the field's Jacobian diagonal (or 0) and V (n, p) an orthonormal basis of the stiff subspace of ``J − D``:
``J_W`` is J (beyond the diagonal) on every row and every column in span(V). Both sides are needed: the stiff
modes of these systems are far from normal (the left eigenvector of a token's fast mode leans on many other
directions: ‖w_⊥‖ ≈ 64 against a unit right eigenvector, on a layer of a 130m-shaped model), and a one-sided
``J P`` leaves that stiff coupling to the explicit part of the step: there, errors a hundred times the exact
Jacobian's and steps five times shorter. ``W⁻¹`` is applied exactly by the Woodbury identity with a 2p×2p
solve, from ``Z = (J − D)V`` (forward differences) and ``Y = (J − D)ᵀV`` (reverse mode through the field).

`StiffSubspace` finds V by Arnoldi (from F(y) when the stiff steps start, and from a rejected step's error,
which points along a stiff mode W missed), keeps the real span of the Ritz vectors with ``h·|μ| ≥ 1/2``, and
tracks it by subspace iteration: ``V ← orth(Z)`` after each accepted step (free) and one power step at each new
state (p products), since the modes turn along a trajectory and a basis a step old leaves the coupling of
its error angle to the explicit part. A step then costs its three stage evaluations, 2p forward products and
one evaluation with p backward passes, against 12–16 products by GMRES.

Shapes: y and every vector here are flat, (n,); V, Z and Y are (n, p), p ≤ ``max_dim``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["StiffSubspace", "jvp"]

_KEEP = 0.5  # Ritz values with h·|μ| at least this are stiff: W must hold them
_DROP = 0.05  # tracked modes whose h·|μ| fell below this are dropped


def jvp(F: Callable[[Tensor], Tensor], y: Tensor, f0: Tensor, v: Tensor, ynorm: float) -> Tensor:
    """J(y)·v by a forward difference, ``(F(y + εv) − F(y))/ε`` with ``ε = √eps·(1 + ‖y‖)/‖v‖`` (one evaluation).

    Arguments:
        F: the autonomous field.
        y: (n,) the state; f0: (n,) F(y); v: (n,) the direction; ynorm: ‖y‖.

    Returns:
        (n,) the product (zero for v = 0, without an evaluation).
    """
    vn = float(torch.linalg.vector_norm(v))
    if vn == 0.0:
        return torch.zeros_like(v)
    eps = math.sqrt(torch.finfo(y.dtype).eps) * (1.0 + ynorm) / vn
    return (F(y + eps * v) - f0) / eps


def _orth(X: Tensor, rel: float = 1e-10) -> Tensor:
    """An orthonormal basis (n, q) of the span of X's columns, q its numerical rank (SVD: a QR without pivoting
    would put an arbitrary vector in the slot of a repeated column and drop a new direction with it)."""
    if X.shape[1] == 0:
        return X
    U, sv, _ = torch.linalg.svd(X, full_matrices=False)
    return U[:, sv > rel * float(sv.max())] if float(sv.max()) > 0 else U[:, :0]


def _ritz_span(basis: Tensor, S: Tensor, mu: Tensor, keep: Tensor) -> Tensor:
    """Real columns (n, q) spanning the Ritz vectors ``basis @ S[:, i]`` for ``keep[i]``: one vector per real
    Ritz value, the real and imaginary parts of one member of each conjugate pair (μ.imag > 0)."""
    keep = keep & (mu.imag >= 0)
    Sk, B = S[:, keep], basis.double()
    re, im = B @ Sk.real, B @ Sk.imag
    return torch.cat([re, im[:, mu.imag[keep] > 0]], 1).to(basis.dtype)


class StiffSubspace:
    """The stiff subspace V of ``J − D`` along a run of ROS34PW2 steps, and the W solve it gives.

    Arguments:
        max_dim: most columns of V; a step that would need more solves by GMRES instead (``solver`` is None).
        arnoldi_steps: most Krylov vectors (products) of one search for stiff modes.
    """

    def __init__(self, max_dim: int = 16, arnoldi_steps: int = 8) -> None:
        self.max_dim, self.arnoldi_steps = max_dim, arnoldi_steps
        self.V: Tensor | None = None  # (n, p), or None before the first search
        self.Z: Tensor | None = None  # (J − D) V at the last prepared state
        self.h_lambda = 0.0  # h·|λ|max over the subspace's Ritz values and the diagonal, at the last prepare
        self.fresh = False  # modes just found by a search are not dropped before a step has used them

    def _op(self, F: Callable[[Tensor], Tensor], y: Tensor, f0: Tensor, d: Tensor | None,
            ynorm: float) -> Callable[[Tensor], Tensor]:
        def op(v: Tensor) -> Tensor:  # (J − D) v
            jv = jvp(F, y, f0, v, ynorm)
            return jv - d * v if d is not None else jv
        return op

    def search(self, F: Callable[[Tensor], Tensor], y: Tensor, f0: Tensor, h: float, d: Tensor | None,
               start: Tensor) -> bool | None:
        """Arnoldi on ``J − D`` at y from ``start``; add the real span of the Ritz vectors with ``h·|μ| ≥ 1/2``
        to V. Returns True when V grew, False when that Krylov space holds no stiff mode, None when V would
        exceed ``max_dim`` (V is then left as it was)."""
        if self.V is None:  # the first search: from here on V is a basis, empty if no stiff mode is found
            self.V = y.new_zeros(y.numel(), 0)
        op = self._op(F, y, f0, d, float(torch.linalg.vector_norm(y)))
        v = start.reshape(-1).to(y.dtype)
        if self.V.shape[1]:
            v = v - self.V @ (self.V.T @ v)
        beta = float(torch.linalg.vector_norm(v))
        if not (math.isfinite(beta) and beta > 0):
            return False
        steps = min(self.arnoldi_steps, v.numel())  # a Krylov space of an n-vector has at most n dimensions
        basis, H = [v / beta], torch.zeros(steps + 1, steps, dtype=torch.float64)
        k = 0
        for k in range(1, steps + 1):
            w = op(basis[-1])
            for i, b in enumerate(basis):  # modified Gram–Schmidt
                H[i, k - 1] = float(torch.dot(w, b))
                w = w - float(H[i, k - 1]) * b
            H[k, k - 1] = float(torch.linalg.vector_norm(w))
            if not bool(torch.isfinite(H[: k + 1, k - 1]).all()):
                return False
            if float(H[k, k - 1]) <= 1e-10 * float(torch.linalg.matrix_norm(H[: k + 1, :k])):  # an invariant space
                break
            basis.append(w / float(H[k, k - 1]))
        mu, S = torch.linalg.eig(H[:k, :k])
        keep = h * mu.abs() >= _KEEP
        if not bool(keep.any()):
            return False
        new = _ritz_span(torch.stack(basis[:k], 1), S, mu, keep).to(y.dtype)
        before = self.V.shape[1]
        V = _orth(torch.cat([self.V, new], 1))
        if V.shape[1] > self.max_dim:
            return None
        if V.shape[1] <= before:  # nothing new: those modes are held already
            return False
        self.V, self.Z, self.fresh = V, None, True
        return True

    def solver(self, F: Callable[[Tensor], Tensor], y: Tensor, f0: Tensor, h: float, gamma: float,
               d: Tensor | None, vjp: Callable[[Tensor, Tensor], Tensor | None]) -> Callable[[Tensor], Tensor] | None:
        """``r ↦ W⁻¹ r`` for a step of size h from y, or None (no subspace, or ``vjp`` could not differentiate F).

        With ``Z = (J − D)V`` (p forward differences), ``Y = (J − D)ᵀV`` (``vjp(y, V)``, reverse mode) and
        ``H = VᵀZ``: ``J_W = D + (Z − VH)Vᵀ + VYᵀ``, which is J on every row and every column in span(V) (the
        two-sided projection ``PJ + JP − PJP`` of J − D, P = VVᵀ). Both sides matter: a stiff mode of these
        systems is far from normal (its left eigenvector leans on many other directions), and a one-sided
        ``J V Vᵀ`` would leave that stiff coupling to the explicit part. ``W = P_D − γh A Bᵀ``, ``P_D = I − γhD``,
        ``A = [Z − VH, V]``, ``B = [V, Y]``, inverted by the Woodbury identity with a 2p×2p solve. A non-finite
        product, or an exactly singular reduced matrix (a growing mode with ``γhμ = 1``), makes every solve NaN
        (the step is rejected; a nearly singular one gives large stages, which its error estimate rejects). None
        also when ``VᵀZ`` and ``YᵀV``, both ``Vᵀ(J − D)V``, differ by more than 1e-3: reverse mode did not see
        the whole field. Drops the tracked modes that are no longer stiff (``h·|μ| < 0.05``).
        """
        if self.V is None:
            return None
        op = self._op(F, y, f0, d, float(torch.linalg.vector_norm(y)))
        V = self.V
        if V.shape[1] and self.Z is not None:  # V came from the last state: one power step at this one first
            Vn = _orth(torch.stack([op(V[:, i]) for i in range(V.shape[1])], 1))
            V = Vn if Vn.shape[1] == V.shape[1] and bool(torch.isfinite(Vn).all()) else V
        Z = torch.stack([op(V[:, i]) for i in range(V.shape[1])], 1) if V.shape[1] else V.clone()
        mu = torch.linalg.eigvals((V.T @ Z).double()) if V.shape[1] else torch.zeros(0, dtype=torch.complex128)
        lam = float(mu.abs().max()) if mu.numel() else 0.0
        self.h_lambda = h * max(lam if math.isfinite(lam) else math.inf,
                                float(d.abs().max()) if d is not None else 0.0)
        if V.shape[1] and not self.fresh and bool((h * mu.abs() < _DROP).any()) and bool(torch.isfinite(mu).all()):
            M, S_ = torch.linalg.eig((V.T @ Z).double())
            keep = h * M.abs() >= _DROP
            Vk = _orth(_ritz_span(V, S_, M, keep))
            # Z on the kept span: Z Vᵀ Vk, exact since Vk lies in span(V)
            V, Z = Vk, Z @ (V.T @ Vk)
        self.V, self.Z, self.fresh = V, Z, False
        pinv = 1.0 / (1.0 - gamma * h * d) if d is not None else None
        if V.shape[1] == 0:  # W = P_D: the diagonal alone
            return (lambda r: r * pinv) if pinv is not None else (lambda r: r.clone())
        Y = vjp(y, V)
        if Y is None:
            return None
        if d is not None:
            Y = Y - d[:, None] * V
        H1, H2 = (V.T @ Z).double(), (Y.T @ V).double()  # Vᵀ(J − D)V twice: forward differences, reverse mode
        if float(torch.linalg.matrix_norm(H1 - H2)) > 1e-3 * max(float(torch.linalg.matrix_norm(H1)),
                                                                 float(torch.linalg.matrix_norm(H2)), 1e-300):
            return None  # reverse mode disagrees (a field that detaches part of its computation): GMRES
        A = torch.cat([Z - V @ (V.T @ Z), V], 1)
        B = torch.cat([V, Y], 1)
        if not bool(torch.isfinite(A).all() and torch.isfinite(B).all()):
            return lambda r: torch.full_like(r, math.nan)
        PA = A * pinv[:, None] if pinv is not None else A
        S = torch.eye(A.shape[1], dtype=V.dtype) - gamma * h * (B.T @ PA)
        lu, piv, info = torch.linalg.lu_factor_ex(S)
        if int(info) != 0:
            return lambda r: torch.full_like(r, math.nan)
        gh = gamma * h

        def solve(r: Tensor) -> Tensor:
            x = r * pinv if pinv is not None else r.clone()
            c = torch.linalg.lu_solve(lu, piv, (B.T @ x)[:, None])[:, 0]
            return x + gh * (PA @ c)

        return solve

    def track(self) -> None:
        """After an accepted step: one subspace iteration, ``V ← orth(Z)`` (V's columns follow the dominant modes)."""
        if self.V is None or self.Z is None or self.V.shape[1] == 0 or not bool(torch.isfinite(self.Z).all()):
            return
        V = _orth(self.Z)
        if V.shape[1] == self.V.shape[1]:  # a rank drop (a mode that vanished) keeps the old basis
            self.V = V
