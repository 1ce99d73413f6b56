"""Parameter-side predictions per token (theorem / indicator) against integrated labels, on planted layers."""

from __future__ import annotations

import math

import pytest
import torch

from mamba_ode import SSMParams
from mamba_ode.dynamics.fields import field_of_params
from mamba_ode.dynamics.tokens import TokenEnd, integrate_tokens
from mamba_ode.regimes.labels import COMPATIBLE, Label
from mamba_ode.regimes.predict import PredictionKind, TokenPrediction, predict_tokens, prediction_agreement
from mamba_ode.regimes.tokens import TokenVerdict, classify_tokens

F64 = torch.float64


def planted(S_B: torch.Tensor, S_C: torch.Tensor, *, uniform_delta: bool, rate: float | None = 0.5,
            s_scale: float = 0.5, seed: int = 0) -> SSMParams:
    """A layer with the given S_B, S_C (N, E); Δ the same in every channel when ``uniform_delta``
    (equal rows of S_Δ, equal biases); one decay rate when ``rate`` is given, else N different ones."""
    n, e = S_B.shape
    g = torch.Generator().manual_seed(seed)
    W_x = s_scale * torch.randn(1, e, generator=g, dtype=F64)
    W_dt = torch.ones(e, 1, dtype=F64) if uniform_delta else torch.randn(e, 1, generator=g, dtype=F64)
    bias = torch.full((e,), 0.3, dtype=F64) if uniform_delta else 0.5 * torch.randn(e, generator=g, dtype=F64)
    A = -torch.full((e, n), rate, dtype=F64) if rate is not None else \
        -(0.2 + torch.rand(e, n, generator=g, dtype=F64))
    return SSMParams(W_x=W_x, W_dt=W_dt, delta_bias=bias, S_B=S_B, S_C=S_C, A=A, D=torch.zeros(e, dtype=F64))


def integrated(p: SSMParams, u0: torch.Tensor, t_max: float = 1e4):
    sol = integrate_tokens(field_of_params(p), u0, t_max, rtol=1e-7, atol=1e-10)
    return sol, classify_tokens(sol)


def tokens(seed: int, L: int, e: int) -> torch.Tensor:
    return torch.randn(L, e, generator=torch.Generator().manual_seed(seed), dtype=F64)


# ---------------------------------------------------------------------------------------------- theorems


@pytest.mark.parametrize("seed", [0, 1])
def test_isotropic_negative_layer_every_token_converges_as_proven(seed):
    """M = μI, μ < 0, Δ channel-uniform, one rate: the theorem says every token converges; so does the ODE."""
    e = 3
    p = planted(torch.eye(e, dtype=F64), -0.8 * torch.eye(e, dtype=F64), uniform_delta=True, seed=seed)
    u0 = tokens(seed, 5, e)
    preds = predict_tokens(p, u0)
    assert all(pr.kind is PredictionKind.THEOREM and pr.label is Label.CONVERGENT for pr in preds)
    _, cls = integrated(p, u0)
    assert [v.label for v in cls.tokens] == [Label.CONVERGENT] * 5, [v.reason for v in cls.tokens]


@pytest.mark.parametrize("seed", [0, 1])
def test_isotropic_positive_layer_without_delta_input_every_token_blows_up_by_its_bound(seed):
    """M = μI, μ > 0, S_Δ = 0: every token blows up, token l by ``min_{j≤l} 1/(2μΔ‖u_j‖²)``."""
    e = 3
    p = planted(torch.eye(e, dtype=F64), 0.7 * torch.eye(e, dtype=F64), uniform_delta=True, s_scale=0.0, seed=seed)
    u0 = tokens(seed, 5, e)
    preds = predict_tokens(p, u0)
    assert all(pr.kind is PredictionKind.THEOREM and pr.label is Label.FINITE for pr in preds)
    sol, cls = integrated(p, u0, t_max=1e3)
    for pr, v in zip(preds, cls.tokens):
        assert v.label is Label.FINITE, v.reason
        assert v.t_blowup is not None and pr.t_blowup is not None
        assert v.t_blowup <= pr.t_blowup * (1 + 1e-6)


@pytest.mark.parametrize("seed", [0, 2])
def test_isotropic_positive_layer_every_token_diverges_as_proven(seed):
    """M = μI, μ > 0 with S_Δ ≠ 0: every token diverges. A token is left open only when it depends on an
    earlier token that blew up first (its own trajectory ends there), and then the reason says so."""
    e = 3
    p = planted(torch.eye(e, dtype=F64), 0.7 * torch.eye(e, dtype=F64), uniform_delta=True, seed=seed)
    u0 = tokens(seed, 5, e)
    preds = predict_tokens(p, u0)
    assert all(pr.kind is PredictionKind.THEOREM and pr.label is Label.DIVERGENT for pr in preds)
    _, cls = integrated(p, u0)
    assert cls.tokens[0].label in COMPATIBLE[Label.DIVERGENT]
    for pr, v in zip(preds, cls.tokens):
        if v.label is Label.UNDETERMINED:
            assert v.end is TokenEnd.DEPENDS and "depends on token" in v.reason and "blows up" in v.reason
            continue
        assert pr.agrees(v.label) is True, v.reason


@pytest.mark.parametrize("mu,s,signs", [(-1.0, 1.0, (1, -1, 1, 1)), (1.0, 1.0, (1, 1, 1)), (0.8, 2.0, (-1, -1))])
def test_one_dimensional_layer_labels_equal_the_theorem(mu, s, signs):
    """E = 1 with one decay rate: the paper's one-dimensional theorems predict every token."""
    p = planted(torch.ones(1, 1, dtype=F64), torch.full((1, 1), mu, dtype=F64), uniform_delta=True)
    p = SSMParams(W_x=torch.full((1, 1), s, dtype=F64), W_dt=torch.ones(1, 1, dtype=F64),
                  delta_bias=torch.zeros(1, dtype=F64), S_B=p.S_B, S_C=p.S_C, A=p.A, D=p.D)
    u0 = torch.tensor([[0.3 * (i + 1) * sg] for i, sg in enumerate(signs)], dtype=F64)
    preds = predict_tokens(p, u0)
    assert all(pr.kind is PredictionKind.THEOREM for pr in preds)
    _, cls = integrated(p, u0, t_max=1e4)
    for pr, v in zip(preds, cls.tokens):
        if v.label is Label.UNDETERMINED:  # only "depends on a blown-up token" may leave a token open
            assert v.end is TokenEnd.DEPENDS, v.reason
            continue
        assert v.label in COMPATIBLE.get(pr.label, {pr.label}), (pr.reason, v.reason)


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_semidefinite_layer_token1_theorem_holds_on_the_trajectory(sign):
    """Sym(M) = c·S_Bᵀ S_B of rank N < E: token 1's norm is monotone (non-decreasing for c > 0, non-increasing
    for c < 0) — checked on the integrated norms, and its label agrees with the theorem."""
    e, n = 4, 2
    S_B = torch.randn(n, e, generator=torch.Generator().manual_seed(5), dtype=F64)
    p = planted(S_B, sign * 0.6 * S_B, uniform_delta=False, rate=None, seed=3)
    u0 = tokens(4, 3, e)
    pred = predict_tokens(p, u0)[0]
    assert pred.kind is PredictionKind.THEOREM
    assert pred.label is (Label.NONCONVERGENT if sign > 0 else Label.NONDIVERGENT)
    sol, cls = integrated(p, u0, t_max=1e3)
    norms = sol.norms[:, 0][torch.isfinite(sol.norms[:, 0])]
    steps = norms[1:] - norms[:-1]
    assert bool((sign * steps >= -1e-7 * norms[1:]).all())
    assert pred.agrees(cls.tokens[0].label) is not False, cls.tokens[0].reason


# ---------------------------------------------------------------------------------------------- indicators


def test_indefinite_layer_gets_indicators_not_silence():
    """An indefinite layer with channel-dependent Δ: token 1 from the sign of u_1ᵀMu_1, others from the
    initial direction — every prediction labelled an indicator, none missing."""
    e, n = 4, 2
    g = torch.Generator().manual_seed(9)
    p = planted(torch.randn(n, e, generator=g, dtype=F64), torch.randn(n, e, generator=g, dtype=F64),
                uniform_delta=False, rate=None)
    u0 = tokens(1, 6, e)
    preds = predict_tokens(p, u0)
    assert len(preds) == 6
    assert all(pr.kind is PredictionKind.INDICATOR and pr.label is not None for pr in preds)
    q = float(u0[0] @ (p.S_C.T @ p.S_B) @ u0[0])
    assert preds[0].label is (Label.DIVERGENT if q > 0 else Label.CONVERGENT)
    f0 = field_of_params(p)(0.0, u0[None])[0]
    for l in range(1, 6):
        grows = float((u0[l] * f0[l]).sum()) > 0
        assert preds[l].label is (Label.DIVERGENT if grows else Label.CONVERGENT)


def test_ray_theorem_for_token1_when_delta_is_channel_uniform():
    """Δ the same in every channel: token 1 stays on its ray; the 1-D theorem decides it exactly."""
    e, n = 4, 3
    g = torch.Generator().manual_seed(2)
    p = planted(torch.randn(n, e, generator=g, dtype=F64), torch.randn(n, e, generator=g, dtype=F64),
                uniform_delta=True, rate=0.5)
    u0 = tokens(3, 2, e)
    pred = predict_tokens(p, u0)[0]
    assert pred.kind is PredictionKind.THEOREM and "ray" in pred.reason
    sol, cls = integrated(p, u0, t_max=1e3)
    assert pred.agrees(cls.tokens[0].label) is True, (pred.reason, cls.tokens[0].reason)
    if pred.label is Label.FINITE:
        assert cls.tokens[0].t_blowup == pytest.approx(pred.t_blowup, rel=1e-3)


def test_agreement_counts_and_lists_disagreements():
    preds = [TokenPrediction(0, Label.CONVERGENT, PredictionKind.THEOREM, ""),
             TokenPrediction(1, Label.DIVERGENT, PredictionKind.INDICATOR, ""),
             TokenPrediction(2, Label.CONVERGENT, PredictionKind.INDICATOR, ""),
             TokenPrediction(3, Label.DIVERGENT, PredictionKind.INDICATOR, ""),
             TokenPrediction(4, None, None, "no prediction")]
    verdicts = [TokenVerdict(0, Label.CONVERGENT, ""), TokenVerdict(1, Label.FINITE, ""),
                TokenVerdict(2, Label.DIVERGENT, ""), TokenVerdict(3, Label.UNDETERMINED, ""),
                TokenVerdict(4, Label.CONVERGENT, "")]
    out = prediction_agreement(preds, verdicts)
    assert out["theorem"] == {"n": 1, "agree": 1, "disagree": 0, "undetermined": 0, "rate": 1.0, "disagreements": []}
    assert out["indicator"] == {"n": 3, "agree": 1, "disagree": 1, "undetermined": 1, "rate": 0.5,
                                "disagreements": [2]}
    with pytest.raises(ValueError, match="length"):
        prediction_agreement(preds, verdicts[:2])


def test_bad_arguments():
    p = planted(torch.eye(2, dtype=F64), torch.eye(2, dtype=F64), uniform_delta=True)
    with pytest.raises(TypeError, match="params"):
        predict_tokens("layer", torch.zeros(2, 2))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="u0"):
        predict_tokens(p, torch.zeros(3, 5))


@pytest.mark.parametrize("bad,err,match", [
    ([[0.5, 0.2]], TypeError, "'u0' must be a torch.Tensor"),
    (torch.zeros(2, 3, 2, dtype=F64), ValueError, r"'u0' must be \(L, 2\) or \(1, L, 2\)"),
    (torch.zeros(0, 2, dtype=F64), ValueError, "at least one token"),
    (torch.ones(3, 2, dtype=torch.int64), ValueError, "floating"),
    (torch.tensor([[0.5, math.nan], [0.1, 0.2]], dtype=F64), ValueError, "non-finite"),
    (torch.tensor([[[0.5, 0.2], [math.inf, 0.2]]], dtype=F64), ValueError, "non-finite"),
])
def test_tokens_that_cannot_be_predicted_are_refused_by_name(bad, err, match):
    """Non-finite tokens used to get a label from the 'sign' of NaN; a batch of two silently lost its second row."""
    p = planted(torch.eye(2, dtype=F64), torch.eye(2, dtype=F64), uniform_delta=True)
    assert predict_tokens(p, torch.tensor([[0.5, 0.2], [0.1, 0.3]], dtype=F64))  # the same layer predicts fine
    with pytest.raises(err, match=match):
        predict_tokens(p, bad)


def test_reasons_count_tokens_from_0():
    """The reasons shown beside 0-based token indices name the first token token 0 (u_0), never u_1."""
    e, n = 4, 2
    g = torch.Generator().manual_seed(9)
    indefinite = planted(torch.randn(n, e, generator=g, dtype=F64), torch.randn(n, e, generator=g, dtype=F64),
                         uniform_delta=False, rate=None)
    first = predict_tokens(indefinite, tokens(1, 3, e))[0]
    assert first.index == 0 and "u_0ᵀMu_0" in first.reason and "u_1" not in first.reason
    g = torch.Generator().manual_seed(2)
    uniform = planted(torch.randn(n, e, generator=g, dtype=F64), torch.randn(n, e, generator=g, dtype=F64),
                      uniform_delta=True, rate=0.5)
    first = predict_tokens(uniform, tokens(3, 2, e))[0]
    assert "token 0 moves along its ray" in first.reason and "u_1" not in first.reason
