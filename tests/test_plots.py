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
from tests.layout import layout_problems as _layout_problems  # noqa: E402


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
    assert [ln.get_label() for ln in ax.get_lines()] == ["token 0"]  # indices count from 0


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


# ---------------------------------------------------------------------------------------------- layout at many layers

def _synthetic_spectra(n_layers, seed=0):
    """Per layer 8 eigenvalues of both signs over five decades, and one extreme value per sign."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for k in range(n_layers):
        mags = 10.0 ** (5 * torch.rand(8, generator=g, dtype=torch.float64) - 4)
        signs = torch.tensor([1.0, -1.0] * 4, dtype=torch.float64)
        out.append({"layer": k, "eigenvalues": (mags * signs).tolist()})
    out[n_layers // 3]["eigenvalues"].append(73.0)
    out[-1]["eigenvalues"].append(-91.0)
    return out


@pytest.mark.parametrize("n_layers", [2, 3, 24, 30])
def test_spectrum_layout_fits_at_few_and_many_layers(n_layers):
    """Title and tick labels inside the figure, no overlapping labels near 0, integer layer ticks, and the
    extreme eigenvalues (73 and -91) inside the frame."""
    fig = plots.plot_spectrum(_synthetic_spectra(n_layers))
    assert _layout_problems(fig) == []
    ax = fig.axes[0]
    lo, hi = ax.get_ylim()
    assert lo < -91.0 and hi > 73.0


@pytest.mark.parametrize("n_layers", [24, 30])
def test_regime_map_and_layer_summary_layout_at_many_layers(n_layers):
    g = torch.Generator().manual_seed(n_layers)
    table = []
    for k in range(n_layers):
        a = float(torch.rand(1, generator=g))
        table.append({"layer": k, "channel_fractions": {"convergent": a, "static": 0.0, "divergent": 1 - a}})
    assert _layout_problems(plots.plot_regime_map(table)) == []
    names = ["convergent", "divergent-finite-time", "undetermined", "bounded"]
    layers = []
    for k in range(n_layers):
        labels = [names[int(i)] for i in torch.randint(0, 4, (20,), generator=g)]
        t_b = [float(10 ** (4 * torch.rand(1, generator=g) - 2)) if lab == "divergent-finite-time" else None
               for lab in labels]
        layers.append({"layer": k, "labels": labels, "t_blowup": t_b})
    fig = plots.plot_layer_summary(layers)
    assert _layout_problems(fig) == []


def _synthetic_comparison(n_layers, L=5, W=8):
    from types import SimpleNamespace

    g = torch.Generator().manual_seed(1)
    steps = 0.3 * torch.randn(n_layers + 1, 1, L, W, generator=g, dtype=torch.float64)
    cont = 1.0 + steps.cumsum(0)
    disc = cont + 0.05 * torch.randn(cont.shape, generator=g, dtype=torch.float64)
    rel = (disc - cont).flatten(2).norm(dim=-1) / cont.flatten(2).norm(dim=-1)
    return SimpleNamespace(ts=torch.arange(n_layers + 1, dtype=torch.float64), discrete=disc, continuous=cont,
                           rel_error=rel)


@pytest.mark.parametrize("n_layers", [2, 24, 30])
def test_comparison_layout_and_integer_depth_ticks(n_layers):
    assert _layout_problems(plots.plot_comparison(_synthetic_comparison(n_layers))) == []


def test_comparison_legend_names_every_line():
    """The dotted relative-error line (right axis) has a legend entry like the two trajectories."""
    fig = plots.plot_comparison(_synthetic_comparison(6))
    entries = {t.get_text() for leg in [*fig.legends, *(ax.get_legend() for ax in fig.axes)] if leg is not None
               for t in leg.get_texts()}
    lines = [ln for ax in fig.axes for ln in ax.get_lines()]
    assert len(lines) == 3 and any(ln.get_linestyle() == ":" for ln in lines)
    for ln in lines:
        assert ln.get_label() in entries, (ln.get_label(), entries)


def test_comparison_names_the_token_by_its_0_based_index():
    fig = plots.plot_comparison(_synthetic_comparison(4, L=5), token=-1)
    assert fig.axes[0].get_ylabel().endswith("token 4")
    fig = plots.plot_comparison(_synthetic_comparison(4, L=5), token=0)
    assert fig.axes[0].get_ylabel().endswith("token 0")


@pytest.mark.parametrize("L", [2, 3, 30])
def test_hidden_attention_token_axes_have_integer_ticks(L):
    P = torch.tril(torch.rand(L, L, dtype=torch.float64) + 0.1).reshape(1, L, L, 1)
    assert _layout_problems(plots.plot_hidden_attention(P)) == []


def test_layout_check_catches_half_ticks_clipped_titles_and_overlaps():
    """The checker itself: a figure with each fault is reported (so a passing layout test means something)."""
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot([0, 1], [0, 1], label="data")
    ax.legend(loc="center")
    ax.set_xlabel("layer")
    ax.set_title("a title far too long for a figure only three inches wide, so it runs off both sides")
    ax.set_yticks([0.0, 0.01, 1.0], ["zero", "one hundredth", "one"])
    found = "\n".join(_layout_problems(fig))
    assert "between whole numbers" in found and "clipped" in found and "tick label 'zero' and" in found
    assert "a legend covers the data area" in found
    fig, ax = plt.subplots()
    ax.scatter([0.0, 1.0], [0.0, 1.0], s=40)
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(0.0, 1.0)
    assert any("marker" in p for p in _layout_problems(fig))


def test_trajectories_legend_uses_0_based_token_indices():
    sol = _solution(L=3)
    fig = plots.plot_trajectories(sol, seq=0, tokens=[0, 2])
    assert [ln.get_label() for ln in fig.axes[0].get_lines() if ln.get_label().startswith("token")] == \
        ["token 0", "token 2"]


def test_regime_diagram_names_the_first_token_token_0():
    fig = plots.plot_regime_diagram([-1.0, 1.0], [-1.0, 1.0], u0=0.5)
    assert "token 0" in fig.axes[0].get_title() and "token 1" not in fig.axes[0].get_title()


def test_regime_map_colour_bar_counts_heads_for_mamba2_and_channels_for_mamba1():
    import mamba_ode as mo

    torch.manual_seed(0)
    m2 = mo.Mamba2LM(mo.Mamba2Config(d_model=16, n_layer=2, vocab_size=32, d_state=4, headdim=8, ngroups=2,
                                     chunk_size=8))
    m1 = mo.MambaLM(mo.MambaConfig(d_model=8, n_layer=2, vocab_size=32, d_state=2))
    for model, unit, other in ((m2, "heads", "channel"), (m1, "channels", "head")):
        fig = plots.plot_regime_map(mo.regime_table(model))
        texts = [t.get_text() for t in fig.findobj(matplotlib.text.Text) if t.get_text()]
        colour_bar = fig.axes[1].get_ylabel()
        assert unit in colour_bar, colour_bar
        assert not any(other in t for t in texts), texts
    with pytest.raises(ValueError, match="unit"):
        plots.plot_regime_map(mo.regime_table(m1), unit="tokens")


def _token_solution(L=14, T=40):
    from types import SimpleNamespace

    ts = torch.cat([torch.zeros(1, dtype=torch.float64), torch.logspace(-3, 2, T - 1, dtype=torch.float64)])
    norms = (1.0 + torch.arange(L, dtype=torch.float64)) * (1.0 + ts.reshape(T, 1)) ** 0.1
    t_b = torch.full((L,), math.nan, dtype=torch.float64)
    for tok, tb in ((3, 1.0), (7, 10.0)):
        t_b[tok] = tb
        norms[ts > tb, tok] = math.nan
    labels = ["divergent-finite-time" if math.isfinite(float(t_b[i])) else "bounded" for i in range(L)]
    return SimpleNamespace(ts=ts, norms=norms, t_blowup=t_b, ends=labels, n_tokens=L), labels


def test_token_trajectories_legend_names_every_line_with_0_based_indices():
    """Each token's curve is named 'token l: label' (l from 0), and the dotted blow-up markers have an entry."""
    sol, labels = _token_solution()
    fig = plots.plot_token_trajectories(sol, labels, tokens=[0, 3, 7, 13])
    legends = [leg for leg in [*fig.legends, *(ax.get_legend() for ax in fig.axes)] if leg is not None]
    entries = [t.get_text() for leg in legends for t in leg.get_texts()]
    assert entries[:4] == [f"token {i}: {labels[i]}" for i in (0, 3, 7, 13)]
    dotted = [ln for ln in fig.axes[0].get_lines() if ln.get_linestyle() == ":"]
    assert len(dotted) == 2  # the blow-up times of tokens 3 and 7
    assert any(h.get_linestyle() == ":" for leg in legends for h in leg.legend_handles)
    for ln in fig.axes[0].get_lines():
        assert ln.get_linestyle() == ":" or ln.get_label() in entries
    assert _layout_problems(fig) == []


def test_spectrum_panels_sharing_the_value_axis_keep_every_extreme_inside():
    """With sharey, the last panel's limits and ticks cover the earlier panels' eigenvalues too."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), layout="constrained", sharey=True)
    plots.plot_spectrum([{"layer": 0, "eigenvalues": [250.0, -0.3]}], ax=axes[0])
    plots.plot_spectrum([{"layer": 0, "eigenvalues": [0.5, -2.0]}], ax=axes[1])
    assert _layout_problems(fig, legends_outside=False) == []
    lo, hi = axes[0].get_ylim()
    assert lo < -2.0 and hi > 250.0


def test_one_layer_and_one_token_figures_still_have_whole_number_ticks():
    assert _layout_problems(plots.plot_spectrum([{"layer": 5, "eigenvalues": [1.0, -1.0]}])) == []
    assert _layout_problems(plots.plot_hidden_attention(torch.ones(1, 1, 1, 1))) == []
    assert _layout_problems(plots.plot_comparison(_synthetic_comparison(1))) == []
