"""Mamba-2: loading (transformers + native layouts), the discrete model against transformers' Mamba2ForCausalLM
and a float64 transcription of the SSD recurrence, the per-head token-mixing matrix and the per-head regime table."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

import mamba_ode
from mamba_ode import Mamba2LM, Mamba2Params, RegimeTable, Verdict
from mamba_ode.io.checkpoints import read_checkpoint
from mamba_ode.io.config import Mamba2Config, config_from_dict

transformers = pytest.importorskip("transformers")

# (transformers config kwargs, sequence length)
CONFIGS = [
    # two groups; L = 13 is not a multiple of chunk_size 8
    (dict(vocab_size=50, hidden_size=32, num_heads=8, head_dim=8, n_groups=2, state_size=8, num_hidden_layers=2,
          expand=2, conv_kernel=4, chunk_size=8), 13),
    # head_dim 12 does not divide the chunk size 8; biases; tied embeddings; an active Δ clamp
    (dict(vocab_size=40, hidden_size=48, num_heads=8, head_dim=12, n_groups=1, state_size=16, num_hidden_layers=2,
          expand=2, conv_kernel=4, chunk_size=8, use_bias=True, tie_word_embeddings=True,
          time_step_limit=(0.0, 0.05)), 11),
    # four groups of one head each; conv width 3; chunk 5 with L = 17; no conv bias
    (dict(vocab_size=30, hidden_size=32, num_heads=4, head_dim=16, n_groups=4, state_size=12, num_hidden_layers=2,
          expand=2, conv_kernel=3, chunk_size=5, use_conv_bias=False, layer_norm_epsilon=1e-4), 17),
]


def hf_mamba2(tmp_path, kwargs: dict, seed: int = 0):
    """A randomly initialised transformers Mamba2ForCausalLM (eval) saved with save_pretrained → (model, dir)."""
    torch.manual_seed(seed)
    model = transformers.Mamba2ForCausalLM(transformers.Mamba2Config(**kwargs)).eval()
    # transformers initialises D = 1, norm weights = 1, conv bias = 0: perturb so every parameter matters
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("mixer.D", "norm.weight", "norm_f.weight", "conv1d.bias", "in_proj.bias",
                              "out_proj.bias", "dt_bias", "A_log")):
                p.add_(0.2 * torch.randn_like(p))
    d = tmp_path / f"hf2_{seed}"
    model.save_pretrained(d)
    return model, d


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    out = []
    for i, (kw, length) in enumerate(CONFIGS):
        hf, d = hf_mamba2(tmp_path_factory.mktemp(f"m2_{i}"), kw, seed=i)
        out.append((hf, d, length))
    return out


# ----------------------------------------------------------------------------- config


def test_config_from_both_layouts():
    hf = {"model_type": "mamba2", "hidden_size": 32, "num_hidden_layers": 2, "vocab_size": 50, "num_heads": 8,
          "head_dim": 8, "n_groups": 2, "state_size": 8, "chunk_size": 8, "time_step_limit": [0.0, 0.1]}
    c = config_from_dict(hf)
    assert isinstance(c, Mamba2Config)
    assert (c.d_inner, c.n_heads, c.ngroups, c.d_state, c.dt_limit) == (64, 8, 2, 8, (0.0, 0.1))
    assert c.tie_embeddings is False and c.layout == "hf"
    nat = c.to_native_dict()
    assert nat["ssm_cfg"]["layer"] == "Mamba2"
    c2 = config_from_dict(json.loads(json.dumps(nat)))
    assert c2.layout == "native" and c2.tie_embeddings is False
    assert {k: v for k, v in c2.to_dict().items() if k != "layout"} == \
        {k: v for k, v in c.to_dict().items() if k != "layout"}
    # native defaults (mamba-ssm): ngroups 1, headdim 64, tied embeddings
    c3 = config_from_dict({"d_model": 64, "n_layer": 1, "vocab_size": 10, "ssm_cfg": {"layer": "Mamba2"}})
    assert (c3.ngroups, c3.headdim, c3.n_heads, c3.tie_embeddings, c3.vocab_size) == (1, 64, 2, True, 16)


@pytest.mark.parametrize("cfg, match", [
    ({"model_type": "mamba2", "hidden_size": 32, "num_hidden_layers": 1, "vocab_size": 5, "num_heads": 5,
      "head_dim": 8}, r"config.json: fields 'num_heads' \* 'head_dim' = 40 disagree"),
    ({"model_type": "mamba2", "hidden_size": 32, "num_hidden_layers": 1, "vocab_size": 5, "num_heads": 8,
      "head_dim": 8, "n_groups": 3}, r"config.json: config field 'ngroups' = 3 does not divide"),
    ({"model_type": "mamba2", "hidden_size": 32, "num_hidden_layers": 1, "vocab_size": 5, "num_heads": 8,
      "head_dim": 8, "time_step_limit": [0.1]}, r"config.json: field 'time_step_limit' must be a pair"),
    ({"d_model": 32, "n_layer": 1, "vocab_size": 5, "ssm_cfg": {"layer": "Mamba2", "norm_before_gate": True}},
     r"config.json: field 'ssm_cfg.norm_before_gate'"),
    ({"d_model": 32, "n_layer": 1, "vocab_size": 5, "ssm_cfg": {"layer": "Mamba2", "headdim": 48}},
     r"config.json: config field 'headdim' = 48 does not divide"),
])
def test_bad_config(cfg, match):
    with pytest.raises(ValueError, match=match):
        config_from_dict(cfg, "config.json")


# ----------------------------------------------------------------------------- oracle: transformers


@pytest.mark.parametrize("i", range(len(CONFIGS)))
def test_matches_transformers(models, i):
    hf, d, length = models[i]
    ours = mamba_ode.load(d)
    assert isinstance(ours, Mamba2LM) and isinstance(ours.config, Mamba2Config)
    K = ours.config.n_layer
    ids = torch.randint(0, ours.config.vocab_size, (2, length), generator=torch.Generator().manual_seed(i))
    with torch.no_grad():
        ref = hf(ids, output_hidden_states=True)
        out = ours(ids, output_hidden_states=True)
    # transformers 5.x: K residual states after each layer, then the final normed state (no embedding entry)
    assert len(ref.hidden_states) == K + 1 and len(out.hidden_states) == K + 1
    torch.testing.assert_close(out.hidden_states[0], hf.backbone.embeddings(ids), rtol=0, atol=0)
    for k in range(K):
        torch.testing.assert_close(out.hidden_states[k + 1], ref.hidden_states[k], rtol=0, atol=1e-4)
    torch.testing.assert_close(out.last_hidden_state, ref.hidden_states[K], rtol=0, atol=1e-4)
    torch.testing.assert_close(out.logits, ref.logits, rtol=0, atol=1e-4)
    assert (out.logits - ref.logits).abs().max() < 1e-4


# ----------------------------------------------------------------------------- oracle: float64 transcription


def _rms(x, w, eps):
    return w * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)


def _reference_forward(state: dict, c: Mamba2Config, ids: torch.Tensor) -> list[torch.Tensor]:
    """Plain float64 transcription of a Mamba-2 LM, token by token, head by head. Returns x^0..x^K, logits."""
    sd = {k: v.double() for k, v in state.items()}
    e, h, p, g, n, kc = c.d_inner, c.n_heads, c.headdim, c.ngroups, c.d_state, c.d_conv
    x = sd["backbone.embeddings.weight"][ids]
    b, length, _ = x.shape
    hs = [x]
    for k in range(c.n_layer):
        pre = f"backbone.layers.{k}."
        m = pre + "mixer."
        hin = _rms(x, sd[pre + "norm.weight"], c.norm_eps)
        proj = hin @ sd[m + "in_proj.weight"].T
        if c.proj_bias:
            proj = proj + sd[m + "in_proj.bias"]
        z, xbc, dt = proj[..., :e], proj[..., e:e + c.conv_dim], proj[..., e + c.conv_dim:]
        w = sd[m + "conv1d.weight"][:, 0]  # (conv_dim, kc)
        conv = torch.zeros_like(xbc)
        for t in range(length):
            for i in range(kc):
                s = t - (kc - 1) + i
                if s >= 0:
                    conv[:, t] += w[:, i] * xbc[:, s]
        if c.conv_bias:
            conv = conv + sd[m + "conv1d.bias"]
        conv = F.silu(conv)
        xs, Bm, Cm = conv[..., :e], conv[..., e:e + g * n], conv[..., e + g * n:]
        delta = F.softplus(dt + sd[m + "dt_bias"]).clamp(*c.dt_limit)
        A = -torch.exp(sd[m + "A_log"])
        y = torch.zeros(b, length, e, dtype=torch.float64)
        for head in range(h):
            grp = head // (h // g)
            Bh, Ch = Bm[..., grp * n:(grp + 1) * n], Cm[..., grp * n:(grp + 1) * n]
            xh = xs[..., head * p:(head + 1) * p]
            st = torch.zeros(b, p, n, dtype=torch.float64)
            for t in range(length):
                dth = delta[:, t, head]
                decay = torch.exp(dth * A[head])[:, None, None]
                st = decay * st + (dth[:, None] * xh[:, t])[:, :, None] * Bh[:, t, None]
                y[:, t, head * p:(head + 1) * p] = (st * Ch[:, t, None]).sum(-1) + sd[m + "D"][head] * xh[:, t]
        gated = y * F.silu(z)
        gs = e // g
        normed = torch.cat([_rms(gated[..., j * gs:(j + 1) * gs], sd[m + "norm.weight"][j * gs:(j + 1) * gs],
                                 c.mixer_norm_eps) for j in range(g)], dim=-1)
        out = normed @ sd[m + "out_proj.weight"].T
        if c.proj_bias:
            out = out + sd[m + "out_proj.bias"]
        x = x + out
        hs.append(x)
    head_w = sd["backbone.embeddings.weight"] if c.tie_embeddings else sd["lm_head.weight"]
    hs.append(_rms(x, sd["backbone.norm_f.weight"], c.norm_eps) @ head_w.T)
    return hs


@pytest.mark.parametrize("i", range(len(CONFIGS)))
def test_float64_matches_transcription(models, i):
    _, d, length = models[i]
    ours = mamba_ode.load(d, dtype=torch.float64)
    config, state, _ = read_checkpoint(d)
    ids = torch.randint(0, config.vocab_size, (2, length), generator=torch.Generator().manual_seed(10 + i))
    ref = _reference_forward(state, config, ids)
    with torch.no_grad():
        out = ours(ids, output_hidden_states=True)
    for k in range(config.n_layer + 1):
        assert (out.hidden_states[k] - ref[k]).abs().max() < 1e-9, k
    assert (out.logits - ref[-1]).abs().max() < 1e-9


# ----------------------------------------------------------------------------- native layout


def test_native_layout_loads_identical_model(models, tmp_path):
    hf, d, length = models[0]
    ours = mamba_ode.load(d)
    hc = hf.config
    native = {("backbone.embedding.weight" if k == "backbone.embeddings.weight" else k): v.clone()
              for k, v in hf.state_dict().items()}
    cfg = {"d_model": hc.hidden_size, "d_intermediate": 0, "n_layer": hc.num_hidden_layers,
           "vocab_size": hc.vocab_size, "pad_vocab_size_multiple": 1, "rms_norm": True, "residual_in_fp32": True,
           "fused_add_norm": True, "tie_embeddings": False, "norm_epsilon": hc.layer_norm_epsilon,
           "ssm_cfg": {"layer": "Mamba2", "d_state": hc.state_size, "d_conv": hc.conv_kernel, "expand": hc.expand,
                       "headdim": hc.head_dim, "ngroups": hc.n_groups, "chunk_size": hc.chunk_size}}
    nat = tmp_path / "native2"
    nat.mkdir()
    (nat / "config.json").write_text(json.dumps(cfg))
    torch.save(native, nat / "pytorch_model.bin")
    other = mamba_ode.load(nat)
    assert isinstance(other, Mamba2LM) and other.config.layout == "native"
    assert other.config.to_dict() | {"layout": "hf"} == ours.config.to_dict()
    a, b = ours.state_dict(), other.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ids = torch.randint(0, 50, (1, length))
    with torch.no_grad():
        torch.testing.assert_close(other(ids).logits, ours(ids).logits, rtol=0, atol=0)


@pytest.mark.parametrize("layout", ["hf", "native"])
def test_save_round_trip(models, tmp_path, layout):
    _, d, length = models[1]
    ours = mamba_ode.load(d)
    again = mamba_ode.load(ours.save_pretrained(tmp_path / layout, layout=layout))
    assert again.config.to_dict() | {"layout": "hf"} == ours.config.to_dict()
    ids = torch.randint(0, 40, (1, length))
    with torch.no_grad():
        torch.testing.assert_close(again(ids).logits, ours(ids).logits, rtol=0, atol=0)


# ----------------------------------------------------------------------------- bad input


def _edit(d, fn):
    from safetensors.torch import load_file, save_file

    sd = load_file(str(d / "model.safetensors"))
    fn(sd)
    save_file(sd, str(d / "model.safetensors"))


def _copy(tmp_path, d):
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(d, out)
    return out


def test_missing_key_named(models, tmp_path):
    d = _copy(tmp_path, models[0][1])
    _edit(d, lambda sd: sd.pop("backbone.layers.1.mixer.dt_bias"))
    with pytest.raises(ValueError, match=r"model.safetensors: missing key 'backbone.layers.1.mixer.dt_bias'"):
        mamba_ode.load(d)


def test_wrong_shape_named(models, tmp_path):
    d = _copy(tmp_path, models[0][1])
    _edit(d, lambda sd: sd.__setitem__("backbone.layers.0.mixer.A_log", torch.zeros(8, 8)))
    with pytest.raises(ValueError, match=r"key 'backbone.layers.0.mixer.A_log' has shape \(8, 8\), expected \(8,\)"):
        mamba_ode.load(d)


def test_mamba2_weights_under_mamba1_config(models, tmp_path):
    d = _copy(tmp_path, models[0][1])
    (d / "config.json").write_text(json.dumps({"model_type": "mamba", "hidden_size": 32, "num_hidden_layers": 2,
                                               "vocab_size": 50, "state_size": 8}))
    with pytest.raises(ValueError, match=r"key 'backbone.layers.0.mixer.dt_bias' marks a Mamba-2 checkpoint"):
        mamba_ode.load(d)


# ----------------------------------------------------------------------------- matrix form per head


@pytest.mark.parametrize("i", range(len(CONFIGS)))
def test_matrix_form_equals_scan_per_head(models, i):
    _, d, length = models[i]
    model = mamba_ode.load(d, dtype=torch.float64)
    ids = torch.randint(0, model.config.vocab_size, (2, length), generator=torch.Generator().manual_seed(20 + i))
    with torch.no_grad():
        out = model(ids, internals=True)
        for k, blk in enumerate(model.layers):
            it = out.internals[k]
            p = blk.ssm
            assert isinstance(p, Mamba2Params)
            P = p.token_mixing_matrix(it.delta, it.B, it.C)  # (B, H, L, L)
            assert P.shape == (2, p.n_heads, length, length)
            assert torch.equal(P, P.tril())
            u = it.u.view(2, length, p.n_heads, p.head_dim).transpose(1, 2)  # (B, H, L, P)
            y_mat = (P @ u + p.D[None, :, None, None] * u).transpose(1, 2).reshape(2, length, -1)
            assert (y_mat - it.y).abs().max() < 1e-12
            # without D: ssd(use_D=False) is the matrix alone
            y0 = p.ssd(it.u, it.delta, it.B, it.C, use_D=False, backend="reference")
            assert ((P @ u).transpose(1, 2).reshape(2, length, -1) - y0).abs().max() < 1e-12
            # the Δ of the internals is the clamped softplus per head
            lo, hi = model.config.dt_limit
            assert it.delta.min() >= lo and it.delta.max() <= hi


def test_params_views(models):
    hf, d, _ = models[0]
    model = mamba_ode.load(d, dtype=torch.float64)
    p = model.layers[1].ssm
    mix = hf.backbone.layers[1].mixer
    c = model.config
    assert p.S_B.shape == (c.ngroups, c.d_state, c.d_model) and p.S_C.shape == p.S_B.shape
    assert p.S_x.shape == (c.d_inner, c.d_model) and p.S_dt.shape == (c.n_heads, c.d_model)
    torch.testing.assert_close(p.A, -torch.exp(mix.A_log.detach().double()))
    torch.testing.assert_close(p.a, torch.exp(mix.A_log.detach().double()))
    assert p.group_of_head().tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    M = p.input_output_matrix(1)
    assert M.shape == (c.d_model, c.d_model) and torch.linalg.matrix_rank(M.detach()) <= c.d_state
    with pytest.raises(ValueError, match="'group'"):
        p.input_output_matrix(2)


# ----------------------------------------------------------------------------- regimes per head


@pytest.mark.parametrize("i", range(len(CONFIGS)))
def test_regime_table_per_head(models, i):
    model = mamba_ode.load(models[i][1])
    c = model.config
    table = mamba_ode.regime_table(model)
    assert isinstance(table, RegimeTable) and all(isinstance(r, Verdict) and r.head is not None for r in table)
    assert len(table) == c.n_layer * c.n_heads
    assert [(r.layer, r.head) for r in table] == [(k, h) for k in range(c.n_layer) for h in range(c.n_heads)]
    assert len(table.to_dicts()) == len(table) and "sign" in str(table)
    for r in table:
        with torch.no_grad():
            p = model.layers[r.layer].ssm
        assert r.group == r.head // (c.n_heads // c.ngroups)
        M = p.S_C[r.group].detach().double().T @ p.S_B[r.group].detach().double()
        ev = torch.linalg.eigvalsh((M + M.T) / 2)
        assert abs(r.eig_max - float(ev.max())) < 1e-9 * max(1.0, abs(float(ev.max())))
        assert abs(r.eig_min - float(ev.min())) < 1e-9 * max(1.0, abs(float(ev.min())))
        assert r.n_pos + r.n_neg + r.n_zero == c.d_model and r.n_pos + r.n_neg <= 2 * c.d_state
        assert r.sign == {"positive semi-definite": "+", "negative semi-definite": "-", "indefinite": "±",
                          "zero": "0"}[r.label]
        assert r.a == pytest.approx(float(p.a[r.head])) and r.D == pytest.approx(float(p.D[r.head].detach()))
        lo, hi = c.dt_limit
        assert r.delta0 == pytest.approx(min(max(float(F.softplus(p.dt_bias[r.head].detach().double())), lo), hi))


# ----------------------------------------------------------------------------- fields


@pytest.mark.parametrize("use_D", [False, True])
def test_idealised_field_scan_equals_matrix_form(models, use_D):
    from mamba_ode import Mamba2Field

    for i, (_, d, length) in enumerate(models):
        model = mamba_ode.load(d, dtype=torch.float64)
        for k in range(model.config.n_layer):
            f = Mamba2Field.from_layer(model, k, use_D=use_D)
            h = torch.randn(2, length, model.config.d_model, dtype=torch.float64,
                            generator=torch.Generator().manual_seed(i))
            v = f(0.0, h)
            assert v.shape == h.shape and f.nfev == 1
            assert (v - f.matrix_form(h)).abs().max() < 1e-12
            # causal: token l never depends on later tokens
            h2 = h.clone()
            h2[:, -1] += 1.0
            assert torch.equal(f(0.0, h2)[:, :-1], v[:, :-1])
    with pytest.raises(ValueError, match=r"argument 'h' must have shape \(B, L, Dm\)"):
        f(0.0, torch.zeros(1, 3, 5, dtype=torch.float64))
    with pytest.raises(TypeError, match="Mamba2LM"):
        Mamba2Field.from_layer(object(), 0)


def test_idealised_field_solves(models):
    from mamba_ode import Mamba2Field

    model = mamba_ode.load(models[0][1], dtype=torch.float64)
    f = Mamba2Field.from_layer(model, 0)
    h0 = 0.5 * torch.randn(2, 5, model.config.d_model, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    sol = mamba_ode.solve(f, h0, (0.0, 1.0), n_eval=5)
    assert sol.ys.shape == (5, *h0.shape) and torch.isfinite(sol.ys).all()


def test_depth_field_euler_reproduces_network(models):
    model = mamba_ode.load(models[1][1], dtype=torch.float64)
    ids = torch.randint(0, 40, (2, 9), generator=torch.Generator().manual_seed(5))
    field = mamba_ode.DepthField(model)
    with torch.no_grad():
        hs = model(ids, output_hidden_states=True).hidden_states
        x = field.initial_state(ids)
        for k in range(model.config.n_layer):
            x = x + field(float(k), x)
            assert (x - hs[k + 1]).abs().max() < 1e-12


def test_token_states_and_half_precision(models):
    from mamba_ode import Mamba2Field

    model = mamba_ode.load(models[0][1], dtype=torch.float64)
    ids = [3, 1, 4, 1, 5, 9]
    h = model.token_states(ids, -1)
    assert h.shape == (1, 6, model.config.d_model)
    with torch.no_grad():
        x = model(torch.tensor([ids]), output_hidden_states=True).hidden_states[1]
        torch.testing.assert_close(h, model.layers[1].norm(x), rtol=0, atol=0)
        assert Mamba2Field.from_layer(model, -1)(0.0, h).shape == h.shape
    with pytest.raises(ValueError, match="argument 'k'"):
        model.token_states(ids, 2)
    m16 = mamba_ode.load(models[0][1], dtype=torch.bfloat16)
    with torch.no_grad():
        out = m16(torch.tensor([ids]))
    assert out.logits.dtype == torch.bfloat16 and torch.isfinite(out.logits.float()).all()


def test_field_casts_its_weights_once_and_never_caches_a_differentiable_cast(models):
    """A float32 model's field evaluated on float64 tokens: the cast weights are made once (the same
    object each call) — unless they carry gradients: then every call casts afresh (a cached cast would
    tie every later call to one autograd graph), and the gradient reaches the model's weights."""
    from mamba_ode import Mamba2Field

    model = mamba_ode.load(models[0][1])  # float32
    h = torch.randn(1, 6, model.config.d_model, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    f = Mamba2Field.from_layer(model, 0)
    assert f.params_like(h) is f.params_like(h) and f.params_like(h).S_x.dtype == torch.float64
    assert f.params_like(h.float()) is f.params
    g = Mamba2Field.from_layer(model, 0, detach=False)
    assert g.params_like(h) is not g.params_like(h)
    g(0.0, h).pow(2).sum().backward()
    reached = [w for w in model.layers[0].parameters() if w.grad is not None and w.grad.abs().max() > 0]
    assert len(reached) >= 3 and all(torch.isfinite(w.grad).all() for w in reached)


def test_field_cast_follows_changed_or_replaced_weights(models):
    """The cached float64 cast never serves stale weights: an in-place change of a weight, or new
    parameters, show up in the float64 evaluation exactly as in the float32 one."""
    from dataclasses import replace

    from mamba_ode import Mamba2Field

    model = mamba_ode.load(models[0][1])  # float32
    h = torch.randn(1, 5, model.config.d_model, generator=torch.Generator().manual_seed(4))
    f = Mamba2Field.from_layer(model, 0)
    f(0.0, h.double())
    with torch.no_grad():
        f.params.S_x.mul_(2.0)
    torch.testing.assert_close(f(0.0, h.double()), f(0.0, h).double(), rtol=1e-4, atol=1e-5)
    f.params = replace(f.params, W_out=torch.zeros_like(f.params.W_out))
    assert f(0.0, h.double()).abs().max() == 0


def test_float64_checkpoint_loads_bit_exact_as_float64(models, tmp_path):
    """As for Mamba-1: a float64 Mamba-2 checkpoint loaded as float64 keeps every bit."""
    from tests.test_load import assert_float64_round_trip

    assert_float64_round_trip(mamba_ode.load(models[0][1], dtype=torch.float64), tmp_path, seed=1)
