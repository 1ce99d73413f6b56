"""Named activation points: caching, patching, SSM states — checked against independent computations."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import mamba_ode
from mamba_ode.nn.hooks import LAYER_POINTS, MIXER_POINTS, ActivationCache, HookPoint, select_names

#: tolerances per dtype for recomputations of the same quantity in another order
TOL = {torch.float64: 1e-10, torch.float32: 2e-4}


def _model(kind: str, dtype: torch.dtype) -> mamba_ode.MambaLMBase:
    torch.manual_seed(0)
    if kind == "mamba1":
        model = mamba_ode.MambaLM(mamba_ode.MambaConfig(d_model=8, n_layer=3, vocab_size=32, d_state=4))
    else:
        model = mamba_ode.Mamba2LM(mamba_ode.Mamba2Config(d_model=16, n_layer=2, vocab_size=32, d_state=4, headdim=8,
                                                          ngroups=2, chunk_size=8))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.to(dtype).eval()


KINDS = ["mamba1", "mamba2"]
DTYPES = [torch.float64, torch.float32]
IDS = torch.tensor([[3, 1, 4, 1, 5, 9, 2, 6], [2, 7, 1, 8, 2, 8, 1, 8]])


@pytest.mark.parametrize("kind", KINDS)
def test_every_layer_has_every_point_in_forward_order(kind):
    model = _model(kind, torch.float64)
    names = list(model.hook_points())
    K = model.config.n_layer
    assert len(names) == K * (len(LAYER_POINTS) + len(MIXER_POINTS))
    for k in range(K):
        layer = [n for n in names if n.startswith(f"layers.{k}.")]
        expect = [f"layers.{k}.resid_pre", f"layers.{k}.mixer_in"]
        expect += [f"layers.{k}.mixer.{p}" for p in MIXER_POINTS] + [f"layers.{k}.mixer_out", f"layers.{k}.resid_post"]
        assert layer == expect
    # the order in which a forward pass actually reaches the points
    seen: list[str] = []
    with model.hooks({"*": lambda x, name: seen.append(name)}):
        model(IDS)
    assert sorted(seen) == sorted(names)
    assert [n.split(".")[1] for n in seen] == sorted(n.split(".")[1] for n in seen)  # layer by layer


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", KINDS)
def test_cache_agrees_with_the_residual_stream_and_the_field_starts(kind, dtype):
    model = _model(kind, dtype)
    out, cache = model.run_with_cache(IDS, output_hidden_states=True)
    plain = model(IDS, output_hidden_states=True)
    torch.testing.assert_close(out.logits, plain.logits, rtol=0, atol=0)  # reading changes nothing
    starts = model.field_starts(IDS, list(range(model.config.n_layer)))
    for k in range(model.config.n_layer):
        torch.testing.assert_close(cache[f"layers.{k}.resid_pre"], plain.hidden_states[k], rtol=0, atol=0)
        torch.testing.assert_close(cache[f"layers.{k}.resid_post"], plain.hidden_states[k + 1], rtol=0, atol=0)
        torch.testing.assert_close(cache[f"layers.{k}.resid_post"],
                                   cache[f"layers.{k}.resid_pre"] + cache[f"layers.{k}.mixer_out"])
        torch.testing.assert_close(starts[k], cache[f"layers.{k}.{model.field_point}"], rtol=0, atol=0)
        torch.testing.assert_close(cache[f"layers.{k}.mixer.u"], F.silu(cache[f"layers.{k}.mixer.conv"])[
            ..., :cache[f"layers.{k}.mixer.u"].shape[-1]])


@pytest.mark.parametrize("dtype", DTYPES)
def test_mamba1_internals_match_the_paper_formulas(dtype):
    """Δ = softplus(S_Δ u + b_Δ), B = S_B u, C = S_C u, y = Σ_j P_lj u_j + D u (hidden-attention matrix)."""
    model = _model("mamba1", dtype)
    _, cache = model.run_with_cache(IDS, "layers.1.mixer.*")
    p = model.layer_params(1)
    u = cache["layers.1.mixer.u"]
    torch.testing.assert_close(cache["layers.1.mixer.delta"], p.delta(u), rtol=TOL[dtype], atol=TOL[dtype])
    torch.testing.assert_close(cache["layers.1.mixer.B"], u @ p.S_B.T, rtol=TOL[dtype], atol=TOL[dtype])
    torch.testing.assert_close(cache["layers.1.mixer.C"], u @ p.S_C.T, rtol=TOL[dtype], atol=TOL[dtype])
    P = mamba_ode.hidden_attention(p, u)  # (B, L, L, E)
    y = torch.einsum("blje,bje->ble", P, u) + p.D * u
    torch.testing.assert_close(cache["layers.1.mixer.y"], y, rtol=TOL[dtype] * 10, atol=TOL[dtype] * 10)


def _naive_states(u, delta, A, B, q):
    """h after token q by the recurrence h ← exp(Δ A) h + Δ B u, one token at a time (float64)."""
    h = torch.zeros(u.shape[0], u.shape[2], A.shape[1], dtype=torch.float64)
    for t in range(q + 1):
        dA = torch.exp(delta[:, t, :, None].double() * A.double())
        h = dA * h + delta[:, t, :, None].double() * B[:, t, None, :].double() * u[:, t, :, None].double()
    return h


@pytest.mark.parametrize("kind", KINDS)
def test_states_at_positions_match_the_recurrence(kind):
    model = _model(kind, torch.float64)
    pos = [0, 3, -1]
    _, cache = model.run_with_cache(IDS, ["layers.0.mixer.u", "layers.0.mixer.delta", "layers.0.mixer.B"],
                                    states_at=pos)
    states = cache["layers.0.mixer.state"]
    u, delta, Bm = cache["layers.0.mixer.u"], cache["layers.0.mixer.delta"], cache["layers.0.mixer.B"]
    p = model.layer_params(0)
    if kind == "mamba1":
        A, e_of_group = p.A, None
    else:
        hd = p.head_dim
        A = p.channel_A()
        delta = delta.repeat_interleave(hd, dim=-1)
        g = Bm.shape[2]
        e_of_group = torch.arange(u.shape[-1]) // (u.shape[-1] // g)
    assert states.shape == (2, 3, u.shape[-1], A.shape[1])
    for i, q in enumerate([0, 3, 7]):
        if e_of_group is None:
            ref = _naive_states(u, delta, A, Bm, q)
        else:  # each channel reads the B of its group
            ref = torch.stack([_naive_states(u[:, :, e:e + 1], delta[:, :, e:e + 1], A[e:e + 1], Bm[:, :, int(gi)], q)[
                :, 0] for e, gi in enumerate(e_of_group)], dim=1)
        torch.testing.assert_close(states[:, i], ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind", KINDS)
def test_patching_delta_changes_the_output_as_the_recurrence_says(kind):
    model = _model(kind, torch.float64)
    base = model(IDS).logits
    with model.hooks({"layers.1.mixer.delta": lambda d, name: d.clone()}):  # an identity patch
        same = model(IDS).logits
    torch.testing.assert_close(same, base, rtol=1e-12, atol=1e-12)
    # Δ = 0 in layer 1: the state never leaves 0, so y = D ⊙ u exactly
    with model.hooks({"layers.1.mixer.delta": lambda d, name: torch.zeros_like(d)}):
        out, cache = model.run_with_cache(IDS, ["layers.1.mixer.u", "layers.1.mixer.y"])
    D = model.layer_params(1).D
    D = D if kind == "mamba1" else D.repeat_interleave(model.layer_params(1).head_dim)
    torch.testing.assert_close(cache["layers.1.mixer.y"], D * cache["layers.1.mixer.u"], rtol=1e-12, atol=1e-12)
    assert (out.logits - base).abs().max() > 1e-6
    # hooks are gone after the block
    torch.testing.assert_close(model(IDS).logits, base, rtol=0, atol=0)
    assert not any(pt.fns for pt in model.hook_points().values())


def test_hooks_are_removed_after_an_error():
    model = _model("mamba1", torch.float64)

    def boom(x, name):
        raise RuntimeError("stop")

    with pytest.raises(RuntimeError, match="stop"), model.hooks({"layers.0.mixer.y": boom}):
        model(IDS)
    assert not any(pt.fns for pt in model.hook_points().values())


def test_field_starts_stop_after_the_last_layer_asked_for():
    model = _model("mamba1", torch.float64)
    calls: list[str] = []
    with model.hooks({"layers.2.*": lambda x, name: calls.append(name)}):
        model.field_starts(IDS, [0])
    assert calls == []


def test_reordered_model_exposes_the_reordered_tokens():
    model = _model("mamba1", torch.float64)
    mamba_ode.reorder_first_block(model)
    _, cache = model.run_with_cache(IDS, "layers.0.mixer.u")
    torch.testing.assert_close(cache["layers.0.mixer.u"], model.field_starts(IDS, [0])[0], rtol=0, atol=0)


def test_internals_argument_reads_the_same_points():
    model = _model("mamba1", torch.float64)
    out = model(IDS, internals=[1])
    _, cache = model.run_with_cache(IDS, "layers.1.mixer.*")
    for name in ("u", "delta", "B", "C", "y", "z"):
        torch.testing.assert_close(getattr(out.internals[1], name), cache[f"layers.1.mixer.{name}"], rtol=0, atol=0)


def test_bad_hooks_and_names_are_refused():
    model = _model("mamba1", torch.float64)
    with pytest.raises(ValueError, match="layers.9.mixer.u"):
        model.run_with_cache(IDS, "layers.9.mixer.u")
    with pytest.raises(TypeError, match="not callable"), model.hooks({"layers.0.mixer.u": 3}):
        pass
    with pytest.raises(ValueError, match="shape"), model.hooks({"layers.0.mixer.u": lambda x, n: x[:, :1]}):
        model(IDS)
    with pytest.raises(TypeError, match="returned int"), model.hooks({"layers.0.mixer.u": lambda x, n: 1}):
        model(IDS)
    with pytest.raises(ValueError, match="states_at"):
        model.run_with_cache(IDS, "layers.0.mixer.u", states_at=[8])
    with pytest.raises(TypeError, match="names"):
        select_names(["a"], 3)  # type: ignore[arg-type]
    with pytest.raises(KeyError, match="layers.0.mixer.u"):
        ActivationCache({"layers.1.mixer.u": torch.zeros(1)})["layers.0.mixer.u"]


def test_a_point_without_hooks_returns_its_input_itself():
    x = torch.randn(3)
    assert HookPoint("p")(x) is x


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_reading_delta_does_not_change_a_half_precision_model(dtype):
    """Δ is formed in float32 (as the scan forms it) when a hook reads it: the output is bit-identical."""
    model = _model("mamba1", torch.float32).to(dtype)
    base = model(IDS).logits
    out, cache = model.run_with_cache(IDS, "layers.*.mixer.delta")
    assert torch.equal(out.logits, base)
    assert torch.equal(model(IDS, internals=True).logits, base)
    assert cache["layers.0.mixer.delta"].dtype == dtype


def test_overlapping_patterns_apply_a_patch_once():
    model = _model("mamba1", torch.float64)
    calls: list[str] = []

    def double(x, name):
        calls.append(name)
        return 2 * x

    with model.hooks([("layers.0.mixer.u", double), ("layers.0.mixer.*", double)]):
        model(IDS)
    assert calls.count("layers.0.mixer.u") == 1
