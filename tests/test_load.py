"""Loading checkpoints: the transformers oracle, the native layout, the Hub cache and every bad input."""

from __future__ import annotations

import json
import shutil
import time

import huggingface_hub
import huggingface_hub.constants as hub_constants
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from huggingface_hub.errors import LocalEntryNotFoundError

import mamba_ode
from mamba_ode.io import checkpoints as ck
from mamba_ode.io import machine
from mamba_ode.io.checkpoints import read_checkpoint, write_checkpoint
from mamba_ode.io.config import MambaConfig, config_from_dict
from mamba_ode.io.keys import parameter_count

CONFIGS = [
    # odd sizes, biases on, conv bias off, untied
    dict(vocab_size=37, hidden_size=40, state_size=5, num_hidden_layers=3, time_step_rank=3, conv_kernel=3,
         use_bias=True, use_conv_bias=False, tie_word_embeddings=False, expand=2),
    # defaults-like, tied
    dict(vocab_size=64, hidden_size=32, state_size=16, num_hidden_layers=2, tie_word_embeddings=True),
    # expand 3, rank auto, conv kernel 2, bias on, conv bias on
    dict(vocab_size=50, hidden_size=24, state_size=3, num_hidden_layers=4, expand=3, conv_kernel=2,
         use_bias=True, use_conv_bias=True, tie_word_embeddings=True, time_step_rank="auto"),
    # one layer, state 1, rank 1, untied, epsilon changed
    dict(vocab_size=11, hidden_size=8, state_size=1, num_hidden_layers=1, time_step_rank=1, conv_kernel=4,
         tie_word_embeddings=False, layer_norm_epsilon=1e-3),
]


@pytest.mark.parametrize("i", range(len(CONFIGS)))
def test_transformers_oracle_float32(hf_mamba, tmp_path, i):
    """Residual states, final normed state and logits match transformers to ≤ 1e-5 (float32)."""
    hf, d = hf_mamba(tmp_path, seed=i, **CONFIGS[i])
    ours = mamba_ode.load(d)
    ids = torch.randint(0, CONFIGS[i]["vocab_size"], (2, 13), generator=torch.Generator().manual_seed(i))
    with torch.no_grad():
        o = hf(ids, output_hidden_states=True)
        p = ours(ids, output_hidden_states=True)
    k = ours.config.n_layer
    assert len(p.hidden_states) == k + 1
    # transformers 5.x: hidden_states[j] is the residual after layer j, the last entry is after norm_f
    assert len(o.hidden_states) == k + 1
    torch.testing.assert_close(p.hidden_states[0], hf.backbone.embeddings(ids), rtol=0, atol=0)
    for j in range(k):
        assert (p.hidden_states[j + 1] - o.hidden_states[j]).abs().max() <= 1e-5
    assert (p.last_hidden_state - o.hidden_states[-1]).abs().max() <= 1e-5
    assert (p.logits - o.logits).abs().max() <= 1e-5
    assert ours.config.d_inner == hf.config.intermediate_size
    assert ours.config.dt_rank == hf.config.time_step_rank


def _spec_forward_float64(state, cfg: MambaConfig, ids):
    """The discrete model transcribed from the raw state dict in float64, one token at a time."""
    sd = {k: v.double() for k, v in state.items()}
    e, n, r, kc = cfg.d_inner, cfg.d_state, cfg.dt_rank, cfg.d_conv

    def norm(x, w, b=None):
        if cfg.rms_norm:
            return w * x / torch.sqrt((x * x).mean(-1, keepdim=True) + cfg.norm_eps)
        mu = x.mean(-1, keepdim=True)
        var = ((x - mu) ** 2).mean(-1, keepdim=True)
        return w * (x - mu) / torch.sqrt(var + cfg.norm_eps) + b

    x = sd["backbone.embeddings.weight"][ids]  # (B, L, Dm)
    hs = [x]
    for k in range(cfg.n_layer):
        p = f"backbone.layers.{k}."
        h = norm(x, sd[p + "norm.weight"], sd.get(p + "norm.bias"))
        m = p + "mixer."
        xz = h @ sd[m + "in_proj.weight"].T + sd.get(m + "in_proj.bias", 0.0)
        xi, z = xz[..., :e], xz[..., e:]
        w = sd[m + "conv1d.weight"][:, 0, :]  # (E, kc)
        length = xi.shape[1]
        conv = torch.zeros_like(xi)
        for t in range(length):
            for j in range(kc):
                src = t - (kc - 1) + j
                if src >= 0:
                    conv[:, t] += w[:, j] * xi[:, src]
        conv = conv + sd.get(m + "conv1d.bias", 0.0)
        u = conv * torch.sigmoid(conv)
        xp = u @ sd[m + "x_proj.weight"].T
        dt, Bm, Cm = xp[..., :r], xp[..., r:r + n], xp[..., r + n:]
        delta = F.softplus(dt @ sd[m + "dt_proj.weight"].T + sd[m + "dt_proj.bias"])
        A = -torch.exp(sd[m + "A_log"])
        y = torch.zeros_like(u)
        state_h = torch.zeros(u.shape[0], e, n, dtype=torch.float64)
        for t in range(length):
            state_h = torch.exp(delta[:, t, :, None] * A) * state_h + \
                (delta[:, t] * u[:, t])[:, :, None] * Bm[:, t, None, :]
            y[:, t] = (state_h * Cm[:, t, None, :]).sum(-1) + sd[m + "D"] * u[:, t]
        y = y * z * torch.sigmoid(z)
        x = x + y @ sd[m + "out_proj.weight"].T + sd.get(m + "out_proj.bias", 0.0)
        hs.append(x)
    last = norm(x, sd["backbone.norm_f.weight"], sd.get("backbone.norm_f.bias"))
    head = sd.get("lm_head.weight", sd["backbone.embeddings.weight"])
    return hs, last, last @ head.T


@pytest.mark.parametrize("i", [0, 2])
def test_float64_matches_spec_transcription(hf_mamba, tmp_path, i):
    _, d = hf_mamba(tmp_path, seed=10 + i, **CONFIGS[i])
    ours = mamba_ode.load(d, dtype=torch.float64)
    cfg, state, _ = read_checkpoint(d)
    ids = torch.randint(0, cfg.vocab_size, (2, 9), generator=torch.Generator().manual_seed(1))
    hs, last, logits = _spec_forward_float64(state, cfg, ids)
    with torch.no_grad():
        p = ours(ids, output_hidden_states=True)
    for a, b in zip(p.hidden_states, hs):
        assert (a - b).abs().max() <= 1e-10
    assert (p.last_hidden_state - last).abs().max() <= 1e-10
    assert (p.logits - logits).abs().max() <= 1e-10


def _native_copy(tmp_path, hf_dir, name="native", pad_multiple=None, weights="bin"):
    """Rewrite a transformers checkpoint in mamba-ssm's native layout (config + key names)."""
    cfg, state, _ = read_checkpoint(hf_dir)
    out = tmp_path / name
    write_checkpoint(out, cfg, state, layout="native")
    if pad_multiple is not None:
        raw = json.loads((out / "config.json").read_text())
        raw["pad_vocab_size_multiple"] = pad_multiple
        (out / "config.json").write_text(json.dumps(raw))
    if weights == "safetensors":
        from safetensors.torch import save_file

        sd = torch.load(out / "pytorch_model.bin", weights_only=True)
        (out / "pytorch_model.bin").unlink()
        save_file({k: v.contiguous() for k, v in sd.items()}, str(out / "model.safetensors"))
    return out


@pytest.mark.parametrize("weights", ["bin", "safetensors"])
@pytest.mark.parametrize("i", [0, 1])
def test_native_layout_loads_to_identical_model(hf_mamba, tmp_path, i, weights):
    _, d = hf_mamba(tmp_path, seed=20 + i, **CONFIGS[i])
    nat = _native_copy(tmp_path, d, weights=weights)
    raw = json.loads((nat / "config.json").read_text())
    assert "d_model" in raw and "ssm_cfg" in raw
    keys = (torch.load(nat / "pytorch_model.bin", weights_only=True).keys() if weights == "bin" else
            __import__("safetensors.torch").torch.load_file(str(nat / "model.safetensors")).keys())
    assert "backbone.embedding.weight" in keys
    a, b = mamba_ode.load(d), mamba_ode.load(nat)
    assert a.config.layout == "hf" and b.config.layout == "native"
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)
    ids = torch.randint(0, a.config.vocab_size, (1, 7))
    with torch.no_grad():
        assert torch.equal(a(ids).logits, b(ids).logits)


def test_native_vocab_padding_and_layernorm(tmp_path):
    """A native LayerNorm model with a padded vocabulary (mamba-ssm layout written by hand)."""
    cfg = MambaConfig(d_model=16, n_layer=2, vocab_size=24, vocab_size_unpadded=21, d_state=4, rms_norm=False,
                      layout="native")
    model = mamba_ode.MambaLM(cfg)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    d = model.save_pretrained(tmp_path / "ln", layout="native")
    raw = json.loads((d / "config.json").read_text())
    assert raw["vocab_size"] == 21 and raw["pad_vocab_size_multiple"] == 8 and raw["rms_norm"] is False
    loaded = mamba_ode.load(d)
    assert loaded.config.vocab_size == 24 and loaded.config.vocab_size_unpadded == 21
    assert isinstance(loaded.layers[0].norm, torch.nn.LayerNorm)
    ids = torch.randint(0, 21, (2, 5))
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, model(ids).logits, rtol=0, atol=0)
    # independent float64 transcription handles the LayerNorm branch
    c, state, _ = read_checkpoint(d)
    hs, last, logits = _spec_forward_float64(state, c, ids)
    with torch.no_grad():
        out = mamba_ode.load(d, dtype=torch.float64)(ids, output_hidden_states=True)
    assert (out.logits - logits).abs().max() <= 1e-10


def test_ssm_parameters_in_paper_notation(hf_mamba, tmp_path):
    hf, d = hf_mamba(tmp_path, seed=3, **CONFIGS[0])
    model = mamba_ode.load(d, dtype=torch.float64)
    mixer = hf.backbone.layers[1].mixer
    ssm = model.layers[1].ssm
    r, n = model.config.dt_rank, model.config.d_state
    xw = mixer.x_proj.weight.double()
    torch.testing.assert_close(ssm.S_B, xw[r:r + n])
    torch.testing.assert_close(ssm.S_C, xw[r + n:])
    torch.testing.assert_close(ssm.A, -torch.exp(mixer.A_log.double()))
    torch.testing.assert_close(ssm.D, mixer.D.double())
    torch.testing.assert_close(ssm.delta_bias, mixer.dt_proj.bias.double())
    torch.testing.assert_close(ssm.S_delta, mixer.dt_proj.weight.double() @ xw[:r])
    assert ssm.S_delta.shape == (model.config.d_inner,) * 2
    m = ssm.input_output_matrix()
    torch.testing.assert_close(m, xw[r + n:].T @ xw[r:r + n])
    torch.testing.assert_close(ssm.diag_M(), torch.diagonal(m))
    torch.testing.assert_close(ssm.diag_S_delta(), torch.diagonal(ssm.S_delta))


def test_internals_reproduce_transformers_s6(hf_mamba, tmp_path):
    """Per-layer S6 internals (u, Δ, B, C, y) equal transformers' intermediate tensors."""
    hf, d = hf_mamba(tmp_path, seed=4, **CONFIGS[2])
    model = mamba_ode.load(d)
    ids = torch.randint(0, 50, (2, 10), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = model(ids, output_hidden_states=True, internals=[1])
        mixer = hf.backbone.layers[1].mixer
        x = hf.backbone.layers[1].norm(out.hidden_states[1])
        xz = mixer.in_proj(x).transpose(1, 2)
        xi, z = xz.chunk(2, dim=1)
        u = mixer.act(mixer.conv1d(xi)[..., :10])
        ssm_p = mixer.x_proj(u.transpose(1, 2))
        r, n = mixer.time_step_rank, mixer.ssm_state_size
        dt = F.softplus(mixer.dt_proj(ssm_p[..., :r]))
    it = out.internals[1]
    assert set(out.internals) == {1}
    torch.testing.assert_close(it.u, u.transpose(1, 2), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(it.delta, dt, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(it.B, ssm_p[..., r:r + n], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(it.C, ssm_p[..., r + n:], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(it.z, z.transpose(1, 2), rtol=1e-5, atol=1e-6)
    assert it.y.shape == it.u.shape
    # token_states is the same S6 input, from a prompt
    torch.testing.assert_close(model.token_states(ids, 1), u.transpose(1, 2), rtol=1e-5, atol=1e-6)
    k_neg = 1 - model.config.n_layer  # the same layer, counted from the end
    torch.testing.assert_close(model.token_states(ids[0].tolist(), k_neg), out.internals[1].u[:1])


@pytest.mark.parametrize(("prompt", "k", "exc", "match"), [
    ("text", 0, ValueError, "no tokenizer"), ([], 0, ValueError, "empty"), ([1, 999], 0, ValueError, "outside"),
    ([1.5], 0, TypeError, "ints"), (3.0, 0, TypeError, "prompt"), ([1, 2], 7, ValueError, "'k'"),
])
def test_token_states_bad_input(prompt, k, exc, match):
    model = mamba_ode.MambaLM(MambaConfig(d_model=8, n_layer=3, vocab_size=64, d_state=2))
    with pytest.raises(exc, match=match):
        model.token_states(prompt, k)


def test_model_causality(hf_mamba, tmp_path):
    _, d = hf_mamba(tmp_path, seed=5, **CONFIGS[1])
    model = mamba_ode.load(d, dtype=torch.float64)
    ids = torch.randint(0, 64, (1, 12), generator=torch.Generator().manual_seed(2))
    ids2 = ids.clone()
    ids2[0, 7] = (ids[0, 7] + 1) % 64
    with torch.no_grad():
        a, b = model(ids).logits, model(ids2).logits
    assert torch.equal(a[:, :7], b[:, :7])
    assert (a[:, 7:] - b[:, 7:]).abs().max() > 0


def test_hub_id_from_offline_cache(hf_mamba, tmp_path, monkeypatch):
    """A Hub id resolves through huggingface_hub's cache with HF_HUB_OFFLINE=1 (cache laid out by the test)."""
    _, d = hf_mamba(tmp_path, seed=6, **CONFIGS[1])
    cache = tmp_path / "hub"
    repo = cache / "models--state-spaces--mamba-tiny-hf"
    commit = "0123456789abcdef0123456789abcdef01234567"
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    for f in d.iterdir():
        shutil.copy(f, snap / f.name)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    model = mamba_ode.load("state-spaces/mamba-tiny-hf")
    assert model.checkpoint.source == "state-spaces/mamba-tiny-hf"
    assert model.checkpoint.directory == snap
    ref = mamba_ode.load(d)
    ids = torch.randint(0, 64, (1, 5))
    with torch.no_grad():
        assert torch.equal(model(ids).logits, ref(ids).logits)
    with pytest.raises(FileNotFoundError, match="state-spaces/mamba-missing.*not in the local"):
        mamba_ode.load("state-spaces/mamba-missing")


# ----------------------------------------------------------------------------- bad input


@pytest.fixture
def ckpt(hf_mamba, tmp_path):
    _, d = hf_mamba(tmp_path, seed=7, **CONFIGS[0])
    return d


def _edit_state(d, fn):
    from safetensors.torch import load_file, save_file

    sd = load_file(str(d / "model.safetensors"))
    fn(sd)
    save_file(sd, str(d / "model.safetensors"))


def test_missing_directory():
    with pytest.raises(FileNotFoundError, match="no checkpoint at './nowhere/at/all'"):
        mamba_ode.load("./nowhere/at/all")


def test_missing_config(ckpt):
    (ckpt / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="config.json"):
        mamba_ode.load(ckpt)


def test_missing_weights(ckpt):
    (ckpt / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"no weights found.*model.safetensors"):
        mamba_ode.load(ckpt)


def test_unknown_layout(ckpt):
    (ckpt / "config.json").write_text(json.dumps({"foo": 1}))
    with pytest.raises(ValueError, match=r"config.json: unknown layout"):
        mamba_ode.load(ckpt)


def test_unknown_model_type(ckpt):
    (ckpt / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 8}))
    with pytest.raises(ValueError, match=r"config.json: unknown model_type 'llama'"):
        mamba_ode.load(ckpt)


def test_missing_config_field(ckpt):
    raw = json.loads((ckpt / "config.json").read_text())
    del raw["num_hidden_layers"]
    (ckpt / "config.json").write_text(json.dumps(raw))
    with pytest.raises(ValueError, match=r"config.json: missing required field 'num_hidden_layers'"):
        mamba_ode.load(ckpt)


def test_invalid_json(ckpt):
    (ckpt / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"config.json: not valid JSON"):
        mamba_ode.load(ckpt)


def test_missing_key(ckpt):
    _edit_state(ckpt, lambda sd: sd.pop("backbone.layers.1.mixer.A_log"))
    with pytest.raises(ValueError, match=r"model.safetensors: missing key 'backbone.layers.1.mixer.A_log'"):
        mamba_ode.load(ckpt)


def test_unexpected_key(ckpt):
    _edit_state(ckpt, lambda sd: sd.__setitem__("backbone.layers.7.mixer.D", torch.ones(80)))
    with pytest.raises(ValueError, match=r"model.safetensors: unexpected key 'backbone.layers.7.mixer.D'"):
        mamba_ode.load(ckpt)


def test_wrong_shape(ckpt):
    _edit_state(ckpt, lambda sd: sd.__setitem__("backbone.layers.0.mixer.x_proj.weight", torch.zeros(3, 80)))
    with pytest.raises(ValueError, match=r"key 'backbone.layers.0.mixer.x_proj.weight' has shape \(3, 80\), "
                                         r"expected \(13, 80\)"):
        mamba_ode.load(ckpt)


def test_non_finite_weight(ckpt):
    def poison(sd):
        sd["backbone.layers.2.mixer.dt_proj.bias"][3] = float("nan")

    _edit_state(ckpt, poison)
    with pytest.raises(ValueError, match=r"key 'backbone.layers.2.mixer.dt_proj.bias' has non-finite"):
        mamba_ode.load(ckpt)


def test_native_missing_key_uses_native_name(tmp_path, ckpt):
    nat = _native_copy(tmp_path, ckpt)
    sd = torch.load(nat / "pytorch_model.bin", weights_only=True)
    del sd["backbone.embedding.weight"]
    torch.save(sd, nat / "pytorch_model.bin")
    with pytest.raises(ValueError, match=r"pytorch_model.bin: missing key 'backbone.embedding.weight'"):
        mamba_ode.load(nat)


class _Evil:
    """An arbitrary Python object: torch.load(weights_only=True) must refuse to build it."""


def test_bin_is_never_unpickled(tmp_path, ckpt):
    """A .bin holding an arbitrary Python object is refused by weights_only=True."""
    nat = _native_copy(tmp_path, ckpt)
    torch.save({"x": _Evil()}, nat / "pytorch_model.bin")
    with pytest.raises(ValueError, match=r"pytorch_model.bin: cannot read weights with torch.load\(weights_only"):
        mamba_ode.load(nat)


def test_tied_head_must_equal_embedding(hf_mamba, tmp_path):
    _, d = hf_mamba(tmp_path, seed=8, **CONFIGS[1])
    nat = _native_copy(tmp_path, d)
    sd = torch.load(nat / "pytorch_model.bin", weights_only=True)
    sd["lm_head.weight"] = sd["lm_head.weight"] + 1
    torch.save(sd, nat / "pytorch_model.bin")
    with pytest.raises(ValueError, match="'lm_head.weight' differs from the embedding"):
        mamba_ode.load(nat)


def test_mamba2_recognised(tmp_path, ckpt):
    # Mamba-2 configs now load (tests/test_mamba2.py); a Mamba-2 config over Mamba-1 weights is refused by key
    from mamba_ode.io.config import Mamba2Config, config_from_dict

    (ckpt / "config.json").write_text(json.dumps({"model_type": "mamba2", "hidden_size": 8}))
    with pytest.raises(ValueError, match=r"config.json: missing required field 'num_hidden_layers'"):
        mamba_ode.load(ckpt)
    (ckpt / "config.json").write_text(json.dumps({"model_type": "mamba2", "hidden_size": 8, "num_hidden_layers": 1,
                                                  "vocab_size": 8, "num_heads": 4, "head_dim": 4, "n_groups": 1,
                                                  "state_size": 4}))
    with pytest.raises(ValueError, match=r"model.safetensors: missing key 'backbone.layers.0.mixer."):
        mamba_ode.load(ckpt)
    nat = tmp_path / "m2native"
    nat.mkdir()
    cfg = {"d_model": 8, "n_layer": 1, "vocab_size": 8, "ssm_cfg": {"layer": "Mamba2", "headdim": 4}}
    (nat / "config.json").write_text(json.dumps(cfg))
    assert isinstance(config_from_dict(cfg), Mamba2Config)
    with pytest.raises(FileNotFoundError, match="no weights found"):
        mamba_ode.load(nat)


def test_hybrid_refused(tmp_path):
    nat = tmp_path / "hybrid"
    nat.mkdir()
    (nat / "config.json").write_text(json.dumps({"d_model": 8, "n_layer": 2, "vocab_size": 8,
                                                   "attn_layer_idx": [1]}))
    with pytest.raises(ValueError, match="'attn_layer_idx'"):
        mamba_ode.load(nat)


def test_bad_dtype_and_source_type(ckpt):
    with pytest.raises(TypeError, match="'dtype'"):
        mamba_ode.load(ckpt, dtype=torch.int32)
    with pytest.raises(TypeError, match="'source'"):
        mamba_ode.load(12)


def test_sharded_safetensors(tmp_path, ckpt):
    from safetensors.torch import load_file, save_file

    sd = load_file(str(ckpt / "model.safetensors"))
    keys = sorted(sd)
    half = len(keys) // 2
    shards = {"model-00001-of-00002.safetensors": keys[:half], "model-00002-of-00002.safetensors": keys[half:]}
    out = tmp_path / "sharded"
    out.mkdir()
    shutil.copy(ckpt / "config.json", out / "config.json")
    wmap = {}
    for fname, ks in shards.items():
        save_file({k: sd[k] for k in ks}, str(out / fname))
        wmap.update({k: fname for k in ks})
    (out / "model.safetensors.index.json").write_text(json.dumps({"weight_map": wmap}))
    a, b = mamba_ode.load(ckpt), mamba_ode.load(out)
    ids = torch.randint(0, 37, (1, 4))
    with torch.no_grad():
        assert torch.equal(a(ids).logits, b(ids).logits)
    (out / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="shard 'model-00002-of-00002.safetensors'"):
        mamba_ode.load(out)


def test_bad_input_ids(ckpt):
    model = mamba_ode.load(ckpt)
    with pytest.raises(ValueError, match="input_ids"):
        model(torch.tensor([[0, 99]]))
    with pytest.raises(TypeError, match="input_ids"):
        model(torch.zeros(1, 3))
    K = model.config.n_layer
    with pytest.raises(ValueError, match=rf"'internals': layer 5 outside \[-{K}, {K}\)"):
        model(torch.tensor([[1, 2]]), internals=[5])
    with pytest.raises(TypeError, match="'internals' must be True, False or layer indices"):
        model(torch.tensor([[1, 2]]), internals=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=rf"'k': layer -{K + 1} outside \[-{K}, {K}\)"):
        model.layer_params(-K - 1)


def test_negative_internals_count_from_the_end_like_every_layer_index(ckpt):
    """``internals=[-1]`` was refused while layer_params(-1), token_states and analyze accept -1."""
    model = mamba_ode.load(ckpt)
    ids = torch.tensor([[1, 2, 3]])
    K = model.config.n_layer
    neg, pos = model(ids, internals=[-1]).internals, model(ids, internals=[K - 1]).internals
    assert list(neg) == list(pos) == [K - 1]
    assert torch.equal(neg[K - 1].delta, pos[K - 1].delta)
    for every in (range(K), set(range(K)), [np.int64(k) for k in range(K)], True):  # any iterable of indices
        assert sorted(model(ids, internals=every).internals) == list(range(K))
    assert torch.equal(model.layer_params(np.int64(-1)).A, model.layer_params(K - 1).A)  # one check for every layer
    with pytest.raises(ValueError, match="'k' must be an int layer index"):
        model.layer_params(np.float64(1.0))


def test_half_precision_model_runs_with_float32_residual(hf_mamba, tmp_path):
    """bfloat16 weights with residual_in_fp32: the float32 residual stream is cast to the norm's dtype
    (as transformers does), so every layer after the first runs; logits track the float32 model."""
    hf, d = hf_mamba(tmp_path, seed=5, **CONFIGS[0])
    ids = torch.randint(0, 37, (2, 9), generator=torch.Generator().manual_seed(0))
    m32, m16 = mamba_ode.load(d), mamba_ode.load(d, dtype=torch.bfloat16)
    assert m16.config.n_layer >= 2 and m16.config.residual_in_fp32
    with torch.no_grad():
        out16 = m16(ids, output_hidden_states=True)
        out32 = m32(ids)
    assert all(h.dtype == torch.float32 for h in out16.hidden_states[1:])  # residual kept in float32
    assert out16.logits.dtype == torch.bfloat16
    err = (out16.logits.float() - out32.logits).abs().max() / out32.logits.abs().max()
    assert err < 5e-2  # bfloat16 has an 8-bit mantissa


# ----------------------------------------------------------------------------- bad input: config values


def _edit_config(d, fn):
    raw = json.loads((d / "config.json").read_text())
    fn(raw)
    (d / "config.json").write_text(json.dumps(raw))


@pytest.mark.parametrize(("layout", "path", "value", "match"), [
    ("hf", ("hidden_size",), "16",
     r"config.json: field 'hidden_size' must be a positive integer, got '16' \(a string\)"),
    ("hf", ("num_hidden_layers",), 2.0, r"field 'num_hidden_layers' must be a positive integer, got 2.0 \(a float\)"),
    ("hf", ("state_size",), 0, r"field 'state_size' must be a positive integer, got 0"),
    ("hf", ("vocab_size",), -5, r"field 'vocab_size' must be a positive integer, got -5"),
    ("hf", ("conv_kernel",), True, r"field 'conv_kernel' must be a positive integer, got true \(a boolean\)"),
    ("hf", ("expand",), [2], r"field 'expand' must be a positive integer, got a list of 1 item"),
    ("hf", ("time_step_rank",), {"a": 1}, r"field 'time_step_rank' must be a positive integer or 'auto', got an obj"),
    ("hf", ("tie_word_embeddings",), "false", r"field 'tie_word_embeddings' must be true or false, got 'false'"),
    ("hf", ("layer_norm_epsilon",), "tiny", r"field 'layer_norm_epsilon' must be a finite number in \(0, 1\], "
                                            r"got 'tiny' \(a string\)"),
    ("hf", ("use_bias",), None, r"field 'use_bias' must be true or false, got null"),
    ("native", ("d_model",), "16", r"config.json: field 'd_model' must be a positive integer, got '16'"),
    ("native", ("ssm_cfg", "d_state"), 0, r"config.json: field 'ssm_cfg.d_state' must be a positive integer, got 0"),
    ("native", ("ssm_cfg", "dt_rank"), -1, r"field 'ssm_cfg.dt_rank' must be a positive integer or 'auto', got -1"),
    ("native", ("ssm_cfg",), "x", r"field 'ssm_cfg' must be an object, got 'x'"),
    ("native", ("pad_vocab_size_multiple",), 0, r"field 'pad_vocab_size_multiple' must be a positive integer"),
    ("native", ("rms_norm",), 1, r"field 'rms_norm' must be true or false, got 1 \(an integer\)"),
])
def test_config_value_named_as_in_file(tmp_path, ckpt, layout, path, value, match):
    """A wrong config value: one line naming the file, the field as written there, the value and what was expected."""
    d = ckpt if layout == "hf" else _native_copy(tmp_path, ckpt)

    def put(raw):
        (raw if len(path) == 1 else raw[path[0]])[path[-1]] = value

    _edit_config(d, put)
    with pytest.raises(ValueError, match=match) as info:
        mamba_ode.load(d)
    assert "\n" not in str(info.value) and str(d / "config.json") in str(info.value)


@pytest.mark.parametrize(("field", "value"), [
    ("layer_norm_epsilon", float("nan")), ("layer_norm_epsilon", float("inf")), ("layer_norm_epsilon", 0.0),
    ("layer_norm_epsilon", -1e-5), ("layer_norm_epsilon", 2.0), ("layer_norm_epsilon", {"__float__": "NaN"}),
])
def test_non_finite_or_out_of_range_config_floats(ckpt, field, value):
    """NaN epsilon used to load and give all-NaN logits: non-finite and out-of-range floats are refused."""
    _edit_config(ckpt, lambda raw: raw.__setitem__(field, value))
    with pytest.raises(ValueError, match=rf"config.json: field '{field}' must be a finite number in \(0, 1\]"):
        mamba_ode.load(ckpt)


@pytest.mark.parametrize(("limit", "match"), [
    ([float("nan"), 1.0], r"with 0 <= lo <= hi and lo finite, got \[nan, 1.0\]"),
    ([0.1, 0.01], r"with 0 <= lo <= hi and lo finite, got \[0.1, 0.01\]"),
    ([-1.0, 1.0], r"with 0 <= lo <= hi and lo finite, got \[-1.0, 1.0\]"),
    ([float("inf"), float("inf")], r"with 0 <= lo <= hi and lo finite, got \[inf, inf\]"),
    (["a", 1], r"of numbers, got a list of 2 items"),
])
def test_dt_limit_pair_checked(limit, match):
    cfg = {"d_model": 16, "n_layer": 1, "vocab_size": 8, "ssm_cfg": {"layer": "Mamba2", "headdim": 8,
                                                                     "dt_limit": limit}}
    with pytest.raises(ValueError, match=r"config.json: field 'ssm_cfg.dt_limit' must be a pair \[lo, hi\] " + match):
        config_from_dict(cfg, "config.json")
    hf = {"model_type": "mamba2", "hidden_size": 16, "num_hidden_layers": 1, "vocab_size": 8, "head_dim": 8,
          "n_groups": 1, "time_step_limit": limit}
    with pytest.raises(ValueError, match=r"config.json: field 'time_step_limit' must be a pair \[lo, hi\] " + match):
        config_from_dict(hf, "config.json")


def test_derived_config_error_names_the_file_field():
    """The dataclass's own checks (ngroups divides the heads) name the field as written in the file too."""
    hf = {"model_type": "mamba2", "hidden_size": 32, "num_hidden_layers": 1, "vocab_size": 5, "num_heads": 8,
          "head_dim": 8, "n_groups": 3}
    with pytest.raises(ValueError, match=r"config.json: .*'ngroups' = 3 does not divide.*field 'n_groups'"):
        config_from_dict(hf, "config.json")


def test_direct_config_refuses_non_finite_epsilon():
    with pytest.raises(ValueError, match="config field 'norm_eps' must be a finite number"):
        MambaConfig(d_model=8, n_layer=1, vocab_size=8, norm_eps=float("nan"))


# ----------------------------------------------------------------------------- bad input: size and memory


def test_huge_layer_count_refused_from_config_alone(ckpt, monkeypatch):
    """num_hidden_layers = 10**9 used to build the table of expected shapes until memory ran out: the
    memory estimate refuses it first, with both numbers, and nothing loops over the layers before."""
    def no_tables(*args, **kwargs):
        raise AssertionError("expected_shapes called before the memory check")

    monkeypatch.setattr(ck, "expected_shapes", no_tables)
    _edit_config(ckpt, lambda raw: raw.__setitem__("num_hidden_layers", 10**9))
    start = time.perf_counter()
    with pytest.raises(ValueError, match=r"config.json: the model needs about .*TiB \(.* parameters × 4 bytes of "
                                         r"float32\) but only .* is available on cpu.*num_hidden_layers = "
                                         r"1,000,000,000") as info:
        mamba_ode.load(ckpt)
    assert time.perf_counter() - start < 2
    assert "\n" not in str(info.value) and "dtype=torch.bfloat16" in str(info.value)
    _edit_config(ckpt, lambda raw: raw.__setitem__("num_hidden_layers", 10**400))
    with pytest.raises(ValueError, match=r"needs about 2\^\d+ B .*num_hidden_layers = about 10\^"):
        mamba_ode.load(ckpt)


def test_memory_estimate_accepts_a_large_real_model(tmp_path, monkeypatch):
    """No fixed cap: the 2.8B configuration passes on a machine with the memory for it and is refused,
    with both numbers, on one without (the machine's free memory replaced by the test)."""
    cfg = {"model_type": "mamba", "hidden_size": 2560, "num_hidden_layers": 64, "vocab_size": 50280,
           "state_size": 16, "expand": 2, "conv_kernel": 4, "tie_word_embeddings": True}
    d = tmp_path / "mamba-2.8b"
    d.mkdir()
    (d / "config.json").write_text(json.dumps(cfg))
    n = parameter_count(config_from_dict(cfg))
    assert 2.7e9 < n < 2.9e9
    monkeypatch.setattr(machine, "available_memory", lambda device: 64 * 2**30)
    with pytest.raises(FileNotFoundError, match="no weights found"):  # past the memory check
        mamba_ode.load(d)
    monkeypatch.setattr(machine, "available_memory", lambda device: 8 * 2**30)
    with pytest.raises(ValueError, match=r"needs about 10\.3 GiB \(2,76\d,\d{3},\d{3} parameters × 4 bytes of "
                                         r"float32\) but only 8\.0 GiB is available"):
        mamba_ode.load(d)
    with pytest.raises(FileNotFoundError, match="no weights found"):  # bfloat16 halves it: 5.2 GiB fits
        mamba_ode.load(d, dtype=torch.bfloat16)


def test_available_memory_from_meminfo_and_cgroup(tmp_path, monkeypatch):
    """Available RAM: MemAvailable, capped by a cgroup v2 limit (its inactive page cache counted as free)."""
    (tmp_path / "meminfo").write_text("MemTotal:       32000000 kB\nMemAvailable:    2000000 kB\n")
    cg = tmp_path / "cgroup"
    cg.mkdir()
    monkeypatch.setattr(machine, "_MEMINFO", tmp_path / "meminfo")
    monkeypatch.setattr(machine, "_CGROUP", cg)
    cpu = torch.device("cpu")
    assert machine.available_memory(cpu) == 2000000 * 1024  # no cgroup files
    (cg / "memory.max").write_text("max\n")
    (cg / "memory.current").write_text("100\n")
    assert machine.available_memory(cpu) == 2000000 * 1024  # no limit
    (cg / "memory.max").write_text(f"{2**30}\n")
    (cg / "memory.current").write_text(f"{900 * 2**20}\n")
    (cg / "memory.stat").write_text(f"anon 5\ninactive_file {100 * 2**20}\n")
    assert machine.available_memory(cpu) == 2**30 - 900 * 2**20 + 100 * 2**20
    monkeypatch.setattr(machine, "_MEMINFO", tmp_path / "absent")
    (cg / "memory.max").write_text("max\n")
    assert machine.available_memory(cpu) is None or machine.available_memory(cpu) > 0  # os.sysconf, where known


def test_layer_count_checked_against_weights_before_per_layer_tables(ckpt, monkeypatch):
    """A layer count that fits in memory but not the weights is refused from the weight keys, at once."""
    monkeypatch.setattr(machine, "available_memory", lambda device: 2**50)
    _edit_config(ckpt, lambda raw: raw.__setitem__("num_hidden_layers", 10**7))
    start = time.perf_counter()
    with pytest.raises(ValueError, match=r"model.safetensors: missing key 'backbone.layers.3.norm.weight' \(and more\)"
                                         r": the weights hold 3 layers but the config says num_hidden_layers = "
                                         r"10000000"):
        mamba_ode.load(ckpt)
    assert time.perf_counter() - start < 2


# ----------------------------------------------------------------------------- bad input: arguments


@pytest.mark.parametrize(("device", "exc", "match"), [
    ("tpu", ValueError, r"argument 'device' must be 'cpu', 'cuda', 'cuda:N' or 'mps', got 'tpu'"),
    ("cuda:99", ValueError, r"argument 'device' is 'cuda:99'"),
    ("meta", ValueError, r"device type 'meta' is not supported"),
    (3, TypeError, r"argument 'device' must be a str or a torch.device, got int"),
])
def test_bad_device(ckpt, device, exc, match):
    with pytest.raises(exc, match=match):
        mamba_ode.load(ckpt, device=device)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda(ckpt):
    """load(device='cuda') used to fail with an AssertionError deep inside torch."""
    with pytest.raises(ValueError, match=r"argument 'device' is 'cuda' but CUDA is not available .*use device='cpu'"):
        mamba_ode.load(ckpt, device="cuda")
    with pytest.raises(ValueError, match=r"argument 'device' is 'cuda:0' but CUDA is not available"):
        mamba_ode.load(ckpt, device=torch.device("cuda", 0))


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="needs a machine without MPS")
def test_mps_only_where_available(ckpt):
    with pytest.raises(ValueError, match="argument 'device' is 'mps' but MPS is not available"):
        mamba_ode.load(ckpt, device="mps")


def test_device_object_accepted(ckpt):
    model = mamba_ode.load(ckpt, device=torch.device("cpu"))
    assert model.lm_head.weight.device.type == "cpu"


@pytest.mark.parametrize("source", ["", "   "])
def test_empty_source(source):
    """load("") used to read the current directory and say `missing config.json in checkpoint directory .`."""
    with pytest.raises(ValueError, match=r"load: argument 'source' is an empty string .*or None for the shipped"):
        mamba_ode.load(source)


def test_bad_refinements_and_tokenizer_argument_types(ckpt):
    with pytest.raises(TypeError, match="argument 'refinements' must be a bool"):
        mamba_ode.load(ckpt, refinements="yes")
    with pytest.raises(TypeError, match="argument 'tokenizer' must be None, a path"):
        mamba_ode.load(ckpt, tokenizer=3)


def test_empty_input_ids(ckpt):
    """A forward pass on an empty sequence used to crash inside torch's convolution."""
    model = mamba_ode.load(ckpt)
    with pytest.raises(ValueError, match=r"argument 'input_ids' is empty \(shape \(1, 0\)\)"):
        model(torch.zeros(1, 0, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"argument 'input_ids' is empty \(shape \(0, 4\)\)"):
        model.embed(torch.zeros(0, 4, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"argument 'prompt' is empty \(input_ids of shape \(2, 0\)\)"):
        model.encode(torch.zeros(2, 0, dtype=torch.int64))


# ----------------------------------------------------------------------------- bad input: file contents


@pytest.mark.parametrize("name", ["config.json", "tokenizer_config.json"])
def test_non_utf8_file(ckpt, name):
    """A file that is not UTF-8 used to give a bare UnicodeDecodeError."""
    if name == "tokenizer_config.json":
        mamba_ode.ByteTokenizer().save(ckpt)
    (ckpt / name).write_bytes((ckpt / name).read_bytes().replace(b"{", b"{\xe9", 1))
    with pytest.raises(ValueError, match=rf"{name}: not UTF-8 text \(byte 0xe9 at offset 1\)"):
        mamba_ode.load(ckpt)


def test_deeply_nested_json(ckpt):
    """A deeply nested config.json used to raise RecursionError from the json module."""
    (ckpt / "config.json").write_text('{"x": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(ValueError, match=r"config.json: not readable JSON \(nested deeper than"):
        mamba_ode.load(ckpt)
    (ckpt / "config.json").write_text('{"hidden_size": ' + "9" * 5000 + "}")
    with pytest.raises(ValueError, match=r"config.json: not readable JSON \(Exceeds the limit"):
        mamba_ode.load(ckpt)


def test_bad_shard_index(tmp_path, ckpt):
    out = tmp_path / "sharded"
    out.mkdir()
    shutil.copy(ckpt / "config.json", out / "config.json")
    (out / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a": "../../etc/passwd"}}))
    with pytest.raises(ValueError, match=r"index.json: field 'weight_map.a' must be a file name in the checkpoint"):
        mamba_ode.load(out)


@pytest.mark.parametrize(("record", "match"), [
    ([1, 2], r"refine.json: expected a JSON object, got a list of 2 items"),
    ({"token_reorder": [1]}, r"refine.json: field 'token_reorder' must be an object"),
    ({"token_reorder": {"backbone.layers.0.mixer": {"tau": "x"}}}, r"field 'token_reorder.backbone.layers.0.mixer'"),
    ({"token_reorder": {}, "K": {"a.K": [1, None]}}, r"refine.json: field 'K.a.K' must be a list of finite numbers"),
    ({"token_reorder": {"backbone.layers.0.mixer": {}}, "K": {"backbone.layers.0.mixer.K": [1.0, 2.0]}},
     r"refine.json: cannot re-install the recorded refinements"),
])
def test_bad_refine_json(ckpt, record, match):
    (ckpt / "refine.json").write_text(json.dumps(record))
    with pytest.raises(ValueError, match=match):
        mamba_ode.load(ckpt)
    mamba_ode.load(ckpt, refinements=False)  # not read when not wanted


# ----------------------------------------------------------------------------- bad input: Hub ids


def _hub_online(monkeypatch, error):
    """huggingface_hub with network access whose download fails with ``error`` (nothing is cached)."""
    def fake_snapshot_download(repo_id, allow_patterns=None, local_files_only=False, **kwargs):
        if local_files_only:
            raise LocalEntryNotFoundError("Cannot find an appropriate cached snapshot folder for the specified "
                                          "revision on the local disk and outgoing traffic has been disabled.")
        raise error

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)


def test_uncached_hub_id_online(monkeypatch):
    """An uncached Hub id with the network on (and failing) used to print a message cut after its first
    line without the hint: one line, the cause and the fix."""
    _hub_online(monkeypatch, ConnectionError("Failed to resolve 'huggingface.co'\n(caused by NameResolutionError"))
    with pytest.raises(FileNotFoundError) as info:
        mamba_ode.load("state-spaces/mamba-nowhere-hf")
    msg = str(info.value)
    assert "\n" not in msg
    assert msg == ("hub id 'state-spaces/mamba-nowhere-hf' is not in the local Hugging Face cache and could not "
                   "be downloaded (ConnectionError: Failed to resolve 'huggingface.co'); download it once with "
                   "network access, or pass a local directory")


def test_uncached_hub_id_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(FileNotFoundError) as info:
        mamba_ode.load("state-spaces/mamba-nowhere-hf")
    assert "\n" not in str(info.value)
    assert str(info.value).endswith("HF_HUB_OFFLINE is set; download it once with network access, or pass a "
                                    "local directory")


def assert_float64_round_trip(model, directory, seed: int):
    """Perturb every parameter of a float64 model below float32's resolution, save it to ``directory`` and
    load it back as float64: every tensor must come back bit for bit. Returns the reloaded model."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1e-12 * torch.randn(p.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)))
    model.save_pretrained(directory)
    again = mamba_ode.load(directory, dtype=torch.float64)
    want, got = model.state_dict(), again.state_dict()
    assert want.keys() == got.keys()
    assert all(torch.equal(want[k], got[k]) for k in want)
    return again


def test_float64_checkpoint_loads_bit_exact_as_float64(tmp_path):
    """Weights that float32 cannot hold survive save → load(dtype=float64) bit for bit (the model is cast
    before the checkpoint is copied in), tied weights stay tied."""
    again = assert_float64_round_trip(mamba_ode.load(dtype=torch.float64), tmp_path, seed=0)
    if again.config.tie_embeddings:
        assert again.lm_head.weight is again.backbone.embeddings.weight
