"""Shared fixtures and oracles for the test suite."""

from __future__ import annotations

import os
import warnings

import pytest
import torch

from mamba_ode import SSMParams

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
# the suite runs on 2 cores with two xdist workers: one intra-op thread each avoids oversubscription,
# which makes small-tensor tests tens of times slower
torch.set_num_threads(1)
warnings.filterwarnings("ignore", message=".*falling back to its reference PyTorch implementation.*")

#: float32 / float64 tolerances used across tests.
TOL = {torch.float32: 1e-5, torch.float64: 1e-10}


def _build_hf_mamba(tmp_path, seed: int = 0, dtype=torch.float32, **kwargs):
    """A randomly initialised transformers MambaForCausalLM saved with save_pretrained.

    Returns (hf_model, directory).
    """
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(seed)
    cfg = transformers.MambaConfig(**kwargs)
    model = transformers.MambaForCausalLM(cfg).eval()
    # transformers initialises D=1, A_log=log(1..N), conv/dt with specific inits; perturb so every
    # parameter matters in the comparison
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("mixer.D", "norm.weight", "norm_f.weight", "conv1d.bias", "in_proj.bias",
                              "out_proj.bias")):
                p.add_(0.1 * torch.randn_like(p))
    model = model.to(dtype)
    d = tmp_path / f"hf_{seed}"
    model.save_pretrained(d)
    return model, d


@pytest.fixture(scope="session")
def hf_mamba():
    """Builder ``hf_mamba(tmp_path, seed=0, dtype=float32, **MambaConfig kwargs) -> (hf_model, directory)``:
    a randomly initialised (and perturbed) transformers ``MambaForCausalLM`` saved with ``save_pretrained``."""
    return _build_hf_mamba


def _random_params(e: int, n: int, r: int, seed: int, dtype=torch.float64) -> SSMParams:
    """Random layer parameters with a general diagonal A (every entry different)."""
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape, scale=1.0):
        return scale * torch.randn(*shape, generator=g, dtype=dtype)

    return SSMParams(W_x=rnd(r, e, scale=0.7), W_dt=rnd(e, r, scale=0.7), delta_bias=rnd(e, scale=0.5),
                     S_B=rnd(n, e, scale=0.6), S_C=rnd(n, e, scale=0.6),
                     A=-(0.1 + 2 * torch.rand(e, n, generator=g, dtype=dtype)), D=rnd(e))


@pytest.fixture(scope="session")
def random_params():
    """Builder ``random_params(e, n, r, seed, dtype=float64) -> SSMParams`` with a general diagonal A."""
    return _random_params
