"""Figures: each plot function draws the data it is given (checked on the artists), takes an ax,
returns the figure, and rejects bad input with an error naming the argument."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from mamba_ode import plots  # noqa: E402
from mamba_ode.dynamics.solvers import Solution, Status  # noqa: E402


def _solution(T=30, B=2, L=3, E=2, blowup=1.5):
    ts = torch.logspace(-3, 0, T, dtype=torch.float64) * 2
    scale = torch.arange(1, L + 1).reshape(1, 1, L, 1)
    ys = torch.ones(T, B, L, E, dtype=torch.float64) * ts.reshape(T, 1, 1, 1) * scale
    tb = torch.tensor([blowup] + [math.nan] * (B - 1), dtype=torch.float64)
    status = [Status.BLOWUP] + [Status.SUCCESS] * (B - 1)
    return Solution(ts=ts, ys=ys, status=status, messages=[""] * B, t_blowup=tb, t_final=ts[-1].repeat(B))


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def test_trajectories_draw_token_norms_and_blowup_marker():
    sol = _solution()
    fig = plots.plot_trajectories(sol, seq=0)
    ax = fig.axes[0]
    lines = [ln for ln in ax.get_lines() if ln.get_label().startswith("token")]
    assert len(lines) == 3
    # token l's norm is l·t·sqrt(E): the drawn data must be exactly that
    for l, ln in enumerate(lines, start=1):
        x, y = ln.get_xydata().T
        assert torch.allclose(torch.tensor(y), l * torch.tensor(x) * math.sqrt(2), rtol=1e-12)
    vlines = [ln for ln in ax.get_lines() if not ln.get_label().startswith("token")]
    assert any(float(ln.get_xdata()[0]) == 1.5 for ln in vlines)
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    assert "blow-up" in ax.get_title()


def test_trajectories_into_given_ax_and_no_marker_without_blowup():
    sol = _solution()
    fig, ax = plt.subplots()
    out = plots.plot_trajectories(sol, seq=1, ax=ax, tokens=[0])
    assert out is fig
    assert [ln.get_label() for ln in ax.get_lines()] == ["token 1"]


@pytest.mark.parametrize(("kwargs", "name"), [({"seq": 5}, "seq"), ({"tokens": [7]}, "tokens")])
def test_trajectories_bad_index(kwargs, name):
    with pytest.raises(ValueError, match=name):
        plots.plot_trajectories(_solution(), **kwargs)


def test_trajectories_rejects_non_solution():
    with pytest.raises(TypeError, match="solution"):
        plots.plot_trajectories(torch.zeros(3))


def test_hidden_attention_row_scaling_and_mask():
    L, E = 5, 3
    causal = torch.tril(torch.ones(L, L, dtype=torch.float64)).reshape(1, L, L, 1)
    P = (torch.rand(2, L, L, E, dtype=torch.float64) + 0.1) * causal
    fig = plots.plot_hidden_attention(P, channel=1, seq=1, scale="row")
    img = torch.tensor(fig.axes[0].images[0].get_array().filled(float("nan")))
    expect = P[1, :, :, 1] / P[1, :, :, 1].amax(dim=1, keepdim=True)
    low = torch.tril(torch.ones(L, L, dtype=torch.bool))
    assert torch.allclose(img[low], expect[low])
    assert torch.isnan(img[~low]).all()


@pytest.mark.parametrize(("kwargs", "name"), [({"channel": 9}, "channel"), ({"seq": 4}, "seq"),
                                              ({"scale": "log"}, "scale")])
def test_hidden_attention_bad_args(kwargs, name):
    with pytest.raises(ValueError, match=name):
        plots.plot_hidden_attention(torch.zeros(1, 4, 4, 2), **kwargs)


def test_hidden_attention_bad_shape_and_type():
    with pytest.raises(ValueError, match="'P'"):
        plots.plot_hidden_attention(torch.zeros(1, 4, 3, 2))
    with pytest.raises(TypeError, match="'P'"):
        plots.plot_hidden_attention([[0.0]])


def test_spectrum_and_regime_map_from_dicts():
    table = [{"layer": 0, "eigenvalues": [2.0, -1.0, 0.5], "channel_fractions": {"convergent": 0.25,
                                                                                  "divergent-fast": 0.75}},
             {"layer": 1, "eigenvalues": [-3.0], "channel_fractions": {"convergent": 1.0}}]
    fig = plots.plot_spectrum(table)
    pts = sorted(float(v) for c in fig.axes[0].collections for v in c.get_offsets()[:, 1])
    assert pts == [-3.0, -1.0, 0.5, 2.0]
    fig = plots.plot_regime_map(table)
    data = fig.axes[0].images[0].get_array()
    assert data.shape == (2, 2)
    assert sorted(data.sum(axis=1).tolist()) == [1.0, 1.0]
    with pytest.raises(ValueError, match="table"):
        plots.plot_spectrum([])
    with pytest.raises(TypeError, match="eigenvalues"):
        plots.plot_spectrum([{"layer": 0}])


def test_phase_portrait_evaluates_the_field():
    calls = []

    def field(t, u):
        calls.append(u.shape)
        return -u

    fig = plots.plot_phase_portrait(field, lim=1.0, n=9)
    assert calls == [torch.Size([81, 2, 1])]
    assert fig.axes[0].get_xlim() == (-1.0, 1.0)
    with pytest.raises(ValueError, match="lim"):
        plots.plot_phase_portrait(field, lim=0)


def test_spectrum_from_a_regime_table_draws_the_dense_eigenvalues():
    import mamba_ode as mo

    torch.manual_seed(0)
    model = mo.MambaLM(mo.MambaConfig(d_model=16, n_layer=2, vocab_size=32, d_state=3)).double()
    table = mo.regime_table(model)
    fig = plots.plot_spectrum(table)
    drawn = sorted(float(v) for c in fig.axes[0].collections for v in c.get_offsets()[:, 1])
    dense = []
    for block in model.layers:
        M = block.ssm.input_output_matrix().detach()
        ev = torch.linalg.eigvalsh(0.5 * (M + M.T))
        dense += ev[ev.abs() > 1e-10 * ev.abs().max()].tolist()
    assert len(drawn) == len(dense) == 2 * 3 * 2
    assert torch.allclose(torch.tensor(drawn), torch.tensor(sorted(dense)), atol=1e-8)
