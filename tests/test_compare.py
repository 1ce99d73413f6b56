"""The discrete comparison: Euler step 1 on the depth-time field is the pretrained network; Euler 1/n → ODE."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import mamba_ode
from mamba_ode.dynamics.compare import DiscreteComparison, compare_discrete
from mamba_ode.dynamics.fields import DepthField
from mamba_ode.dynamics.solvers import Status, euler, solve

CONFIGS = [
    dict(vocab_size=37, hidden_size=16, state_size=4, num_hidden_layers=3, time_step_rank=2, conv_kernel=3,
         use_bias=True, tie_word_embeddings=False),
    dict(vocab_size=50, hidden_size=24, state_size=3, num_hidden_layers=4, expand=3, conv_kernel=2,
         use_conv_bias=True, tie_word_embeddings=True),
]


@pytest.mark.parametrize("i", range(len(CONFIGS)))
def test_euler_step_one_is_the_pretrained_network(hf_mamba, tmp_path, i):
    """Acceptance: Euler with h = 1 on DepthField reproduces transformers' residual stream to 1e-5 (float32)."""
    hf, d = hf_mamba(tmp_path, seed=10 + i, **CONFIGS[i])
    model = mamba_ode.load(d)
    k = model.config.n_layer
    ids = torch.randint(0, CONFIGS[i]["vocab_size"], (2, 9), generator=torch.Generator().manual_seed(i))
    with torch.no_grad():
        ref = hf(ids, output_hidden_states=True).hidden_states  # residual after each layer, then norm_f
    field = DepthField(model)
    x0 = field.initial_state(ids).detach()
    sol = euler(field, x0, field.t_span, 1.0)
    assert sol.ys.dtype == torch.float32 and sol.ys.shape == (k + 1, 2, 9, model.config.d_model)
    assert sol.ts.tolist() == [float(j) for j in range(k + 1)]
    assert field.nfev == k + 1  # one probe + one evaluation per layer
    for j in range(k):
        assert (sol.ys[j + 1] - ref[j]).abs().max().item() <= 1e-5


@pytest.fixture(scope="module")
def depth64(hf_mamba, tmp_path_factory):
    _, d = hf_mamba(tmp_path_factory.mktemp("cmp"), seed=4, **CONFIGS[0])
    model = mamba_ode.load(d, dtype=torch.float64)
    field = DepthField(model)
    ids = torch.randint(0, CONFIGS[0]["vocab_size"], (2, 7), generator=torch.Generator().manual_seed(0))
    return field, field.initial_state(ids).detach()


def test_euler_converges_with_order_one(depth64):
    """Acceptance: Euler with step 1/n → adaptive solution, fitted order 1.0 ± 0.1 over n = 1, 2, 4, …, 64."""
    field, x0 = depth64
    k = field.n_layers
    ref = solve(field, x0, (0.0, float(k)), t_eval=[float(k)], rtol=1e-11, atol=1e-12)
    assert ref.ok and ref.stats["n_runs"] == k  # one piece per layer: the jumps are landed on
    ns = [1, 2, 4, 8, 16, 32, 64]
    errs = [(euler(field, x0, (0.0, float(k)), 1.0 / n).ys[-1] - ref.ys[-1]).norm().item() for n in ns]
    order = np.polyfit(np.log(1.0 / np.array(ns)), np.log(errs), 1)[0]
    assert abs(order - 1.0) <= 0.1, (order, errs)
    assert all(e2 < e1 for e1, e2 in zip(errs, errs[1:]))


def test_compare_discrete(depth64):
    field, x0 = depth64
    cmp = compare_discrete(field, x0, field.t_span, h=1.0)
    assert isinstance(cmp, DiscreteComparison)
    k = field.n_layers
    assert cmp.ts.tolist() == [float(j) for j in range(k + 1)]
    assert cmp.discrete.shape == cmp.continuous.shape == (k + 1, *x0.shape)
    assert cmp.error.shape == (k + 1, 2) and cmp.error[0].abs().max() == 0
    manual = (cmp.discrete - cmp.continuous).flatten(2).norm(dim=-1)
    assert torch.allclose(cmp.error, manual)
    assert (cmp.error[1:] > 0).all() and cmp.max_error == pytest.approx(cmp.error.max().item())
    assert torch.equal(cmp.final_error, cmp.error[-1])
    assert cmp.euler_solution.status == cmp.ode_solution.status == [Status.SUCCESS] * 2
    # the discrete half is the network: x^{k+1} = x^k + F_k(x^k)
    x = x0
    with torch.no_grad():
        for blk in field.model.layers:
            x = x + blk.update(x)
    assert (cmp.discrete[-1] - x).abs().max() <= 1e-12
    # smaller steps approach the ODE
    fine = compare_discrete(field, x0, field.t_span, h=0.25)
    assert fine.final_error.max() < cmp.final_error.max()
    with pytest.raises(ValueError, match="t_eval"):
        compare_discrete(field, x0, field.t_span, t_eval=[1.0])


def test_ablated_and_tied_fields_solve(depth64):
    field, x0 = depth64
    model = field.model
    for f in (DepthField(model, norm=False, conv=False, gate=False), DepthField(model, tied_layer=1)):
        sol = solve(f, x0, (0.0, 2.0), t_eval=[0.0, 1.0, 2.0], rtol=1e-8, atol=1e-10)
        assert sol.status == [Status.SUCCESS] * 2 and torch.isfinite(sol.ys).all()
