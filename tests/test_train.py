"""The library's training loop pieces: options, schedule and initialisation (the runs are in test_experiments)."""

from __future__ import annotations

import math

import pytest
import torch

from mamba_ode import MambaConfig, MambaLM
from mamba_ode.train import TrainConfig, lr_at, mamba_init_


def test_train_config_rejects_bad_options():
    with pytest.raises(ValueError, match="'steps'"):
        TrainConfig(steps=0)
    with pytest.raises(ValueError, match="'lr'"):
        TrainConfig(steps=1, lr=0.0)
    with pytest.raises(ValueError, match="'min_lr_ratio'"):
        TrainConfig(steps=1, min_lr_ratio=2.0)


def test_schedule_warmup_then_cosine():
    cfg = TrainConfig(steps=110, lr=1.0, warmup=10, min_lr_ratio=0.1)
    assert lr_at(0, cfg) == pytest.approx(0.1) and lr_at(9, cfg) == pytest.approx(1.0)
    mid = 10 + 50  # half way through the decay: the mean of peak and floor
    assert lr_at(mid, cfg) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_at(109, cfg) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 99 / 100)))


def test_mamba_init_matches_the_reference_recipe():
    model = MambaLM(MambaConfig(d_model=16, n_layer=2, vocab_size=32, d_state=4))
    mamba_init_(model, dt_min=1e-3, dt_max=1e-1, generator=torch.Generator().manual_seed(0))
    for block in model.layers:
        mixer = block.mixer
        dt = torch.nn.functional.softplus(mixer.dt_proj.bias.detach())
        assert float(dt.min()) >= 1e-4 - 1e-12 and float(dt.max()) <= 1e-1 + 1e-9
        torch.testing.assert_close(mixer.A_log.detach(), torch.log(torch.arange(1, 5.0)).repeat(32, 1))
        torch.testing.assert_close(mixer.D.detach(), torch.ones(32))
    with pytest.raises(ValueError, match="'dt_min'"):
        mamba_init_(model, dt_min=0.2, dt_max=0.1)
