"""The paper's refinements: sign-constrained input–output matrices and SoftSort token reordering.

Eigenvalue oracle: the dense symmetric part of ``M = S_Cᵀ S_B`` (read straight from the
effective ``x_proj.weight`` rows) diagonalised with ``torch.linalg.eigvalsh`` in float64.
"""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from mamba_ode.io.config import MambaConfig
from mamba_ode.nn import MambaLM, MambaMixer
from mamba_ode.nn.refine import (
    InputOutputSign,
    SoftSort,
    TokenReorder,
    constrain_input_output,
    find_mixers,
    input_output_sign_of,
    reorder_first_block,
    unconstrain_input_output,
)

transformers = pytest.importorskip("transformers")

SIGNS = ("positive", "negative", "mixed")


def sym_eigenvalues(x_proj_weight: torch.Tensor, dt_rank: int, d_state: int) -> torch.Tensor:
    """Eigenvalues (E,) of Sym(S_Cᵀ S_B) in float64, ascending (independent oracle)."""
    w = x_proj_weight.detach().double()
    s_b, s_c = w[dt_rank:dt_rank + d_state], w[dt_rank + d_state:dt_rank + 2 * d_state]
    m = s_c.T @ s_b
    return torch.linalg.eigvalsh((m + m.T) / 2)


def sign_counts(eig: torch.Tensor, rel_tol: float = 1e-6) -> tuple[int, int]:
    tol = rel_tol * float(eig.abs().max())
    return int((eig > tol).sum()), int((eig < -tol).sum())


def expected_counts(sign: str, n: int) -> tuple[int, int]:
    return {"positive": (n, 0), "negative": (0, n), "mixed": ((n + 1) // 2, n // 2)}[sign]


def our_model(seed: int = 0, d_state: int = 6) -> MambaLM:
    torch.manual_seed(seed)
    cfg = MambaConfig(d_model=16, n_layer=2, vocab_size=40, d_state=d_state, expand=2)
    model = MambaLM(cfg)
    with torch.no_grad():  # random raw weights of a non-trivial scale
        for block in model.layers:
            block.mixer.x_proj.weight.normal_(0.0, 0.7)
    return model


def hf_model(seed: int = 0):
    torch.manual_seed(seed)
    cfg = transformers.MambaConfig(vocab_size=40, hidden_size=16, state_size=5, num_hidden_layers=2,
                                   time_step_rank=3, expand=2)
    model = transformers.MambaForCausalLM(cfg)
    with torch.no_grad():
        for layer in model.backbone.layers:
            layer.mixer.x_proj.weight.normal_(0.0, 0.7)
    return model


# ----------------------------------------------------------------------------- sign constraint


@pytest.mark.parametrize("sign", SIGNS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sign_ours(sign, seed):
    """Our MambaMixer: Sym(M) has exactly N eigenvalues of the promised signs, the rest zero."""
    model = our_model(seed, d_state=5 + seed)
    constrain_input_output(model, sign)
    assert input_output_sign_of(model) == sign
    for block in model.layers:
        m = block.mixer
        eig = sym_eigenvalues(m.x_proj.weight, m.dt_rank, m.d_state)
        assert sign_counts(eig) == expected_counts(sign, m.d_state)
        # the SSMParams view the rest of the package reads sees the same constrained matrix
        torch.testing.assert_close(block.ssm.input_output_matrix(), m.x_proj.weight[m.dt_rank + m.d_state:].T
                                   @ m.x_proj.weight[m.dt_rank:m.dt_rank + m.d_state])


@pytest.mark.parametrize("sign", SIGNS)
def test_sign_transformers(sign):
    """transformers' MambaMixer (whole model constrained): same promise, forward still runs."""
    model = hf_model(3)
    constrain_input_output(model, sign)
    mixers = find_mixers(model)
    assert len(mixers) == 2
    for _, m in mixers:
        eig = sym_eigenvalues(m.x_proj.weight, m.time_step_rank, m.ssm_state_size)
        assert sign_counts(eig) == expected_counts(sign, m.ssm_state_size)
    ids = torch.randint(0, 40, (2, 9))
    out = model(ids).logits
    assert out.shape == (2, 9, 40)
    out.square().mean().backward()
    raw = mixers[0][1].x_proj.parametrizations.weight.original
    assert raw.grad is not None and torch.isfinite(raw.grad).all() and raw.grad.abs().sum() > 0


def test_sign_gradients_and_unconstrain():
    """Gradients reach the raw weight; unconstraining keeps the effective weight as a plain parameter."""
    model = our_model(4)
    constrain_input_output(model, "mixed")
    ids = torch.randint(0, 40, (2, 7))
    model(ids).logits.square().mean().backward()
    for block in model.layers:
        g = block.mixer.x_proj.parametrizations.weight.original.grad
        assert g is not None and torch.isfinite(g).all() and g.abs().sum() > 0
    with torch.no_grad():
        before = model(ids).logits
        effective = [b.mixer.x_proj.weight.detach().clone() for b in model.layers]
    unconstrain_input_output(model)
    assert input_output_sign_of(model) is None
    for b, w in zip(model.layers, effective):
        assert isinstance(b.mixer.x_proj.weight, nn.Parameter)
        torch.testing.assert_close(b.mixer.x_proj.weight.detach(), w)
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, before)


@pytest.mark.parametrize("sign", SIGNS)
def test_sign_gradients_reach_input(sign):
    """A constrained mixer (ours) differentiates w.r.t. its input and its raw weight."""
    torch.manual_seed(7)
    mixer = MambaMixer(MambaConfig(d_model=12, n_layer=1, vocab_size=10, d_state=4, expand=2))
    constrain_input_output(mixer, sign)
    x = torch.randn(2, 9, 12, requires_grad=True)
    mixer(x).square().mean().backward()
    raw = mixer.x_proj.parametrizations.weight.original
    for t in (x, raw, mixer.in_proj.weight, mixer.dt_proj.weight):
        assert t.grad is not None and torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0


def test_shipped_models_signs():
    """Every shipped sign variant carries the promised spectrum in its stored weights."""
    from mamba_ode import load
    from mamba_ode.models import shipped_model_dir, shipped_names
    from mamba_ode.regimes import sym_spectrum

    names = [n for n in shipped_names() if n.startswith("tiny-shakespeare")]
    if not names:
        pytest.skip("no shipped models in this installation")
    for name in names:
        meta = json.loads((shipped_model_dir(name) / "meta.json").read_text(encoding="utf-8"))
        model = load(name)
        for block in model.layers:
            m = block.mixer
            eig = sym_eigenvalues(m.x_proj.weight, m.dt_rank, m.d_state)
            if meta["variant"] in SIGNS:
                assert sign_counts(eig) == expected_counts(meta["variant"], m.d_state), name
            # the regime module's low-rank spectrum agrees with the dense oracle
            spec = sym_spectrum(block.ssm, rtol=1e-6)
            assert (spec.n_pos, spec.n_neg) == sign_counts(eig), name
            if meta["variant"] in ("positive", "negative"):
                assert spec.label == f"{meta['variant']} semi-definite", name


# ----------------------------------------------------------------------------- SoftSort


def test_softsort_soft_rows_sum_to_one():
    x = torch.randn(3, 11, dtype=torch.float64)
    p = SoftSort(tau=0.7)(x)
    assert p.shape == (3, 11, 11)
    assert (p > 0).all()
    torch.testing.assert_close(p.sum(-1), torch.ones(3, 11, dtype=torch.float64))


def test_softsort_hard_is_exact_permutation():
    x = torch.randn(4, 13)
    p = SoftSort(tau=1.0, hard=True)(x)
    assert set(p.detach().unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(p.detach().sum(-1), torch.ones(4, 13))
    assert torch.equal(p.detach().sum(-2), torch.ones(4, 13))
    # it sorts in descending order
    sorted_x = (p.detach() @ x.unsqueeze(-1)).squeeze(-1)
    assert torch.equal(sorted_x, x.sort(dim=-1, descending=True).values)


@pytest.mark.parametrize("hard", [False, True])
def test_softsort_gradient(hard):
    x = torch.randn(2, 9, requires_grad=True)
    p = SoftSort(tau=0.5, hard=hard)(x)
    (p @ torch.randn(9)).square().sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


# ----------------------------------------------------------------------------- TokenReorder


@pytest.mark.parametrize("hard", [False, True])
@pytest.mark.parametrize("permute_back", [False, True])
def test_reorder_ours_gradients(hard, permute_back):
    """Wrapping our mixer: shape kept, finite non-zero gradients on mixer weights, K and the input."""
    torch.manual_seed(0)
    mixer = MambaMixer(MambaConfig(d_model=12, n_layer=1, vocab_size=10, d_state=4, expand=2))
    wrap = TokenReorder(mixer, tau=1.0, hard=hard, permute_back=permute_back)
    x = torch.randn(2, 10, 12, requires_grad=True)
    y = wrap(x)
    assert y.shape == x.shape
    p = wrap.last_permutation
    assert p.shape == (2, 10, 10)
    if hard:  # tokens are put in order of increasing score
        s = wrap.scores(mixer.ssm_input(x)[0]).detach()
        assert torch.all((p.detach() @ s.unsqueeze(-1)).squeeze(-1).diff(dim=-1) >= 0)
    y.square().mean().backward()
    for name, t in [("x", x), ("K", wrap.K), ("x_proj", mixer.x_proj.weight), ("in_proj", mixer.in_proj.weight),
                    ("dt_proj", mixer.dt_proj.weight), ("A_log", mixer.A_log), ("out_proj", mixer.out_proj.weight)]:
        assert t.grad is not None and torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0, name


def test_reorder_identity_when_scores_tie():
    """K = 0 and hard mode: every score ties, the stable sort keeps the order, the mixer is unchanged."""
    torch.manual_seed(1)
    mixer = MambaMixer(MambaConfig(d_model=12, n_layer=1, vocab_size=10, d_state=4, expand=2))
    wrap = TokenReorder(mixer, hard=True)
    with torch.no_grad():
        wrap.K.zero_()
        x = torch.randn(2, 8, 12)
        torch.testing.assert_close(wrap(x), mixer(x), atol=1e-6, rtol=1e-6)
    assert torch.equal(wrap.last_permutation, torch.eye(8).expand(2, 8, 8))


def test_reorder_transformers_mixer():
    """Wrapping transformers' MambaMixer keeps the output shapes; gradients flow; ties reproduce it."""
    model = hf_model(5).eval()
    ids = torch.randint(0, 40, (2, 11))
    with torch.no_grad():
        ref = model(ids).logits
        h = torch.randn(2, 11, 16)
        ref_mixer = model.backbone.layers[0].mixer(h)
    wrap = reorder_first_block(model, hard=True)
    assert isinstance(model.backbone.layers[0].mixer, TokenReorder)
    with torch.no_grad():
        wrap.K.zero_()
        torch.testing.assert_close(wrap(h), ref_mixer, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(model(ids).logits, ref, atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        wrap.K.normal_()
    wrap.softsort.hard = False
    out = model(ids).logits
    assert out.shape == ref.shape
    out.square().mean().backward()
    assert torch.isfinite(wrap.K.grad).all() and wrap.K.grad.abs().sum() > 0
    g = wrap.mixer.x_proj.weight.grad
    assert g is not None and torch.isfinite(g).all() and g.abs().sum() > 0


def test_reorder_with_sign_constraint():
    """Both refinements together: the wrapper reads the constrained x_proj weight."""
    model = our_model(6)
    constrain_input_output(model, "positive")
    wrap = reorder_first_block(model)
    inner = wrap.mixer
    eig = sym_eigenvalues(inner.x_proj.weight, inner.dt_rank, inner.d_state)
    assert sign_counts(eig) == expected_counts("positive", inner.d_state)
    torch.testing.assert_close(wrap.ssm.S_B, inner.x_proj.weight[inner.dt_rank:inner.dt_rank + inner.d_state])
    out = model(torch.randint(0, 40, (1, 6))).logits
    assert out.shape == (1, 6, 40)


# ----------------------------------------------------------------------------- bad input


def test_bad_inputs():
    model = our_model(0)
    with pytest.raises(ValueError, match="'sign'"):
        constrain_input_output(model, "convergent")
    with pytest.raises(ValueError, match="'module'"):
        constrain_input_output(nn.Linear(3, 3), "positive")
    with pytest.raises(TypeError, match="'module'"):
        constrain_input_output("model", "positive")
    constrain_input_output(model, "negative")
    with pytest.raises(ValueError, match="already constrained"):
        constrain_input_output(model, "positive")
    with pytest.raises(ValueError, match="'sign'"):
        InputOutputSign(2, 3, "definite")
    with pytest.raises(ValueError, match="'d_state'"):
        InputOutputSign(2, 0, "positive")
    with pytest.raises(ValueError, match="'weight'"):
        InputOutputSign(2, 3, "positive")(torch.zeros(7, 5))
    for tau in (0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="'tau'"):
            SoftSort(tau=tau)
    with pytest.raises(TypeError, match="'tau'"):
        SoftSort(tau="1")
    with pytest.raises(ValueError, match="'x'"):
        SoftSort()(torch.zeros(5))
    with pytest.raises(ValueError, match="'mixer'"):
        TokenReorder(nn.Linear(4, 4))
    with pytest.raises(TypeError, match="'mixer'"):
        TokenReorder("mixer")
    mixer = MambaMixer(MambaConfig(d_model=8, n_layer=1, vocab_size=10, d_state=2))
    with pytest.raises(ValueError, match="'tau'"):
        TokenReorder(mixer, tau=0.0)
    with pytest.raises(ValueError, match="'x'"):
        TokenReorder(mixer)(torch.zeros(3, 8))
    with pytest.raises(ValueError, match="'model'"):
        reorder_first_block(nn.Linear(2, 2))
