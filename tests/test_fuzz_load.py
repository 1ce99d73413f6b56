"""Fuzz ``load`` with mutated checkpoints: a finite model or a documented one-line error naming the file, fast.

Four small valid checkpoints (Mamba-1 in the transformers and the native layout, Mamba-2 in both)
each carry a tiny ``tokenizer.json``. Every example copies one and applies one to three mutations —
config fields deleted, retyped (str, float, bool, list, object, null, huge ints, deeply nested
objects), scaled or made non-finite; tensors truncated, reshaped, retyped (int, bool, other floats),
made non-finite, deleted, added or renamed; files removed, replaced by garbage, made non-UTF-8,
truncated — and asserts that ``load`` either returns a model whose logits on a short prompt are
finite (and whose tokenizer encodes), or raises FileNotFoundError, ValueError or TypeError whose
one-line message names a file of the checkpoint, within the per-example deadline.

Derandomized (the same examples on every run); 2 × 200 examples, about 10 s on 2 cores.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import pytest
import torch

import mamba_ode
from mamba_ode.io.tokenizers import HFTokenizer

hypothesis = pytest.importorskip("hypothesis")
tokenizers = pytest.importorskip("tokenizers")
st = hypothesis.strategies

#: Examples per test function (two test functions); with the deadline, the file runs in well under 60 s.
EXAMPLES = 200
SETTINGS = hypothesis.settings(max_examples=EXAMPLES, deadline=timedelta(seconds=4), derandomize=True,
                               database=None, suppress_health_check=[hypothesis.HealthCheck.too_slow])
FILE_NAMES = ("config.json", "model.safetensors", "pytorch_model.bin", "tokenizer.json", "tokenizer_config.json")
WORDS = ["[UNK]", "a", "b", "to", "be", "or", "not", "that", "is", "the", "question"]
PROMPT = "to be or not to be"


def _tokenizer() -> HFTokenizer:
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return HFTokenizer(tok)


@pytest.fixture(scope="module")
def bases(tmp_path_factory) -> dict[str, Path]:
    """Four valid checkpoints with a tokenizer.json each."""
    root = tmp_path_factory.mktemp("fuzz_bases")
    torch.manual_seed(0)
    m1 = mamba_ode.MambaLM(mamba_ode.MambaConfig(d_model=16, n_layer=2, vocab_size=32, d_state=4))
    m2 = mamba_ode.Mamba2LM(mamba_ode.Mamba2Config(d_model=16, n_layer=2, vocab_size=32, d_state=4, headdim=8,
                                                   ngroups=1, chunk_size=8))
    out = {}
    for name, model, layout in [("m1_hf", m1, "hf"), ("m1_native", m1, "native"), ("m2_hf", m2, "hf"),
                                ("m2_native", m2, "native")]:
        model.tokenizer = _tokenizer()
        out[name] = model.save_pretrained(root / name, layout=layout)
    return out


# ----------------------------------------------------------------------------- mutations

_DEEP = "__deep_nesting__"
HUGE = [10**9, 10**18, 2**63, 10**100, -1, 0, -(10**12)]
NONFINITE = [math.nan, math.inf, -math.inf]
SCALES = [0, -1, 2, 3, 1000, 10**6, 0.5, 1e-300, 1e300]


def _values():
    """Replacement values of every JSON type (and a placeholder for a deeply nested object)."""
    return st.one_of(
        st.text(max_size=6), st.floats(allow_nan=True, allow_infinity=True), st.booleans(), st.none(),
        st.lists(st.integers(-3, 3), max_size=3), st.dictionaries(st.text(max_size=3), st.integers(0, 3), max_size=2),
        st.sampled_from(HUGE), st.sampled_from(NONFINITE), st.just({"nested": {"deeper": [1, {"x": None}]}}),
        st.just(_DEEP),
    )


def _write_json(path: Path, obj, depth: int = 5000) -> None:
    text = json.dumps(obj)  # NaN / Infinity literals, as Python's json writes them
    path.write_text(text.replace(json.dumps(_DEEP), "[" * depth + "]" * depth), encoding="utf-8")


def _field_paths(cfg: dict) -> list[tuple[str, ...]]:
    paths = [(k,) for k in cfg]
    paths += [(k, kk) for k, v in cfg.items() if isinstance(v, dict) for kk in v]
    return sorted(paths)


def mutate_config(d: Path, data) -> None:
    try:
        cfg = json.loads((d / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):  # removed or spoiled by an earlier mutation
        return
    if not isinstance(cfg, dict) or not cfg:
        return
    op = data.draw(st.sampled_from(["delete", "retype", "scale", "nonfinite", "root"]), label="config op")
    if op == "root":
        _write_json(d / "config.json", data.draw(_values(), label="config root"))
        return
    path = data.draw(st.sampled_from(_field_paths(cfg)), label="field")
    parent = cfg if len(path) == 1 else cfg[path[0]]
    key = path[-1]
    old = parent[key]
    if op == "delete":
        del parent[key]
    elif op == "retype":
        parent[key] = data.draw(_values(), label="value")
    elif op == "scale":
        factor = data.draw(st.sampled_from(SCALES), label="factor")
        if isinstance(old, bool) or not isinstance(old, (int, float)):
            parent[key] = [old, factor] if isinstance(old, list) else factor
        else:
            parent[key] = int(old * factor) if isinstance(factor, int) and isinstance(old, int) else old * factor
    else:
        parent[key] = data.draw(st.sampled_from(NONFINITE), label="non-finite")
    _write_json(d / "config.json", cfg)


def _weights(d: Path) -> tuple[Path, dict] | None:
    from safetensors.torch import load_file

    if (d / "model.safetensors").is_file():
        try:
            return d / "model.safetensors", load_file(str(d / "model.safetensors"))
        except Exception:
            return None
    if (d / "pytorch_model.bin").is_file():
        try:
            return d / "pytorch_model.bin", torch.load(d / "pytorch_model.bin", weights_only=True)
        except Exception:
            return None
    return None


def _tensor_op(t: torch.Tensor, op: str, data) -> torch.Tensor:
    if op == "truncate":
        return t[: t.shape[0] // 2] if t.dim() else t.reshape(1)
    if op == "reshape":
        return data.draw(st.sampled_from([t.reshape(-1), t.unsqueeze(0), t.reshape(-1, 1)]), label="shape")
    if op == "retype":
        dtype = data.draw(st.sampled_from([torch.int32, torch.int64, torch.bool, torch.uint8, torch.float64,
                                           torch.float16]), label="dtype")
        return t.to(dtype)
    t = t.clone()
    t.view(-1)[data.draw(st.integers(0, t.numel() - 1), label="index")] = data.draw(st.sampled_from(NONFINITE))
    return t


def mutate_tensor(d: Path, data) -> None:
    from safetensors.torch import save_file

    got = _weights(d)
    if got is None:
        return
    path, sd = got
    key = data.draw(st.sampled_from(sorted(sd)), label="key")
    op = data.draw(st.sampled_from(["truncate", "reshape", "retype", "nonfinite", "delete", "add", "rename"]),
                   label="tensor op")
    if op == "delete":
        del sd[key]
    elif op == "add":
        sd[data.draw(st.sampled_from(["backbone.layers.2.mixer.D", "backbone.layers.999999.norm.weight",
                                      "extra.weight", "lm_head.weight"]), label="new key")] = torch.ones(16)
    elif op == "rename":
        sd[key + ".renamed"] = sd.pop(key)
    else:
        sd[key] = _tensor_op(sd[key], op, data)
    if path.suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    else:
        torch.save(sd, path)


def mutate_file(d: Path, data) -> None:
    files = sorted(p.name for p in d.iterdir())
    if not files:
        return
    path = d / data.draw(st.sampled_from(files), label="file")
    op = data.draw(st.sampled_from(["remove", "garbage", "non_utf8", "truncate", "empty"]), label="file op")
    raw = path.read_bytes()
    if op == "remove":
        path.unlink()
    elif op == "garbage":
        path.write_bytes(data.draw(st.binary(min_size=1, max_size=64), label="garbage"))
    elif op == "non_utf8":
        cut = data.draw(st.integers(0, len(raw)), label="at")
        path.write_bytes(raw[:cut] + b"\xff\xe9\x80" + raw[cut:])
    elif op == "truncate":
        path.write_bytes(raw[: data.draw(st.integers(0, max(len(raw) - 1, 0)), label="length")])
    else:
        path.write_bytes(b"")


MUTATORS = {"config": mutate_config, "tensor": mutate_tensor, "file": mutate_file}


# ----------------------------------------------------------------------------- the property


def _check_outcome(d: Path) -> str:
    """Load a (mutated) checkpoint; assert the property; return "loaded" or the exception's name."""
    start = time.perf_counter()
    try:
        model = mamba_ode.load(d)
    except (FileNotFoundError, ValueError, TypeError) as exc:
        msg = str(exc)
        assert "\n" not in msg, f"multi-line message: {msg!r}"
        assert any(name in msg for name in FILE_NAMES) or str(d) in msg, f"message names no file: {msg!r}"
        return type(exc).__name__
    ids = torch.tensor([[1, 2, 3, 4, 5]]) % model.config.vocab_size
    with torch.no_grad():
        logits = model(ids).logits
    assert torch.isfinite(logits).all(), "a loaded model gives non-finite logits"
    if model.tokenizer is not None:
        model.token_states(PROMPT, 0)
    assert time.perf_counter() - start < 4
    return "loaded"


def _run(bases: dict[str, Path], data, families: list[str]) -> None:
    kind = data.draw(st.sampled_from(sorted(bases)), label="checkpoint")
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp) / "ckpt"
        shutil.copytree(bases[kind], d)
        for _ in range(data.draw(st.integers(1, 3), label="mutations")):
            MUTATORS[data.draw(st.sampled_from(families), label="family")](d, data)
        outcome = _check_outcome(d)
        hypothesis.event(outcome)


@SETTINGS
@hypothesis.given(data=st.data())
def test_mutated_config(bases, data):
    """Config fields deleted, retyped, scaled, made non-finite (and the whole config replaced)."""
    _run(bases, data, ["config"])


@SETTINGS
@hypothesis.given(data=st.data())
def test_mutated_tensors_and_files(bases, data):
    """Tensors and files mutated, mixed with config mutations."""
    _run(bases, data, ["tensor", "file", "config"])


def test_bases_load(bases):
    """The unmutated checkpoints load, with their tokenizer."""
    for d in bases.values():
        assert _check_outcome(d) == "loaded"
        assert mamba_ode.load(d).encode(PROMPT).shape == (1, 6)
