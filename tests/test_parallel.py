"""Layers integrated in worker processes: the same results as one thread in this process; the choice
of the worker count; arguments refused with their names."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch

import mamba_ode
from mamba_ode.analysis import parallel
from mamba_ode.analysis.budget import analysis_memory, check_prompt_budget
from mamba_ode.analysis.parallel import AUTO_WORK, integrate_layers, resolve_workers
from mamba_ode.dynamics.tokens import TokenSolution


def _same_solution(a: TokenSolution, b: TokenSolution) -> None:
    """Every outcome and every number of two token solutions equal (NaN where the other has NaN)."""
    assert a.ends == b.ends and a.driver == b.driver and a.messages == b.messages and a.stats == b.stats
    assert a.methods == b.methods
    for name in ("ts", "norms", "t_end", "t_blowup", "u_end", "growth_exponent", "log_slope", "growth_order"):
        x, y = getattr(a, name), getattr(b, name)
        assert torch.equal(torch.nan_to_num(x, nan=1234.5), torch.nan_to_num(y, nan=1234.5)), name


def test_worker_processes_reproduce_the_one_thread_serial_run():
    """Two workers (one torch thread each, spawned processes) give exactly the serial result of this
    process (the suite runs torch with one thread): labels, blow-up times, every recorded norm."""
    assert torch.get_num_threads() == 1
    model = mamba_ode.load(dtype=torch.float64)
    prompt = "ROMEO: But, soft! what light"
    serial = mamba_ode.analyze(model, prompt, layers=[0, 1, 2], t_max=100.0, workers=1)
    pooled = mamba_ode.analyze(model, prompt, layers=[0, 1, 2], t_max=100.0, workers=2)
    assert serial.settings["workers"] == 1 and pooled.settings["workers"] == 2
    for a, b in zip(serial.layers, pooled.layers):
        _same_solution(a.solution, b.solution)
        assert [t.label for t in a.classification.tokens] == [t.label for t in b.classification.tokens]
    s, p = serial.summary(), pooled.summary()
    assert [r["tokens"] for r in s["layers"]] == [r["tokens"] for r in p["layers"]]


def test_worker_processes_take_mamba2_fields(tmp_path):
    """A Mamba-2 layer field travels to a worker process and back with the same result."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.Mamba2Config(hidden_size=32, num_heads=4, head_dim=16, n_groups=2, state_size=8,
                                    num_hidden_layers=2, vocab_size=64, expand=2, chunk_size=8)
    transformers.Mamba2ForCausalLM(cfg).eval().save_pretrained(tmp_path / "m2")
    model = mamba_ode.load(tmp_path / "m2", dtype=torch.float64)
    starts = model.field_starts(torch.arange(1, 10)[None], [0, 1])
    fields = [mamba_ode.layer_field(model, k) for k in (0, 1)]
    u0s = [starts[k].double() for k in (0, 1)]
    opts = {"rtol": 1e-6, "atol": 1e-9}
    done: list[int] = []
    pooled = integrate_layers(fields, u0s, 50.0, opts, workers=2, on_done=done.append)
    serial = integrate_layers(fields, u0s, 50.0, opts, workers=1)
    assert sorted(done) == [0, 1]
    for a, b in zip(serial, pooled):
        _same_solution(a, b)


@pytest.mark.parametrize(("cpus", "layers", "work", "device", "expected"), [
    (8, 24, AUTO_WORK, "cpu", 8),       # a costly model: one worker per CPU
    (8, 3, AUTO_WORK, "cpu", 3),        # at most one per layer
    (8, 24, AUTO_WORK - 1, "cpu", 1),   # cheap layers: starting processes costs more than it saves
    (1, 24, AUTO_WORK, "cpu", 1),       # one CPU
    (8, 1, AUTO_WORK, "cpu", 1),        # one layer
    (8, 24, AUTO_WORK, "meta", 1),      # not a CPU model
])
def test_auto_workers(monkeypatch, cpus, layers, work, device, expected):
    monkeypatch.setattr(parallel, "usable_cpus", lambda: cpus)
    assert resolve_workers("auto", layers, work, device) == expected


def test_explicit_workers_are_capped_by_layers():
    assert resolve_workers(4, 2, 1) == 2
    assert resolve_workers(1, 24, 10 ** 9) == 1


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2", "all", True, None])
def test_bad_workers_are_refused_by_name(bad):
    with pytest.raises(ValueError, match="workers"):
        resolve_workers(bad, 4, AUTO_WORK)
    with pytest.raises(ValueError, match="workers"):
        mamba_ode.analyze(mamba_ode.load(), "x", workers=bad)


def test_several_workers_refused_for_a_model_off_the_cpu():
    with pytest.raises(ValueError, match="workers.*CPU"):
        resolve_workers(2, 4, AUTO_WORK, "cuda")


def test_integrate_layers_refuses_mismatched_lists():
    with pytest.raises(ValueError, match="2 fields but 1"):
        integrate_layers([lambda t, u: u, lambda t, u: u], [torch.ones(1, 2, 3)], 1.0, {}, 1)
    with pytest.raises(ValueError, match="workers"):
        integrate_layers([lambda t, u: u], [torch.ones(1, 2, 3)], 1.0, {}, 0)


def test_budget_counts_one_integration_per_worker(monkeypatch):
    """Each worker holds one integration: the memory asked grows with the workers, and the refusal says so."""
    model = mamba_ode.load()
    one = analysis_memory(model, 50, 20_000)
    monkeypatch.setattr("mamba_ode.analysis.budget.available_memory", lambda device: int(1.5 * one))
    assert check_prompt_budget(model, 50, max_tokens=2048, max_steps=20_000, workers=1) == one
    with pytest.raises(ValueError, match="with 2 layers integrated at once"):
        check_prompt_budget(model, 50, max_tokens=2048, max_steps=20_000, workers=2)
    assert math.isfinite(one) and one > 0


def test_cli_runs_layers_in_worker_processes(tmp_path):
    """``python -m mamba_ode analyze --workers 2``: spawned workers under the CLI's own entry point (whose
    ``__main__`` the workers must not run again), a complete report, the worker count recorded."""
    out = tmp_path / "report"
    res = subprocess.run([sys.executable, "-m", "mamba_ode", "analyze", "--layers", "0", "1", "--t-max", "10",
                          "--workers", "2", "--quiet", "--out", str(out)], capture_output=True, text=True,
                         timeout=300, check=False)
    assert res.returncode == 0, res.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["settings"]["workers"] == 2
    assert [r["layer"] for r in summary["layers"]] == [0, 1]
    assert all(len(r["tokens"]) == summary["prompt"]["n_tokens"] for r in summary["layers"])
    assert (out / "report.html").exists()
