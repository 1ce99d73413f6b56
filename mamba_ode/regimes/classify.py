"""Labels from trajectories: each token of each sequence of a `mamba_ode.Solution`.

`classify_trajectory` labels every token ``convergent``, ``divergent-finite-time``,
``divergent``, ``bounded`` or ``undetermined``, with the fitted evidence (decay exponent of |u|
against t, growth slope against ln t, blow-up exponent) and a reason for every label. It reads the
solver's typed `mamba_ode.Outcome` of each sequence, never its message text.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from .._checks import finite_scalar
from ..dynamics.solvers.solution import Outcome, Solution
from .labels import TRAJECTORY_LABELS, Label

__all__ = ["TrajectoryClassification", "classify_trajectory"]

FINITE, DIVERGENT = Label.FINITE, Label.DIVERGENT


@dataclass
class TrajectoryClassification:
    """Labels and evidence per sequence and token, from a `mamba_ode.Solution`.

    Attributes:
        labels: B lists of L labels from `TRAJECTORY_LABELS`.
        reasons: B lists of L one-line reasons (why this label, or why undetermined).
        confidence: B lists of L strings ``"high"``, ``"low"`` or ``"none"`` (undetermined).
        decay_exponent: (B, L) slope of ln|u_l| against ln t over the fit window (-1/2 expected for
            1-D convergence); NaN where not fitted.
        growth_slope: (B, L) slope of |u_l| against ln t over the fit window (≈ 1/|s| for slow 1-D
            divergence); NaN where not fitted.
        blowup_exponent: (B, L) p in |u_l| ∝ (T - t)^{-p} fitted over the last rows of a blown-up
            sequence; NaN elsewhere.
        t_blowup: (B, L) the solver's blow-up time for tokens labelled ``divergent-finite-time``, NaN elsewhere.
        final_norm: (B, L) |u_l| at the last finite row.
        thresholds: the thresholds used.
    """

    labels: list[list[Label]]
    reasons: list[list[str]]
    confidence: list[list[str]]
    decay_exponent: Tensor
    growth_slope: Tensor
    blowup_exponent: Tensor
    t_blowup: Tensor
    final_norm: Tensor
    thresholds: dict[str, float] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        """Number of tokens per label (keys: the labels' text)."""
        out = {str(lab): 0 for lab in TRAJECTORY_LABELS}
        for row in self.labels:
            for lab in row:
                out[str(lab)] += 1
        return out

    def divergence_order(self) -> list[list[int]]:
        """Per sequence, diverging token indices (0-based) from the fastest to the slowest.

        ``divergent-finite-time`` tokens first (earliest blow-up, then larger blow-up exponent, then
        larger final norm), then ``divergent`` tokens by decreasing growth slope against ln t.

        Returns:
            B lists of token indices.
        """
        out = []
        for b, row in enumerate(self.labels):
            fin = [l for l, x in enumerate(row) if x == FINITE]
            slow = [l for l, x in enumerate(row) if x == DIVERGENT]

            def key_fin(l: int, b: int = b) -> tuple[float, float, float]:
                p = float(self.blowup_exponent[b, l])
                return (float(self.t_blowup[b, l]), -(p if math.isfinite(p) else math.inf),
                        -float(self.final_norm[b, l]))

            fin.sort(key=key_fin)
            slope = self.growth_slope[b]
            slow.sort(key=lambda l: -float(slope[l]))
            out.append(fin + slow)
        return out

    def __str__(self) -> str:
        lines = [f"TrajectoryClassification({self.counts()})"]
        for b, row in enumerate(self.labels):
            lines.append(f"  seq {b}: " + ", ".join(row))
        return "\n".join(lines)


def _fit_slope(x: np.ndarray, y: np.ndarray) -> float:
    """Least-squares slope of y against x."""
    xm = x - x.mean()
    den = float((xm * xm).sum())
    if den <= 0:
        return math.nan
    return float((xm * (y - y.mean())).sum() / den)


def classify_trajectory(solution: Solution, *, window_decades: float = 2.0, min_points: int = 5,
                        min_t_end: float = 100.0, decay_exponent_min: float = 0.05,
                        growth_exponent_min: float = 0.02, bounded_exponent_max: float = 0.005,
                        blowup_exponent_min: float = 0.05, blowup_window_decades: float = 3.0,
                        zero_norm: float = 0.0, inherit_blowup: bool = False) -> TrajectoryClassification:
    """Label each token of each sequence from an integrated trajectory.

    Per sequence b, by the solver's status:

    * failed (step-size, max-steps) or non-finite values before the end → every token ``undetermined``
      with the solver's message as the reason.
    * blow-up at T = ``t_blowup[b]`` (the solver's estimate): the exponent p of ``|u| ∝ (T - t)^{-p}`` is
      fitted per token over the rows with ``T - t`` within ``blowup_window_decades`` of the last finite
      row (when there are ≥ 3; the default output grid is usually too coarse near T, so p is often NaN).
      The token driving the blow-up — largest p, else largest growth ``|u(t_last)|/|u(0)|`` — is
      ``divergent-finite-time`` (confidence high when it grew ×10 or p ≥ ``blowup_exponent_min``); so is
      any other token with p ≥ ``blowup_exponent_min`` (low). A later token (index above the driver)
      ends with the driver: with ``inherit_blowup=True`` it is labelled ``divergent-finite-time`` (low),
      which is a theorem in 1-D (a token's blow-up makes every later token unbounded by the same
      time) but not in general; otherwise it is ``undetermined``. An earlier token is
      ``undetermined`` (it is cut short by a later token's blow-up; integrate the prefix up to it,
      `prefix_batch`). When the solver stopped at its norm threshold *without* a finite-time
      singularity signature (outcome ``THRESHOLD``), the largest token is ``divergent`` (confidence low)
      and the others ``undetermined``.
    * success: over the fit window ``[t_end·10^-window_decades, t_end]`` the decay exponent α (slope of
      ln|u| against ln t) and the growth slope β (slope of |u| against ln t) are fitted:
      α ≤ -``decay_exponent_min`` → ``convergent``; α ≥ ``growth_exponent_min`` → ``divergent`` (slow,
      no blow-up within the horizon); |α| ≤ ``bounded_exponent_max`` → ``bounded``; otherwise, or with
      fewer than ``min_points`` rows in the window, or ``t_end < min_t_end``, ``undetermined``. A token
      whose norm stays ≤ ``zero_norm`` throughout is ``bounded`` (static).

    Default thresholds: a slowly divergent 1-D token grows like ln t, so α ≈ 1/ln t ≈ 0.05–0.1 at
    t ∈ [1e4, 1e8]; convergent tokens approach α = -1/2; a bounded token has α → 0. Integrate to
    t ≥ 1e6 (``log_time=True``) for a clear separation.

    Arguments:
        solution: a `mamba_ode.Solution` (ts (T,), ys (T, B, L, E), status, messages, t_blowup).
        window_decades: width of the fit window in decades of t.
        min_points: fewest rows needed for a fit.
        min_t_end: shortest horizon for which power-law fits are attempted.
        decay_exponent_min: convergence threshold on -α.
        growth_exponent_min: slow-divergence threshold on α.
        bounded_exponent_max: boundedness threshold on |α|.
        blowup_exponent_min: threshold on p for tokens other than the largest in a blown-up sequence.
        blowup_window_decades: width of the blow-up fit window in decades of T - t.
        zero_norm: norms ≤ this count as zero.
        inherit_blowup: label the tokens after the blow-up driver ``divergent-finite-time`` (see above;
            valid in 1-D, an assumption for E > 1).

    Returns:
        A `TrajectoryClassification`.

    Raises:
        TypeError: if solution lacks ts/ys/status/t_blowup.
        ValueError: for inconsistent shapes or invalid thresholds.
    """
    for name in ("ts", "ys", "status", "t_blowup"):
        if not hasattr(solution, name):
            raise TypeError(f"argument 'solution' must be a mamba_ode.Solution (missing {name!r}), "
                            f"got {type(solution).__name__}")
    thresholds = {"window_decades": window_decades, "min_points": min_points, "min_t_end": min_t_end,
                  "decay_exponent_min": decay_exponent_min, "growth_exponent_min": growth_exponent_min,
                  "bounded_exponent_max": bounded_exponent_max, "blowup_exponent_min": blowup_exponent_min,
                  "blowup_window_decades": blowup_window_decades, "zero_norm": zero_norm}
    for k, v in thresholds.items():
        v = finite_scalar(v, k)
        if v < 0:
            raise ValueError(f"argument {k!r} must be ≥ 0, got {v}")
    if not 0 <= bounded_exponent_max <= min(decay_exponent_min, growth_exponent_min):
        raise ValueError("argument 'bounded_exponent_max' must not exceed 'decay_exponent_min' or "
                         "'growth_exponent_min'")
    run = _Run.read(solution, thresholds, inherit_blowup)
    for b in range(run.nb):
        run.classify(b)
    return run.result()


class _Run:
    """The arrays of one solution and the labels being filled in, one sequence at a time."""

    def __init__(self, ts: np.ndarray, norms: np.ndarray, outcomes: list[Outcome], messages: list[str],
                 t_blow: np.ndarray, t_final: np.ndarray, th: dict[str, float], inherit_blowup: bool) -> None:
        self.ts, self.norms, self.outcomes, self.messages = ts, norms, outcomes, messages
        self.t_blow, self.t_final, self.th, self.inherit = t_blow, t_final, th, inherit_blowup
        nt, nb, length = norms.shape
        self.nt, self.nb, self.length = nt, nb, length
        self.labels = [[Label.UNDETERMINED] * length for _ in range(nb)]
        self.reasons = [[""] * length for _ in range(nb)]
        self.conf = [["none"] * length for _ in range(nb)]
        self.alpha, self.beta, self.pexp, self.tb, self.fnorm = (np.full((nb, length), np.nan) for _ in range(5))

    @classmethod
    def read(cls, solution: Solution, th: dict[str, float], inherit_blowup: bool) -> _Run:
        ts = torch.as_tensor(solution.ts).detach().to(torch.float64).cpu().numpy()
        ys = torch.as_tensor(solution.ys).detach()
        if ys.dim() != 4 or ts.ndim != 1 or ys.shape[0] != ts.shape[0]:
            raise ValueError(f"argument 'solution': ys must be (T, B, L, E) with T = len(ts), "
                             f"got ys {tuple(ys.shape)}, ts {tuple(ts.shape)}")
        nb = ys.shape[1]
        status = list(solution.status)
        if len(status) != nb:
            raise ValueError(f"argument 'solution': {len(status)} statuses for {nb} sequences")
        outcomes = list(getattr(solution, "outcomes", None) or [])
        if len(outcomes) != nb:
            outcomes = [Solution.default_outcome(s) for s in status]
        messages = list(getattr(solution, "messages", [""] * nb))
        t_blow = torch.as_tensor(solution.t_blowup, dtype=torch.float64).reshape(-1).cpu().numpy()
        t_final = getattr(solution, "t_final", None)
        t_final = (torch.as_tensor(t_final, dtype=torch.float64).reshape(-1).cpu().numpy()
                   if t_final is not None else np.full(nb, np.nan))
        norms = torch.linalg.vector_norm(ys.to(torch.float64), dim=-1).cpu().numpy()  # (T, B, L)
        return cls(ts, norms, outcomes, messages, t_blow, t_final, th, inherit_blowup)

    def set(self, b: int, l: int, lab: Label, why: str, c: str) -> None:
        self.labels[b][l], self.reasons[b][l], self.conf[b][l] = lab, why, c

    def set_all(self, b: int, why: str) -> None:
        for l in range(self.length):
            self.set(b, l, Label.UNDETERMINED, why, "none")

    def classify(self, b: int) -> None:
        """Label the tokens of sequence b by its outcome."""
        outcome = self.outcomes[b]
        msg = self.messages[b] if b < len(self.messages) else ""
        finite_rows = np.isfinite(self.norms[:, b, :]).all(-1)
        last = int(np.nonzero(finite_rows)[0].max()) if finite_rows.any() else -1
        if last >= 0:
            self.fnorm[b] = self.norms[last, b]
        if outcome is not Outcome.SUCCESS and not outcome.grew:
            self.set_all(b, f"solver status {outcome.status.value}: {msg}".strip())
            return
        if last < 0:
            self.set_all(b, "no finite row in the solution")
            return
        valid = finite_rows.copy()
        valid[last + 1:] = False
        if not valid[: last + 1].all():
            self.set_all(b, "NaN/inf values inside the trajectory")
            return
        if outcome is Outcome.SUCCESS and last != self.nt - 1:
            self.set_all(b, f"status success but rows after t={self.ts[last]:.6g} are not finite")
            return
        if outcome is Outcome.THRESHOLD:
            self._threshold(b, msg)
        elif outcome.grew:
            self._blowup(b, last, valid)
        else:
            self._success(b, last, valid)

    def _threshold(self, b: int, msg: str) -> None:
        # the solver stopped at its norm threshold but saw no singularity: unbounded growth, not a blow-up
        k = int(np.argmax(self.fnorm[b])) if np.isfinite(self.fnorm[b]).any() else 0
        for l in range(self.length):
            if l == k:
                self.set(b, l, Label.DIVERGENT, f"passed the solver's norm threshold without a finite-time "
                                                f"singularity signature ({msg}); raise blowup_threshold to follow "
                                                "it further", "low")
            else:
                self.set(b, l, Label.UNDETERMINED, f"the run stopped when token {k + 1} passed the solver's norm "
                                                   "threshold (no finite-time singularity signature)", "none")

    def _blowup_exponents(self, b: int, T: float, valid: np.ndarray) -> None:
        """p in |u_l| ∝ (T - t)^{-p}, fitted over the rows near T (when there are ≥ 3)."""
        rows = np.nonzero(valid & (self.ts < T))[0]
        gaps = T - self.ts[rows]
        sel = rows[gaps <= gaps.min() * 10.0 ** self.th["blowup_window_decades"]] if gaps.size else rows
        if sel.size >= 3:
            lg = np.log(T - self.ts[sel])
            for l in range(self.length):
                if (self.norms[sel, b, l] > 0).all():
                    self.pexp[b, l] = -_fit_slope(lg, np.log(self.norms[sel, b, l]))

    def _blowup(self, b: int, last: int, valid: np.ndarray) -> None:
        T = float(self.t_blow[b]) if math.isfinite(float(self.t_blow[b])) else float(self.t_final[b])
        if not math.isfinite(T):
            T = float(self.ts[last])
        nl, n0 = self.norms[last, b], self.norms[0, b]
        ratio = np.where(n0 > 0, nl / np.where(n0 > 0, n0, 1.0), np.where(nl > 0, np.inf, 1.0))
        self._blowup_exponents(b, T, valid)
        pexp = self.pexp[b]
        # the token driving the blow-up: largest fitted exponent when available, else largest growth
        k = int(np.nanargmax(pexp)) if np.isfinite(pexp).any() else int(np.argmax(ratio))
        p_min, t_last = self.th["blowup_exponent_min"], self.ts[last]
        for l in range(self.length):
            p = pexp[l]
            if (self.norms[: last + 1, b, l] <= self.th["zero_norm"]).all():
                self.set(b, l, Label.BOUNDED, "identically zero (static)", "high")
            elif l == k:
                self.tb[b, l] = T
                strong = float(ratio[l]) >= 10.0 or (math.isfinite(p) and p >= p_min)
                self.set(b, l, Label.FINITE, f"sequence blew up at T={T:.8g}; token {l + 1} grew most "
                                             f"(×{float(ratio[l]):.3g} by t={t_last:.4g})", "high" if strong else "low")
            elif math.isfinite(p) and p >= p_min:
                self.tb[b, l] = T
                self.set(b, l, Label.FINITE, f"grows like (T - t)^-{p:.3g} towards the blow-up at T={T:.6g}", "low")
            elif l > k and self.inherit:
                self.tb[b, l] = T
                self.set(b, l, Label.FINITE, f"depends on token {k + 1}, which blows up at T={T:.6g}; in the 1-D "
                                             "system every later token is unbounded at that time", "low")
            elif l > k:
                self.set(b, l, Label.UNDETERMINED, f"its trajectory ends at T={T:.6g} with the blow-up of token "
                                                   f"{k + 1} (|u| still {nl[l]:.3g}); unbounded there in 1-D "
                                                   "(inherit_blowup=True), not decided in general", "none")
            else:
                self.set(b, l, Label.UNDETERMINED, f"stays finite (|u|={nl[l]:.3g}) until the later token {k + 1} "
                                                   f"blows up at T={T:.6g}; integrate the prefix up to this token "
                                                   "(prefix_batch) to decide", "none")

    def _success(self, b: int, last: int, valid: np.ndarray) -> None:
        th = self.th
        t_end = float(self.ts[last])
        if t_end < th["min_t_end"]:
            self.set_all(b, f"horizon t_end={t_end:.3g} < min_t_end={th['min_t_end']:g}: too short for power-law fits")
            return
        sel = np.nonzero(valid & (self.ts >= t_end * 10.0 ** (-th["window_decades"])) & (self.ts > 0))[0]
        for l in range(self.length):
            if (self.norms[: last + 1, b, l] <= th["zero_norm"]).all():
                self.set(b, l, Label.BOUNDED, "identically zero (static)", "high")
            elif sel.size < th["min_points"]:
                self.set(b, l, Label.UNDETERMINED, f"only {sel.size} rows in the fit window (need "
                                                   f"{int(th['min_points'])})", "none")
            elif (self.norms[sel, b, l] <= 0).any():
                self.set(b, l, Label.UNDETERMINED, "norm reaches 0 inside the fit window", "none")
            else:
                self._fit_power_law(b, l, sel, t_end)

    def _fit_power_law(self, b: int, l: int, sel: np.ndarray, t_end: float) -> None:
        th = self.th
        y, lt = self.norms[sel, b, l], np.log(self.ts[sel])
        a_, g_ = _fit_slope(lt, np.log(y)), _fit_slope(lt, y)
        self.alpha[b, l], self.beta[b, l] = a_, g_
        dmin, gmin, bmax = th["decay_exponent_min"], th["growth_exponent_min"], th["bounded_exponent_max"]
        if a_ <= -dmin:
            self.set(b, l, Label.CONVERGENT, f"|u| decays like t^{a_:.3f}", "high" if a_ <= -2 * dmin else "low")
        elif a_ >= gmin:
            self.set(b, l, Label.DIVERGENT, f"|u| grows without blow-up up to t={t_end:.3g}: t-exponent {a_:.3f}, "
                                            f"slope {g_:.3g} per unit ln t", "high" if a_ >= 2 * gmin else "low")
        elif abs(a_) <= bmax:
            self.set(b, l, Label.BOUNDED, f"|u| levels off (t-exponent {a_:.2e})", "high")
        else:
            self.set(b, l, Label.UNDETERMINED, f"t-exponent {a_:.3g} between the thresholds (bounded ≤ {bmax}, "
                                               f"decay ≥ {dmin}, growth ≥ {gmin}): integrate further", "none")

    def result(self) -> TrajectoryClassification:
        return TrajectoryClassification(
            labels=self.labels, reasons=self.reasons, confidence=self.conf,
            decay_exponent=torch.from_numpy(self.alpha), growth_slope=torch.from_numpy(self.beta),
            blowup_exponent=torch.from_numpy(self.pexp), t_blowup=torch.from_numpy(self.tb),
            final_norm=torch.from_numpy(self.fnorm), thresholds=self.th)
