"""Layers integrated in worker processes: the same results as one thread in this process; the choice
of the worker count; arguments refused with their names."""

from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

import mamba_ode
from mamba_ode.analysis import parallel
from mamba_ode.analysis.budget import (
    WORKER_BYTES,
    affordable_workers,
    analysis_memory,
    check_prompt_budget,
    integration_memory,
)
from mamba_ode.analysis.parallel import AUTO_WORK, integrate_layers, plan_workers, resolve_workers, threads_per_worker
from mamba_ode.dynamics.tokens import TokenSolution


def _same_solution(a: TokenSolution, b: TokenSolution) -> None:
    """Every outcome and every number of two token solutions equal (NaN where the other has NaN)."""
    assert a.ends == b.ends and a.driver == b.driver and a.messages == b.messages and a.stats == b.stats
    assert a.methods == b.methods
    for name in ("ts", "norms", "t_end", "t_blowup", "u_end", "growth_exponent", "log_slope", "growth_order"):
        x, y = getattr(a, name), getattr(b, name)
        assert torch.equal(torch.nan_to_num(x, nan=1234.5), torch.nan_to_num(y, nan=1234.5)), name


def test_worker_processes_reproduce_the_one_thread_serial_run(monkeypatch):
    """Two workers (spawned processes, one torch thread each on two CPUs) give exactly the serial result of
    this process (the suite runs torch with one thread): labels, blow-up times, every recorded norm."""
    monkeypatch.setattr(parallel, "usable_cpus", lambda: 2)
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


def test_worker_processes_take_mamba2_fields(tmp_path, monkeypatch):
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
    monkeypatch.setattr(parallel, "usable_cpus", lambda: 2)  # one thread per worker, as this process
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
    with pytest.raises(ValueError, match="'starts' holds 1 initial states for 2 fields"):
        integrate_layers([lambda t, u: u, lambda t, u: u], [torch.ones(1, 2, 3)], 1.0, {}, 1)
    with pytest.raises(ValueError, match="workers"):
        integrate_layers([lambda t, u: u], [torch.ones(1, 2, 3)], 1.0, {}, 0)


def test_budget_counts_one_integration_per_worker(monkeypatch):
    """Each worker holds one integration and costs a process: the memory asked grows with the workers, the
    refusal says so and how to proceed, and "auto" takes no more workers than the memory allows."""
    model = mamba_ode.load()
    one = analysis_memory(model, 50, 20_000)
    per = integration_memory(model, 50, 20_000)
    assert analysis_memory(model, 50, 20_000, 3) == one + 2 * per + 3 * WORKER_BYTES
    monkeypatch.setattr("mamba_ode.analysis.budget.available_memory",
                        lambda device: analysis_memory(model, 50, 20_000, 2) + 1)
    assert check_prompt_budget(model, 50, max_tokens=2048, max_steps=20_000, workers=2) > one
    with pytest.raises(ValueError, match=r"with 3 layers integrated at once.*fewer workers \(workers=1"):
        check_prompt_budget(model, 50, max_tokens=2048, max_steps=20_000, workers=3)
    assert affordable_workers(model, 50, 20_000, 8) == 2
    monkeypatch.setattr(parallel, "usable_cpus", lambda: 8)
    monkeypatch.setattr(parallel, "AUTO_WORK", 1)
    assert plan_workers(model, 50, 4, 20_000, "auto") == 2  # 4 CPUs' worth of layers, memory for 2
    assert plan_workers(model, 50, 4, 20_000, 3) == 3  # as asked: check_prompt_budget refuses it


def test_cli_refuses_workers_beyond_memory_with_exit_2(monkeypatch, tmp_path, capsys):
    """An explicit --workers whose analysis does not fit is a usage error naming the fix, before any work."""
    from mamba_ode.cli import main

    model = mamba_ode.load()
    monkeypatch.setattr("mamba_ode.analysis.budget.available_memory",
                        lambda device: analysis_memory(model, 200, 20_000, 1) + 1)
    rc = main(["analyze", "--workers", "2", "--quiet", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and "fewer workers" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def _failing_field(t, u):
    raise ValueError("this layer's field fails")


def _slow_field(t, u):
    import time

    time.sleep(60.0)
    return -u


def test_an_error_in_a_worker_is_raised_at_once_and_stops_the_others():
    """A layer failing in one worker raises its error here while another worker is still busy (for a
    minute): the pool is stopped, not waited for, and no layer is reported done."""
    import time

    done: list[int] = []
    u0 = torch.ones(1, 2, 3, dtype=torch.float64)
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match="this layer's field fails"):
        integrate_layers([_slow_field, _failing_field], [u0, u0], 1.0, {}, workers=2, on_done=done.append)
    assert time.perf_counter() - t0 < 40.0
    assert done == []


def _dying_field(t, u):
    import os

    os._exit(3)  # as a worker killed for lack of memory


def test_a_worker_that_dies_is_an_error_not_a_hang():
    """A worker process killed in the middle of a layer (here it exits at once) raises a RuntimeError that
    says what to do, instead of leaving the caller waiting for a result that never comes."""
    import threading

    u0 = torch.ones(1, 2, 3, dtype=torch.float64)
    caught: list[BaseException] = []

    def run() -> None:
        try:
            integrate_layers([_dying_field, _dying_field], [u0, u0], 1.0, {}, workers=2)
        except BaseException as exc:  # noqa: BLE001 (recorded for the assertion below)
            caught.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout=120)
    assert not thread.is_alive(), "integrate_layers still waits for a dead worker"
    assert len(caught) == 1 and isinstance(caught[0], RuntimeError)
    assert "ended abruptly" in str(caught[0]) and "fewer workers" in str(caught[0])


def test_workers_share_out_the_cpus_as_threads(monkeypatch):
    monkeypatch.setattr(parallel, "usable_cpus", lambda: 16)
    assert [threads_per_worker(n) for n in (1, 2, 3, 16, 32)] == [16, 8, 5, 1, 1]


def test_cli_runs_layers_in_worker_processes(tmp_path):
    """``python -m mamba_ode analyze --workers 2``: spawned workers under the CLI's own entry point, a
    complete report, the worker count recorded."""
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


@pytest.fixture
def two_threads():
    """torch with two threads for the test (the suite runs with one), restored after it."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("work_limit,workers,inside", [(AUTO_WORK, 1, 1), (1, 1, 2), (AUTO_WORK, 2, 2)])
def test_small_layers_run_on_one_thread_and_the_setting_comes_back(monkeypatch, two_threads, work_limit, workers,
                                                                    inside):
    """Without workers, layers below AUTO_WORK state updates per evaluation are analysed on one torch thread
    (each parallel loop over such small tensors waits for every thread, so one busy core elsewhere would
    slow the whole analysis down many times); costly layers, and a parent process that hands the layers to
    workers, keep the caller's threads. Either way the caller's setting is back afterwards."""
    model = mamba_ode.load(dtype=torch.float64)  # L·E·N = 6 · 128 · 16, far below AUTO_WORK
    monkeypatch.setattr(parallel, "AUTO_WORK", work_limit)
    with parallel.own_threads(model, 6, workers) as threads:
        assert threads == inside == torch.get_num_threads()
    assert torch.get_num_threads() == 2


def test_analyze_integrates_small_layers_on_one_thread(monkeypatch, two_threads):
    analyze_module = importlib.import_module("mamba_ode.analysis.analyze")  # the module, not the function
    seen = []

    def spy(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return integrate_layers(*args, **kwargs)

    monkeypatch.setattr(analyze_module, "integrate_layers", spy)
    result = mamba_ode.analyze(mamba_ode.load(dtype=torch.float64), "To be", layers=[0], t_max=10.0)
    assert seen == [1] and torch.get_num_threads() == 2
    assert len(result.layers[0].classification.tokens) == 5


def _spawned_children(pid: int) -> list[int]:
    """Processes whose parent is pid and that were started by multiprocessing's spawn (Linux /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except (OSError, ValueError):
            continue
        if entry.isdigit() and int(stat.rsplit(")", 1)[1].split()[1]) == pid and b"spawn_main" in cmdline:
            found.append(int(entry))
    return found


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads processes from Linux's /proc")
def test_workers_exit_when_the_analysis_process_is_killed(tmp_path):
    """SIGKILL to `mamba-ode analyze --workers 2` (no chance to stop its pool): the worker processes exit
    within seconds instead of waiting, each with its memory, for a parent that is gone."""
    prompt = "ROMEO: But, soft! what light through yonder window breaks? It is the east. " * 4  # layers of seconds
    proc = subprocess.Popen([sys.executable, "-m", "mamba_ode", "analyze", "--workers", "2", "--prompt", prompt,
                             "--quiet", "--out", str(tmp_path / "out")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        workers: list[int] = []
        deadline = time.monotonic() + 120
        while len(workers) < 2 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
            workers = _spawned_children(proc.pid)
        assert len(workers) == 2, "the workers did not start"
        time.sleep(5.0)  # their initialiser has run: they are waiting for or integrating a layer
        assert proc.poll() is None, "the analysis ended before it could be killed"
    finally:
        proc.kill()
        proc.wait()
    deadline = time.monotonic() + 10
    while any(_running(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = [w for w in workers if _running(w)]
    for w in left:
        os.kill(w, signal.SIGKILL)
    assert not left, f"worker processes {left} outlived the analysis"


def test_overlapping_analyses_in_threads_each_restore_their_own_setting(two_threads):
    """torch's thread count is per thread (OpenMP's): two analyses overlapping in two Python threads, the
    first to enter leaving first, each run on one thread and each leave their thread as they found it."""
    model = mamba_ode.load(dtype=torch.float64)
    entered, release_a, seen = threading.Event(), threading.Event(), {}

    def first():
        torch.set_num_threads(2)
        with parallel.own_threads(model, 6, 1) as inside:
            seen["a inside"] = inside
            entered.set()
            release_a.wait(10)
        seen["a after"] = torch.get_num_threads()

    def second():
        torch.set_num_threads(2)
        entered.wait(10)
        with parallel.own_threads(model, 6, 1) as inside:
            seen["b inside"] = inside
            release_a.set()  # the first leaves while the second is still inside
            time.sleep(0.05)
        seen["b after"] = torch.get_num_threads()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert seen == {"a inside": 1, "b inside": 1, "a after": 2, "b after": 2}
    assert torch.get_num_threads() == 2  # the calling thread was never touched
