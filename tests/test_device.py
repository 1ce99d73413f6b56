"""Device-resident analysis: with the model on a GPU every stage stays there (skipped without CUDA)."""

from __future__ import annotations

import warnings

import pytest
import torch

import mamba_ode as mo

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def test_analysis_on_cuda_stays_on_cuda_and_matches_the_cpu():
    cpu = mo.load(dtype=torch.float64)
    gpu = mo.load(dtype=torch.float64, device="cuda")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. torchdiffeq's "t is not on the same device as y0"
        a_gpu = mo.analyze(gpu, "To be, or not", layers=[0, 1], t_max=100.0)
    a_cpu = mo.analyze(cpu, "To be, or not", layers=[0, 1], t_max=100.0)
    assert a_gpu.input_ids.is_cuda and a_gpu.hidden_attention.is_cuda
    assert a_gpu.comparison.ode_solution.ys.is_cuda
    for lg, lc in zip(a_gpu.layers, a_cpu.layers):
        assert [v.label for v in lg.classification.tokens] == [v.label for v in lc.classification.tokens]
        for vg, vc in zip(lg.classification.tokens, lc.classification.tokens):
            if vc.t_blowup is not None:
                assert vg.t_blowup == pytest.approx(vc.t_blowup, rel=1e-6)


def test_solve_on_cuda_keeps_the_state_on_cuda():
    model = mo.load(dtype=torch.float64, device="cuda")
    u0 = model.token_states("To be", 0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sol = mo.solve(mo.layer_field(model, 0), u0, (0.0, 1.0), t_eval=torch.linspace(0, 1, 5))
    assert sol.ys.is_cuda
