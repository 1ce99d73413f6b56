"""Hugging Face tokenizers: a checkpoint's tokenizer.json, the ``tokenizer=`` override of ``load`` and its refusals.

Tokenizers are built inside the tests with the ``tokenizers`` library (a WordLevel one and a trained
byte-level BPE one); transformers' ``PreTrainedTokenizerFast`` is the oracle for the ids, special
tokens included.
"""

from __future__ import annotations

import json
import sys
import warnings

import pytest
import torch

import mamba_ode
from mamba_ode.io.tokenizers import ByteTokenizer, HFTokenizer, tokenizer_for

tokenizers = pytest.importorskip("tokenizers")
transformers = pytest.importorskip("transformers")

WORDS = ["[UNK]", "[BOS]", "some", "text", "to", "be", "or", "not", "that", "is", "the", "question", "."]
TEXT = "some text"


def word_level(words=WORDS, bos: bool = False):
    """A WordLevel tokenizer over ``words`` (whitespace pre-tokenizer), optionally adding [BOS] in front."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece()  # joins words with spaces
    tok.add_special_tokens(["[BOS]"])
    if bos:
        tok.post_processor = processors.TemplateProcessing(single="[BOS] $A", special_tokens=[("[BOS]", 1)])
    return tok


def hf_checkpoint(d, vocab_size=32, tokenizer=None):
    """A transformers-layout Mamba checkpoint in ``d`` with ``tokenizer`` saved beside it as tokenizer.json."""
    torch.manual_seed(0)
    cfg = transformers.MambaConfig(vocab_size=vocab_size, hidden_size=16, num_hidden_layers=2, state_size=4)
    transformers.MambaForCausalLM(cfg).save_pretrained(d)
    if tokenizer is not None:
        tokenizer.save(str(d / "tokenizer.json"))
    return d


@pytest.fixture
def ckpt(tmp_path):
    return hf_checkpoint(tmp_path / "mamba", tokenizer=word_level())


# ----------------------------------------------------------------------------- a checkpoint's tokenizer.json


def test_checkpoint_tokenizer_json(ckpt):
    tok = word_level()
    model = mamba_ode.load(ckpt)
    assert isinstance(model.tokenizer, HFTokenizer)
    assert model.tokenizer.vocab_size == len(WORDS)
    ids = model.encode(TEXT)
    assert ids.tolist() == [tok.encode(TEXT).ids] == [[2, 3]]
    states = model.token_states(TEXT, 0)
    assert states.shape == (1, 2, model.config.d_inner) and torch.isfinite(states).all()
    assert model.tokenizer.decode(ids[0].tolist()) == TEXT
    assert model.tokenizer.decode_tokens([2, 3, 0]) == ["some", "text", "[UNK]"]
    # the ids are transformers' own for this tokenizer.json
    fast = transformers.PreTrainedTokenizerFast(tokenizer_file=str(ckpt / "tokenizer.json"))
    assert model.tokenizer.encode("to be or not to be") == fast.encode("to be or not to be")


def test_special_tokens_follow_the_post_processor(tmp_path):
    """encode adds what the tokenizer.json post-processor adds (transformers' default,
    add_special_tokens=True); add_special_tokens=False gives the bare ids."""
    d = hf_checkpoint(tmp_path / "bos", tokenizer=word_level(bos=True))
    model = mamba_ode.load(d)
    fast = transformers.PreTrainedTokenizerFast(tokenizer_file=str(d / "tokenizer.json"))
    assert model.tokenizer.encode(TEXT) == fast.encode(TEXT) == [1, 2, 3]
    bare = HFTokenizer.from_file(d / "tokenizer.json", add_special_tokens=False)
    assert bare.encode(TEXT) == fast.encode(TEXT, add_special_tokens=False) == [2, 3]
    assert model.tokenizer.decode([1, 2, 3]) == fast.decode([1, 2, 3])  # special tokens kept, as transformers
    with pytest.raises(TypeError, match="'add_special_tokens' must be a bool"):
        HFTokenizer.from_file(d / "tokenizer.json", add_special_tokens="no")


def test_trained_byte_level_bpe(tmp_path):
    """A byte-level BPE tokenizer trained in the test: ids and per-token pieces as transformers gives them."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = ["to be or not to be, that is the question", "whether 'tis nobler in the mind to suffer"] * 20
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel
                                                        .alphabet(), show_progress=False))
    d = hf_checkpoint(tmp_path / "bpe", vocab_size=304, tokenizer=tok)
    model = mamba_ode.load(d)
    fast = transformers.PreTrainedTokenizerFast(tokenizer_file=str(d / "tokenizer.json"))
    text = "to be, or not to be — é"
    ids = model.encode(text)[0].tolist()
    assert ids == fast.encode(text)
    assert model.tokenizer.decode(ids) == fast.decode(ids) == text
    pieces = model.tokenizer.decode_tokens(ids)
    assert len(pieces) == len(ids) and pieces[0] == fast.decode(ids[:1])
    assert model.token_states(text, -1).shape[1] == len(ids)


def test_save_pretrained_keeps_the_tokenizer(ckpt, tmp_path):
    model = mamba_ode.load(ckpt)
    out = model.save_pretrained(tmp_path / "again")
    assert (out / "tokenizer.json").is_file() and (out / "tokenizer_config.json").is_file()
    again = mamba_ode.load(out)
    assert isinstance(again.tokenizer, HFTokenizer)
    assert again.encode("to be or not").tolist() == model.encode("to be or not").tolist()


def test_byte_tokenizer_decode_tokens():
    tok = ByteTokenizer()
    assert tok.decode_tokens(tok.encode("aé")) == ["a", "\ufffd", "\ufffd"]
    with pytest.raises(ValueError, match="outside the byte range"):
        tok.decode_tokens([256])


# ----------------------------------------------------------------------------- the tokenizer= override


def test_override_with_directory_file_and_object(ckpt, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    words = ["[UNK]", "[BOS]", "text", "some"]  # a different tokenizer: ids swapped
    word_level(words).save(str(other / "tokenizer.json"))
    assert mamba_ode.load(ckpt, tokenizer=other).encode(TEXT).tolist() == [[3, 2]]
    assert mamba_ode.load(ckpt, tokenizer=str(other / "tokenizer.json")).encode(TEXT).tolist() == [[3, 2]]

    class Custom:
        def encode(self, text):
            return [len(w) for w in text.split()]

        def decode(self, ids):
            return " ".join("x" * i for i in ids)

    model = mamba_ode.load(ckpt, tokenizer=Custom())
    assert model.encode(TEXT).tolist() == [[4, 4]]
    # a transformers tokenizer object works as it is (its len() is checked against the vocabulary)
    fast = transformers.PreTrainedTokenizerFast(tokenizer_file=str(ckpt / "tokenizer.json"))
    assert mamba_ode.load(ckpt, tokenizer=fast).encode(TEXT).tolist() == [[2, 3]]


def test_override_when_the_checkpoint_has_none(tmp_path):
    d = hf_checkpoint(tmp_path / "bare")
    assert mamba_ode.load(d).tokenizer is None
    with pytest.raises(ValueError, match="no tokenizer"):
        mamba_ode.load(d).encode(TEXT)
    word_level().save(str(tmp_path / "tok.json"))
    assert mamba_ode.load(d, tokenizer=tmp_path / "tok.json").encode(TEXT).tolist() == [[2, 3]]


def _hub_cache(tmp_path, monkeypatch, repo: str, files: dict):
    """A Hugging Face cache laid out by the test, read offline."""
    import huggingface_hub.constants as hc

    cache = tmp_path / "hub"
    folder = cache / ("models--" + repo.replace("/", "--"))
    commit = "0123456789abcdef0123456789abcdef01234567"
    snap = folder / "snapshots" / commit
    snap.mkdir(parents=True)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(commit)
    for name, write in files.items():
        write(snap / name)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)
    return snap


def test_override_with_hub_id_from_cache(ckpt, tmp_path, monkeypatch):
    """A tokenizer Hub id (as EleutherAI/gpt-neox-20b for the original state-spaces checkpoints) resolves
    through the same cache-first Hub code as checkpoints, offline."""
    words = ["[UNK]", "[BOS]", "text", "some"]
    _hub_cache(tmp_path, monkeypatch, "EleutherAI/tiny-neox", {
        "tokenizer.json": lambda p: word_level(words).save(str(p)),
        "tokenizer_config.json": lambda p: p.write_text(json.dumps({"tokenizer_class": "GPTNeoXTokenizer"}))})
    model = mamba_ode.load(ckpt, tokenizer="EleutherAI/tiny-neox")
    assert model.encode(TEXT).tolist() == [[3, 2]]
    with pytest.raises(FileNotFoundError) as info:
        mamba_ode.load(ckpt, tokenizer="EleutherAI/gpt-neox-20b")
    assert str(info.value) == ("load: argument 'tokenizer': hub id 'EleutherAI/gpt-neox-20b' is not in the local "
                               "Hugging Face cache and HF_HUB_OFFLINE is set; download it once with network access, "
                               "or pass a local directory")


# ----------------------------------------------------------------------------- refusals


def test_vocabulary_larger_than_the_model_is_refused(tmp_path, ckpt):
    big = [f"w{i}" for i in range(40)]
    d = hf_checkpoint(tmp_path / "small", vocab_size=32, tokenizer=word_level(["[UNK]", "[BOS]", *big]))
    with pytest.raises(ValueError, match=r"tokenizer.json: the tokenizer has 42 tokens but the model's vocab_size is "
                                         r"32: ids 32…41 would be out of range"):
        mamba_ode.load(d)
    with pytest.raises(ValueError, match=r"load: argument 'tokenizer' \(.*tokenizer.json\): the tokenizer has 42 "
                                         r"tokens but the model's vocab_size is 32"):
        mamba_ode.load(ckpt, tokenizer=d / "tokenizer.json")
    with pytest.raises(ValueError, match=r"load: argument 'tokenizer': the tokenizer has 256 tokens but the model's "
                                         r"vocab_size is 32"):
        mamba_ode.load(ckpt, tokenizer=ByteTokenizer())


@pytest.mark.parametrize(("arg", "exc", "match"), [
    (3, TypeError, r"load: argument 'tokenizer' must be None, a path, a Hub id or an object with encode\(\) and "
                   r"decode\(\), got int"),
    (ByteTokenizer, TypeError, r"got the class ByteTokenizer \(pass an instance\)"),
    (object(), TypeError, r"argument 'tokenizer' must be None.*got object"),
    ("", ValueError, r"load: argument 'tokenizer' is an empty string"),
    ("./no/such/tokenizer", FileNotFoundError, r"load: argument 'tokenizer': no tokenizer at './no/such/tokenizer'"),
])
def test_bad_tokenizer_argument(ckpt, arg, exc, match):
    with pytest.raises(exc, match=match):
        mamba_ode.load(ckpt, tokenizer=arg)


def test_tokenizer_path_without_tokenizer(ckpt, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=r"load: argument 'tokenizer': .*empty holds no tokenizer"):
        mamba_ode.load(ckpt, tokenizer=empty)
    (tmp_path / "vocab.txt").write_text("a\nb\n")
    with pytest.raises(ValueError, match=r"load: argument 'tokenizer': .*vocab.txt is not a tokenizer.json file"):
        mamba_ode.load(ckpt, tokenizer=tmp_path / "vocab.txt")


@pytest.mark.parametrize(("content", "match"), [
    (b"{not json", r"tokenizer.json: not a tokenizer the 'tokenizers' library can read \("),
    (b'{"version": "1.0"}', r"tokenizer.json: not a tokenizer the 'tokenizers' library can read \("),
    (b'{"model": "\xff"}', r"tokenizer.json: not UTF-8 text \(byte 0xff at offset 11\)"),
])
def test_bad_tokenizer_file(ckpt, content, match):
    (ckpt / "tokenizer.json").write_bytes(content)
    with pytest.raises(ValueError, match=match) as info:
        mamba_ode.load(ckpt)
    assert "\n" not in str(info.value)
    # an override is used instead of the checkpoint's own tokenizer, which is then not read
    assert mamba_ode.load(ckpt, tokenizer=word_level_dir(ckpt.parent)).encode(TEXT).tolist() == [[2, 3]]


def word_level_dir(parent):
    out = parent / "good_tokenizer"
    out.mkdir(exist_ok=True)
    word_level().save(str(out / "tokenizer.json"))
    return out


def test_bad_tokenizer_config(tmp_path):
    d = hf_checkpoint(tmp_path / "cfg")
    (d / "tokenizer_config.json").write_text("{oops")
    with pytest.raises(ValueError, match=r"tokenizer_config.json: not valid JSON"):
        mamba_ode.load(d)
    (d / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "GPTNeoXTokenizer"}))
    assert mamba_ode.load(d).tokenizer is None  # a class this package does not read, and no tokenizer.json


def test_without_the_tokenizers_library(ckpt, monkeypatch):
    """tokenizers is optional: a checkpoint's tokenizer.json then only warns; asking for one explicitly raises."""
    monkeypatch.setitem(sys.modules, "tokenizers", None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = mamba_ode.load(ckpt)
        assert tokenizer_for(ckpt) is None
    assert model.tokenizer is None
    assert any("pip install tokenizers" in str(w.message) for w in caught)
    with pytest.raises(ImportError, match="pip install tokenizers"):
        mamba_ode.load(ckpt, tokenizer=ckpt / "tokenizer.json")



def test_cli_analyses_a_transformers_checkpoint_with_its_tokenizer(tmp_path):
    """`mamba-ode analyze DIR --prompt TEXT` on a transformers-layout checkpoint with tokenizer.json: the
    prompt goes through that tokenizer, and the report shows its decoded pieces."""
    import re

    from mamba_ode.cli import main

    d = hf_checkpoint(tmp_path / "ckpt", tokenizer=word_level())
    text = "to be or not to be that is the question"
    out = tmp_path / "report"
    assert main(["analyze", str(d), "--prompt", text, "--t-max", "10", "--out", str(out), "--quiet"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    expect = word_level().encode(text)
    assert summary["prompt"]["ids"] == expect.ids
    assert summary["prompt"]["tokens"] == expect.tokens == text.split()
    page = (out / "report.html").read_text()
    shown = re.findall(r"<code title='token (\d+)'>\d+:([^<]*)</code>", page)
    assert [(int(i), t) for i, t in shown] == list(enumerate(text.split()))
