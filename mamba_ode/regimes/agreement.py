"""Theory against numerics: sample systems, predict each token by the criteria, integrate, compare.

`compare_theory_numerics` returns an `AgreementReport` (confusion table, every
disagreement with its reason); `two_dim_params` plants an E-dimensional layer with a given
spectrum of Sym(M) (the paper's 2-D figure).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..dynamics.fields import OneDimField, PackedOneDimField, S6Field
from ..dynamics.prefix import prefix_batch
from ..dynamics.solvers import Solution, solve
from ..nn.params_mamba1 import SSMParams
from .classify import TrajectoryClassification, classify_trajectory
from .criteria import criteria_1d, criteria_nd
from .labels import CRITERIA_REGIMES, EXPECTED_LABEL, TRAJECTORY_LABELS, Label

__all__ = ["AgreementCase", "AgreementReport", "compare_theory_numerics", "two_dim_params"]


@dataclass
class AgreementCase:
    """One (system, token) comparison.

    Attributes:
        system: index of the sampled system.
        token: token index (0-based).
        params: the sampled parameters (plain Python).
        u0: initial tokens of the sequence (list).
        predicted: the criteria regime.
        expected: the trajectory label it predicts.
        observed: the trajectory label.
        decided: whether the criteria decided.
        agree: ``expected == observed``.
        reason: the classifier's reason.
        criteria_reason: the criteria's reason.
    """

    system: int
    token: int
    params: dict[str, Any]
    u0: list
    predicted: str
    expected: str
    observed: str
    decided: bool
    agree: bool
    reason: str
    criteria_reason: str = ""


@dataclass
class AgreementReport:
    """Theory against numerics over sampled systems.

    Attributes:
        cases: every `AgreementCase`.
        token1_blowup: (system, predicted T, solver T, relative error) for token-1 finite-time cases
            (1-D, and E-dim with equal Δ).
        seconds: wall time.
        settings: the sampling and solver settings.
    """

    cases: list[AgreementCase]
    token1_blowup: list[tuple[int, float, float, float]]
    seconds: float
    settings: dict[str, Any]

    @property
    def confusion(self) -> dict[str, dict[str, int]]:
        """Counts ``table[predicted regime][observed label]`` over all cases."""
        table: dict[str, dict[str, int]] = {}
        for c in self.cases:
            table.setdefault(c.predicted, dict.fromkeys(TRAJECTORY_LABELS, 0))[c.observed] += 1
        return table

    @property
    def disagreements(self) -> list[AgreementCase]:
        """Decided cases whose observed label differs from the prediction (undetermined included)."""
        return [c for c in self.cases if c.decided and not c.agree]

    @property
    def n_decided(self) -> int:
        """Number of decided cases."""
        return sum(c.decided for c in self.cases)

    @property
    def agreement(self) -> float:
        """Fraction of decided cases that agree (1.0 when none is decided)."""
        n = self.n_decided
        return 1.0 if n == 0 else sum(c.agree for c in self.cases if c.decided) / n

    def outcome_fractions(self, token: int | None = None) -> dict[str, float]:
        """Fraction of observed labels (over all cases, or over one token index)."""
        cs = [c for c in self.cases if token is None or c.token == token]
        out = {str(lab): 0.0 for lab in TRAJECTORY_LABELS}
        for c in cs:
            out[str(c.observed)] += 1.0 / max(len(cs), 1)
        return out

    def __str__(self) -> str:
        cols = TRAJECTORY_LABELS
        w = max(len(r) for r in (*CRITERIA_REGIMES, "predicted \\ observed")) + 1
        lines = [f"Theory vs numerics: {len(self.cases)} tokens, {self.n_decided} decided by the criteria, "
                 f"agreement {self.agreement:.4f} ({len(self.disagreements)} disagreements), {self.seconds:.1f} s",
                 "predicted \\ observed".ljust(w) + "".join(f"{c:>23}" for c in cols)]
        for pred, row in sorted(self.confusion.items()):
            lines.append(pred.ljust(w) + "".join(f"{row[c]:>23}" for c in cols))
        if self.token1_blowup:
            worst = max(r[3] for r in self.token1_blowup)
            lines.append(f"token-1 blow-up time: {len(self.token1_blowup)} cases, max relative error {worst:.2e}")
        for c in self.disagreements[:20]:
            lines.append(f"  DISAGREE system {c.system} token {c.token + 1}: predicted {c.predicted}, observed "
                         f"{c.observed} ({c.reason}); params {c.params}")
        return "\n".join(lines)


def two_dim_params(eigenvalues: Sequence[float], *, antisym: float = 0.0, s_delta: Tensor | None = None,
                   b_delta: float | Sequence[float] = 0.0, a: float | Sequence[float] = 1.0, angle: float = 0.0,
                   dtype: torch.dtype = torch.float64) -> SSMParams:
    """Parameters of an E-dimensional S6 system whose Sym(M) has the given eigenvalues (after the paper's 2-D figure).

    ``M = Q diag(λ) Qᵀ + antisym·J`` (J the rotation generator in the first two channels, Q the rotation
    by ``angle`` in that plane), realised with N = E states: ``S_B = I``, ``S_C = Mᵀ``.

    Arguments:
        eigenvalues: (E,) eigenvalues of Sym(M), E ≥ 1.
        antisym: weight of the antisymmetric part of M (E ≥ 2).
        s_delta: (E, E) S_Δ (default 0: equal Δ = softplus(b) on every channel when b is constant).
        b_delta: b_Δ, scalar or (E,).
        a: decay rate(s), scalar (all channels and states) or (E,).
        angle: rotation of the eigenbasis in the first two channels.
        dtype: dtype.

    Returns:
        An `SSMParams` with E = N = len(eigenvalues), R = E.

    Raises:
        ValueError: for an empty or non-finite eigenvalue list, or mismatched shapes.
    """
    lam = torch.as_tensor(eigenvalues, dtype=dtype).reshape(-1)
    e = lam.numel()
    if e == 0 or not torch.isfinite(lam).all():
        raise ValueError(f"argument 'eigenvalues' must be a non-empty finite list, got {lam.tolist()}")
    Q = torch.eye(e, dtype=dtype)
    J = torch.zeros(e, e, dtype=dtype)
    if e >= 2:
        c, s = math.cos(angle), math.sin(angle)
        Q[:2, :2] = torch.tensor([[c, -s], [s, c]], dtype=dtype)
        J[0, 1], J[1, 0] = 1.0, -1.0
    M = Q @ torch.diag(lam) @ Q.T + antisym * J
    S = torch.zeros(e, e, dtype=dtype) if s_delta is None else torch.as_tensor(s_delta, dtype=dtype)
    if tuple(S.shape) != (e, e):
        raise ValueError(f"argument 's_delta' must be ({e}, {e}), got {tuple(S.shape)}")
    b = torch.as_tensor(b_delta, dtype=dtype).expand(e).clone()
    av = torch.as_tensor(a, dtype=dtype)
    A = -(av.reshape(-1, 1).expand(e, e).clone() if av.numel() == e else av.expand(e, e).clone())
    return SSMParams(W_x=S.clone(), W_dt=torch.eye(e, dtype=dtype), delta_bias=b, S_B=torch.eye(e, dtype=dtype),
                     S_C=M.T.contiguous(), A=A, D=torch.zeros(e, dtype=dtype))


def _sign(rng: np.random.Generator) -> float:
    return 1.0 if rng.random() < 0.5 else -1.0


# long function: over 80 lines with its docstring, which documents every argument
def compare_theory_numerics(n_systems: int = 200, *, dim: int = 1, seq_len: tuple[int, int] = (1, 6),
                            n_inits: int = 1, seed: int = 0, mu_range: tuple[float, float] = (0.2, 2.0),
                            s_range: tuple[float, float] = (0.2, 2.0), a_range: tuple[float, float] = (0.0, 1.5),
                            b_range: tuple[float, float] = (0.0, 0.0), u0_range: tuple[float, float] = (0.2, 1.5),
                            eigenvalue_signs: Sequence[int] | None = None, equal_delta: bool = False,
                            pack: int = 200, t_end: float = 1e8, rtol: float = 1e-8, atol: float = 1e-11,
                            method: str | None = None, solver_kwargs: dict[str, Any] | None = None,
                            thresholds: dict[str, float] | None = None) -> AgreementReport:
    """Sample systems and initial tokens, classify each token by the criteria and by integration, compare.

    1-D (``dim=1``): μ = ±U(mu_range), s = ±U(s_range) (signs uniform), a ~ U(a_range), b ~ U(b_range),
    L uniform in ``seq_len``, u_l(0) = ±U(u0_range); criteria by `criteria_1d`. ``pack`` systems are
    integrated together through `mamba_ode.PackedOneDimField` (``pack=0``: one solve per system through the
    toolkit's `mamba_ode.OneDimField`).

    E-dim (``dim=E``): Sym(M) with eigenvalues ``sign_i · U(mu_range)`` (signs from ``eigenvalue_signs``,
    random if None), a random antisymmetric part and a random rotation (`two_dim_params`);
    S_Δ = 0 when ``equal_delta`` (the same Δ on every channel), else entries ±U(s_range)/E; b ~ U(b_range);
    tokens ±U(u0_range) per channel; criteria by `criteria_nd`; each system's ``n_inits`` token
    sets are integrated together through `mamba_ode.S6Field`.

    Every token is classified as the last token of its own prefix (`prefix_batch`), so a later
    token's blow-up cannot cut it short; in 1-D, tokens after the blow-up driver inherit its blow-up
    (``inherit_blowup=True``, a theorem there) and the solver's blow-up time of each prefix is checked
    against the criteria's upper bound. Token-1 blow-up times are compared with the solver's
    ``t_blowup`` of the one-token prefix. Integration: `mamba_ode.solve`, ``log_time=True``.

    Arguments:
        n_systems: number of sampled systems.
        dim: E.
        seq_len: (min, max) number of tokens.
        n_inits: token sets per system.
        seed: RNG seed (numpy).
        mu_range, s_range, a_range, b_range, u0_range: sampling ranges (see above).
        eigenvalue_signs: (E,) signs of the eigenvalues of Sym(M) for dim > 1, or None for random.
        equal_delta: dim > 1 only: S_Δ = 0.
        pack: 1-D systems per solve (0: the toolkit field, one system per solve).
        t_end: horizon.
        rtol, atol, method: solver tolerances and method (None: the backend's default, see `solve`).
        solver_kwargs: further keyword arguments of ``solve`` (default ``blowup_threshold`` 1e3 in 1-D, 1e2
            for E > 1: a token blowing up like (T - t)^{-1/3} passes 1e3 about 1e-9·T before T, early enough
            for the solver's singularity extrapolation and before its step size collapses; slow tokens may
            pass it too, and are then labelled ``divergent`` from the solver's "no singularity" message).
        thresholds: keyword arguments of `classify_trajectory`.

    Returns:
        An `AgreementReport`.

    Raises:
        ValueError: for invalid sizes or ranges.

    Small tensors run fastest with one torch thread (``torch.set_num_threads(1)``).
    """
    for name, v in (("n_systems", n_systems), ("dim", dim), ("n_inits", n_inits)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"argument {name!r} must be a positive int, got {v!r}")
    if isinstance(pack, bool) or not isinstance(pack, int) or pack < 0:
        raise ValueError(f"argument 'pack' must be an int ≥ 0, got {pack!r}")
    lo, hi = seq_len
    if not (isinstance(lo, int) and isinstance(hi, int) and 1 <= lo <= hi):
        raise ValueError(f"argument 'seq_len' must be (min, max) with 1 ≤ min ≤ max, got {seq_len!r}")
    if eigenvalue_signs is not None and len(eigenvalue_signs) != dim:
        raise ValueError(f"argument 'eigenvalue_signs' must have length dim={dim}")
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    ranges = {"mu": mu_range, "s": s_range, "a": a_range, "b": b_range, "u0": u0_range}
    systems = [_sample_system(i, rng, dim, seq_len, n_inits, ranges, eigenvalue_signs, equal_delta)
               for i in range(n_systems)]
    kw = {"log_time": True, "method": method, "rtol": rtol, "atol": atol,
          "blowup_threshold": 1e3 if dim == 1 else 1e2, **(solver_kwargs or {})}
    ckw: dict[str, Any] = {"inherit_blowup": dim == 1, **(thresholds or {})}
    cases: list[AgreementCase] = []
    blow: list[tuple[int, float, float, float]] = []
    if dim == 1 and pack > 0:
        for g0 in range(0, n_systems, pack):
            _solve_packed(systems[g0:g0 + pack], hi, t_end, kw, ckw, cases, blow)
    else:
        for sd in systems:
            if dim == 1:
                p = sd["params"]
                fld: torch.nn.Module = OneDimField(p["mu"], p["s_delta"], p["a"], p["b_delta"])
            else:
                fld = S6Field(sd["ssm"])
            sol = solve(fld, prefix_batch(sd["u"]), (0.0, t_end), **kw)
            _record(sd, classify_trajectory(sol, **ckw), sol, 0, cases, blow)
    settings = {"n_systems": n_systems, "dim": dim, "seq_len": seq_len, "n_inits": n_inits, "seed": seed,
                "mu_range": mu_range, "s_range": s_range, "a_range": a_range, "b_range": b_range,
                "u0_range": u0_range, "eigenvalue_signs": None if eigenvalue_signs is None else list(eigenvalue_signs),
                "equal_delta": equal_delta, "pack": pack, "t_end": t_end, "rtol": rtol, "atol": atol,
                "method": method}
    return AgreementReport(cases=cases, token1_blowup=blow, seconds=time.perf_counter() - t0, settings=settings)


def _sample_system(i: int, rng: np.random.Generator, dim: int, seq_len: tuple[int, int], n_inits: int,
                   ranges: dict[str, tuple[float, float]], eigenvalue_signs: Sequence[int] | None,
                   equal_delta: bool) -> dict[str, Any]:
    """One sampled system with its tokens and its criteria (see `compare_theory_numerics`)."""
    length = int(rng.integers(seq_len[0], seq_len[1] + 1))
    u = torch.tensor([[[_sign(rng) * rng.uniform(*ranges["u0"]) for _ in range(dim)] for _ in range(length)]
                      for _ in range(n_inits)], dtype=torch.float64)  # (n_inits, L, E)
    if dim == 1:
        mu, s = _sign(rng) * rng.uniform(*ranges["mu"]), _sign(rng) * rng.uniform(*ranges["s"])
        a, b = rng.uniform(*ranges["a"]), rng.uniform(*ranges["b"])
        c1 = criteria_1d(mu, s, a, u, b)
        return {"i": i, "u": u, "params": {"mu": mu, "s_delta": s, "a": a, "b_delta": b},
                "regimes": c1.regimes, "decided": c1.decided.tolist(), "reasons": c1.reasons,
                "t1": c1.t_blowup_token1.tolist(), "bound": c1.t_blowup_bound}
    signs = eigenvalue_signs if eigenvalue_signs is not None else [_sign(rng) for _ in range(dim)]
    lam = [float(sg) * rng.uniform(*ranges["mu"]) for sg in signs]
    S = None if equal_delta else torch.tensor(rng.uniform(*ranges["s"], size=(dim, dim))
                                              * rng.choice([-1.0, 1.0], size=(dim, dim)) / dim)
    params = two_dim_params(lam, antisym=float(rng.normal()), s_delta=S, b_delta=rng.uniform(*ranges["b"]),
                            a=rng.uniform(*ranges["a"]), angle=float(rng.uniform(0, math.pi)))
    crit = criteria_nd(params, u)
    return {"i": i, "u": u, "ssm": params,
            "params": {"eigenvalues": lam, "equal_delta": equal_delta, "label": crit.spectrum.label},
            "regimes": crit.regimes, "decided": [[r != Label.UNDECIDED for r in row] for row in crit.regimes],
            "reasons": [[f"{src}: Sym(M) {crit.spectrum.label}, u_1ᵀMu_1={float(q):.3g}" for src in row]
                        for row, q in zip(crit.sources, crit.quad_form)],
            "t1": crit.t_blowup_token1.tolist(), "bound": None}


def _record(sysd: dict, cls: TrajectoryClassification, sol: Solution, offset: int, cases: list[AgreementCase],
            blow: list[tuple[int, float, float, float]]) -> None:
    """Compare one system's criteria with the classification of its prefix sequences (from row ``offset``)."""
    u = sysd["u"]
    nl = u.shape[1]
    t_blowup = torch.as_tensor(sol.t_blowup)
    for r in range(u.shape[0]):
        for l in range(nl):
            row = offset + r * nl + l  # prefix sequence whose last token is l
            obs = cls.labels[row][l]
            pred = sysd["regimes"][r][l]
            exp = EXPECTED_LABEL[pred]
            agree = exp == obs or (pred == Label.DIVERGENT and obs in (Label.DIVERGENT, Label.FINITE))
            why = cls.reasons[row][l]
            tnum = float(t_blowup[row])
            if agree and pred == Label.FINITE and sysd["bound"] is not None:
                bnd = float(sysd["bound"][r, l])
                if not tnum <= bnd * (1 + 1e-4):
                    agree = False
                    why += f"; solver blow-up time {tnum:.8g} exceeds the criteria's bound {bnd:.8g}"
            cases.append(AgreementCase(system=sysd["i"], token=l, params=sysd["params"], u0=u[r, :, :].tolist(),
                                       predicted=pred, expected=exp, observed=obs, decided=bool(sysd["decided"][r][l]),
                                       agree=agree, reason=why, criteria_reason=sysd["reasons"][r][l]))
        t1 = sysd["t1"][r]
        if math.isfinite(t1):
            tn = float(t_blowup[offset + r * nl])
            blow.append((sysd["i"], t1, tn, abs(tn - t1) / t1 if math.isfinite(tn) else math.inf))


def _solve_packed(group: list[dict], maxlen: int, t_end: float, kw: dict, ckw: dict, cases: list[AgreementCase],
                  blow: list[tuple[int, float, float, float]]) -> None:
    """Integrate a group of 1-D systems in one solve (`PackedOneDimField`) and record them."""
    states, offsets, off = [], [], 0
    for sd in group:
        pb = prefix_batch(sd["u"])  # (n_inits·L, L, 1)
        pb = torch.cat([pb, pb.new_zeros(pb.shape[0], maxlen - pb.shape[1], 1)], dim=1)
        p = sd["params"]
        m = pb.shape[0]
        par = {k: torch.full((m,), p[k], dtype=pb.dtype) for k in ("mu", "s_delta", "a", "b_delta")}  # not float32
        states.append(PackedOneDimField.pack(pb, par["mu"], par["s_delta"], par["a"], par["b_delta"]))
        offsets.append(off)
        off += m
    sol = solve(PackedOneDimField(), torch.cat(states), (0.0, t_end), **kw)
    sol_u = dataclasses.replace(sol, ys=sol.ys[..., :1])  # the token channel
    cls = classify_trajectory(sol_u, **ckw)
    for sd, o in zip(group, offsets):
        _record(sd, cls, sol_u, o, cases, blow)
